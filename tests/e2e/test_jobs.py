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
def head(tmp_path, selm_home, monkeypatch):
    port, dash = _free_port(), _free_port()
    # token authentication on, with a token of our own that every client below presents
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    for k, v in auth.items():
        monkeypatch.setenv(k, v)
    env = {**os.environ, **auth, "SELM_RAY_HOME": str(selm_home), "RAY_ADDRESS": ""}
    # --block keeps `ray start` in the foreground; ending its process group stops exactly this
    # head (`ray stop` would stop every Ray on the machine, other test sessions' included)
    proc = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=4",
                             "--include-dashboard=true", "--disable-usage-stats", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_dashboard(address, proc)
        yield address, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_for_dashboard(address, proc, timeout=180):
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, "ray start --head exited"
        try:
            JobSubmissionClient(address).list_jobs()
            return
        except Exception:
            assert time.time() < deadline, "the head's dashboard never came up"
            time.sleep(1)


def _submit(address, env, *args):
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--no-wait",
           "--runtime-env", str(ROOT / "jobs/runtime_env.yaml"), "--", "python", "jobs/train.py", *args]
    for _ in range(30):  # the head's job agent may come up a little after its dashboard
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        if out.returncode == 0 or "No available agent" not in out.stderr:
            break
        time.sleep(2)
    assert out.returncode == 0, out.stderr[-2000:]
    return re.search(r"raysubmit_[A-Za-z0-9]+", out.stdout + out.stderr).group(0)


def _wait(address, env, job, timeout=900):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = str(client.get_job_status(job))
        if status.split(".")[-1] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status.split(".")[-1], client.get_job_logs(job)
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
