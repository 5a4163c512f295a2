"""Benchmark (not a test): the same work overlapped vs strictly sequential, figures printed.

    python -m selm_ray.ops.bench [CONFIG] [--set k=v ...]      (default: jobs/configs/smoke.yaml)

Runs the config twice on a fresh local Ray each time: once as configured (reported as
"overlapped": iterative or async, where the core plan may still have an iterative run's stages
take turns on a small machine, see core/cores.py) and once with ``schedule.mode=sequential``
(generate all, judge all, then train, per iteration). Prints wall time of the loop (start-up excluded), busy time per stage,
overlap ratio (loop wall / busiest stage; 1.0 is perfect overlap, a sequential run is near
sum / max), the train time (first dispatch -> the last policy checkpointed and published; the
loop's wall adds the shutdown after it), pairs/s, generator tokens/s and weight-sync seconds, and where the
train time went (``parts``: generation, learner steps, iteration ends, engine reloads); writes bench.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selm_ray.core.config import load_config

FIELDS = ("loop_seconds", "train_seconds", "pairs", "pairs_per_second", "overlap_ratio", "generator_tokens_per_second",
          "learner_steps")


def _run(config: str | None, overrides: list[str], out: Path, mode: str | None) -> dict:
    from selm_ray.run.runner import train

    sets = list(overrides) + ([f"schedule.mode={mode}"] if mode else [])
    cfg = load_config(config, sets)
    return train(cfg, out / (mode or cfg.schedule.mode))


def parts(s: dict) -> dict[str, float]:
    """Where a run's train time went, in seconds: generating, judging, learner steps, iteration ends (the
    learner's reference copy, checkpoint and put, which the stages wait on) and the engine reloads timed
    before the train clock stopped (the final one comes after it), from the run's summary and its
    learner metrics; ``rest`` is train time minus their sum (dispatch and waits, negative where stages
    ran at the same time)."""
    ends = 0.0
    metrics = Path(s["run_dir"]) / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if row.get("event") == "iteration_end":
                ends += row.get("boundary_seconds", 0.0)
    busy, reloads = s["stage_busy_seconds"], s["weight_sync_seconds"][:s.get("weight_syncs_in_train")]
    out = {"generate": busy["generate"], "judge": busy["judge"], "learner_steps": busy["learn"],
           "iteration_ends": ends, "engine_reloads": sum(reloads)}
    out["rest"] = s["train_seconds"] - sum(out.values())
    return {k: round(v, 1) for k, v in out.items()}


def parts_text(p: dict[str, float]) -> str:
    """``parts`` as one line: "generate 21.3 + judge 0.1 + ..."."""
    return " + ".join(f"{k} {v:.1f}" for k, v in p.items())


def _row(name: str, s: dict) -> str:
    busy = s["stage_busy_seconds"]
    sync = s["weight_sync_seconds"]
    sync_txt = f"{max(sync):.2f}" if sync else "-"
    return (f"{name:11s} wall {s['loop_seconds']:7.1f}s (trained at {s['train_seconds']:.1f}s) | busy gen {busy['generate']:6.1f}s judge "
            f"{busy['judge']:6.1f}s learn {busy['learn']:6.1f}s | overlap {s['overlap_ratio']:5.2f} "
            f"(sum/max {sum(busy.values()) / max(busy.values()):4.2f}) | pairs {s['pairs']:4d} "
            f"{s['pairs_per_second']:.3f}/s | gen {s['generator_tokens_per_second']:.0f} tok/s | "
            f"sync max {sync_txt}s\n{'':11s} train time = {parts_text(parts(s))}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="selm-ray bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="jobs/configs/smoke.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--only", choices=["overlapped", "sequential"])
    args = p.parse_args(argv)
    out = Path(args.out)
    results = {}
    if args.only != "sequential":
        results["overlapped"] = _run(args.config, args.overrides, out, None)
    if args.only != "overlapped":
        results["sequential"] = _run(args.config, args.overrides, out, "sequential")
    print("\n== selm-ray bench:", args.config, " ".join(args.overrides))
    for name, s in results.items():
        print(_row(name, s))
    out.mkdir(parents=True, exist_ok=True)
    # pairs_trained: what the learner was served (a stale pair dropped in async is made, not trained)
    keep = {n: {**{k: s[k] for k in (*FIELDS, "stage_busy_seconds", "weight_sync_seconds")},
                "pairs_trained": s["buffer"]["served"], "parts": parts(s)} for n, s in results.items()}
    (out / "bench.json").write_text(json.dumps(keep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
