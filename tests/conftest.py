"""Test tiers by folder: unit/ (no Ray, no vLLM), ray/ (local Ray), e2e/ (real vLLM / Ray Train).

All tiers run on CPU. Models are prepared once per test session into a private SELM_RAY_HOME,
so the SmolLM2 conversion itself is exercised by every CI run (and cached for the rest of it).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_OWN_HOME = not os.environ.get("SELM_RAY_TEST_HOME")
_HOME = Path(os.environ.get("SELM_RAY_TEST_HOME") or tempfile.mkdtemp(prefix="selm-ray-test-home-"))
os.environ["SELM_RAY_HOME"] = str(_HOME)
TIERS = ("unit", "ray", "e2e")
# Every local Ray start leaves a session folder of logs (tens of MB); the suite starts dozens.
_RAY_TMP = Path(tempfile.gettempdir()) / "ray"
_RAY_SESSIONS_BEFORE = set(_RAY_TMP.glob("session_2*"))


def pytest_sessionfinish(session, exitstatus):
    """Leave the disk as found: the private model home and the Ray session folders this run made.

    Kept when something failed, since the Ray logs are then what tells why.
    """
    if exitstatus != 0:
        return
    if _OWN_HOME:
        shutil.rmtree(_HOME, ignore_errors=True)
    for folder in set(_RAY_TMP.glob("session_2*")) - _RAY_SESSIONS_BEFORE:
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
