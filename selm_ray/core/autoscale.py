"""When to resize the generator and judge pools: a pure policy over windowed observations.

The learner is the consumer. If it keeps waiting on an empty buffer, the producers are too slow:
grow the busier of the two producer pools. If the buffer stays full, or pairs go stale before
the learner reaches them, the producers outrun it: shrink the less busy pool. One change per
decision, at most one decision per ``interval_seconds``, always within [min, max].
No Ray here; the controller feeds observations in and applies the decisions.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Observation:
    time: float
    generators: int
    judges: int
    learner_wait_fraction: float  # share of the window the learner sat waiting on an empty buffer
    buffer_fill: float  # size / capacity at the end of the window
    stale_dropped: int  # pairs dropped as stale during the window
    generator_busy: float  # mean busy share of a generator over the window (0..1)
    judge_busy: float  # same for a judge


@dataclass(frozen=True)
class Decision:
    pool: str  # "generator" | "judge"
    size: int
    reason: str


@dataclass
class AutoscalePolicy:
    min_generators: int = 1
    max_generators: int = 4
    min_judges: int = 1
    max_judges: int = 4
    interval_seconds: float = 30.0
    grow_wait_fraction: float = 0.3
    shrink_fill_fraction: float = 0.9
    judges_scalable: bool = True  # False when the generators judge (judge.colocate)
    _last: float | None = None

    def decide(self, obs: Observation) -> Decision | None:
        if self._last is not None and obs.time - self._last < self.interval_seconds:
            return None
        decision = self._grow(obs) or self._shrink(obs)
        self._last = obs.time  # the window restarts whether or not anything changed
        return decision

    def _grow(self, o: Observation) -> Decision | None:
        if o.learner_wait_fraction < self.grow_wait_fraction:
            return None
        why = f"learner waited {o.learner_wait_fraction:.0%} of the window on an empty buffer"
        order = ["judge", "generator"] if o.judge_busy > o.generator_busy else ["generator", "judge"]
        for pool in order:
            size, _, hi = self._bounds(pool, o)
            if size < hi:
                return Decision(pool, size + 1, why)
        return None

    def _shrink(self, o: Observation) -> Decision | None:
        if o.stale_dropped > 0:
            why = f"{o.stale_dropped} pair(s) went stale before the learner reached them"
        elif o.buffer_fill >= self.shrink_fill_fraction:
            why = f"buffer {o.buffer_fill:.0%} full"
        else:
            return None
        order = ["judge", "generator"] if o.judge_busy < o.generator_busy else ["generator", "judge"]
        for pool in order:
            size, lo, _ = self._bounds(pool, o)
            if size > lo:
                return Decision(pool, size - 1, why)
        return None

    def _bounds(self, pool: str, o: Observation) -> tuple[int, int, int]:
        if pool == "generator":
            return o.generators, self.min_generators, self.max_generators
        if not self.judges_scalable:
            return o.judges, o.judges, o.judges
        return o.judges, self.min_judges, self.max_judges
