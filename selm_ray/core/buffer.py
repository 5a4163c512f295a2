"""The replay buffer of preference pairs, as a plain class (the Ray actor is a thin shell over it).

Lifecycle of a pair: added (durably logged first) -> waiting -> served | evicted | stale.
- Durability: every added pair is appended to ``<dir>/pairs.jsonl`` and fsynced BEFORE ``add``
  returns; every exit from the waiting set (served, evicted, dropped as stale) is appended to
  ``<dir>/consumed.jsonl``. A new buffer on the same directory reloads exactly the waiting pairs.
- Exactly once: a pair id seen before (this run, or in the reloaded logs) is ignored by ``add``,
  so a retried judge call cannot duplicate a pair; a served pair is not served again unless
  ``replay`` is on (then it goes to the back of the queue). ``sample`` with the ``request_id`` of
  the previous call returns that call's batch again, also after a restart (the served rows carry
  the request id): a learner whose reply was lost with a dead buffer re-sends and gets the same
  pairs, never a second batch while the first is marked served and never trained on.
- Staleness: a pair whose oldest generating policy version lags the learner's version by more
  than ``max_policy_lag`` is never served; it is dropped and counted at sampling time.
- Capacity: above it, ``fifo`` evicts the oldest waiting pair, ``oldest_version`` the pair with the
  oldest policy version (ties: oldest added).
"""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from selm_ray.core.jsonl import AppendLog, read_log
from selm_ray.core.records import PreferencePair

PAIRS_FILE = "pairs.jsonl"
CONSUMED_FILE = "consumed.jsonl"


@dataclass
class BufferStats:
    size: int = 0
    capacity: int = 0
    added: int = 0
    duplicates: int = 0
    served: int = 0
    evicted: int = 0
    dropped_stale: int = 0
    reloaded: int = 0
    rewound: int = 0  # consumed-log rows undone for learner restarts (their pairs were served again)
    lag_histogram: dict[int, int] = field(default_factory=dict)  # lag -> pairs served at that lag
    mean_chosen_score: float | None = None
    mean_rejected_score: float | None = None
    mean_margin: float | None = None
    mean_chosen_tokens: float | None = None
    mean_rejected_tokens: float | None = None
    time: float = 0.0


