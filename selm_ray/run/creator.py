"""The prompt-creation stage: the generator pool writes new instructions with the current policy,
the self-instruct filters keep some, and every sample is logged with its examples and verdict
(run_dir/created_prompts.jsonl)."""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Sequence

import ray

from selm_ray.actors import remote
from selm_ray.core.data import PromptRecord
from selm_ray.core.jsonl import AppendLog, read_log
from selm_ray.core.selfinstruct import PromptFilter, pick_examples
from selm_ray.run.context import RunContext
from selm_ray.run.pools import PoolManager

CREATED_FILE = "created_prompts.jsonl"


def logged_prompts(path: Path) -> dict[int, list[PromptRecord]]:
    """Accepted prompts of an earlier attempt of this run, by iteration, in the order written.

    A resumed run needs them twice: as known prompts (no new one may duplicate them, and their
    ids are taken) and, for the iteration being redone, as that iteration's created prompts: they
    may already have judged pairs, so they are reused instead of being written again.
    """
    out: dict[int, list[PromptRecord]] = {}
    for row in read_log(path).rows:  # a line cut short by the interruption itself is left out
        if row.get("reason") == "accepted":
            out.setdefault(int(row["iteration"]), []).append(
                PromptRecord(prompt_id=row["prompt_id"], messages=({"role": "user", "content": row["prompt"]},)))
    return out


class PromptCreator:
    def __init__(self, ctx: RunContext, pools: PoolManager, seed_texts: Sequence[str]) -> None:
        c = ctx.cfg.create
        self.ctx, self.pm, self.cfg = ctx, pools, c
        self.seed_pool = list(seed_texts)
        self.filter = PromptFilter(list(seed_texts), c.min_words, c.max_words, c.max_similarity)
        self.created: list[str] = []
        self.rng = random.Random(ctx.cfg.run.seed)
        self.earlier = logged_prompts(ctx.run_dir / CREATED_FILE) if ctx.resume else {}
        for records in self.earlier.values():
            for r in records:
                self.created.append(r.messages[-1]["content"])
                self.filter.remember(self.created[-1])
        self._log = AppendLog(ctx.run_dir / CREATED_FILE, durable=False)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.filter.counts)

    def create(self, iteration: int, wanted: int) -> list[PromptRecord]:
        """Up to ``wanted`` new prompts. On resume, what an earlier attempt accepted for this
        iteration counts first; then at most ``max_attempts_factor`` samples per prompt still needed."""
        accepted: list[PromptRecord] = self.earlier.pop(iteration, [])[:wanted]
        if accepted:
            self.ctx.log(f"iteration {iteration + 1}: {len(accepted)} prompt(s) created before the resume reused")
        attempts, budget = 0, (wanted - len(accepted)) * self.cfg.max_attempts_factor  # per prompt still needed
        while len(accepted) < wanted and attempts < budget and not self.ctx.stop_event.is_set():
            n = min(budget - attempts, max(4, 2 * (wanted - len(accepted))))
            requests = [pick_examples(self.seed_pool, self.created, self.cfg.shots, self.rng) for _ in range(n)]
            for examples, (reply, finish) in zip(requests, self._sample(requests, iteration, attempts)):
                attempts += 1
                record = self._judge(iteration, examples, reply, finish)
                if record is not None and len(accepted) < wanted:
                    accepted.append(record)
        self.ctx.log(f"iteration {iteration + 1}: created {len(accepted)}/{wanted} prompts from {attempts} "
                     f"samples; filter counts {self.counts}")
        return accepted

    def _sample(self, requests: list[list[str]], iteration: int, offset: int) -> list[tuple[str, str]]:
        """Spread the requests over the active generators, in order."""
        members = self.pm.gens.active()
        chunks = [requests[i::len(members)] for i in range(len(members))]
        seed = self.ctx.cfg.run.seed + 100_003 * (iteration + 1) + offset  # new samples every round
        calls = list(enumerate(zip(members, chunks)))
        try:
            outs = remote.get([m.actor.create_prompts.remote(chunk, seed + i) for i, (m, chunk) in calls],
                              "generator.create_prompts", "work")
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            # a generator restarted: ask again, one by one, waiting for it to come back
            outs = [remote.call_with_retry(m.actor.create_prompts, chunk, seed + i, kind="work") for i, (m, chunk) in calls]
        merged: list[Any] = [None] * len(requests)
        for i, out in enumerate(outs):
            merged[i::len(members)] = out
        return merged

    def _judge(self, iteration: int, examples: list[str], reply: str, finish: str) -> PromptRecord | None:
        text, reason = self.filter.check(reply, finish, examples)
        row: dict[str, Any] = {"iteration": iteration, "policy_version": self.pm.iteration_version(),
                               "reason": reason, "reply": reply, "examples": examples, "time": time.time()}
        record = None
        if text is not None:
            self.created.append(text)
            pid = f"created-{iteration}-{len(self.created) - 1}"
            record = PromptRecord(prompt_id=pid, messages=({"role": "user", "content": text},))
            row.update(prompt_id=pid, prompt=text)
        self._log.write(row)
        return record

    def close(self) -> None:
        self._log.close()
