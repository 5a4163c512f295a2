"""`ray job submit` (Ray's own CLI) against a real local head bound to 127.0.0.1."""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).parent / "ray")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path, selm_home):
    port, dash = _free_port(), _free_port()
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
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=4",
                             "--include-dashboard=true", "--disable-usage-stats", "--block"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_dashboard(address, proc, env, log_path)
        yield address, env
    finally:
        _stop(proc)


def _stop(proc):
    for sig, wait in ((signal.SIGTERM, 90), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


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


def _submit(address, env, *args):
    cmd = ["job", "submit", "--address", address, "--working-dir", str(ROOT), "--no-wait",
           "--runtime-env", str(ROOT / "jobs/runtime_env.yaml"), "--", "python", "jobs/train.py", *args]
    for _ in range(30):  # the head's job agent may come up a little after its dashboard
        out = _ray(env, *cmd, timeout=300)
        if out.returncode == 0 or "No available agent" not in out.stderr:
            break
        time.sleep(2)
    assert out.returncode == 0, out.stderr[-2000:]
    return re.search(r"raysubmit_[A-Za-z0-9]+", out.stdout + out.stderr).group(0)


def _wait(address, env, job, timeout=900):
    deadline = time.time() + timeout
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
    address, env = head
    bad = _submit(address, env, "--config", "jobs/configs/smoke.yaml", "--set", "learner.bogus=1")
    status, logs = _wait(address, env, bad, timeout=300)
    assert status == "FAILED" and "learner.bogus: unknown key" in logs

    # selm-ray submit: validates locally first, so a bad key never reaches the cluster ...
    local = subprocess.run([sys.executable, "-m", "selm_ray.cli", "submit", "jobs/configs/smoke.yaml", "--address",
                            address, "--set", "judge.mode=vibes"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert local.returncode == 2 and "judge.mode: must be one of" in local.stderr
    # ... and a valid one comes back with a submission id that the cluster knows
    ok = subprocess.run([sys.executable, "-m", "selm_ray.cli", "submit", "jobs/configs/smoke.yaml", "--address",
                         address, "--set", f"model.path={tiny_model_path}", "--set", "schedule.iterations=1"],
                        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    sid = re.search(r"raysubmit_[A-Za-z0-9]+", ok.stdout).group(0)
    assert "ray job logs" in ok.stdout
    status, logs = _wait(address, env, sid)
    assert status == "SUCCEEDED", logs[-3000:]

    run_dir = tmp_path / "run"
    job = _submit(address, env, "--config", "jobs/configs/smoke.yaml", "--set", f"model.path={tiny_model_path}",
                  "--run-dir", str(run_dir))
    status, logs = _wait(address, env, job)  # the head is still healthy after the failed job
    assert status == "SUCCEEDED", logs[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pairs"] > 0 and summary["policy_version"] == 2 and summary["learner_error"] is None
    assert "Started a local Ray instance" not in logs  # it joined the head, never a private cluster
