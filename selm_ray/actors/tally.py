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


def node_id() -> str | None:
    """The Ray node this actor runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def catch_up(actor: Any, channel: Any) -> None:
    """Load the newest published weights, if any: a restarted actor must not silently serve v0."""
    if channel is None:
        return
    from selm_ray.actors import remote

    version, box = remote.get(channel.latest_weights.remote(), "channel.latest_weights")
    if box is not None:
        actor.update_weights(version, remote.get(box[0], f"weights v{version}"))


def redirect_output() -> None:
    """Send this process's stdout/stderr (an engine's own warnings and progress bars included) to
    the file ``SELM_RAY_LOG_FILE`` names, so they land in the run folder, not the user's terminal.
    Errors still reach the driver: Ray carries an actor's exceptions with their tracebacks."""
    import os
    import sys

    path = os.environ.get("SELM_RAY_LOG_FILE")
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return  # e.g. a node where the driver's run folder cannot be made: keep Ray's own logs
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
