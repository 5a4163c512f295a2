"""The run's progress on the console: on a terminal one live status line (rich) that log lines
scroll above; elsewhere (a job log, a pipe, CI) a plain line every ``PLAIN_EVERY_S`` seconds."""
from __future__ import annotations

import sys
import time
from typing import Any

from selm_ray.run.context import RunContext

PLAIN_EVERY_S = 5.0
LIVE_EVERY_S = 0.5


class Progress:
    def __init__(self, ctx: RunContext, live: bool | None = None) -> None:
        self.ctx = ctx
        self._last = 0.0
        self._status: Any = None
        if sys.stdout.isatty() if live is None else live:
            from rich.console import Console

            ctx.console = Console()
            self._status = ctx.console.status("starting")
            self._status.start()

    def line(self, iteration: int) -> str:
        c, m = self.ctx.counters, self.ctx.last_metrics
        loss = f"{m['loss']:.4f}" if "loss" in m else "-"
        where = "async" if self.ctx.cfg.schedule.mode == "async" else f"iter {iteration + 1}"
        return (f"{where} prompts {c.prompts_done} pairs {c.pairs} judge-fail {c.judge_failures}/{c.candidates} "
                f"| learner step {m.get('step', 0)} v{m.get('version', 0)} loss {loss}")

    def update(self, iteration: int) -> None:
        now = time.time()
        if now - self._last < (LIVE_EVERY_S if self._status is not None else PLAIN_EVERY_S):
            return
        self._last = now
        if self._status is not None:
            self._status.update(f"[{now - self.ctx.t0:7.1f}s] {self.line(iteration)}")
        else:
            self.ctx.log(self.line(iteration))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
            self.ctx.console = None
