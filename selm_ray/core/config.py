"""The one validated config tree for a whole run.

Pydantic models, one per component. ``load_config`` reads YAML, applies ``--set a.b=c`` overrides,
and builds the tree strictly: an unknown key, a wrong type or a bad value raises
:class:`ConfigError` naming the full key path (e.g. ``learner.alpha``). YAML files in jobs/configs
are instances of this tree; ``Config.model_json_schema()`` (``selm-ray config --schema``) describes
it for editors.
"""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config value a user wrote is wrong; the message names the key path."""


class _Invalid(ValueError):
    """Raised inside validation. ``key`` is relative to where pydantic reports the error (the
    section being validated), so :func:`_config_error` can prefix it with the section's path."""

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(f"{key}: {msg}")
        self.key, self.msg = str(key), msg


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise _Invalid(key, msg)


# ---------------------------------------------------------------------------------------------
# Strict typing, by hand. Pydantic's lax mode would turn "3" into 3 and true into 1, its strict
# mode refuses "1e-6" (a string to PyYAML) for a float, and neither speaks in key paths and choices;
# so each section checks its own leaf values first (_Section._strict), with these rules and
# messages, and pydantic then only fills in defaults and builds the objects.

# (what the message says, accepted Python types); bool is never accepted as an int or a float.
_SCALARS: dict[Any, tuple[str, tuple[type, ...]]] = {
    bool: ("true or false", (bool,)), int: ("an integer", (int,)),
    float: ("a number", (int, float)), str: ("a string", (str,)),
}


