"""`ray job submit` (Ray's own CLI) against a real local head bound to 127.0.0.1."""
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray_heads import head_temp_dir, heed_sigint, stop_process_group  # tests/ray_heads.py

RAY = str(Path(sys.executable).parent / "ray")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory, selm_home):
    """One head for the module's tests (each submits its own jobs, in namespaces of their own):
    a head start and stop is about a minute here."""
    tmp_path = tmp_path_factory.mktemp("head")
    port, dash, metrics, agent = _free_port(), _free_port(), _free_port(), _free_port()
    # token authentication on, with a token of our own that every client below presents
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env = {**os.environ, **auth, "SELM_RAY_HOME": str(selm_home), "RAY_ADDRESS": "",
           # the head runs job entrypoints (`python ...`) with its own PATH: this environment's
           # python, as on a cluster whose nodes have selm-ray installed
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # --block keeps `ray start` in the foreground; ending its process group stops exactly this
    # head (`ray stop` would stop every Ray on the machine, other test sessions' included)
    log_path = tmp_path / "head.log"
    log = log_path.open("w")
    proc = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=8",
                             f"--metrics-export-port={metrics}",
                             # the job agent's HTTP port defaults to 52365: another Ray on this
                             # machine (a parallel session) may hold it, and jobs then never start
                             f"--dashboard-agent-listen-port={agent}",
                             # jobs' drivers join the cluster this names (see head_temp_dir)
                             f"--temp-dir={head_temp_dir()}",
                             "--include-dashboard=true", "--disable-usage-stats", "--block"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=heed_sigint)
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_dashboard(address, proc, env, log_path)
        yield SimpleNamespace(address=address, env=env, gcs=f"127.0.0.1:{port}", metrics_port=metrics)
    finally:
        stop_process_group(proc)


def _ray(env, *args, timeout=120):
    """Ray's CLI in a subprocess: it reads the auth token from env at start, where an in-process
    client would keep whatever auth mode this test process saw when it first imported ray."""
    return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _wait_for_dashboard(address, proc, env, log_path, timeout=180):
    deadline = time.time() + timeout
    while _ray(env, "job", "list", "--address", address).returncode != 0:
        assert proc.poll() is None, f"ray start --head exited: {log_path.read_text()[-3000:]}"
        assert time.time() < deadline, "the head's dashboard never came up"
        time.sleep(1)


def _submit(address, env, *args, submission_id=None):
    sid = ["--submission-id", submission_id] if submission_id else []
    cmd = ["job", "submit", "--address", address, "--working-dir", str(ROOT), "--no-wait", *sid,
           "--runtime-env", str(ROOT / "jobs/runtime_env.yaml"), "--", "python", "jobs/train.py", *args]
    for _ in range(30):  # the head's job agent may come up a little after its dashboard
        out = _ray(env, *cmd, timeout=300)
        if out.returncode == 0 or "No available agent" not in out.stderr:
            break
        time.sleep(2)
    assert out.returncode == 0, out.stderr[-2000:]
    return submission_id or re.search(r"raysubmit_[A-Za-z0-9]+", out.stdout + out.stderr).group(0)


def _wait(address, env, job, timeout=900):
    # one `ray job logs --follow` (it returns once the job has ended) instead of a status call
    # every few seconds: each CLI call is ~1.6 s of CPU, taken from the job on a 2-core machine
    deadline = time.time() + timeout
    _ray(env, "job", "logs", "--follow", "--address", address, job, timeout=timeout)
    while time.time() < deadline:
        out = _ray(env, "job", "status", "--address", address, job)
        text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # the CLI may colour its output
        # the CLI prints "Job '<id>' succeeded / failed / was stopped" once the job has ended
        m = re.search(r"Job '[^']+' (succeeded|failed|was stopped)", text)
        if m:
            status = {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}[m.group(1)]
            return status, _ray(env, "job", "logs", "--address", address, job).stdout
        time.sleep(2)
    raise AssertionError(f"job {job} still running after {timeout}s")


