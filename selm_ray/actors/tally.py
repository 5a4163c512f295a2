"""Judge bookkeeping shared by the judge actor and a generator that judges (judge.colocate)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class JudgeTally:
    busy_seconds: float = 0.0
    candidates: int = 0
    failures: int = 0

    def run(self, impl: Any, rollouts: Sequence[Any]) -> list[Any]:
        """``impl.judge(rollouts)``, timed and counted."""
        t0 = time.time()
        out = impl.judge(rollouts)
        self.busy_seconds += time.time() - t0
        self.candidates += sum(len(j.scores) for j in out)
        self.failures += sum(j.num_failed for j in out)
        return out
