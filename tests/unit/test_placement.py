"""Does a run fit a cluster: the arithmetic the run checks before it starts anything."""
import pytest

from selm_ray.core.config import load_config
from selm_ray.core.placement import Node, Request, describe, node_capacities, run_requests, unplaced

pytestmark = pytest.mark.unit


def _cfg(*sets):
    return load_config("jobs/configs/smoke.yaml", list(sets))


def test_requests_follow_the_pools_and_the_learner():
    reqs = run_requests(_cfg("cluster.num_generators=2", "cluster.judge_cpus=0.5", "learner.num_workers=2"))
    assert [(r.what, r.count, r.each) for r in reqs] == [
        ("generator", 2, {"CPU": 1.0}), ("judge", 1, {"CPU": 0.5}), ("learner worker", 2, {"CPU": 1.0})]
    colocated = run_requests(_cfg("judge.colocate=true", "cluster.generator_slot=gen", "cluster.learner_gpus=1"))
    assert [(r.what, r.each) for r in colocated] == [("generator", {"CPU": 1.0, "gen": 1.0}),
                                                     ("learner worker", {"CPU": 1.0, "GPU": 1.0})]


def test_the_issue_case_two_cpus_for_three_members_is_named():
    reqs = run_requests(_cfg())  # smoke: generator, judge, learner worker, 1 CPU each
    nodes = [Node("127.0.0.1", {"CPU": 2.0})]
    left = unplaced(reqs, nodes)
    assert len(left) == 1
    msg = describe(reqs, nodes, left, "total")
    for part in ("generator x1 (CPU 1 each)", "judge x1 (CPU 1 each)", "learner worker x1 (CPU 1 each)",
                 "CPU 3 in all", "127.0.0.1: CPU 2", "cannot be placed"):
        assert part in msg, (part, msg)
    assert unplaced(reqs, [Node("a", {"CPU": 3.0})]) == []


def test_per_node_fit_not_only_the_total():
    # 4 CPUs in all, but no node has the 3 one learner worker asks for
    reqs = [Request("learner worker", 1, {"CPU": 3.0}), Request("generator", 1, {"CPU": 1.0})]
    assert unplaced(reqs, [Node("a", {"CPU": 2.0}), Node("b", {"CPU": 2.0})]) == ["learner worker"]
    # custom slot resources must exist on some node, GPUs likewise
    slotted = [Request("generator", 1, {"CPU": 1.0, "gen": 1.0})]
    assert unplaced(slotted, [Node("a", {"CPU": 8.0})]) == ["generator"]
    assert unplaced(slotted, [Node("a", {"CPU": 8.0}), Node("b", {"CPU": 1.0, "gen": 1.0})]) == []
    assert unplaced([Request("judge", 2, {"CPU": 1.0, "GPU": 1.0})], [Node("a", {"CPU": 8.0, "GPU": 1.0})]) == ["judge"]


def test_node_capacities_reads_ray_nodes_and_skips_dead_ones():
    nodes = node_capacities([
        {"Alive": True, "NodeManagerAddress": "10.0.0.1",
         "Resources": {"CPU": 4.0, "memory": 1e9, "object_store_memory": 1e9, "node:10.0.0.1": 1.0, "gen": 1.0}},
        {"Alive": False, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 64.0}},
    ])
    assert nodes == [Node("10.0.0.1", {"CPU": 4.0, "gen": 1.0})]


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_ensure_fits_fails_at_once_waits_for_busy_resources_and_gives_up_in_time():
    from selm_ray.run.fit import PlacementError, ensure_fits

    small = lambda: ([Node("127.0.0.1", {"CPU": 2.0})], {"CPU": 2.0})  # noqa: E731
    logs, clock = [], _Clock()
    with pytest.raises(PlacementError, match="CPU 3 in all; the cluster has 127.0.0.1: CPU 2"):
        ensure_fits(_cfg(), logs.append, state=small, sleep=clock.sleep, clock=clock)
    assert clock.t == 0  # at once, no waiting

    # the nodes are big enough but other work holds 6 of 8 CPUs: wait, say so once, give up at the limit
    busy = lambda: ([Node("n", {"CPU": 8.0})], {"CPU": 2.0})  # noqa: E731
    with pytest.raises(PlacementError, match="gave up after cluster.placement_timeout_s=10 s: .*short of CPU 1"):
        ensure_fits(_cfg("cluster.placement_timeout_s=10"), logs.append, state=busy, sleep=clock.sleep, clock=clock)
    assert 10 <= clock.t <= 12 and len(logs) == 1 and "other work holds it now" in logs[0]

    # released after a while: the run goes ahead
    states = iter([busy(), busy(), ([Node("n", {"CPU": 8.0})], {"CPU": 8.0})])
    ensure_fits(_cfg(), logs.append, state=lambda: next(states), sleep=clock.sleep, clock=clock)

    # an autoscaling cluster: too small now, nodes may come, so wait for them (bounded)
    logs.clear()
    with pytest.raises(PlacementError, match="gave up after .*Waiting for the autoscaler"):
        ensure_fits(_cfg("cluster.wait_for_nodes=true", "cluster.placement_timeout_s=4"), logs.append, state=small,
                    sleep=clock.sleep, clock=clock)
    assert len(logs) == 1
