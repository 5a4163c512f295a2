"""The run's final summary (summary.json): what was made, how fast, and by which stage."""
from __future__ import annotations

import time
from typing import Any


from selm_ray.actors import remote

from selm_ray.run.context import RunContext
from selm_ray.run.evaluation import Evaluator
from selm_ray.run.pools import PoolManager


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def build_summary(ctx: RunContext, pm: PoolManager, evaluator: Evaluator, learn_seconds: float,
                  prompt_creation: dict[str, int] | None) -> dict[str, Any]:
    c = ctx.counters
    pm.finish_syncs()
    state = remote.get(ctx.channel.state.remote(), "channel.state")
    stats = remote.get(ctx.buffer.stats.remote(), "buffer.stats")
    gen_stats, judge_stats = pm.stats()
    loop_s = time.time() - ctx.loop_t0
    busy = {"generate": sum(g["busy_seconds"] for g in gen_stats),
            "judge": sum(j.get("judge_busy_seconds", j["busy_seconds"]) for j in (gen_stats if pm.judges is pm.gens else judge_stats)),
            "learn": learn_seconds}
    return {
        "run_dir": str(ctx.run_dir), "seconds": round(time.time() - ctx.t0, 1),
        "prompts": c.prompts_done, "candidates": c.candidates, "pairs": c.pairs, "no_pair": c.no_pair,
        "judge_failure_rate": round(c.judge_failures / max(1, c.candidates), 3),
        "mean_chosen_score": _mean(c.chosen_scores), "mean_rejected_score": _mean(c.rejected_scores),
        "learner_steps": state["step"], "policy_version": state["version"],
        "checkpoint": state["checkpoint"], "learner_error": state["error"], "retries": c.retries,
        "learner_restarts": state["restarts"],
        "buffer": {"served": stats.served, "dropped_stale": stats.dropped_stale, "left": stats.size,
                   "duplicates": stats.duplicates, "lag_histogram": stats.lag_histogram,
                   "rewound": stats.rewound, "node": remote.get(ctx.buffer.node.remote(), "buffer.node")},
        "mean_chosen_tokens": stats.mean_chosen_tokens, "mean_rejected_tokens": stats.mean_rejected_tokens,
        "generators": gen_stats, "judges": judge_stats,
        # side by side: what the learner trains in and what the engines serve
        "precision": {"learner": state.get("learner_precision"),
                      "engines": sorted({s["dtype"] for s in gen_stats + judge_stats if "dtype" in s})},
        "weight_sync_seconds": [round(x, 3) for x in c.weight_sync_seconds],
        # how many of them came before train_seconds stopped (the final reload comes after it)
        "weight_syncs_in_train": ctx.train_syncs if ctx.train_syncs is not None else len(c.weight_sync_seconds),
        "pool_events": pm.events, "judge_eval": evaluator.judge_evals, "eval": evaluator.evals,
        "instruction_eval": evaluator.instruction_evals,
        "prompt_creation": prompt_creation,
        "core_plan": ctx.core_plan,
        "startup_seconds": _round(ctx.startup_seconds), "time_to_first_pair_seconds": _round(ctx.first_pair_seconds),
        "loop_seconds": round(loop_s, 1),
        # iterative schedules that ran every iteration: first dispatch -> the last policy checkpointed
        # and published, without the shutdown that follows (as a peer's last step end); else the loop
        "train_seconds": _round(ctx.train_seconds if ctx.train_seconds is not None else loop_s),
        "stage_busy_seconds": {k: round(v, 1) for k, v in busy.items()},
        "overlap_ratio": round(loop_s / max(1e-9, max(busy.values())), 3),
        "pairs_per_second": round(c.pairs / max(1e-9, loop_s), 3),
        "generator_tokens_per_second": round(sum(g["tokens"] for g in gen_stats) / max(1e-9, busy["generate"]), 1),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
