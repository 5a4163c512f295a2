"""`selm-ray stats` and `selm-ray scale`: attach to a running job's controller actor.

``--address`` is the Ray cluster address (``host:6379``, or ``auto`` on a cluster node) that
ray.init takes. A dashboard URL (``http://host:8265``, e.g. a port-forward to a KubeRay head)
works too: the same command then runs as a short Ray job on the cluster, through the Jobs API,
and its JSON output is relayed (slower, one job per call; the cluster's nodes must have
selm-ray installed, as they must to train).
"""
from __future__ import annotations

import json
import shlex
import socket
import time
from typing import Any

from selm_ray.actors.control import CONTROL_NAME


class AttachError(RuntimeError):
    """The cluster or the run cannot be reached; the message says which and why."""


def is_dashboard_url(address: str) -> bool:
    return address.startswith(("http://", "https://"))


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) -> (host, port); None for other forms (``auto``, ``ray://``)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in address:
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``host:port``: ray.init keeps
    retrying a GCS that is not there for many minutes before it gives up."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as e:
        raise AttachError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); "
                          f"give the head's GCS address (host:6379, what `ray start --head` printed), "
                          f"or its dashboard URL (http://host:8265)") from None


def connect(address: str) -> None:
    import ray

    check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        # a refused token shows only in Ray's own log lines, not in the exception: say where to look
        raise AttachError(f"--address {address}: cannot connect to a Ray cluster there ({e}); with token "
                          f"authentication on there, export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN") from None


def live_runs() -> list[str]:
    import ray

    return sorted(a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"] == CONTROL_NAME)


def find_controller(run: str | None) -> tuple[str, Any]:
    """The controller actor of ``run`` (or of the only live run when ``run`` is None)."""
    import ray

    runs = live_runs()
    if run is None:
        if len(runs) != 1:
            found = ", ".join(runs) if runs else "none"
            raise AttachError(f"--run is needed: {len(runs)} selm-ray runs are live on this cluster ({found})")
        run = runs[0]
    elif run not in runs:
        raise AttachError(f"--run {run}: no live selm-ray run of that id (live: {', '.join(runs) or 'none'})")
    return run, ray.get_actor(CONTROL_NAME, namespace=run)


def snapshot(run: str | None) -> dict[str, Any]:
    from selm_ray.actors import remote

    _, actor = find_controller(run)
    return remote.get(actor.snapshot.remote(), "controller.snapshot")


def request_scale(run: str | None, generators: int | None, judges: int | None) -> tuple[str, dict[str, int]]:
    import ray

    from selm_ray.actors import remote

    run, actor = find_controller(run)
    try:
        return run, remote.get(actor.request_scale.remote(generators, judges), "controller.request_scale")
    except ray.exceptions.RayTaskError as e:
        raise AttachError(str(e.cause) if getattr(e, "cause", None) else str(e)) from None


def wait_for_sizes(run: str | None, want: dict[str, int], timeout: float) -> dict[str, Any]:
    """Poll snapshots until every pool in ``want`` ({"generators": n, ...}) has n active actors,
    none still starting and none still draining."""
    deadline = time.time() + timeout
    while True:
        snap = snapshot(run)
        pools = {f"{k}s": p for k, p in snap.get("pools", {}).items()}
        settled = all(k in pools and (pools[k]["size"], pools[k]["starting"], pools[k]["draining"]) == (n, 0, 0)
                      for k, n in want.items())
        if settled or time.time() > deadline:
            return snap
        time.sleep(1.0)


def via_job(address: str, argv: list[str], timeout: float = 300) -> str:
    """Run `selm-ray ARGV --address auto` as a Ray job at dashboard ``address``; its stdout."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    entry = shlex.join(["python", "-m", "selm_ray.ops.cli", *argv, "--address", "auto"])
    job = client.submit_job(entrypoint=entry, entrypoint_num_cpus=0)
    deadline = time.time() + timeout
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                           JobStatus.STOPPED):
        if time.time() > deadline:
            client.stop_job(job)
            raise AttachError(f"{address}: helper job {job} did not finish in {timeout:.0f}s")
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    if status != JobStatus.SUCCEEDED:
        last = logs.strip().splitlines()[-1] if logs.strip() else status
        raise AttachError(f"{address}: {last}")
    return logs


def last_json(text: str) -> Any:
    """The last line of ``text`` that parses as JSON (a job's log may carry Ray's own lines)."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AttachError("the helper job printed no JSON")
