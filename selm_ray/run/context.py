"""What every part of a run shares, and nothing more: the config, the run's identity and folder,
its counters and stop flag, its log and metrics file, and the handles of the run-wide actors.

The controller's parts (pools, operator, evaluation, prompt creation, resume, summary) each take
this context (and the pool manager where they need engines) instead of the whole controller.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selm_ray.core.config import Config, dump_config
from selm_ray.core.jsonl import AppendLog


@dataclass
class Counters:
    prompts_done: int = 0
    candidates: int = 0
    judge_failures: int = 0
    pairs: int = 0
    no_pair: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    chosen_scores: list[float] = field(default_factory=list)
    rejected_scores: list[float] = field(default_factory=list)
    weight_sync_seconds: list[float] = field(default_factory=list)


class RunContext:
    def __init__(self, cfg: Config, run_dir: Path, run_id: str, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.run_id, self.resume = cfg, run_dir, run_id, resume
        self.t0 = self.loop_t0 = time.time()
        self.startup_seconds: float | None = None  # run start -> first dispatch (engines, learner)
        self.first_pair_seconds: float | None = None  # run start -> first pair on disk
        # first dispatch -> the last iteration's policy checkpointed and published (iterative
        # schedules; the learner's shutdown and the final engine reload come after it)
        self.train_seconds: float | None = None
        self.train_syncs: int | None = None  # weight_sync_seconds entries timed before train_seconds
        self.core_plan: dict[str, Any] | None = None  # the plan the driver resolved (core/cores.py)
        self.stop_event = threading.Event()
        self.counters = Counters()
        self.start_version = self.start_iteration = 0  # a resumed run starts from its checkpoint's
        self.iteration = 0
        self.last_metrics: dict[str, Any] = {}  # the learner's newest step row
        self.buffer: Any = None  # BufferActor handle
        self.channel: Any = None  # LearnerChannel handle
        self._metrics: AppendLog | None = None
        self.console: Any = None  # a live progress display, when the terminal has one

    def open(self) -> None:
        """The run folder, its resolved config and its metrics log."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
        self._metrics = AppendLog(self.run_dir / "metrics.jsonl", durable=False)  # a resume appends

    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        if self.console is not None:
            self.console.print(line)
        else:
            print(line, flush=True)

    def write_metrics(self, *rows: dict[str, Any]) -> None:
        assert self._metrics is not None, "RunContext.open() first"
        self._metrics.append(rows)
