"""Continuing an interrupted run from its newest complete checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from selm_ray.core.buffer import PAIRS_FILE, rewind
from selm_ray.core.jsonl import read_log
from selm_ray.learner import checkpoint
from selm_ray.learner.checkpoint import ResumeError
from selm_ray.run.context import RunContext


# Keys a resumed run must keep: they decide which prompts each iteration gets (the resumed run skips
# the prompts already judged by position and id), or what the checkpoint's optimizer and reference
# were trained for. Everything else (iterations, cluster size, eval, lr...) may change on resume.
FIXED_ON_RESUME = (
    "data.source", "data.split", "data.shuffle_seed", "data.max_prompts", "data.on_bad_row",
    "data.extra_candidates", "schedule.mode", "schedule.prompts_per_iteration", "run.seed",
    "create.enabled", "learner.loss", "learner.beta", "learner.alpha", "learner.lora_rank",
    "learner.engine", "model.path",
)


def resume_conflicts(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for each FIXED_ON_RESUME key the new config changes. model.path is
    compared only without an SFT stage (with one, the saved config holds the SFT output)."""
    def get(d: dict[str, Any], key: str) -> Any:
        for part in key.split("."):
            d = d.get(part, {}) if isinstance(d, dict) else {}
        return d

    sft = get(saved, "sft.enabled") is True or get(new, "sft.enabled") is True
    return [f"{k}: {get(saved, k)!r} -> {get(new, k)!r}" for k in FIXED_ON_RESUME
            if get(saved, k) != get(new, k) and not (k == "model.path" and sft)]


def check_resume_config(run_dir: Path, new: dict[str, Any]) -> None:
    """Refuse (ResumeError, naming the keys) a config that would re-slice the prompts or change
    the loss of the run in ``run_dir``."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return  # a run folder from before configs were saved: nothing to compare with
    conflicts = resume_conflicts(yaml.safe_load(path.read_text()) or {}, new)
    if conflicts:
        raise ResumeError(f"{run_dir}: --resume with a config that changes what this run was started "
                          f"with ({path}): " + "; ".join(conflicts) + ". Resume with the same values "
                          "(other keys, e.g. schedule.iterations or cluster.*, may change) or start a new run.")


def prepare_resume(ctx: RunContext) -> str:
    """Set the context's start version and iteration from the newest complete checkpoint, rewind
    the buffer's cursor to it, and return the checkpoint folder (the weights to start from)."""
    ckpt_home = checkpoint.home(ctx.run_dir, ctx.cfg.run.storage_path)
    ckpt = checkpoint.latest(ckpt_home)
    if ckpt is None:
        raise ResumeError(f"{ckpt_home}: no complete checkpoint under checkpoints/ to resume from")
    state = checkpoint.load_state(ckpt)
    rewound = rewind(ctx.run_dir / "buffer", state["buffer_cursor"])
    ctx.start_version, ctx.start_iteration = state["version"], state["iteration"]
    ctx.log(f"resuming from {ckpt} (step {state['step']}, policy v{state['version']}, "
            f"iteration {state['iteration'] + 1}); {rewound} pair(s) served after it will be served again")
    return str(ckpt)


def already_judged(ctx: RunContext) -> set[str]:
    """Prompts of the current policy version that already have a pair (not generated again)."""
    rows = read_log(ctx.run_dir / "buffer" / PAIRS_FILE).rows
    return {r["prompt_id"] for r in rows if ctx.cfg.schedule.mode == "async"
            or r["chosen_version"] == ctx.start_version}
