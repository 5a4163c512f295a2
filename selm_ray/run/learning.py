"""The learner as the controller sees it: a Ray Train ``fit()`` in a driver thread, whose step
metrics arrive through the learner channel and go to metrics.jsonl and TensorBoard."""
from __future__ import annotations

import threading
from typing import Any


from selm_ray.actors import remote

from selm_ray.run.context import RunContext


class LearnerDriver:
    def __init__(self, ctx: RunContext, trainer: Any) -> None:
        from tensorboardX import SummaryWriter

        self.ctx = ctx
        self.learn_seconds = 0.0
        self._tb = SummaryWriter(str(ctx.run_dir / "tensorboard"))
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._fit, args=(trainer,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _fit(self, trainer: Any) -> None:
        try:
            trainer.fit()
        except BaseException as e:  # surfaced by check() on the main loop
            self._error.append(e)

    def check(self) -> None:
        """Raise the learner's failure, if any; log the step metrics it sent since the last call."""
        if self._error:
            raise RuntimeError(f"learner failed: {self._error[0]}") from self._error[0]
        rows = remote.get(self.ctx.channel.drain_metrics.remote(), "channel.drain_metrics")
        self.ctx.write_metrics(*rows)
        for m in rows:
            self.learn_seconds += m.get("step_seconds", 0.0)
            for k, v in m.items():
                if isinstance(v, (int, float)) and k not in ("step", "time") and "step" in m:
                    self._tb.add_scalar(f"learner/{k}", v, m["step"])
            self.ctx.last_metrics = m

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)

    def close(self) -> None:
        self.check()
        self._tb.close()
