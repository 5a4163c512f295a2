"""Pure decision functions the controller consults (no Ray): unit-tested on their own."""
from __future__ import annotations

from typing import Sequence


def least_loaded(inflight: Sequence[int]) -> int:
    """Index of the actor with the fewest calls in flight; the lowest index among equals."""
    if not inflight:
        raise ValueError("empty pool: no actor to send work to")
    return min(range(len(inflight)), key=lambda i: (inflight[i], i))


def retry_delays(attempts: int = 20, first: float = 0.5, cap: float = 5.0) -> list[float]:
    """Back-off between re-tries of a call to a restarting actor (~1 min in all by default)."""
    return [min(cap, first * 2 ** i) for i in range(attempts)]
