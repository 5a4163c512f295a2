"""Every wait on a remote call is bounded: a named error, never a silent hang.

Two kinds of call, two bounds (both in ``cluster``):
- control calls (channel, buffer, stats, a weight hand-over) answer in seconds when their actor is
  alive: ``call_timeout_s`` bounds each, and a call past it raises ``RemoteTimeout`` naming it;
- work calls (a batch of generation or judging, an engine starting, an evaluation) can take minutes on
  a CPU: ``work_timeout_s`` bounds each; the controller kills a member whose call is overdue (Ray
  restarts it or the pool replaces it) and re-sends the work (run/controller.py);
- an engine starting (model load, vLLM warm-up) is bounded by ``start_timeout_s``.

The bounds are process-wide (``configure``): the driver and each learner worker set them from the
run's config when they start, so call sites need not thread the config through.
"""
from __future__ import annotations

import time
from typing import Any

import ray

from selm_ray.core.policies import retry_delays

_BOUNDS = {"call": 300.0, "work": 1800.0, "start": 900.0}
_KEYS = {"call": "cluster.call_timeout_s", "work": "cluster.work_timeout_s", "start": "cluster.start_timeout_s"}


class RemoteTimeout(RuntimeError):
    """A remote call did not answer within its bound; the message names the call and the bound."""


def configure(cluster: Any) -> None:
    """The bounds from a ``ClusterConfig`` (call_timeout_s, work_timeout_s, start_timeout_s)."""
    for kind, key in _KEYS.items():
        _BOUNDS[kind] = float(getattr(cluster, key.split(".")[1]))


def bound(kind: str = "call") -> float:
    return _BOUNDS[kind]


def get(refs: Any, what: str, kind: str = "call") -> Any:
    """``ray.get`` within the ``kind`` bound; past it, RemoteTimeout naming ``what``."""
    limit = _BOUNDS[kind]
    try:
        return ray.get(refs, timeout=limit)
    except ray.exceptions.GetTimeoutError:
        raise RemoteTimeout(
            f"{what}: no answer within {limit:g} s ({_KEYS[kind]}); the actor is alive but not "
            f"answering: its log is in the run folder (logs/), or raise {_KEYS[kind]}") from None


def method_name(method: Any) -> str:
    return getattr(method, "_method_name", None) or repr(method)


def call_with_retry(method: Any, *args: Any, kind: str = "call") -> Any:
    """``actor.method.remote(*args)`` within the ``kind`` bound, re-sent while the actor restarts.

    Only for idempotent calls (buffer.add ignores pair ids it has seen, so a re-sent add cannot
    duplicate a pair; buffer.sample with a request id returns the same batch).
    """
    for delay in retry_delays() + [None]:
        try:
            return get(method.remote(*args), method_name(method), kind)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            if delay is None:
                raise
            time.sleep(delay)
