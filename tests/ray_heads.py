"""Helpers for the Ray heads the tests start with `ray start --head` (a module of its own, not
conftest: tests/unit has a conftest.py too, and `from conftest import ...` in one pytest run that
collects both folders resolves to whichever came first on sys.path)."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

HEAD_DIRS: list[Path] = []  # the private temp dirs of the heads this run started (head_temp_dir)


def head_temp_dir() -> str:
    """A private `ray start --temp-dir` for one head. A job's driver joins the cluster that its
    head's temp dir names as the newest one (`ray_current_cluster`, Ray's job supervisor resolves
    "auto" there): in the shared /tmp/ray, a Ray that anything else on the machine starts later
    (another test session, a user's) takes that place, and the job's run lands on it. Short, under
    the temp root: the head's Unix socket paths must stay under ~107 characters."""
    d = Path(tempfile.mkdtemp(prefix="rh-"))
    HEAD_DIRS.append(d)
    return str(d)


def heed_sigint() -> None:
    """A shell runs a background command with SIGINT ignored, and a child inherits that: the
    head would then sit out the SIGINT that stops it (and wait for SIGTERM's ~30 s more)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_process_group(proc: subprocess.Popen) -> None:
    # SIGINT: `ray start --block` stops its head in ~2 s; on SIGTERM it waits ~30 s more
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
