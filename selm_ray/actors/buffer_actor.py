"""The replay buffer as an async Ray actor: one event loop, so each call runs whole (no locks)."""
from __future__ import annotations

from typing import Any

from selm_ray.core.buffer import BufferStats, ReplayBuffer
from selm_ray.core.records import PreferencePair


class BufferActor:
    def __init__(self, directory: str, capacity: int, max_policy_lag: int, eviction: str, replay: bool) -> None:
        # A restarted actor lands here again and reloads every waiting pair from the logs.
        self.buffer = ReplayBuffer(directory, capacity, max_policy_lag, eviction, replay)

    async def add(self, pairs: list[PreferencePair]) -> int:
        return self.buffer.add(pairs)

    async def sample(self, batch_size: int, learner_version: int, max_policy_lag: int | None = None,
                     min_size: int = 1, request_id: str | None = None) -> list[PreferencePair]:
        return self.buffer.sample(batch_size, learner_version, max_policy_lag, min_size, request_id)

    async def stats(self) -> BufferStats:
        return self.buffer.stats()

    async def cursor(self) -> int:
        return self.buffer.cursor()

    async def rewind(self, cursor: int) -> int:
        return self.buffer.rewind(cursor)

    async def size(self) -> int:
        return len(self.buffer)

    async def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    async def pid(self) -> Any:
        import os

        return os.getpid()
