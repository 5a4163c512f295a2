"""`selm-ray stats` against live controllers on a real Ray head: which runs it finds, and what it
says when it cannot tell which one was meant or cannot reach the cluster.

The controllers are the real control actor (actors/control.py), named as a run's operator names
it, one per namespace as two runs on one cluster have; the jobs around them are left out so they
stay up for as long as each look takes (tests/e2e/test_jobs.py runs two real jobs).
"""
import json
import socket
import subprocess
import sys

import ray

from selm_ray.actors.control import CONTROL_NAME, ControlPlane


def _stats(address, *args):
    return subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "stats", "--address", address, *args],
                          capture_output=True, text=True, timeout=300)


def test_stats_lists_live_runs_and_asks_which_when_several(ray_address):
    ray.init(address=ray_address)
    try:
        runs = ["attach-one", "attach-two"]
        ctls = [ray.remote(ControlPlane).options(name=CONTROL_NAME, namespace=r, num_cpus=0).remote(r) for r in runs]
        ray.get([c.snapshot.remote() for c in ctls], timeout=120)  # both up

        listed = _stats(ray_address, "--list", "--json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert set(runs) <= set(json.loads(listed.stdout.strip().splitlines()[-1])["runs"])
        text = _stats(ray_address, "--list")
        assert text.returncode == 0 and "live runs: " in text.stdout and all(r in text.stdout for r in runs)

        several = _stats(ray_address, "--json")  # which one? it names them, and changes nothing
        assert several.returncode == 2 and "--run is needed" in several.stderr
        assert all(r in several.stderr for r in runs), several.stderr[-2000:]

        one = _stats(ray_address, "--run", runs[1], "--json")
        assert one.returncode == 0, one.stderr[-2000:]
        assert json.loads(one.stdout.strip().splitlines()[-1])["run"] == runs[1]
        gone = _stats(ray_address, "--run", "attach-none", "--json")
        assert gone.returncode == 2 and "attach-none: no live selm-ray run of that id" in gone.stderr
        assert all(r in gone.stderr for r in runs)

        both = _stats(ray_address, "--list", "--run", runs[0])
        assert both.returncode == 2 and "leave out --run" in both.stderr
    finally:
        ray.shutdown()


def test_stats_at_an_address_where_nothing_listens_fails_at_once():
    with socket.socket() as s:  # a port that nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
        out = _stats(address, "--json")  # ray.init alone would retry there for many minutes (> timeout)
    assert out.returncode == 2 and f"--address {address}: no Ray cluster answers there" in out.stderr
