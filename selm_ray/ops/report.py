"""`selm-ray report RUN_DIR`: PNG charts and a markdown summary from what a run wrote.

Reads metrics.jsonl (learner steps, pool changes), stats.jsonl (live snapshots every few
seconds), buffer/pairs.jsonl (every judged pair) and summary.json when the run finished.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from selm_ray.core.evaluation import accuracy_table
from selm_ray.core.jsonl import read_log


class ReportError(ValueError):
    """The run directory lacks what a report needs (named in the message)."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_log(path).rows  # a row cut short by a crash is left out: the rest is worth a chart


def rolling(xs: Sequence[float], n: int = 16) -> list[float]:
    """Trailing mean over up to ``n`` points (same length as ``xs``)."""
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x - (xs[i - n] if i >= n else 0.0)
        out.append(acc / min(i + 1, n))
    return out


def _chart(path: Path, title: str, xlabel: str, series: list[tuple[str, Sequence, Sequence]],
           ylabel: str = "") -> Path | None:
    series = [s for s in series if len(s[1])]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, xs, ys in series:
        ax.plot(xs, ys, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _col(rows: list[dict], key: str | Callable[[dict], Any]) -> list:
    get = key if callable(key) else (lambda r: r.get(key))
    return [get(r) for r in rows]


def charts(run_dir: Path, out: Path) -> dict[str, Path]:
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    steps = [m for m in metrics if "loss" in m]
    stats = read_jsonl(run_dir / "stats.jsonl")
    pairs = read_jsonl(run_dir / "buffer" / "pairs.jsonl")
    t0 = stats[0]["time"] - stats[0]["elapsed_seconds"] if stats else 0.0
    ts = [s["time"] - t0 for s in stats]
    idx = list(range(1, len(pairs) + 1))
    evals = [m for m in metrics if m.get("event") == "eval"]
    jevals = [m for m in metrics if m.get("event") == "judge_eval"]
    ievals = [m for m in metrics if m.get("event") == "instruction_eval"]
    made = {
        "instructions": _chart(out / "instructions.png", "verifiable instructions on the development split "
                               "(iteration 0 = the starting policy)", "iteration", [
                                   ("prompt strict", _col(ievals, lambda m: m["iteration"] + 1), _col(ievals, "prompt_strict")),
                                   ("prompt strict 95% low", _col(ievals, lambda m: m["iteration"] + 1),
                                    _col(ievals, lambda m: m["prompt_strict_ci95"][0])),
                                   ("prompt strict 95% high", _col(ievals, lambda m: m["iteration"] + 1),
                                    _col(ievals, lambda m: m["prompt_strict_ci95"][1])),
                                   ("instruction strict", _col(ievals, lambda m: m["iteration"] + 1),
                                    _col(ievals, "instruction_strict")),
                                   ("prompt loose", _col(ievals, lambda m: m["iteration"] + 1), _col(ievals, "prompt_loose"))]),
        "evaluation": _chart(out / "evaluation.png", "per iteration: win rate vs the starting policy, "
                             "judge accuracy", "iteration", [
                                 ("win rate", _col(evals, lambda m: m["iteration"] + 1), _col(evals, "win_rate")),
                                 ("judge accuracy", _col(jevals, lambda m: m["iteration"] + 1),
                                  _col(jevals, lambda m: m.get("accuracy") or 0.0))]),
        "scores": _chart(out / "scores.png", "judge scores (rolling mean of 16 pairs)", "pair", [
            ("chosen", idx, rolling(_col(pairs, "chosen_score"))),
            ("rejected", idx, rolling(_col(pairs, "rejected_score"))),
            ("margin", idx, rolling(_col(pairs, lambda p: p["chosen_score"] - p["rejected_score"])))]),
        "loss": _chart(out / "loss.png", "learner loss", "step", [
            ("loss", _col(steps, "step"), _col(steps, "loss")),
            ("reward accuracy", _col(steps, "step"), _col(steps, lambda m: m.get("rewards/accuracy", 0.0)))]),
        "lengths": _chart(out / "lengths.png", "response length (rolling mean of 16 pairs)", "pair", [
            ("chosen", idx, rolling(_col(pairs, "chosen_tokens"))),
            ("rejected", idx, rolling(_col(pairs, "rejected_tokens")))], "tokens"),
        "throughput": _chart(out / "throughput.png", "pairs per second (30 s window) and pool sizes", "seconds", [
            ("pairs in/s", ts, _col(stats, lambda s: s["buffer"]["pairs_in_per_second"])),
            ("pairs out/s", ts, _col(stats, lambda s: s["buffer"]["pairs_out_per_second"])),
            ("generators", ts, _col(stats, lambda s: s["pools"]["generator"]["size"])),
            ("judges", ts, _col(stats, lambda s: s["pools"].get("judge", s["pools"]["generator"])["size"]))]),
        "staleness": _chart(out / "staleness.png", "policy lag and stale drops", "seconds", [
            ("mean lag of served pairs", ts, _col(stats, lambda s: s["buffer"]["mean_lag"])),
            ("pairs dropped as stale", ts, _col(stats, lambda s: s["buffer"]["dropped_stale"])),
            ("buffer size", ts, _col(stats, lambda s: s["buffer"]["size"]))]),
    }
    return {k: v for k, v in made.items() if v is not None}


def markdown(run_dir: Path, made: dict[str, Path]) -> str:
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    events = [m for m in metrics if m.get("event") == "pool_resize"]
    ievals = [m for m in metrics if m.get("event") == "instruction_eval"]
    lines = [f"# Run report: {run_dir.name}", ""]
    if summary:
        keys = ("seconds", "prompts", "pairs", "pairs_per_second", "overlap_ratio", "learner_steps",
                "policy_version", "judge_failure_rate", "mean_chosen_score", "mean_rejected_score",
                "mean_chosen_tokens", "mean_rejected_tokens")
        lines += ["| figure | value |", "|---|---|"] + [f"| {k} | {summary.get(k)} |" for k in keys]
        lines += ["", f"Buffer: {summary.get('buffer')}", ""]
    else:
        lines += ["No summary.json: the run is still going or did not finish.", ""]
    if events:
        lines += ["## Pool changes", ""] + [f"- {e['pool']} {e['from']} -> {e['to']}: {e['reason']}"
                                            for e in events] + [""]
    if ievals:
        lines += ["## Verifiable-instruction accuracy (development split)", "", accuracy_table(ievals), ""]
    lines += [f"## {name}\n\n![{name}]({path.name})\n" for name, path in made.items()]
    return "\n".join(lines)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory")
    if not any((run_dir / f).is_file() for f in ("metrics.jsonl", "stats.jsonl", "buffer/pairs.jsonl")):
        raise ReportError(f"{run_dir}: no metrics.jsonl, stats.jsonl or buffer/pairs.jsonl: not a run directory")
    out = out or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    made = charts(run_dir, out)
    (out / "report.md").write_text(markdown(run_dir, made))
    return out / "report.md"
