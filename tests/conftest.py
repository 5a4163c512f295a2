"""Test tiers by folder: unit/ (no Ray, no vLLM), ray/ (local Ray), e2e/ (real vLLM / Ray Train).

All tiers run on CPU. Models are prepared once per test session into a private SELM_RAY_HOME,
so the SmolLM2 conversion itself is exercised by every CI run (and cached for the rest of it).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ray_heads import HEAD_DIRS, head_temp_dir, heed_sigint, stop_process_group  # noqa: F401 (tests import them from ray_heads)

_OWN_HOME = not os.environ.get("SELM_RAY_TEST_HOME")
_HOME = Path(os.environ.get("SELM_RAY_TEST_HOME") or tempfile.mkdtemp(prefix="selm-ray-test-home-"))
os.environ["SELM_RAY_HOME"] = str(_HOME)
TIERS = ("unit", "ray", "e2e")
# Token authentication, as Ray turns it on for every new local cluster, with a token of the
# session's own: every cluster this process or its children start, and every client, use it
# (set before ray is first imported; Ray reads the mode once per process).
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
# Every local Ray start leaves a session folder of logs (tens of MB); the suite starts dozens.
_RAY_TMP = Path(tempfile.gettempdir()) / "ray"
_RAY_SESSIONS_BEFORE = set(_RAY_TMP.glob("session_2*"))


def _made_here_and_done(session_folder: Path) -> bool:
    """A Ray session folder ends with the pid of the process that started that Ray: this pytest
    (its own local clusters), or one whose process has ended (the runs it started). A folder whose
    process still runs belongs to someone else on the machine, e.g. a second pytest session started
    meanwhile: removing it made that session's next `ray.init` fail (its folder gone at start)."""
    pid = session_folder.name.rsplit("_", 1)[-1]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def pytest_sessionfinish(session, exitstatus):
    """Leave the disk as found: the private model home and the Ray session folders this run made.

    Kept when something failed, since the Ray logs are then what tells why.
    """
    if exitstatus != 0:
        return
    if _OWN_HOME:
        shutil.rmtree(_HOME, ignore_errors=True)
    if session.config.option.collectonly:  # started no Ray: any new session folder is someone else's
        return
    made = set(_RAY_TMP.glob("session_2*")) - _RAY_SESSIONS_BEFORE
    for folder in [*filter(_made_here_and_done, made), *HEAD_DIRS]:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def selm_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def smollm2_path(selm_home) -> Path:
    from selm_ray.engines.models import prepare_model

    return prepare_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="session")
def tiny_model_path(smollm2_tokenizer, tmp_path_factory) -> Path:
    from selm_ray.engines.models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model", seed=0, tokenizer=smollm2_tokenizer)


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory) -> str:
    """One local Ray head for the session's in-process runs, which join it through the run's own
    `cluster.address` path (as a run on a cluster does). A head start and stop costs several
    seconds of the two cores, paid once instead of once per run. Tests of start-up itself, and
    every CLI test, still start their own Ray as a user's command does.

    8 logical CPUs on a 2-core machine: Ray schedules by declared CPUs, and the largest run here
    (autoscale: 2 generators, a judge, the learner, its controller) declares more than two; the
    private clusters a run starts itself are sized the same way (runner._init_ray).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("ray-head") / "head.log").open("w")
    # --block keeps `ray start` in the foreground; ending its process group stops exactly this
    # head (`ray stop` would stop every Ray on the machine)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=8", "--include-dashboard=false",
                             f"--temp-dir={head_temp_dir()}", "--disable-usage-stats", "--block"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=heed_sigint)
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_head(address, proc, log.name)
        yield address
    finally:
        stop_process_group(proc)


def _wait_for_head(address: str, proc: subprocess.Popen, log: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    check = [sys.executable, "-c", f"import ray; ray.init(address='{address}'); ray.shutdown()"]
    while subprocess.run(check, capture_output=True, timeout=120).returncode != 0:
        assert proc.poll() is None, f"ray start --head exited: {Path(log).read_text()[-3000:]}"
        assert time.time() < deadline, f"the shared Ray head at {address} never took a client"
        time.sleep(1)
