"""Peer benchmark: TRL's OnlineDPOTrainer / XPOTrainer doing the same work as our loop, on CPU.

    python -m selm_ray.ops.peer_trl --algo online_dpo|xpo --model ALIAS_OR_DIR --reward-model ALIAS_OR_DIR
        [--pairs 32] [--prompts-per-step 4] [--max-new-tokens 64] [--prompts-file JSONL] [--threads N]
        [--out DIR]

The last stdout line is one JSON object (see ``run_trl``), so a parent process can run this in a
subprocess and parse it. Settings are TRL's fastest plain-PyTorch path: no vLLM, KV-cache
generation (gradient checkpointing off), float32, no eval, checkpoints, logging or integrations.
One step trains ``prompts_per_step`` prompts, two sampled completions each, ranked by the reward
model: one preference pair per prompt.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ALGOS = ("online_dpo", "xpo")
MISSING_TRL = "TRL is not installed: pip install 'selm-ray[bench]' (trl==1.13.0)"


class PeerTrlError(RuntimeError):
    """The peer cannot run here (TRL missing, a step went untimed); the message says why."""


def _check_args(algo: str, prompts: list[str], pairs: int, prompts_per_step: int, max_new_tokens: int) -> None:
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {algo!r}")
    if prompts_per_step <= 0:
        raise ValueError(f"prompts_per_step must be positive, got {prompts_per_step}")
    if pairs <= 0 or pairs % prompts_per_step:
        raise ValueError(f"pairs ({pairs}) must be a positive multiple of prompts_per_step ({prompts_per_step})")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not prompts:
        raise ValueError("prompts is empty")


def _trl_classes(algo: str) -> tuple[type, type, str]:
    """(trainer, config, version); both trainers live under trl.experimental in 1.13."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the warning would only clutter the output
    try:
        import trl
    except ImportError:
        raise PeerTrlError(MISSING_TRL) from None
    if algo == "xpo":
        from trl.experimental.xpo import XPOConfig, XPOTrainer
        return XPOTrainer, XPOConfig, trl.__version__
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
    return OnlineDPOTrainer, OnlineDPOConfig, trl.__version__


def _step_timer() -> Any:
    """A callback stamping on_step_begin / on_step_end.

    Step hooks, not on_train_begin/on_train_end: those also take in the dataloader and optimizer
    set-up and the end-of-training bookkeeping, while the step hooks bracket exactly a step's work
    (generation, scoring, forwards, backward, optimizer step).
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.begins: list[float] = []
            self.ends: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return StepTimer()


def _config(config_cls: type, algo: str, *, steps: int, prompts_per_step: int, max_new_tokens: int,
            beta: float, alpha: float, lr: float, temperature: float, out_dir: str, seed: int,
            bf16: bool = False, top_p: float = 1.0) -> Any:
    extra = {"alpha": alpha} if algo == "xpo" else {}
    return config_cls(
        output_dir=out_dir, max_steps=steps, num_train_epochs=1,
        per_device_train_batch_size=prompts_per_step, gradient_accumulation_steps=1,
        learning_rate=lr, beta=beta, loss_type="sigmoid", max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, use_vllm=False,
        # TRL's config defaults to checkpointing on (and then generates without the KV cache) and bf16 on.
        # bf16 (--bf16): accelerate's CPU autocast around the training forward, weights float32
        gradient_checkpointing=False, bf16=bf16, fp16=False, use_cpu=True,
        # Given order, each prompt once when pairs == len(prompts): the caller decides the work.
        train_sampling_strategy="sequential", seed=seed, data_seed=seed,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, **extra,
    )


def _load(model_dir: str, reward_model_dir: str) -> tuple[Any, Any, Any, Any]:
    """Policy, its tokenizer, reward model, its tokenizer: all float32 on CPU, loaded here so that TRL's
    own string loading (dtype "auto", device_map "auto") cannot pick anything else."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(reward_model_dir, num_labels=1, dtype=torch.float32)
    return policy, AutoTokenizer.from_pretrained(model_dir), reward, AutoTokenizer.from_pretrained(reward_model_dir)


