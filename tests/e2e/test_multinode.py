"""Several raylets on one machine (ray.cluster_utils.Cluster), each node advertising one pool's
slot resource: generators, judges and the learner land only on their own nodes, and the run
completes with weights shipped through the object store (no shared path is read across nodes)."""
import json

from ray.cluster_utils import Cluster

from selm_ray.core.config import load_config


def test_pools_land_on_their_slot_nodes(tmp_path, tiny_model_path):
    from selm_ray.run import runner

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = {slot: cluster.add_node(num_cpus=2, resources={slot: 2})
             for slot in ("generator_slot", "judge_slot", "learner_slot")}
    cluster.wait_for_nodes()
    head = cluster.head_node.node_id
    try:
        cfg = load_config("jobs/configs/smoke.yaml", [
            f"model.path={tiny_model_path}", f"cluster.address={cluster.address}", "schedule.iterations=1",
            "cluster.generator_slot=generator_slot", "cluster.judge_slot=judge_slot",
            "cluster.learner_slot=learner_slot"])
        s = runner.train(cfg, tmp_path / "run")
    finally:
        cluster.shutdown()
    assert s["learner_error"] is None and s["pairs"] > 0 and s["policy_version"] == 1
    assert {g["node"] for g in s["generators"]} == {nodes["generator_slot"].node_id}
    assert {j["node"] for j in s["judges"]} == {nodes["judge_slot"].node_id}
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["node"] for m in metrics if "node" in m] == [nodes["learner_slot"].node_id]
    assert s["generators"][0]["version"] == 1  # weights reached the generator node
    # the buffer writes its logs into the run directory on the driver's node (the head here)
    assert s["buffer"]["node"] == head
