"""Before a run starts anything: check that its pools and learner fit the cluster (core/placement).

Doesn't fit the nodes there are -> PlacementError at once, naming each request and the nodes
(or, with ``cluster.wait_for_nodes``, wait up to ``cluster.placement_timeout_s`` for an
autoscaler). Fits, but other work holds the resources -> wait up to the same timeout, saying so.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from selm_ray.core.placement import Node, Request, describe, node_capacities, run_requests, total, unplaced

POLL_SECONDS = 2.0


class PlacementError(RuntimeError):
    """The run's actors cannot all be placed on the cluster."""


def _short(need: dict[str, float], have: dict[str, float]) -> dict[str, float]:
    return {k: v - have.get(k, 0.0) for k, v in need.items() if have.get(k, 0.0) + 1e-9 < v}


def _state() -> tuple[list[Node], dict[str, float]]:
    import ray

    return node_capacities(ray.nodes()), ray.available_resources()


def ensure_fits(cfg: Any, log: Callable[[str], None], state: Callable[[], tuple[list[Node], dict[str, float]]] = _state,
                sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
    c = cfg.cluster
    reqs: list[Request] = run_requests(cfg)
    deadline = clock() + c.placement_timeout_s
    said = None
    while True:
        nodes, free = state()
        left = unplaced(reqs, nodes)
        if left and not c.wait_for_nodes:
            raise PlacementError(describe(reqs, nodes, left, "total"))
        short = {} if left else _short(total(reqs), free)
        if not left and not short:
            return
        why = (describe(reqs, nodes, left, "total") + " Waiting for the autoscaler to add nodes" if left else
               f"the cluster has room for this run, but other work holds it now (short of "
               f"{', '.join(f'{k} {v:g}' for k, v in short.items())}): waiting for it to be released")
        if clock() >= deadline:
            raise PlacementError(f"gave up after cluster.placement_timeout_s={c.placement_timeout_s:g} s: {why}")
        if why != said:  # say it once, not every poll
            log(f"{why} (up to {c.placement_timeout_s:g} s, cluster.placement_timeout_s)")
            said = why
        sleep(POLL_SECONDS)
