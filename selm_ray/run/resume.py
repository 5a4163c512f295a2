"""Continuing an interrupted run from its newest complete checkpoint."""
from __future__ import annotations

from selm_ray.core.buffer import PAIRS_FILE, rewind
from selm_ray.core.jsonl import read_log
from selm_ray.learner import checkpoint
from selm_ray.learner.checkpoint import ResumeError
from selm_ray.run.context import RunContext


def prepare_resume(ctx: RunContext) -> str:
    """Set the context's start version and iteration from the newest complete checkpoint, rewind
    the buffer's cursor to it, and return the checkpoint folder (the weights to start from)."""
    ckpt = checkpoint.latest(ctx.run_dir)
    if ckpt is None:
        raise ResumeError(f"{ctx.run_dir}: no complete checkpoint under checkpoints/ to resume from")
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
