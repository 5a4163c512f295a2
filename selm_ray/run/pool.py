"""Driver-side bookkeeping of an actor pool: who is active, starting or draining, and how busy.

An actor works through its calls one at a time, so it is busy exactly while it has a call in
flight; that is what ``busy_seconds`` measures (no call to the actor needed to know it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from selm_ray.core.policies import least_loaded


@dataclass(eq=False)
class Member:
    actor: Any
    name: str
    version: int
    inflight: int = 0
    draining: bool = False
    joined: float = field(default_factory=time.time)
    calls: int = 0
    tokens: int = 0  # generated tokens (generators)
    candidates: int = 0  # judged candidates (judges)
    busy_seconds: float = 0.0
    _busy_since: float | None = None
    # a call failed because the actor died: out of dispatch until this ready() probe answers
    # (Ray restarted it) or fails twice (its restarts are used up: it is replaced)
    probe: Any = None
    dead_probes: int = 0
    probe_after: float = 0.0

    def start_call(self) -> None:
        if self.inflight == 0:
            self._busy_since = time.time()
        self.inflight += 1

    def end_call(self) -> None:
        self.inflight -= 1
        self.calls += 1
        if self.inflight == 0 and self._busy_since is not None:
            self.busy_seconds += time.time() - self._busy_since
            self._busy_since = None

    def busy_total(self, now: float) -> float:
        return self.busy_seconds + (now - self._busy_since if self._busy_since is not None else 0.0)

    def view(self, now: float) -> dict[str, Any]:
        age = max(1e-9, now - self.joined)
        return {"name": self.name, "version": self.version, "inflight": self.inflight, "calls": self.calls,
                "draining": self.draining, "suspect": self.probe is not None, "tokens_per_second": round(self.tokens / age, 2),
                "candidates_per_second": round(self.candidates / age, 3),
                "busy_fraction": round(min(1.0, self.busy_total(now) / age), 3)}


@dataclass
class Pool:
    kind: str  # "generator" | "judge"
    members: list[Member] = field(default_factory=list)
    starting: dict[Any, Member] = field(default_factory=dict)  # ready() ref -> member not yet serving
    next_index: int = 0
    target: int = 0

    def active(self) -> list[Member]:
        return [m for m in self.members if not m.draining and m.probe is None]

    def pick(self) -> Member:
        """The active member with the fewest calls in flight."""
        active = self.active()
        return active[least_loaded([m.inflight for m in active])]

    def min_inflight(self) -> int:
        return min((m.inflight for m in self.active()), default=1 << 30)

    def size(self) -> int:
        return len(self.active())

    def busy_share(self, since: dict[str, float], now: float, window: float) -> float:
        """Mean busy share of the active members over the last ``window`` seconds; ``since`` maps
        member name -> busy_total at the window's start (updated in place)."""
        shares = []
        for m in self.active():
            total = m.busy_total(now)
            shares.append(min(1.0, (total - since.get(m.name, total)) / max(1e-9, window)))
            since[m.name] = total
        return sum(shares) / len(shares) if shares else 0.0

    def view(self, now: float) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size(), "starting": len(self.starting),
                "draining": sum(m.draining for m in self.members), "target": self.target,
                "actors": [m.view(now) for m in self.members]}
