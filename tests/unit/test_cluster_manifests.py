"""cluster/ files parse and carry the fields Ray's launcher and KubeRay require; each pool's slot
resource is advertised by exactly one node group and matches what the job configs request."""
import json
import shlex
from pathlib import Path

import pytest
import yaml

from selm_ray.core.config import load_config

SLOTS = {"generator_slot", "judge_slot", "learner_slot"}
ROOT = Path(__file__).resolve().parents[2]
IMAGE_APP = "/app"  # where cluster/kuberay/Dockerfile puts the repository


def _load(rel):
    return yaml.safe_load((ROOT / rel).read_text())


def test_launcher_yaml():
    c = _load("cluster/aws.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in c, key
    assert c["provider"]["type"] == "aws" and c["provider"]["region"]
    types = c["available_node_types"]
    assert c["head_node_type"] in types
    owners = {}
    for name, t in types.items():
        assert "node_config" in t and "resources" in t, name
        if name != c["head_node_type"]:
            assert 0 <= t["min_workers"] <= t["max_workers"] <= c["max_workers"], name
        for r in t["resources"]:
            if r in SLOTS:
                owners.setdefault(r, []).append(name)
    assert {k: len(v) for k, v in owners.items()} == {s: 1 for s in SLOTS}
    assert any("--dashboard-host=127.0.0.1" in cmd for cmd in c["head_start_ray_commands"])


def _check_ray_cluster_spec(spec, dashboard_host="127.0.0.1"):
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == dashboard_host
    assert head["template"]["spec"]["containers"][0]["image"]
    seen = set()
    for g in spec["workerGroupSpecs"]:
        assert g["groupName"] and 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        container = g["template"]["spec"]["containers"][0]
        assert container["name"] and container["image"]
        resources = json.loads(json.loads(g["rayStartParams"]["resources"]))  # KubeRay's quoted JSON
        seen |= set(resources) & SLOTS
    assert seen == SLOTS


@pytest.mark.parametrize("rel", ["cluster/kuberay/raycluster.yaml", "cluster/kuberay/rayjob.yaml"])
def test_kuberay_manifests(rel):
    m = _load(rel)
    assert m["apiVersion"] == "ray.io/v1" and m["metadata"]["name"]
    if m["kind"] == "RayCluster":
        _check_ray_cluster_spec(m["spec"])
    else:
        assert m["kind"] == "RayJob"
        # the submitter pod calls the head's job API: reachable within the cluster
        _check_ray_cluster_spec(m["spec"]["rayClusterSpec"], dashboard_host="0.0.0.0")
        assert "pip" not in yaml.safe_load(m["spec"]["runtimeEnvYAML"])  # the code is in the image
        argv = shlex.split(m["spec"]["entrypoint"])
        in_image = lambda path: ROOT / Path(path).relative_to(IMAGE_APP)  # noqa: E731
        assert argv[:2] == ["python", "/app/jobs/train.py"] and in_image(argv[1]).is_file()
        config = argv[argv.index("--config") + 1]
        assert load_config(in_image(config)).cluster.generator_slot == "generator_slot"
        images = {c["image"] for g in [m["spec"]["rayClusterSpec"]["headGroupSpec"], *m["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
                  for c in g["template"]["spec"]["containers"]}
        assert images == {"selm-ray:gpu"}


def test_job_image_carries_the_code_and_fails_on_a_failed_install():
    lines = (ROOT / "cluster/kuberay/Dockerfile").read_text().splitlines()
    assert f"COPY --chown=ray:users . {IMAGE_APP}" in lines
    assert any(line.startswith("RUN python -m pip install") and "|| true" not in line for line in lines)
    setup = _load("cluster/aws.yaml")["setup_commands"]
    assert setup and not any("|| true" in cmd for cmd in setup)


@pytest.mark.parametrize("name", ["zephyr-7b-selm", "llama3-8b-selm", "self-rewarding"])
def test_cluster_job_configs_request_the_advertised_slots(name):
    c = load_config(ROOT / f"jobs/configs/{name}.yaml").cluster
    assert {c.generator_slot, c.judge_slot, c.learner_slot} == SLOTS


def test_job_runtime_env_parses():
    env = _load("jobs/runtime_env.yaml")
    assert env["working_dir"] == "." and all(isinstance(v, str) for v in env["env_vars"].values())


def test_grafana_dashboard_plots_every_exported_metric():
    import re

    from selm_ray.actors.control import ACTOR_METRIC, METRICS, POOL_METRIC

    dash = json.loads((ROOT / "cluster/grafana/selm-ray-dashboard.json").read_text())
    assert dash["uid"] and dash["panels"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    # Ray exports ray.util.metrics under a "ray_" prefix
    plotted = {m.group(1) for e in exprs for m in [re.match(r"ray_(\w+)\{", e)] if m}
    assert plotted == set(METRICS) | {POOL_METRIC, ACTOR_METRIC}
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "run"}
