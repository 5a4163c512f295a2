"""Model loading and the training engine (DeepSpeed ZeRO or plain torch DDP) for one learner rank."""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selm_ray.core.config import LearnerConfig
from selm_ray.core.cores import cpu_flags
from selm_ray.core.precision import LearnerPrecision
from selm_ray.learner.tensor_io import has_state, load_state, save_state


@dataclass
class Models:
    tokenizer: Any
    policy: Any  # the trainable module (a PeftModel when LoRA is on)
    reference: Any | None  # frozen copy; None with LoRA (adapters disabled = reference)


def load_models(path: str, cfg: LearnerConfig, weights_dtype: str = "float32",
                device: torch.device | None = None) -> Models:
    """Policy (and a frozen reference copy) in ``weights_dtype`` on ``device`` (default: CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, weights_dtype))
    if device is not None:
        policy.to(device)
    policy.config.use_cache = False
    if cfg.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules="all-linear",
                          task_type="CAUSAL_LM")
        return Models(tok, get_peft_model(policy, lora), None)
    return Models(tok, policy, _frozen_copy(policy))


def _frozen_copy(model: Any) -> Any:
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def refresh_reference(models: Models) -> bool:
    """Reference := current policy (iteration boundary / ref_update_every); True if it changed.
    No-op with LoRA, where the reference is the base model (adapters disabled) by design.
    Module by module, each one's parameters gathered first: under ZeRO-3 a rank holds only its
    partition of each, and gathering the whole model at once would need it all in memory twice."""
    if models.reference is None:
        return False
    from selm_ray.learner.gather import gathered_modules

    targets = dict(models.reference.named_modules())
    with torch.no_grad():
        for name, module in gathered_modules(_unwrap(models.policy)):
            dest = targets[name]
            for pname, p in module.named_parameters(recurse=False):
                getattr(dest, pname).copy_(p)
            for bname, b in module.named_buffers(recurse=False):
                if b is not None and getattr(dest, bname, None) is not None:
                    getattr(dest, bname).copy_(b)
    return True


def batch_logits(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """(M, V): one row of logits per scored token (``batch["predict"]``), either layout.

    The vocabulary projection is the costliest matmul of a small model (49k x 576 for SmolLM2)
    and a padded batch is mostly prompt and padding: the output layer gets only the hidden states
    of the positions that predict a response token, gathered by a hook on its input. The forward
    still goes through the model's own wrapper (DeepSpeed, DDP, PEFT), so nothing else changes.
    """
    device = batch["input_ids"].device
    keep = torch.arange(batch["first"], batch["input_ids"].shape[1], device=device)
    where = (batch["predict"][:, 0], batch["predict"][:, 1])
    head = _unwrap(model).get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda _module, args: (args[0][where], *args[1:]))
    try:
        if "position_ids" not in batch:  # padded rows
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         logits_to_keep=keep).logits
        dtype = next(model.parameters()).dtype
        # additive form: eager and SDPA attention both take it (eager would add a bool mask as 0/1)
        mask = torch.zeros(batch["attention_mask"].shape, dtype=dtype, device=device)
        mask.masked_fill_(~batch["attention_mask"], torch.finfo(dtype).min)
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask,
                     logits_to_keep=keep).logits
    finally:
        hook.remove()


def _load(directory: Path, stem: str) -> Any:
    """A state saved by save_state, or (checkpoints of earlier versions) a torch.save file."""
    if has_state(directory, stem):
        return load_state(directory, stem)
    return torch.load(directory / f"{stem}.pt", weights_only=stem != OPTIMIZER)


def _unwrap(module: Any) -> Any:
    return getattr(module, "module", module)


def lr_at(step_in_phase: int, phase_steps: int, cfg: LearnerConfig, iteration: int = 0) -> float:
    """Linear warmup then cosine to 0 over one phase (an iteration, or the whole async run)."""
    peak = cfg.lr_by_iteration[iteration] if cfg.lr_by_iteration else cfg.lr
    phase_steps = max(1, phase_steps)
    warmup = int(cfg.warmup_ratio * phase_steps)
    if step_in_phase < warmup:
        return peak * (step_in_phase + 1) / (warmup + 1)
    if cfg.lr_schedule == "constant":
        return peak
    progress = min(1.0, (step_in_phase - warmup) / max(1, phase_steps - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this x86 CPU multiplies bfloat16 natively (there, a bf16 GEMM ran 2.5-4x faster than
    fp32; without it bf16 is emulated and slower)."""
    flags = cpu_flags(cpuinfo)
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_autocast(cfg: LearnerConfig) -> bool:
    if torch.cuda.is_available() or cfg.autocast == "off":
        return False
    return cfg.autocast == "bf16" or cpu_has_native_bf16()


