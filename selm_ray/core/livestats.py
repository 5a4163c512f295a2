"""Live run statistics: one JSON-able snapshot of the buffer, judges, learner and pools, and its
terminal rendering. Pure Python; the controller feeds it, `selm-ray stats` renders it."""
from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Sequence

RATE_WINDOW_S = 30.0  # pairs in/out per second are averaged over this much recent time


def distribution(xs: Sequence[float]) -> dict[str, float | int | None]:
    """n, mean and the 10/50/90th percentiles (nearest rank) of ``xs``."""
    if not xs:
        return {"n": 0, "mean": None, "p10": None, "p50": None, "p90": None}
    s = sorted(xs)
    at = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "mean": round(sum(s) / len(s), 4), "p10": at(0.1), "p50": at(0.5), "p90": at(0.9)}


class LiveStats:
    """Recent pair figures and in/out rates, kept by the controller between snapshots."""

    def __init__(self, window: int = 512) -> None:
        self.recent: dict[str, deque] = {k: deque(maxlen=window) for k in
                                         ("chosen_score", "rejected_score", "margin", "chosen_tokens",
                                          "rejected_tokens")}
        self._flow: deque[tuple[float, int, int]] = deque()  # (time, pairs in, pairs served)

    def add_pairs(self, pairs: Iterable[Any]) -> None:
        for p in pairs:
            for key, value in (("chosen_score", p.chosen_score), ("rejected_score", p.rejected_score),
                               ("margin", p.margin), ("chosen_tokens", p.chosen_tokens),
                               ("rejected_tokens", p.rejected_tokens)):
                self.recent[key].append(value)

    def rates(self, now: float, pairs_in: int, pairs_out: int) -> tuple[float, float]:
        self._flow.append((now, pairs_in, pairs_out))
        while len(self._flow) > 2 and now - self._flow[1][0] >= RATE_WINDOW_S:
            self._flow.popleft()
        t0, in0, out0 = self._flow[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0
        return round((pairs_in - in0) / dt, 3), round((pairs_out - out0) / dt, 3)

    def distributions(self) -> dict[str, dict]:
        return {k: distribution(list(v)) for k, v in self.recent.items()}


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec) if isinstance(x, float) else str(x)


def _dist_line(name: str, d: dict) -> str:
    return (f"  {name:16s} mean {_fmt(d['mean']):>8s}  p10 {_fmt(d['p10']):>8s}  "
            f"p50 {_fmt(d['p50']):>8s}  p90 {_fmt(d['p90']):>8s}  (n={d['n']})")


def _bar(count: int, total: int, width: int = 30) -> str:
    return "#" * max(1 if count else 0, round(width * count / max(1, total)))


def render(s: dict[str, Any]) -> str:
    """The terminal view of one snapshot (what `selm-ray stats` shows and refreshes)."""
    b, le, q = s["buffer"], s["learner"], s["quality"]
    lines = [f"selm-ray run {s['run']}  [{s['state']}]  {s['mode']}  iteration {s['iteration']}  "
             f"{s['elapsed_seconds']:.0f}s",
             "",
             f"buffer  {b['size']}/{b['capacity']}  in {b['pairs_in_per_second']:.3f}/s  out "
             f"{b['pairs_out_per_second']:.3f}/s  total in {b['pairs_in']}  served {b['served']}  "
             f"stale-dropped {b['dropped_stale']}  duplicates {b['duplicates']}",
             "  policy lag of served pairs:"]
    hist = {int(k): v for k, v in b["lag_histogram"].items()}
    total = sum(hist.values())
    lines += [f"    lag {lag:2d}: {n:6d} {_bar(n, total)}" for lag, n in sorted(hist.items())] or ["    (none yet)"]
    lines += ["", "judged pairs (recent):"]
    lines += [_dist_line(k, v) for k, v in s["distributions"].items()]
    lines += [f"  tie rate {_fmt(q['tie_rate'])}  judge-failure rate {_fmt(q['judge_failure_rate'])}  "
              f"no pair {q['no_pair']}",
              "",
              f"learner step {le['step']}  loss {_fmt(le['loss'], '.4f')}  policy v{le['version']}  "
              f"engines synced to v{le['synced_version']}  waited on empty buffer "
              f"{_fmt(le['wait_fraction'], '.0%')}",
              ""]
    for pool in s["pools"].values():
        lines.append(f"{pool['kind']}s: {pool['size']} active  {pool['starting']} starting  "
                     f"{pool['draining']} draining  (target {pool['target']})")
        for a in pool["actors"]:
            rate = f"{a['tokens_per_second']:.1f} tok/s" if pool["kind"] == "generator" else \
                f"{a['candidates_per_second']:.2f} cand/s"
            lines.append(f"  {a['name']:40s} v{a['version']}  in flight {a['inflight']}  calls {a['calls']:5d}  "
                         f"{rate}  busy {a['busy_fraction']:.0%}{'  draining' if a['draining'] else ''}")
    if s.get("events"):
        lines += ["", "recent pool changes:"] + [f"  {e['pool']} {e['from']} -> {e['to']}: {e['reason']}"
                                                  for e in s["events"][-5:]]
    if s.get("prompt_creation"):
        lines += ["", f"prompt creation: {s['prompt_creation']}"]
    if s.get("instructions"):
        i = s["instructions"]
        when = "start" if i["iteration"] < 0 else f"after iteration {i['iteration'] + 1}"
        lo, hi = i["prompt_strict_ci95"]
        lines += ["", f"verifiable instructions ({when}, v{i['policy_version']}, {i['prompts']} prompts): "
                      f"prompt strict {_fmt(i['prompt_strict'])} [{_fmt(lo)}, {_fmt(hi)}]  loose "
                      f"{_fmt(i['prompt_loose'])}  instruction strict {_fmt(i['instruction_strict'])}  "
                      f"mean tokens {i['mean_tokens']}"]
    if s.get("autoscale"):
        lines += ["", f"autoscale: {s['autoscale']}"]
    return "\n".join(lines)