def test_ray_job_submit_smoke_and_bad_config(head, tmp_path, tiny_model_path):
    address, env = head.address, head.env
    bad = _submit(address, env, "--config", "jobs/configs/smoke.yaml", "--set", "learner.bogus=1")
    status, logs = _wait(address, env, bad, timeout=300)
    assert status == "FAILED" and "learner.bogus: unknown key" in logs

    # selm-ray submit: validates locally first, so a bad key never reaches the cluster ...
    local = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "submit", "jobs/configs/smoke.yaml", "--address",
                            address, "--set", "judge.mode=vibes"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert local.returncode == 2 and "judge.mode: must be one of" in local.stderr
    # ... and a valid one comes back with a submission id that the cluster knows. Its run directory
    # (run.output_dir/<run id>) is on this machine's disk: the head is local.
    ok = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "submit", "jobs/configs/smoke.yaml", "--address",
                         address, "--set", f"model.path={tiny_model_path}", "--set", f"run.output_dir={tmp_path}"],
                        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    sid = re.search(r"submitted (\S+)", ok.stdout).group(1)  # the run id, also the submission id
    assert sid.startswith("smoke-") and "ray job logs" in ok.stdout and f"--run {sid}" in ok.stdout

    status, logs = _wait(address, env, sid)  # the head is still healthy after the failed job
    assert status == "SUCCEEDED", logs[-3000:]
    summary = json.loads((tmp_path / sid / "summary.json").read_text())
    assert summary["pairs"] > 0 and summary["policy_version"] == 2 and summary["learner_error"] is None
    # it joined this head (its GCS port; Ray may name the node by another of its addresses): never
    # a private cluster, nor another Ray on the machine
    port = head.gcs.rsplit(":", 1)[1]
    assert "Started a local Ray instance" not in logs and re.search(rf"Ray cluster \S+:{port},", logs), logs[-3000:]