def _float32_output_layer(model: Any, device_type: str) -> None:
    """Keep the vocabulary projection out of autocast: log-probs summed over a whole answer would
    carry bf16 rounding of every logit (~0.1 at logit scale 20) into the DPO margins."""
    head = _unwrap(model).get_output_embeddings()
    inner = head.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, enabled=False):
            return inner(x.float())

    head.forward = forward


def fuse_rms_norms(model: Any) -> int:
    """Llama-style RMSNorm layers (x * rsqrt(mean(x^2) + eps) * weight) as torch's one fused op
    instead of five elementwise passes and their saved temporaries: the same formula. For float32
    weights and activations only (the HF layer upcasts lower precisions itself, the fused op would
    not match it there). A SmolLM2 4-pair packed DPO step on 2 cores (bench_learner's batch, timed by
    an ad-hoc A/B script, two runs of 5 steps each): 5.47 -> 5.23 s. Returns how many layers use it."""
    fused = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")
                and isinstance(weight, torch.nn.Parameter) and weight.dim() == 1 and weight.dtype == torch.float32):
            module.forward = functools.partial(_fused_rms_norm, module)
            fused += 1
    return fused


def _fused_rms_norm(module: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.rms_norm(hidden_states, module.weight.shape, module.weight, module.variance_epsilon)


def prime_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's state at start-up instead of in the first step (SmolLM2: the first step's
    optimizer call took 2.05 s, later ones 0.10 s: 1 GB of moments allocated and touched).

    One step with zero gradients at lr 0 creates the state exactly as a real first step would
    (moments stay zero, weights and decay are untouched: lr 0 scales every change to 0), then its
    step count goes back to 0, so the first real step is bit-for-bit that of a fresh optimizer."""
    lrs = [g["lr"] for g in optimizer.param_groups]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for g in optimizer.param_groups:
        g["lr"] = 0.0
    for p in params:
        p.grad = torch.zeros_like(p)
    try:
        optimizer.step()
    finally:
        for p in params:
            p.grad = None
        for g, lr in zip(optimizer.param_groups, lrs):
            g["lr"] = lr
    for state in optimizer.state.values():
        step = state.get("step")
        if torch.is_tensor(step):
            step.zero_()
        elif step is not None:
            state["step"] = 0


# DDP + LoRA: base and adapter weights, unmerged (files of this stem; legacy: lora_module.pt)
LORA_MODULE = "lora_module"
OPTIMIZER = "optimizer"


class TrainEngine:
    """One interface over DeepSpeed and DDP: forward, backward+step, set_lr, full state dict."""

    def __init__(self, models: Models, cfg: LearnerConfig, world_size: int,
                 precision: LearnerPrecision | None = None, device: torch.device | None = None) -> None:
        self.cfg, self.models = cfg, models
        self.device = device or torch.device("cpu")
        self.publish_dtype: torch.dtype | None = None  # what the engines serve (None: as trained)
        self.precision = precision or LearnerPrecision("float32", "bfloat16" if use_autocast(cfg) else "float32",
                                                       autocast=use_autocast(cfg))
        self.autocast = self.precision.autocast
        self.compute_dtype = getattr(torch, self.precision.compute)
        for m in (models.policy, models.reference):
            if m is None:
                continue
            if self.autocast:
                _float32_output_layer(m, self.device.type)
            elif self.device.type == "cpu":  # float32 compute on CPU (GPUs keep their own kernels)
                fuse_rms_norms(m)
        params = [p for p in models.policy.parameters() if p.requires_grad]
        # fused: one pass over each tensor instead of a chain of full-size temporaries; on CPU the
        # step of a 135M model drops from ~1 s to ~0.1 s (as DeepSpeed's client optimizer too)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        if cfg.engine == "deepspeed":
            import deepspeed

            half = self.precision.weights if self.precision.weights != "float32" else None
            ds_config = {
                "train_micro_batch_size_per_gpu": cfg.batch_size,
                "gradient_accumulation_steps": 1,
                "gradient_clipping": cfg.grad_clip,
                # contiguous gradients fight GPU memory fragmentation; on CPU they are one more
                # copy of every gradient per step (measured: ~1 s of a ~5.5 s SmolLM2 step)
                "zero_optimization": {"stage": cfg.zero_stage,
                                      "contiguous_gradients": self.device.type == "cuda"},
                # torch's AdamW: on CPU DeepSpeed's own optimizers need a JIT C++ build first.
                "zero_allow_untested_optimizer": True,
                # 16-bit module, fp32 master weights in DeepSpeed's optimizer
                "bf16": {"enabled": half == "bfloat16"},
                "fp16": {"enabled": half == "float16"},
            }
            self.module, self.ds_optimizer, _, _ = deepspeed.initialize(
                model=models.policy, optimizer=self.optimizer, config=ds_config)
        else:
            self.module = models.policy
            if world_size > 1:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.module = torch.nn.parallel.DistributedDataParallel(models.policy, device_ids=ids)
            prime_optimizer(self.optimizer)
        # True while AdamW's state equals a fresh optimizer's (a checkpoint then skips writing it)
        self.optimizer_fresh = True

    def _autocast(self) -> Any:
        # backward runs outside the context, in the dtypes the forward recorded
        return torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.autocast)

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def forward_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._autocast():
            return batch_logits(self.module, batch)

    def reference_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), self._autocast():
            if self.models.reference is not None:
                return batch_logits(self.models.reference, batch)
            with _unwrap(self.module).disable_adapter():  # LoRA: base model = reference
                return self.forward_logits(batch)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def backward_step(self, loss: torch.Tensor) -> float:
        """Backward, clip, step; returns the gradient norm before clipping (nan if unknown)."""
        self.backward(loss, first=True, last=True)
        return self.step()

    def backward(self, loss: torch.Tensor, first: bool, last: bool) -> None:
        """One pass's backward of a step made of several (micro-batches): gradients add up until
        ``last``, where they are reduced across workers once (DDP: no_sync before; DeepSpeed:
        the accumulation boundary is ours to mark, its config counts one pass per step)."""
        if self.cfg.engine == "deepspeed":
            self.module.set_gradient_accumulation_boundary(last)
            self.module.backward(loss)
            return
        if first:
            self.optimizer.zero_grad(set_to_none=True)
        sync = last or not isinstance(self.module, torch.nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if sync else self.module.no_sync():
            loss.backward()

    def step(self) -> float:
        """Clip and step after the last backward; the gradient norm before clipping (nan if unknown)."""
        if self.cfg.engine == "deepspeed":
            self.module.set_gradient_accumulation_boundary(True)
            self.module.step()
            self.optimizer_fresh = False
            norm = self.module.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer_fresh = False
        return float(norm)

    def reset_optimizer(self) -> None:
        """AdamW as a fresh optimizer holds it (an iteration that is a new DPO run): moments and
        step counts zeroed in place, which is exactly the state ``prime_optimizer`` leaves, without
        handing out a gigabyte of fresh memory again. DeepSpeed's ZeRO optimizers keep their
        moments in the same torch AdamW (over their fp32 partitions): zeroed the same way."""
        with torch.no_grad():
            for state in self.optimizer.state.values():
                for key, value in state.items():
                    if torch.is_tensor(value):
                        value.zero_()
                    elif key == "step":
                        state[key] = 0
        self.optimizer_fresh = True

    def skips_optimizer_state(self) -> bool:
        """Whether a checkpoint taken now needs no optimizer file: the state is a fresh optimizer's,
        which every start builds anyway (DeepSpeed's checkpoint also carries the module: kept)."""
        return self.optimizer_fresh and self.cfg.engine != "deepspeed"

    def save_optimizer(self, directory: Path) -> None:
        """Optimizer state for an exact resume (DeepSpeed: its own sharded format; collective)."""
        if self.cfg.engine == "deepspeed":
            self.module.save_checkpoint(str(directory), tag="latest", save_latest=False)
        elif not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            directory.mkdir(parents=True, exist_ok=True)
            # written past the page cache: see tensor_io (a buffered torch.save of SmolLM2's 1 GB
            # Adam state took 12-15 s on a VM slow to hand out fresh memory)
            if not self.skips_optimizer_state():
                save_state(self.optimizer.state_dict(), directory, OPTIMIZER)
            if self.cfg.lora_rank > 0:  # see load_optimizer
                save_state(_unwrap(self.module).state_dict(), directory, LORA_MODULE)

    def load_optimizer(self, directory: Path, fresh: bool = False) -> None:
        """Optimizer state, and with LoRA the module itself: a checkpoint's model.safetensors holds
        the MERGED weights (what engines and users load), but a LoRA reference is the base model
        under the adapter; resumed from merged weights, base and reference would become the stopped
        policy. DeepSpeed's checkpoint carries the module (base + adapter) anyway; DDP's a copy."""
        if self.cfg.engine == "deepspeed":
            self.module.load_checkpoint(str(directory), tag="latest", load_module_strict=True,
                                        load_optimizer_states=True, load_lr_scheduler_states=False)
            return
        if fresh:  # saved as a fresh optimizer's state: the one this engine started with
            self.reset_optimizer()
        else:
            self.optimizer.load_state_dict(_load(directory, OPTIMIZER))
            self.optimizer_fresh = False
        if self.cfg.lora_rank > 0:
            _unwrap(self.module).load_state_dict(_load(directory, LORA_MODULE))

    def full_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Full (merged, gathered) HF-named weights on CPU, optionally cast to ``dtype`` (what the
        engines serve). Collective under ZeRO-3: call on every rank."""
        from selm_ray.learner.gather import full_state_dict

        return full_state_dict(_unwrap(self.module), self.cfg.lora_rank > 0, dtype)

    def publish_state_dict(self) -> dict[str, torch.Tensor]:
        """What the engines load: the full weights in the publish dtype, a tied output layer left
        out (vLLM skips it and ties it to the embedding again; sent, it was ~113 MB more per
        publication for SmolLM2, 17% of the put). Collective under ZeRO-3."""
        from selm_ray.learner.gather import without_tied_copies

        return without_tied_copies(_unwrap(self.module), self.full_state_dict(self.publish_dtype))

    def adapter(self, dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The LoRA adapter alone (tensors, peft config as JSON), what ``lora_publish: adapter``
        sends. Collective under ZeRO-3: call on every rank."""
        from selm_ray.engines.adapters import adapter_config
        from selm_ray.learner.gather import adapter_state_dict

        peft_model = _unwrap(self.module)
        return adapter_state_dict(peft_model, dtype), adapter_config(peft_model.peft_config[peft_model.active_adapter])


def merged_lora_state_dict(peft_model: Any) -> dict[str, torch.Tensor]:
    """Base weights with the LoRA deltas folded in, under the base model's own key names.

    Out of place: peft's merge_adapter/unmerge_adapter add and subtract the delta IN the base
    weights, and the rounding left behind moves the reference (the base) at every publication."""
    from selm_ray.learner.gather import full_state_dict

    return full_state_dict(peft_model, lora=True)