def run_trl(algo: str, model_dir: str, reward_model_dir: str, prompts: list[str], *, pairs: int = 32,
            prompts_per_step: int = 4, max_new_tokens: int = 64, beta: float = 0.1, alpha: float = 1e-3,
            lr: float = 1e-6, temperature: float = 0.7, threads: int | None = None, out_dir: str,
            seed: int = 0, bf16: bool = False, top_p: float = 1.0) -> dict:
    """Train ``pairs // prompts_per_step`` TRL steps; loop time runs from the first step's start to the
    last step's end, start-up (imports, loading, trainer construction) is reported apart."""
    _check_args(algo, prompts, pairs, prompts_per_step, max_new_tokens)
    t0 = time.perf_counter()
    import torch

    if threads:
        torch.set_num_threads(threads)
    trainer_cls, config_cls, version = _trl_classes(algo)
    from datasets import Dataset

    steps = pairs // prompts_per_step
    chosen = [prompts[i % len(prompts)] for i in range(pairs)]  # cycle a short list rather than fail
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in chosen]})
    policy, tok, reward, reward_tok = _load(model_dir, reward_model_dir)
    args = _config(config_cls, algo, steps=steps, prompts_per_step=prompts_per_step,
                   max_new_tokens=max_new_tokens, beta=beta, alpha=alpha, lr=lr, temperature=temperature,
                   out_dir=out_dir, seed=seed, bf16=bf16, top_p=top_p)
    timer = _step_timer()
    trainer = trainer_cls(model=policy, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tok, reward_processing_classes=reward_tok, callbacks=[timer])
    trainer.train()
    total = time.perf_counter() - t0
    if len(timer.begins) != steps or len(timer.ends) != steps:
        raise PeerTrlError(f"expected {steps} TRL steps, timed {len(timer.begins)} starts / {len(timer.ends)} ends")
    loop = timer.ends[-1] - timer.begins[0]
    done = steps * prompts_per_step
    return {
        "system": f"trl-{algo}", "trl_version": version, "pairs": done, "steps": steps,
        "loop_seconds": loop, "pairs_per_second": done / loop,
        "startup_seconds": timer.begins[0] - t0, "total_seconds": total,
        "seconds_per_step": [e - b for b, e in zip(timer.begins, timer.ends)],
        "torch_threads": torch.get_num_threads(), "max_new_tokens": max_new_tokens,
        "prompts_per_step": prompts_per_step,
    }


def _read_prompts(path: str | None) -> list[str]:
    """The last user turn of each row, read by our own loader so both systems see the same prompts."""
    from selm_ray.core.data import load_prompts, seed_prompts_path

    records, _ = load_prompts(str(path or seed_prompts_path()))
    users = [[m["content"] for m in r.messages if m["role"] == "user"] for r in records]
    return [u[-1] for u in users if u]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selm_ray.ops.peer_trl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", required=True, choices=ALGOS)
    p.add_argument("--model", required=True, help="alias or local HF folder of the policy")
    p.add_argument("--reward-model", required=True, help="alias or local HF folder of the reward model")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: none, TRL's default)")
    p.add_argument("--prompts-file", default=None, help="JSONL of prompts (default: the seed prompts)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast (weights stay float32)")
    p.add_argument("--out", default="runs/peer_trl")
    a = p.parse_args(argv)
    if a.pairs <= 0 or a.prompts_per_step <= 0 or a.pairs % a.prompts_per_step:
        p.error(f"--pairs ({a.pairs}) must be a positive multiple of --prompts-per-step ({a.prompts_per_step})")
    if a.max_new_tokens <= 0:
        p.error(f"--max-new-tokens must be positive, got {a.max_new_tokens}")
    if not 0.0 < a.top_p <= 1.0:
        p.error(f"--top-p must be in (0, 1], got {a.top_p}")
    from selm_ray.core.data import DataError
    from selm_ray.engines.models import ModelError, resolve_model

    out = Path(a.out) / a.algo
    try:  # Trainer prints its own metrics dict: keep stdout for the one JSON line
        with contextlib.redirect_stdout(sys.stderr):
            model, reward_model = resolve_model(a.model), resolve_model(a.reward_model)
            result = run_trl(a.algo, model, reward_model, _read_prompts(a.prompts_file), pairs=a.pairs,
                             prompts_per_step=a.prompts_per_step, max_new_tokens=a.max_new_tokens,
                             beta=a.beta, alpha=a.alpha, lr=a.lr, temperature=a.temperature,
                             threads=a.threads, out_dir=str(out), seed=a.seed, bf16=a.bf16, top_p=a.top_p)
    except (PeerTrlError, ModelError, DataError) as e:  # an actionable message, not a traceback
        print(f"peer_trl: error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