class ReplayBuffer:
    def __init__(self, directory: str | Path | None, capacity: int = 4096, max_policy_lag: int = 2,
                 eviction: str = "fifo", replay: bool = False) -> None:
        if capacity < 1 or max_policy_lag < 0 or eviction not in ("fifo", "oldest_version"):
            raise ValueError(f"bad buffer settings: capacity={capacity}, max_policy_lag={max_policy_lag}, "
                             f"eviction={eviction!r}")
        self.capacity, self.max_policy_lag = capacity, max_policy_lag
        self.eviction, self.replay = eviction, replay
        self._waiting: OrderedDict[str, PreferencePair] = OrderedDict()
        self._seen: set[str] = set()
        self.stats_ = BufferStats(capacity=capacity)
        self._served_pairs: list[PreferencePair] = []  # recent served, for score/length figures
        self._pairs_log = self._consumed_log = None
        self._consumed_rows = 0
        self._last_request: tuple[str | None, list[PreferencePair]] = (None, [])
        self._dir = None if directory is None else Path(directory)
        if directory is not None:
            d = Path(directory)
            d.mkdir(parents=True, exist_ok=True)
            self._reload(d)
            self._pairs_log, self._consumed_log = AppendLog(d / PAIRS_FILE), AppendLog(d / CONSUMED_FILE)

    # -- durability -----------------------------------------------------------------------------
    def _reload(self, d: Path) -> None:
        consumed = read_log(d / CONSUMED_FILE).rows
        self._consumed_rows = len(consumed)
        gone = {row["pair_id"] for row in consumed if not row.get("replay")}
        last = next((r["request"] for r in reversed(consumed) if r.get("request") is not None), None)
        last_ids = [r["pair_id"] for r in consumed if last is not None and r.get("request") == last]
        by_id = {}
        for row in read_log(d / PAIRS_FILE).rows:
            pair = PreferencePair.from_row(row)
            self._seen.add(pair.pair_id)
            by_id[pair.pair_id] = pair
            if pair.pair_id not in gone:
                self._waiting[pair.pair_id] = pair
        self._last_request = (last, [by_id[i] for i in last_ids if i in by_id])
        self.stats_.reloaded = len(self._waiting)

    def _log_exit(self, pairs: list[PreferencePair], reason: str, request: str | None = None) -> None:
        self._consumed_rows += len(pairs)
        if self._consumed_log is not None:
            extra = {"request": request} if request is not None else {}
            self._consumed_log.append({"pair_id": p.pair_id, "reason": reason, "replay": self.replay and
                                       reason == "served", **extra} for p in pairs)

    # -- operations -----------------------------------------------------------------------------
    def add(self, pairs: Iterable[PreferencePair]) -> int:
        """Store new pairs durably; returns how many were new (duplicates are ignored)."""
        fresh: list[PreferencePair] = []
        for p in pairs:
            if p.pair_id in self._seen:
                self.stats_.duplicates += 1
                continue
            self._seen.add(p.pair_id)
            fresh.append(p)
        if self._pairs_log is not None:
            self._pairs_log.append(p.to_row() for p in fresh)  # durable before we acknowledge
        for p in fresh:
            self._waiting[p.pair_id] = p
        self.stats_.added += len(fresh)
        self._evict()
        return len(fresh)

    def _evict(self) -> None:
        victims = []
        while len(self._waiting) > self.capacity:
            if self.eviction == "fifo":
                _, victim = self._waiting.popitem(last=False)
            else:
                key = min(self._waiting, key=lambda k: _version_key(self._waiting[k]))
                victim = self._waiting.pop(key)
            victims.append(victim)
        self.stats_.evicted += len(victims)
        self._log_exit(victims, "evicted")

    def sample(self, batch_size: int, learner_version: int, max_policy_lag: int | None = None,
               min_size: int = 1, request_id: str | None = None) -> list[PreferencePair]:
        """Up to ``batch_size`` fresh-enough pairs, oldest first; stale ones are dropped and counted.

        With fewer than ``min_size`` pairs waiting, returns [] and touches nothing (the learner
        waits for a full batch while generation is still running). The same ``request_id`` as the
        previous call that returned pairs: that batch again (a re-sent request), nothing consumed.
        """
        if request_id is not None and request_id == self._last_request[0]:
            return list(self._last_request[1])
        if len(self._waiting) < min_size:
            return []
        lag_bound = self.max_policy_lag if max_policy_lag is None else max_policy_lag
        batch: list[PreferencePair] = []
        stale: list[PreferencePair] = []
        for key in list(self._waiting):
            if len(batch) >= batch_size:
                break
            pair = self._waiting.pop(key)
            lag = _lag(pair, learner_version)
            if lag > lag_bound:
                stale.append(pair)
                continue
            batch.append(pair)
            self.stats_.lag_histogram[lag] = self.stats_.lag_histogram.get(lag, 0) + 1
        if self.replay:
            for p in batch:
                self._waiting[p.pair_id] = p  # back of the queue
        self.stats_.dropped_stale += len(stale)
        self.stats_.served += len(batch)
        self._log_exit(stale, "stale")
        self._log_exit(batch, "served", request_id)
        if batch:
            self._last_request = (request_id, list(batch))
        self._served_pairs = (self._served_pairs + batch)[-512:]
        return batch

    def cursor(self) -> int:
        """Rows in the consumed log so far: a checkpoint records it, a resume truncates back to it."""
        return self._consumed_rows

    def rewind(self, cursor: int) -> int:
        """Undo every exit logged after the first ``cursor`` consumed rows: a learner restarted from
        a checkpoint lost the training on what it was served since, so those pairs wait again, in
        their original order. Returns how many rows were undone."""
        if self._dir is None or self._consumed_log is None:
            raise RuntimeError("rewind needs the buffer's directory (its consumed log)")
        self._consumed_log.close()
        removed = _truncate(self._dir / CONSUMED_FILE, cursor)
        s = self.stats_
        for row in removed:
            if row.get("reason") == "served":
                s.served -= 1
            elif row.get("reason") == "stale":
                s.dropped_stale -= 1
            elif row.get("reason") == "evicted":
                s.evicted -= 1
        reloaded = s.reloaded
        self._waiting.clear()
        self._reload(self._dir)  # the waiting set, exactly as a restarted buffer would rebuild it
        s.reloaded, s.rewound = reloaded, s.rewound + len(removed)
        self._consumed_log = AppendLog(self._dir / CONSUMED_FILE)
        return len(removed)

    def __len__(self) -> int:
        return len(self._waiting)

    def stats(self) -> BufferStats:
        s = self.stats_
        s.size, s.time = len(self._waiting), time.time()
        recent = list(self._waiting.values())[-512:] + self._served_pairs
        if recent:
            n = len(recent)
            s.mean_chosen_score = sum(p.chosen_score for p in recent) / n
            s.mean_rejected_score = sum(p.rejected_score for p in recent) / n
            s.mean_margin = sum(p.margin for p in recent) / n
            s.mean_chosen_tokens = sum(p.chosen_tokens for p in recent) / n
            s.mean_rejected_tokens = sum(p.rejected_tokens for p in recent) / n
        return BufferStats(**{**s.__dict__, "lag_histogram": dict(s.lag_histogram)})

    def close(self) -> None:
        for log in (self._pairs_log, self._consumed_log):
            if log is not None:
                log.close()


def _lag(pair: PreferencePair, learner_version: int) -> int:
    v = pair.policy_version
    return 0 if v is None else max(0, learner_version - v)


def _version_key(pair: PreferencePair) -> int:
    v = pair.policy_version
    return -1 if v is None else v


def rewind(directory: str | Path, cursor: int) -> int:
    """Truncate a buffer's consumed log to its first ``cursor`` rows (resume from a checkpoint):
    pairs served after the checkpoint wait again, since the training on them was lost."""
    return len(_truncate(Path(directory) / CONSUMED_FILE, cursor))


def _truncate(path: Path, cursor: int) -> list[dict]:
    """Keep a log's first ``cursor`` rows (atomically); returns the rows cut off."""
    rows = read_log(path).rows
    if len(rows) <= cursor:
        return []
    tmp = path.with_suffix(".rewind")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows[:cursor]))
    os.replace(tmp, path)
    return rows[cursor:]
