"""Checkpoints: an HF folder (loads in transformers and vLLM) + optimizer state + learner state.

``learner_state.json`` holds the step, policy version, iteration and the buffer cursor (how many
rows of the buffer's consumed log existed at that moment), which is what an exact resume needs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATE_FILE = "learner_state.json"


class ResumeError(RuntimeError):
    """A run directory cannot be resumed; the message says why."""


OPTIMIZER_DIR = "optimizer"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def save(engine: Any, tok: Any, state: dict[str, Any], run_dir: Path, rank: int, lora: bool) -> Path:
    """Collective (every rank calls it): full weights are gathered, optimizer shards saved."""
    out = checkpoint_dir(run_dir, state["step"])
    sd = engine.full_state_dict()
    engine.save_optimizer(out / OPTIMIZER_DIR)
    if rank == 0:
        base = engine.models.policy.get_base_model() if lora else engine.models.policy
        out.mkdir(parents=True, exist_ok=True)
        base.save_pretrained(out, state_dict=sd, safe_serialization=True)
        tok.save_pretrained(out)
        # written last: a folder without it is an interrupted checkpoint and is never resumed
        (out / STATE_FILE).write_text(json.dumps(state))
    return out


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    done = sorted(p.parent for p in (run_dir / "checkpoints").glob(f"step-*/{STATE_FILE}"))
    return done[-1] if done else None


def load_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE_FILE).read_text())
