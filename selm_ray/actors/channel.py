"""The learner's mailbox: controller -> learner commands, learner -> controller weights and metrics.

A plain class; one named actor per run (see launch.py). Weights are held as an ObjectRef wrapped
in a list so that Ray hands the reference around instead of resolving 500 MB into this actor.
"""
from __future__ import annotations

import time
from typing import Any


class LearnerChannel:
    def __init__(self, version: int = 0) -> None:
        self.stop_requested = False
        self.generation_done_iteration = -1  # iteration whose pairs are all in the buffer
        self.version = version
        self.weights: list[Any] | None = None  # [ObjectRef] of the latest published weights
        self.step = 0
        self.iteration = 0
        self.finished = False
        self.checkpoint: str | None = None
        self.error: str | None = None
        self._metrics: list[dict[str, Any]] = []
        self.publish_seconds: list[float] = []
        self.wait_seconds = 0.0  # the learner's time waiting on the buffer
        self.precision: dict[str, Any] | None = None  # the learner's dtypes and device (first step)
        self.starts = 0  # learner worker-group starts; more than one = restarts after failures
        self.learner_pid: int | None = None  # rank 0's process (its node's), for operators

    # controller side ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_requested = True

    def end_generation(self, iteration: int) -> None:
        self.generation_done_iteration = max(self.generation_done_iteration, iteration)

    def state(self) -> dict[str, Any]:
        return {"version": self.version, "step": self.step, "iteration": self.iteration,
                "finished": self.finished, "checkpoint": self.checkpoint, "error": self.error,
                "wait_seconds": self.wait_seconds, "restarts": max(0, self.starts - 1), "started": self.starts > 0,
                "learner_pid": self.learner_pid, "learner_precision": self.precision}

    def latest_weights(self) -> tuple[int, list[Any] | None]:
        return self.version, self.weights

    def drain_metrics(self) -> list[dict[str, Any]]:
        out, self._metrics = self._metrics, []
        return out

    # learner side ---------------------------------------------------------------------------------
    def learner_start(self, pid: int | None = None) -> int:
        """Called by rank 0 as the worker group starts; returns how many starts came before."""
        self.starts += 1
        self.learner_pid = pid
        return self.starts - 1

    def poll(self) -> dict[str, Any]:
        return {"stop": self.stop_requested, "generation_done_iteration": self.generation_done_iteration}

    def publish(self, version: int, weights: list[Any], seconds: float) -> None:
        self.version, self.weights = version, weights
        self.publish_seconds.append(seconds)

    def report(self, metrics: dict[str, Any]) -> None:
        self.step = metrics.get("step", self.step)
        self.iteration = metrics.get("iteration", self.iteration)
        self.precision = metrics.get("precision", self.precision)
        self._metrics.append({**metrics, "time": time.time()})

    def add_wait(self, seconds: float) -> None:
        self.wait_seconds += seconds

    def finish(self, checkpoint: str | None, error: str | None = None) -> None:
        self.finished, self.checkpoint, self.error = True, checkpoint, error
