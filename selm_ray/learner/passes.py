"""Several passes over an iteration's pairs, and the step count the lr schedule spans (pure Python).

Generating and judging the candidates is what costs the minutes on CPU; a learner step over a pair
costs a few seconds. ``learner.passes`` > 1 trains on an iteration's pairs again (reshuffled, seeded)
once the buffer has served them all, before the iteration ends. The buffer serves each pair once (its
exactly-once log is unchanged); the extra passes come from the learner's own memory of the
iteration, which a restarted learner rebuilds: it restarts from the iteration-start checkpoint and
the buffer serves the iteration's pairs again from that point.
"""
from __future__ import annotations

import math
import random
from typing import Any


class IterationPlan:
    """Rank 0's memory of the pairs trained in the current iteration, and its lr phase length."""

    def __init__(self, passes: int, seed: int, estimate: int) -> None:
        self.passes, self.seed, self.estimate = passes, seed, estimate
        self.phase_steps = estimate
        self._seen: list[Any] = []
        self._queue: list[Any] = []
        self._pass = 1  # the pass being trained
        self._sized = False

    def record(self, pairs: list) -> None:
        """Pairs of pass 1 (straight from the buffer)."""
        if self._pass == 1 and self.passes > 1:  # one pass (async always): nothing to remember
            self._seen.extend(pairs)

    def size_at_drain(self, steps_taken: int, waiting: int, want: int) -> None:
        """Once per iteration, when generation is done: the buffer's waiting pairs are all that pass 1
        will still get, so the phase length is known (was an estimate) for the remaining steps."""
        if self._sized:
            return
        self._sized = True
        total = steps_taken * want + waiting  # pairs of pass 1 (its steps so far took full batches)
        later = (self.passes - 1) * math.ceil(total / want) if total else 0
        self.phase_steps = max(1, steps_taken + math.ceil(waiting / want) + later)

    def next_batch(self, want: int, iteration: int) -> list | None:
        """A batch of the next pass once pass 1 is drained; None when every pass is done."""
        while not self._queue:
            if self._pass >= self.passes or not self._seen:
                return None
            self._pass += 1
            self._queue = list(self._seen)
            random.Random(f"{self.seed}-{iteration}-{self._pass}").shuffle(self._queue)
        batch, self._queue = self._queue[:want], self._queue[want:]
        return batch

    @property
    def current_pass(self) -> int:
        return self._pass

    def reset(self) -> None:
        """At an iteration's end."""
        self.phase_steps, self._seen, self._queue, self._pass, self._sized = self.estimate, [], [], 1, False
