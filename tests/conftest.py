"""Test tiers by folder: unit/ (no Ray, no vLLM), ray/ (local Ray), e2e/ (real vLLM / Ray Train).

All tiers run on CPU. Models are prepared once per test session into a private SELM_RAY_HOME,
so the SmolLM2 conversion itself is exercised by every CI run (and cached for the rest of it).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = Path(os.environ.get("SELM_RAY_TEST_HOME") or tempfile.mkdtemp(prefix="selm-ray-test-home-"))
os.environ["SELM_RAY_HOME"] = str(_HOME)
TIERS = ("unit", "ray", "e2e")


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
    from selm_ray.models import prepare_model

    return prepare_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="session")
def tiny_model_path(smollm2_tokenizer, tmp_path_factory) -> Path:
    from selm_ray.models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model", seed=0, tokenizer=smollm2_tokenizer)
