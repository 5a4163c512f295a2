"""Checkpoints: an HF folder (loads in transformers and vLLM) + optimizer state + learner state.

The optimizer state is left out when it is a fresh optimizer's (``"optimizer": "fresh"`` in the
learner state): every iteration-end checkpoint of a run with ``learner.reset_optimizer``.

A LoRA checkpoint's model.safetensors holds the merged weights; its ``adapter/`` folder the adapter
alone (peft layout), which engines serving adapters load over the base model on a resume.

``learner_state.json`` holds the step, policy version, iteration and the buffer cursor (how many
rows of the buffer's consumed log existed at that moment), which is what an exact resume needs.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from selm_ray.engines.adapters import CHECKPOINT_DIR as ADAPTER_DIR, write_adapter
from selm_ray.learner.tensor_io import save_model

STATE_FILE = "learner_state.json"


class ResumeError(RuntimeError):
    """A run directory cannot be resumed; the message says why."""


OPTIMIZER_DIR = "optimizer"
REFERENCE_DIR = "reference"  # the reference model, when no other folder holds its weights


def home(run_dir: Path, storage_path: str | None) -> Path:
    """Where a run's checkpoints (and Ray Train's own state) live: the run folder on one machine,
    or ``<run.storage_path>/<run folder name>`` on a folder every node mounts (learner rank 0 writes
    checkpoints wherever Ray places it; the driver reads them on resume)."""
    return Path(storage_path).resolve() / Path(run_dir).name if storage_path else Path(run_dir)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def write_atomic(path: Path, text: str) -> None:
    """Write, fsync, rename: a reader sees the old file or the whole new one, never half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a power cut
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(engine: Any, tok: Any, state: dict[str, Any], run_dir: Path, rank: int, lora: bool,
         keep: int = 0) -> Path:
    """Collective (every rank calls it): full weights are gathered, optimizer shards saved."""
    out = checkpoint_dir(run_dir, state["step"])
    # "fresh": the optimizer holds a fresh one's state (an iteration start with learner.reset_optimizer)
    # and no file is written for it; a resume starts a fresh optimizer, exactly what the run had here
    state = {**state, "optimizer": "fresh" if engine.skips_optimizer_state() else "saved"}
    sd = engine.full_state_dict()
    adapter = engine.adapter() if lora else None  # collective too

    def weights() -> None:
        base = engine.models.policy.get_base_model() if lora else engine.models.policy
        save_model(base, out, sd)
        if adapter is not None:  # what engines serving adapters resume with, over the base model
            write_adapter(out / ADAPTER_DIR, *adapter)
        tok.save_pretrained(out)

    if rank == 0 and engine.cfg.engine != "deepspeed":
        # two files written at once: the disk takes two direct writes in flight faster than one
        # (tensor_io); DeepSpeed's save is a collective of every rank, kept apart from threads
        with ThreadPoolExecutor(1, thread_name_prefix="optimizer") as pool:
            optimizer = pool.submit(engine.save_optimizer, out / OPTIMIZER_DIR)
            weights()
            optimizer.result()
    else:
        engine.save_optimizer(out / OPTIMIZER_DIR)
        if rank == 0:
            weights()
    if rank == 0:
        # committed last, atomically: a folder without it is an interrupted checkpoint, never resumed
        write_atomic(out / STATE_FILE, json.dumps(state))
        prune(run_dir, keep)
    return out


def _complete(run_dir: Path) -> list[Path]:
    """Checkpoints whose state file reads back (oldest first); a damaged one does not count."""
    out = []
    for state in sorted((run_dir / "checkpoints").glob(f"step-*/{STATE_FILE}")):
        try:
            if isinstance(json.loads(state.read_text()), dict):
                out.append(state.parent)
        except (OSError, ValueError):
            continue
    return out


def prune(run_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` complete checkpoints (0: keep all), sparing any that a kept
    one names as its reference's folder; returns the removed."""
    done = _complete(run_dir)
    old = done[:-keep] if keep > 0 else []
    refs = {Path(load_state(c).get("ref_path") or c).resolve() for c in done[len(old):]}
    old = [p for p in old if not any(r == p.resolve() or p.resolve() in r.parents for r in refs)]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    done = _complete(run_dir)
    return done[-1] if done else None


def load_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE_FILE).read_text())


def optimizer_fresh(state: dict[str, Any]) -> bool:
    """Whether a checkpoint (its ``load_state``) left the optimizer state out as a fresh one's."""
    return state.get("optimizer") == "fresh"