YAML_BOOLS = {False: "off", True: "on"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            _check(type(None) in args, key, "must not be null")
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):  # the first type that takes it wins
            try:
                return _coerce(value, arg, key)
            except _Invalid as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and YAML_BOOLS[value] in choices:
            value = YAML_BOOLS[value]  # YAML 1.1 reads a bare off / on as a boolean
        _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        _check(isinstance(value, list), key, f"must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp not in _SCALARS:
        raise TypeError(f"unsupported config type {tp} at {key}")  # our bug, not the user's
    if tp is float and isinstance(value, str):  # PyYAML reads "1e-6" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    what, kinds = _SCALARS[tp]
    ok = isinstance(value, kinds) and (tp is bool or not isinstance(value, bool))
    _check(ok, key, f"must be {what}, got {value!r}")
    return float(value) if tp is float else value


class _Section(BaseModel):
    # extra="forbid" only marks the schema closed (additionalProperties: false): _strict has
    # already rejected unknown keys with a better message.
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _strict(cls, data: Any) -> Any:
        if data is None:  # `section:` with nothing under it: all defaults
            return {}
        if not isinstance(data, dict):
            raise _Invalid("", f"must be a mapping, got {type(data).__name__}")
        names = list(cls.model_fields)
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise _Invalid(unknown[0], f"unknown key (valid keys here: {', '.join(names)})")
        out = dict(data)
        for name, info in cls.model_fields.items():  # in field order: the first bad field is reported
            tp = info.annotation
            if name in data and not (isinstance(tp, type) and issubclass(tp, BaseModel)):
                out[name] = _coerce(data[name], tp, name)  # (sections check themselves)
        return out

    @model_validator(mode="after")
    def _checked(self) -> _Section:
        self._check_values()
        return self

    def _check_values(self) -> None:
        """Checks of values against each other, once the fields are built; raise through _check
        with the key relative to this section."""


def _config_error(e: ValidationError) -> ConfigError:
    """The first error (fields are validated in order and each section stops at its first
    problem, so this is the one the user meets first), as ``dotted.key.path: message``."""
    err = e.errors()[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    cause = err.get("ctx", {}).get("error")
    if not isinstance(cause, _Invalid):  # pydantic's own check (should not happen after _strict)
        return ConfigError(f"{path or 'config'}: {err['msg']}")
    path = ".".join(p for p in (path, cause.key) if p)
    return ConfigError(f"{path or 'config'}: {cause.msg}")


# ---------------------------------------------------------------------------------------------
# The tree. Each field's default and documentation live here, once; the descriptions land in the
# JSON schema. Each section's _check_values runs once its fields are built (mode="after").


class ModelConfig(_Section):
    """The model the run starts from."""
    path: str = Field("smollm2-135m-instruct", description=(
        "A prepared alias (see `selm-ray model list`), a local Hugging Face folder, or a hub id."))
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 on GPU.")
    max_model_len: int = Field(2048, description="Context length (tokens) of the inference engines, >= 64.")

    def _check_values(self) -> None:
        _check(bool(self.path.strip()), "path", "must name a model")
        _check(self.max_model_len >= 64, "max_model_len", f"must be >= 64, got {self.max_model_len}")


class DataConfig(_Section):
    """Where the prompts come from."""
    source: str = Field("seed", description=(
        '"seed" = the bundled hand-written instructions; else a .jsonl/.parquet file or a datasets name.'))
    split: str = Field("train", description="Dataset split to read.")
    max_prompts: int | None = Field(None, description="Use at most this many prompts; null: all.")
    on_bad_row: Literal["error", "skip"] = Field("error", description="What an unusable row does.")
    extra_candidates: Literal["ignore", "use"] = Field("ignore", description=(
        "UltraFeedback-style chosen/rejected columns: ignore them, or judge them with the samples."))
    shuffle_seed: int = Field(0, description="Seed of the prompt order.")

    def _check_values(self) -> None:
        _check(self.max_prompts is None or self.max_prompts > 0, "max_prompts", "must be > 0 or null")


class GenerationConfig(_Section):
    """Sampling of the candidate answers."""
    num_candidates: int = Field(2, description="Sampled answers per prompt (>= 2 to form a pair).")
    temperature: float = Field(0.7, description="Sampling temperature.")
    top_p: float = Field(0.9, description="Nucleus sampling, in (0, 1].")
    max_new_tokens: int = Field(64, description="Length limit of each answer.")
    ref_response: bool = Field(True, description=(
        "Also generate one greedy answer y_ref per prompt; required by the selm loss."))
    ref_in_candidates: bool = Field(False, description=(
        "y_ref also stands as one of the num_candidates answers the judge ranks (num_candidates - 1 "
        "are sampled): XPO's shape, whose pair is a policy sample against a reference answer. A pair "
        "that holds y_ref scores it once in the learner, not twice, and a prompt decodes one answer "
        "fewer. false: num_candidates sampled answers with y_ref apart (the SELM paper's shape)."))
    prompts_per_call: int = Field(0, description=(
        "Prompts per generation call. 0: learner.batch_size when stages overlap (the learner's first "
        "step waits for one call), else an iteration's prompts split over the generators, at most 64 "
        "per call (a CPU engine made ~1.9x the tokens/s with 32 prompts a call as with 4)."))

    def _check_values(self) -> None:
        _check(self.num_candidates >= 2, "num_candidates", f"need >= 2 to form a pair, got {self.num_candidates}")
        _check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.prompts_per_call >= 0, "prompts_per_call", f"must be >= 0 (0: auto), got {self.prompts_per_call}")


class JudgeConfig(_Section):
    """Who scores the candidates."""
    kind: Literal["self", "reward_model", "function", "pairwise_rm", "pairwise_llm"] = Field("self", description=(
        "self: the policy judges its own answers (LLM-as-a-Judge); reward_model: an HF classifier; "
        "function: `module:function(prompt, response) -> float | None` (verifiable rewards); "
        "pairwise_rm: a PairRM-layout ranker compares candidates two at a time (the SELM paper's "
        "oracle); pairwise_llm: the policy picks the better of two answers (A/B log-probs). A "
        "pairwise judge scores each candidate by its mean win probability."))
    mode: Literal["generate", "expected"] = Field("expected", description=(
        "generate: k sampled written verdicts, parsed; expected: probability-weighted score digit."))
    num_samples: int = Field(3, description="Verdicts per answer (mode generate).")
    min_valid: int = Field(1, description="Parsable verdicts an answer needs, in 1..num_samples.")
    temperature: float = Field(0.7, description="Sampling temperature of the verdicts.")
    max_new_tokens: int = Field(160, description="Length limit of each verdict.")
    force_score: bool = Field(False, description=(
        "mode generate: a verdict that ends without a usable 'Score: N' line is continued with "
        "'Score: ' and the judge picks the digit 0-5 itself (constrained decoding, sampled at the "
        "temperature above) instead of the verdict counting as failed. Off in the papers' "
        "setting; on in --dry-run, where a random tiny model never writes the format."))
    follow_policy: bool = Field(True, description="Self-judge takes each new policy version (Self-Rewarding).")
    colocate: bool = Field(False, description=(
        "Self-judge inside each generator's engine instead of a separate judge pool: one engine "
        "(weights + KV cache) less per generator; generation and judging then share that engine."))
    reward_model: str | None = Field(None, description="The reward model (kind reward_model).")
    function: str | None = Field(None, description=(
        "kind function: e.g. selm_ray.core.judging.functions:math_answer."))
    pairwise_mode: Literal["all", "anchor"] = Field("all", description=(
        "Pairwise judges: all compares every ordered pair of candidates (N(N-1) comparisons per "
        "prompt); anchor compares each candidate with one anchor in both orders, y_ref when present "
        "(2N), else candidate 0 (2(N-1))."))
    ranker: str | None = Field(None, description=(
        "kind pairwise_rm: a folder laid out like llm-blender's PairRM (see engines/pairrm.py), "
        "or the alias tiny-pairrm."))
    eval_data: str | None = Field(None, description=(
        "Labelled pairs (chosen/rejected) the judge pool is scored on after every iteration "
        "(accuracy, tie and failure rates in metrics.jsonl, event judge_eval); null: off."))
    eval_max_pairs: int = Field(64, description="At most this many pairs of eval_data.")
    min_margin: float = Field(0.0, description="A best-worst gap below this is treated as a tie (no pair).")
    pair_rule: Literal["best_worst", "best_vs_rest"] = Field("best_worst", description=(
        "best_worst: one pair per prompt, best vs worst (both papers); best_vs_rest: the best "
        "candidate against every candidate scored at least min_margin below it, up to N-1 pairs "
        "per prompt from the same generation (worth it with a graded judge)."))
    tie_break: Literal["shorter", "first"] = Field("shorter", description=(
        "Among candidates tied on score: shorter chooses the shorter of equally best and rejects "
        "the longer of equally worst (leans against length growth); first takes the lower "
        "candidate index, length-neutral (with a graded judge, shorter can shrink answers)."))

    def _check_values(self) -> None:
        _check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        _check(1 <= self.min_valid <= self.num_samples, "min_valid",
               f"must be in 1..num_samples ({self.num_samples}), got {self.min_valid}")
        _check(self.min_margin >= 0, "min_margin", f"must be >= 0, got {self.min_margin}")
        if self.kind == "reward_model":
            _check(bool(self.reward_model), "reward_model", "required when kind is reward_model")
        if self.kind == "pairwise_rm":
            _check(bool(self.ranker), "ranker", "required when kind is pairwise_rm (a PairRM-layout folder)")
        if self.kind == "function":
            spec = self.function or ""
            _check(spec.count(":") == 1 and all(spec.split(":")), "function",
                   f"kind function needs 'package.module:function', got {self.function!r}")
        if self.force_score:
            _check(self.kind == "self" and self.mode == "generate", "force_score",
                   f"only for kind: self with mode: generate (got kind {self.kind}, mode {self.mode})")
        if self.colocate:
            _check(self.on_engine and self.follow_policy, "colocate",
                   "needs kind: self or pairwise_llm and follow_policy: true (the judge then IS the "
                   "generator's engine)")

    @property
    def on_engine(self) -> bool:
        """The judge runs on a vLLM engine holding the policy's weights (follow_policy applies)."""
        return self.kind in ("self", "pairwise_llm")

    @property
    def judge_model(self) -> str | None:
        """The model this judge loads itself (reward model or ranker, on torch); None otherwise."""
        return {"reward_model": self.reward_model, "pairwise_rm": self.ranker}.get(self.kind)


class BufferConfig(_Section):
    """The replay buffer of judged pairs between the judges and the learner."""
    capacity: int = Field(4096, description="Waiting pairs held at most; above it, `eviction` decides.")
    max_policy_lag: int = Field(2, description=(
        "A pair whose oldest generating policy version lags the learner's by more than this is never "
        "served (dropped as stale)."))
    eviction: Literal["fifo", "oldest_version"] = Field("fifo", description=(
        "Above capacity: fifo evicts the oldest waiting pair, oldest_version the pair with the oldest "
        "policy version (ties: oldest added)."))
    replay: bool = Field(False, description="Serve a pair more than once per epoch.")

    def _check_values(self) -> None:
        _check(self.capacity >= 1, "capacity", f"must be >= 1, got {self.capacity}")
        _check(self.max_policy_lag >= 0, "max_policy_lag", f"must be >= 0, got {self.max_policy_lag}")


class LearnerConfig(_Section):
    """The preference-optimization learner (Ray Train workers)."""
    loss: Literal["selm", "dpo", "ipo"] = Field("selm", description="Preference loss.")
    beta: float = Field(0.1, description="KL strength (> 0).")
    alpha: float = Field(0.001, description=(
        "SELM optimism weight. Never silently 0: selm with alpha 0 is rejected (use loss: dpo)."))
    lr: float = Field(5e-7, description="Peak learning rate.")
    lr_by_iteration: list[float] | None = Field(None, description=(
        "Per-iteration peak lr (the SELM recipe lowers it each iteration); overrides lr when set."))
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="Decay after warmup.")
    warmup_ratio: float = Field(0.1, description="Share of the steps spent warming up, in [0, 1).")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, description="Gradient norm clip.")
    reset_optimizer: bool = Field(True, description=(
        "Iterative and sequential schedules: every iteration starts with a fresh AdamW (moments and "
        "step count zero), as both papers train each iteration as a new DPO run from the previous "
        "iteration's model. Iteration-end checkpoints then hold no optimizer state (there is none "
        "to keep: 1 GB less to write per SmolLM2 checkpoint). false: the moments carry over."))
    batch_size: int = Field(4, description="Pairs per step per worker.")
    micro_batch_pairs: int = Field(0, description=(
        "Pairs per forward/backward pass inside a step (gradients accumulate over the passes, one "
        "optimizer step): the learner's activation memory follows this, not batch_size. 0: the "
        "whole step in one pass."))
    passes: int = Field(1, description=(
        "Passes over each iteration's pairs (iterative and sequential schedules): after the buffer "
        "has served them all, the learner trains on them again, reshuffled, before the iteration "
        "ends. More optimizer steps for the same generation, at the price of fitting these pairs."))
    engine: Literal["deepspeed", "ddp"] = Field("deepspeed", description="Distributed training engine.")
    autocast: Literal["off", "bf16", "auto"] = Field("off", description=(
        "CPU learner: run the transformer body's matmuls in bfloat16 (torch.autocast; weights, "
        "optimizer and the output layer stay float32). auto: bf16 when the CPU has native bf16 "
        "instructions (avx512_bf16 / amx_bf16), else off. On GPU the model is bfloat16 already."))
    zero_stage: int = Field(2, description="DeepSpeed ZeRO stage, 0..3.")
    num_workers: int = Field(1, description="Ray Train workers.")
    lora_rank: int = Field(0, description="0 = full fine-tuning.")
    lora_alpha: int = Field(16, description="LoRA alpha (when lora_rank > 0).")
    lora_publish: Literal["auto", "adapter", "merged"] = Field("auto", description=(
        "What a LoRA run sends the engines each version: adapter = only the adapter (vLLM serves it "
        "over the base with enable_lora: megabytes, not the whole model), merged = the full weights "
        "with the adapter folded in. auto: adapter where vLLM supports LoRA for the model's "
        "architecture, else merged (decided once at start, the reason printed)."))
    max_length: int = Field(1024, description="Token length limit of the learner's sequences.")
    checkpoint_every: int = Field(0, description=(
        "async: learner steps between checkpoints (iterative: each iteration)."))
    keep_checkpoints: int = Field(0, description=(
        "How many complete checkpoints to keep (the newest ones); 0 keeps all."))
    max_restarts: int = Field(2, description=(
        "Learner worker-group failures survived (Ray Train's FailureConfig): the group restarts from "
        "the newest checkpoint and the buffer serves again the pairs served since it."))
    ref_logps_from_engine: bool = Field(True, description=(
        "Take log pi_ref(y|x) from the engine that sampled y when that engine served the reference "
        "policy (the iterative schedule): no reference forward pass on the learner for those batches."))
    layout: Literal["auto", "packed", "padded"] = Field("auto", description=(
        'Batch layout: "packed" gives each pair one row holding its prompt once, followed by y_w, '
        "y_l and y_ref (each attends only to the prompt and itself): the prompt is computed once, not "
        'three times; "padded" gives every response its own row. "auto": packed on CPU, where compute '
        "is the limit; padded on GPU, where flash-attention kernels want plain causal rows."))

    def packed(self, on_gpu: bool) -> bool:
        return self.layout == "packed" or (self.layout == "auto" and not on_gpu)

    def _check_values(self) -> None:
        _check(self.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", f"must be >= 0, got {self.keep_checkpoints}")
        _check(self.max_restarts >= 0, "max_restarts", f"must be >= 0, got {self.max_restarts}")
        _check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        _check(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        _check(not (self.loss == "selm" and self.alpha == 0), "alpha",
               "is 0 with loss selm, which is plain DPO; set alpha > 0 or loss: dpo")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(not self.lr_by_iteration or all(x > 0 for x in self.lr_by_iteration), "lr_by_iteration",
               "every entry must be > 0")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.passes >= 1, "passes", f"must be >= 1, got {self.passes}")
        _check(self.micro_batch_pairs >= 0, "micro_batch_pairs", f"must be >= 0, got {self.micro_batch_pairs}")
        _check(self.zero_stage in (0, 1, 2, 3), "zero_stage", f"must be 0..3, got {self.zero_stage}")
        _check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        _check(self.lora_rank >= 0, "lora_rank", f"must be >= 0, got {self.lora_rank}")
        _check(self.lora_publish != "adapter" or self.lora_rank > 0, "lora_publish",
               "is adapter but lora_rank is 0 (no adapter to publish); set lora_rank > 0 or lora_publish: auto")


class ScheduleConfig(_Section):
    """How generation, judging and training take turns."""
    mode: Literal["iterative", "async", "sequential"] = Field("iterative", description=(
        "iterative: the papers' T iterations, stages overlapped; async: continuous online training; "
        "sequential: iterative without overlap (generate all, judge all, then train): a baseline."))
    iterations: int = Field(2, description="Number of iterations T.")
    prompts_per_iteration: int = Field(32, description="Prompts generated per iteration.")
    sync_every: int = Field(1, description="Learner steps between weight publications (async mode).")
    ref_update_every: int = Field(0, description="Learner steps between reference refreshes (async); 0 = never.")
    overlap: Literal["auto", "on", "off"] = Field("auto", description=(
        "iterative: whether generation, judging and training of an iteration run at the same time. "
        "auto: overlap when each stage can keep cores of its own (or runs on GPUs), else take turns "
        "with all the cores (the pairs and weights are the same either way; the plan and its reason "
        "are printed at start and kept in summary.json as core_plan)."))

    @property
    def takes_turns(self) -> bool:
        """Generate all, judge all, then train, per iteration (sequential, or iterative without overlap)."""
        return self.mode == "sequential" or (self.mode == "iterative" and self.overlap == "off")

    def _check_values(self) -> None:
        _check(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
        _check(self.prompts_per_iteration >= 1, "prompts_per_iteration",
               f"must be >= 1, got {self.prompts_per_iteration}")
        _check(self.sync_every >= 1, "sync_every", f"must be >= 1, got {self.sync_every}")
        _check(self.ref_update_every >= 0, "ref_update_every", f"must be >= 0, got {self.ref_update_every}")


class ClusterConfig(_Section):
    """Ray cluster, pool sizes and per-actor resources."""
    address: str | None = Field(None, description="null: start a local Ray; else an existing cluster's address.")
    num_generators: int = Field(1, description="Generator actors (each one inference engine).")
    num_judges: int = Field(1, description="Judge actors.")
    generator_cpus: float = Field(1.0, description="Ray CPUs per generator.")
    judge_cpus: float = Field(1.0, description="Ray CPUs per judge.")
    learner_cpus: float = Field(1.0, description="Ray CPUs per learner worker.")
    generator_gpus: float = Field(0.0, description="GPUs per generator.")
    judge_gpus: float = Field(0.0, description="GPUs per judge.")
    learner_gpus: float = Field(0.0, description="GPUs per learner worker.")
    threads_per_actor: int = Field(0, description=(
        "Real torch/OMP threads each generator/judge may use; 0: planned from the cores (all of them "
        "when stages take turns, one each when they overlap)."))
    learner_threads: int = Field(0, description=(
        "Torch threads per learner worker; 0: planned (all the cores when stages take turns, the cores "
        "the engines leave when they overlap)."))
    kv_cache_gib: float = Field(1.0, description="VLLM_CPU_KVCACHE_SPACE per engine.")
    cpu_engine_compile: bool = Field(False, description=(
        "CPU engines run vLLM's torch.compile'd model instead of eager: ~13% faster generation "
        "(SmolLM2, 2 cores). The first start on a machine compiles (~70 s) and saves it under "
        "~/.cache/vllm; a later start loads it (~7 s more than eager), so a short run can lose and "
        "a long one gains. Needs a C++ compiler on the engine's node. GPU engines always compile."))
    keep_freed_memory: bool = Field(True, description=(
        "CPU engines and learner workers keep the memory they free for their next allocations "
        "(glibc: no per-block mmap, no trimming) instead of handing it back to the kernel: on VMs "
        "that reclaim free guest pages, memory touched again costs seconds per GB (see core/cores.py)."))
    huge_pages: bool = Field(True, description=(
        "CPU engines and learner workers back torch's large tensors (>= 2 MB) with transparent huge "
        "pages (torch's THP_MEM_ALLOC_ENABLE: 2 MB-aligned, madvise'd; the kernel's THP mode must be "
        "madvise or always): fewer page faults and TLB misses when weights are copied and published. "
        "Costs up to ~0.5 GiB more peak memory (see core/cores.py)."))
    generator_slot: str | None = Field(None, description=(
        "Custom resource (one unit per actor / learner worker) that places each pool on its own node "
        "group, e.g. generator_slot on the generator nodes (see cluster/); null: anywhere."))
    judge_slot: str | None = Field(None, description="Like generator_slot, for the judge pool.")
    learner_slot: str | None = Field(None, description="Like generator_slot, for the learner workers.")
    tensor_parallel_size: int = Field(1, description="vLLM tensor-parallel size of each engine.")
    placement_timeout_s: float = Field(600.0, description=(
        "At start, how long to wait for resources the cluster has but other work holds (or, with "
        "wait_for_nodes, for nodes an autoscaler may add) before failing with what does not fit."))
    wait_for_nodes: bool = Field(False, description=(
        "An autoscaler may add nodes: a run that does not fit the nodes there are waits (up to "
        "placement_timeout_s) instead of failing at once."))
    call_timeout_s: float = Field(300.0, description=(
        "Bound on each control call to an actor (channel, buffer, stats, a weight hand-over): past "
        "it the run stops with an error naming the call, instead of hanging."))
    work_timeout_s: float = Field(1800.0, description=(
        "Bound on each work call (a batch of generation or judging, an engine starting, an "
        "evaluation): past it the member is killed (Ray restarts or the pool replaces it) and its "
        "work is re-sent; an evaluation past it is an error naming it."))
    start_timeout_s: float = Field(900.0, description=(
        "Bound on an engine's start (model load, warm-up) at the run's start: past it, an error "
        "naming the actor."))

    def _check_values(self) -> None:
        _check(self.placement_timeout_s >= 0, "placement_timeout_s", f"must be >= 0, got {self.placement_timeout_s}")
        for key in ("call_timeout_s", "work_timeout_s", "start_timeout_s"):
            _check(getattr(self, key) > 0, key, f"must be > 0 seconds, got {getattr(self, key)}")
        _check(self.num_generators >= 1, "num_generators", f"must be >= 1, got {self.num_generators}")
        _check(self.num_judges >= 1, "num_judges", f"must be >= 1, got {self.num_judges}")
        for name in ("generator_cpus", "judge_cpus", "learner_cpus", "kv_cache_gib"):
            _check(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        _check(self.threads_per_actor >= 0, "threads_per_actor", f"must be >= 0 (0: planned), got {self.threads_per_actor}")
        _check(self.learner_threads >= 0, "learner_threads", f"must be >= 0 (0: planned), got {self.learner_threads}")


class EvalConfig(_Section):
    """After every iteration: the new policy vs the starting one on a prompt set (greedy answers,
    judged by the judge pool): win/tie/loss and lengths in metrics.jsonl (event eval)."""
    prompts: str | None = Field(None, description=".jsonl/.parquet/datasets name/seed; null: off.")
    max_prompts: int = Field(32, description="At most this many prompts.")
    instructions: str | None = Field(None, description=(
        "Verifiable-instruction prompts (rows with meta.instructions, e.g. builtin:ifeval-dev): greedy "
        "answers scored by the instruction checks before training and after every iteration "
        "(prompt- and instruction-level strict/loose accuracy, 95% intervals, mean length; event "
        "instruction_eval). Never trained on. null: off."))
    instruction_max_prompts: int | None = Field(None, description="At most this many of them; null: all.")
    max_new_tokens: int | None = Field(None, description=(
        "Answer length for the evaluations; null: generation.max_new_tokens."))

    def _check_values(self) -> None:
        _check(self.max_prompts >= 1, "max_prompts", f"must be >= 1, got {self.max_prompts}")
        _check(self.instruction_max_prompts is None or self.instruction_max_prompts >= 1,
               "instruction_max_prompts", f"must be >= 1 or null, got {self.instruction_max_prompts}")
        _check(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens",
               f"must be >= 1 or null, got {self.max_new_tokens}")


class SFTConfig(_Section):
    """Supervised stage before the preference iterations (M0 -> M1): IFT and EFT data."""
    enabled: bool = Field(False, description="Run the SFT stage first.")
    ift_data: str | None = Field("builtin:ift", description=(
        ".jsonl of prompt/response (or messages); null: none."))
    eft_data: str | None = Field("builtin:eft", description=".jsonl of prompt/response/evaluation; null: none.")
    epochs: int = Field(3, description="Passes over the data.")
    lr: float = Field(5.5e-6, description="The Self-Rewarding paper's SFT learning rate.")
    batch_size: int = Field(4, description="Examples per step per learner worker.")
    max_length: int = Field(1024, description="Token limit per example (>= 16).")

    def _check_values(self) -> None:
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.max_length >= 16, "max_length", f"must be >= 16, got {self.max_length}")
        _check(bool(self.ift_data or self.eft_data), "ift_data", "SFT needs ift_data and/or eft_data")


class CreateConfig(_Section):
    """Self-instruct: the policy writes new prompts each iteration (selm_ray/core/selfinstruct.py)."""
    enabled: bool = Field(False, description="Create prompts at each iteration start.")
    mix_ratio: float = Field(0.5, description=(
        "Share of each iteration's prompts that are created (rest: data.source)."))
    shots: int = Field(8, description="Example prompts shown in each creation request.")
    temperature: float = Field(0.6, description="The Self-Rewarding paper's sampling for prompt creation.")
    top_p: float = Field(0.9, description="Nucleus sampling for prompt creation.")
    max_new_tokens: int = Field(96, description="Length limit of a created prompt (>= 8).")
    min_words: int = Field(3, description="Created prompts with fewer words are dropped.")
    max_words: int = Field(150, description="Created prompts with more words are dropped.")
    max_similarity: float = Field(0.7, description=(
        "ROUGE-L F1 at or above this to any known prompt: a near-duplicate."))
    max_attempts_factor: int = Field(4, description=(
        "Give up after factor x wanted samples (the rest: dataset prompts)."))

    def _check_values(self) -> None:
        _check(0 < self.mix_ratio <= 1, "mix_ratio", f"must be in (0, 1], got {self.mix_ratio}")
        _check(self.shots >= 1, "shots", f"must be >= 1, got {self.shots}")
        _check(1 <= self.min_words <= self.max_words, "min_words", "must be >= 1 and <= max_words")
        _check(0 < self.max_similarity <= 1, "max_similarity", f"must be in (0, 1], got {self.max_similarity}")
        _check(self.max_attempts_factor >= 1, "max_attempts_factor", "must be >= 1")
        _check(self.max_new_tokens >= 8, "max_new_tokens", "must be >= 8")


class AutoscaleConfig(_Section):
    """Resize the generator/judge pools from what the learner and buffer see (selm_ray/core/autoscale.py)."""
    enabled: bool = Field(False, description="Resize the pools while the run goes.")
    min_generators: int = Field(1, description="Smallest generator pool.")
    max_generators: int = Field(4, description="Largest generator pool.")
    min_judges: int = Field(1, description="Smallest judge pool.")
    max_judges: int = Field(4, description="Largest judge pool.")
    interval_seconds: float = Field(30.0, description="At most one change per window.")
    grow_wait_fraction: float = Field(0.3, description="Grow when the learner waited this share of a window.")
    shrink_fill_fraction: float = Field(0.9, description=(
        "Shrink when the buffer is this full (or pairs went stale)."))

    def _check_values(self) -> None:
        for pool in ("generators", "judges"):
            lo, hi = getattr(self, f"min_{pool}"), getattr(self, f"max_{pool}")
            _check(lo >= 1, f"min_{pool}", f"must be >= 1, got {lo}")
            _check(hi >= lo, f"max_{pool}", f"must be >= min_{pool} ({lo}), got {hi}")
        _check(self.interval_seconds > 0, "interval_seconds", f"must be > 0, got {self.interval_seconds}")
        for name in ("grow_wait_fraction", "shrink_fill_fraction"):
            v = getattr(self, name)
            _check(0 < v <= 1, name, f"must be in (0, 1], got {v}")


class RunConfig(_Section):
    """Name, output folder and seed of the run."""
    name: str = Field("selm", description="Run ids start with this name.")
    output_dir: str = Field("runs", description="Run directories go under this folder.")
    seed: int = Field(0, description="Random seed (sampling, training, prompt creation).")
    storage_path: str | None = Field(None, description=(
        "A folder every node mounts (NFS, a shared volume): checkpoints and Ray Train's state go to "
        "<storage_path>/<run folder name>/, since learner rank 0 may run on any node. null: the run "
        "folder (one machine). Cloud URIs are not supported: mount the bucket."))

    def _check_values(self) -> None:
        _check(not self.storage_path or "://" not in self.storage_path, "storage_path",
               f"must be a mounted folder, got the URI {self.storage_path!r} (mount the bucket and give its path)")


class Config(_Section):
    """A whole run: one section per component."""
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    autoscale: AutoscaleConfig = Field(default_factory=AutoscaleConfig)
    create: CreateConfig = Field(default_factory=CreateConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def _check_values(self) -> None:
        lrs = self.learner.lr_by_iteration
        _check(not lrs or len(lrs) >= self.schedule.iterations, "learner.lr_by_iteration",
               f"has {len(lrs or [])} entries for {self.schedule.iterations} iterations")
        if self.learner.loss == "selm":
            _check(self.generation.ref_response, "generation.ref_response",
                   "must be true with learner.loss selm (the optimism term needs y_ref)")
        _check(self.generation.ref_response or not self.generation.ref_in_candidates, "generation.ref_in_candidates",
               "needs generation.ref_response true (y_ref is the candidate it adds)")
        if self.eval.prompts:
            _check(self.schedule.mode != "async", "eval.prompts",
                   "per-iteration evaluation needs iteration boundaries; use schedule.mode iterative")
        _check(self.learner.passes == 1 or self.schedule.mode != "async", "learner.passes",
               "passes over an iteration's pairs need iterations; use schedule.mode iterative or sequential")
        if self.create.enabled:
            _check(self.schedule.mode != "async", "create.enabled",
                   "prompt creation runs at iteration starts; use schedule.mode iterative or sequential")
        a, c = self.autoscale, self.cluster
        if a.enabled:
            _check(a.min_generators <= c.num_generators <= a.max_generators, "cluster.num_generators",
                   f"{c.num_generators} is outside autoscale [{a.min_generators}, {a.max_generators}]")
            _check(c.num_judges <= a.max_judges or self.judge.colocate, "cluster.num_judges",
                   f"{c.num_judges} is above autoscale.max_judges ({a.max_judges})")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# ---------------------------------------------------------------------------------------------
# Reading, overriding and writing configs.


def config_from_dict(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise _config_error(e) from None


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty part in key path {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides (values parsed as YAML scalars) to a plain dict, in place."""
    for item in overrides:
        parts, value = _parse_override(item)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or defaults when ``path`` is None), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        data = loaded or {}
    apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