def _selm(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def _stats(head, run, address=None):
    out = _selm(head.env, "stats", "--address", address or head.gcs, "--run", run, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _follow(head, args):
    """One `selm-ray stats ARGS --watch --json` process (a JSON line a second). One driver that
    stays connected: a new stats process per look costs seconds of CPU, and with two jobs starting
    on 2 cores its first look can come after a short job has ended (seen in CI: 90 s)."""
    return subprocess.Popen([sys.executable, "-m", "selm_ray.ops.cli", "stats", "--address", head.gcs, *args,
                             "--watch", "--json", "--interval", "1"], env=head.env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _until(proc, until, what, timeout=300):
    """The first JSON line of ``proc`` (see _follow) that meets ``until``; ends ``proc`` either way."""
    timer = threading.Timer(timeout, proc.kill)  # a stream that never meets it ends here
    timer.start()
    last = None
    try:
        for line in proc.stdout:
            last = json.loads(line)
            if until(last):
                return last
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
    raise AssertionError(f"{what}: not within {timeout} s; last: {last} {proc.stderr.read()[-1500:]}")


def _poll_stats(head, run, until, timeout=300):
    """The first snapshot of ``run`` that meets ``until``."""
    return _until(_follow(head, ["--run", run]), until, f"{run}: stats never met the condition", timeout)


def _submit_two(head, tmp_path, tiny_model_path):
    """Job a (minutes long) and job b (short); their run ids."""
    model = f"model.path={tiny_model_path}"
    a = _submit(head.address, head.env, "--config", "jobs/configs/smoke.yaml", "--set", model, "--set",
                "schedule.iterations=3", "--set", "schedule.prompts_per_iteration=36", "--set",
                # long enough (minutes) that scaling up and down happens while it generates
                "generation.max_new_tokens=96", "--set", "generation.num_candidates=4", "--run-id", "live-a",
                "--run-dir", str(tmp_path / "a"), submission_id="live-a")
    # the shorter job (b): one small iteration, so that it leaves the 2 cores to a soon after
    b = _submit(head.address, head.env, "--config", "jobs/configs/smoke.yaml", "--set", model, "--set",
                "schedule.iterations=1", "--set", "schedule.prompts_per_iteration=8", "--set",
                "generation.max_new_tokens=96", "--run-id", "live-b", "--run-dir", str(tmp_path / "b"),
                submission_id="live-b")
    return a, b


def test_live_stats_scale_and_two_isolated_jobs(head, tmp_path, tiny_model_path):
    """Two jobs at once on one head: live stats change, one job's generator pool grows 1 -> 2
    mid-run and the new generator takes work, and neither job sees the other's actors."""
    # the live runs, as `stats --list` names them, followed from before either job starts
    live = _follow(head, ["--list"])
    try:
        a, b = _submit_two(head, tmp_path, tiny_model_path)
    except BaseException:
        live.kill()  # _until ends it otherwise
        raise
    # both live at once, each in its own namespace (that stats without --run then refuses, naming
    # them: tests/ray/test_attach.py, on controllers that stay up as long as it needs)
    _until(live, lambda s: {a, b} <= set(s["runs"]), f"stats --list naming {a} and {b}", timeout=600)
    first = _poll_stats(head, a, lambda s: s.get("state") == "running")

    scaled = _selm(head.env, "scale", "--address", head.gcs, "--run", a, "--generators", "2", "--wait", "300")
    assert scaled.returncode == 0, scaled.stderr[-2000:]
    pools = json.loads(scaled.stdout.strip().splitlines()[-1])["pools"]
    assert pools["generator"]["size"] == 2 and pools["judge"]["size"] == 1
    at_scale = _stats(head, a)["buffer"]["pairs_in"]
    later = _poll_stats(head, a, lambda s: s["buffer"]["pairs_in"] > at_scale and all(
        g["calls"] > 0 for g in s["pools"]["generator"]["actors"]), timeout=600)
    assert later["time"] > first["time"] and later["buffer"]["pairs_in"] > first["buffer"]["pairs_in"]
    assert [e["to"] for e in later["events"]] == [2]  # 1 -> 2 so far
    # every actor a snapshot shows belongs to its own run (b: the snapshots its run logged, below)
    names = [x["name"] for p in later["pools"].values() for x in p["actors"]]
    assert names and all(n.startswith(f"{a}-") for n in names), names
    # and back to 1: the newest generator stops taking work, finishes what it holds, then leaves
    shrunk = _selm(head.env, "scale", "--address", head.gcs, "--run", a, "--generators", "1", "--wait", "300")
    assert shrunk.returncode == 0, shrunk.stderr[-2000:]
    pools = json.loads(shrunk.stdout.strip().splitlines()[-1])["pools"]
    assert (pools["generator"]["size"], pools["generator"]["draining"]) == (1, 0)
    # the same snapshot through the dashboard URL (relayed by a short job on the cluster)
    relayed = _stats(head, a, address=head.address)
    assert relayed["run"] == a and relayed["pools"]["generator"]["size"] == 1
    # the figures are Ray metrics too (the node's Prometheus endpoint)
    text = urllib.request.urlopen(f"http://127.0.0.1:{head.metrics_port}/metrics", timeout=30).read().decode()
    assert "ray_selm_ray_buffer_size{" in text and 'run="live-a"' in text and "ray_selm_ray_pool_size{" in text

    for job, d in ((a, "a"), (b, "b")):
        status, logs = _wait(head.address, head.env, job)
        assert status == "SUCCEEDED", logs[-3000:]
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())
    # the drained generator left; every prompt of the job was still answered exactly once (below)
    assert len(sa["generators"]) == 1 and sa["generators"][0]["calls"] > 0
    assert [e["to"] for e in sa["pool_events"]] == [2, 1] and sb["pool_events"] == []
    b_live = [json.loads(line) for line in (tmp_path / "b" / "stats.jsonl").read_text().splitlines()]
    names = {x["name"] for snap in b_live if snap["state"] == "running"
             for p in snap["pools"].values() for x in p["actors"]}
    assert names and all(n.startswith(f"{b}-") for n in names), names
    for summary, d in ((sa, "a"), (sb, "b")):  # each buffer holds exactly its own job's pairs
        rows = (tmp_path / d / "buffer" / "pairs.jsonl").read_text().splitlines()
        assert summary["pairs"] == len(rows) > 0
    assert sa["prompts"] == 108 and sb["prompts"] == 8
    report = _selm(head.env, "report", str(tmp_path / "a"))
    assert report.returncode == 0 and (tmp_path / "a" / "report" / "throughput.png").is_file()
