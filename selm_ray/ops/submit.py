"""`selm-ray submit`: a thin convenience over Ray's JobSubmissionClient (same as `ray job submit`)."""
from __future__ import annotations

import shlex
from pathlib import Path

import yaml

RUNTIME_ENV = Path("jobs/runtime_env.yaml")


def submit(config: str, address: str, overrides: list[str], working_dir: str = ".",
           run_id: str | None = None) -> str:
    """Submit jobs/train.py with CONFIG to the cluster at ``address``; returns the submission id,
    which is also the run id (`selm-ray stats/scale --run`) when ``run_id`` is given."""
    from ray.job_submission import JobSubmissionClient

    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text()) if RUNTIME_ENV.is_file() else {}
    runtime_env["working_dir"] = working_dir
    argv = ["python", "jobs/train.py", "--config", config] + [x for o in overrides for x in ("--set", o)]
    argv += ["--run-id", run_id] if run_id else []
    client = JobSubmissionClient(address)
    return client.submit_job(entrypoint=shlex.join(argv), runtime_env=runtime_env, submission_id=run_id)


def follow_hint(address: str, job_id: str) -> str:
    return (f"submitted {job_id}\n"
            f"  logs:   ray job logs --address {address} --follow {job_id}\n"
            f"  status: ray job status --address {address} {job_id}\n"
            f"  stop:   ray job stop --address {address} {job_id}\n"
            f"  stats:  selm-ray stats --address {address} --run {job_id} --watch\n"
            f"  scale:  selm-ray scale --address {address} --run {job_id} --generators N --judges M")
