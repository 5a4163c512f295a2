"""Does a run fit on a cluster? Pure arithmetic over resource requests and node capacities.

Ray schedules an actor that does not fit by waiting for it forever, and Ray Train retries a worker
group that cannot be placed without limit: a run whose learner needs a CPU that the generators
already hold would generate pairs and then wait at `learner step 0` for good. So a run compares
what it asks for with what the cluster has before it starts anything, and fails at once with the
figures (or waits a bounded time when resources are busy or an autoscaler may add them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Resources = dict[str, float]


@dataclass(frozen=True)
class Request:
    """``count`` members of one kind, each asking for ``each`` (one Ray bundle per member)."""
    what: str
    count: int
    each: Resources


@dataclass(frozen=True)
class Node:
    name: str
    resources: Resources


def _bundle(cpus: float, gpus: float, slot: str | None) -> Resources:
    r = {"CPU": cpus}
    if gpus:
        r["GPU"] = gpus
    if slot:
        r[slot] = 1.0
    return r


def run_requests(cfg: Any) -> list[Request]:
    """What a run starts with: its generators, its separate judges (none when colocated) and its
    learner workers. Autoscaled pools start at their configured size; growing later is best effort."""
    c = cfg.cluster
    out = [Request("generator", c.num_generators, _bundle(c.generator_cpus, c.generator_gpus, c.generator_slot))]
    if not cfg.judge.colocate:
        out.append(Request("judge", c.num_judges, _bundle(c.judge_cpus, c.judge_gpus, c.judge_slot)))
    out.append(Request("learner worker", cfg.learner.num_workers,
                       _bundle(c.learner_cpus, c.learner_gpus, c.learner_slot)))
    return [r for r in out if r.count > 0]


def _fits(bundle: Resources, free: Resources) -> bool:
    return all(free.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items() if v > 0)


def unplaced(requests: list[Request], nodes: list[Node]) -> list[str]:
    """Members that do not fit: largest bundles first, each on the first node with room (Ray's own
    placement may do better, never worse than 'the total is too small', which this also catches)."""
    free = [dict(n.resources) for n in nodes]
    members = [(r.what, r.each) for r in requests for _ in range(r.count)]
    members.sort(key=lambda m: (-m[1].get("GPU", 0.0), -m[1].get("CPU", 0.0)))
    left = []
    for what, bundle in members:
        spot = next((f for f in free if _fits(bundle, f)), None)
        if spot is None:
            left.append(what)
            continue
        for k, v in bundle.items():
            spot[k] = spot.get(k, 0.0) - v
    return left


def _fmt(r: Resources) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(r.items()) if v) or "nothing"


def total(requests: list[Request]) -> Resources:
    out: Resources = {}
    for r in requests:
        for k, v in r.each.items():
            out[k] = out.get(k, 0.0) + v * r.count
    return out


def describe(requests: list[Request], nodes: list[Node], left: list[str], of: str) -> str:
    """The message: each pool's request, the run's total, and the cluster's nodes."""
    asks = "; ".join(f"{r.what} x{r.count} ({_fmt(r.each)} each)" for r in requests)
    have = "; ".join(f"{n.name}: {_fmt(n.resources)}" for n in nodes) or "no alive node"
    missing = ", ".join(f"{left.count(w)} {w}(s)" for w in dict.fromkeys(left))
    return (f"this run does not fit the cluster's {of} resources: {missing} cannot be placed. "
            f"It asks for {asks} = {_fmt(total(requests))} in all; the cluster has {have}. "
            f"Lower cluster.*_cpus / *_gpus or the pool sizes (cluster.num_generators, cluster.num_judges, "
            f"learner.num_workers), colocate the judge (judge.colocate), or add nodes.")


CORE_KEYS = ("CPU", "GPU")


def node_capacities(ray_nodes: list[dict[str, Any]], field: str = "Resources") -> list[Node]:
    """Alive nodes from ``ray.nodes()``: their resources (node-id and memory entries dropped)."""
    out = []
    for n in ray_nodes:
        if not n.get("Alive", False):
            continue
        res = {k: float(v) for k, v in n.get(field, {}).items()
               if k in CORE_KEYS or not (k.startswith("node:") or k.endswith("memory") or k.startswith("accelerator_type"))}
        out.append(Node(n.get("NodeManagerAddress", n.get("NodeID", "?")[:8]), res))
    return out
