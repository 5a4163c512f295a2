"""A CPU engine's process, as our generator actors run it (vLLM in-process), keeps one gloo
event-loop thread for all of vLLM's process groups, and generates (engines/gloo_device.py)."""
import json
import os
import subprocess
import sys

import pytest

ENGINE = """
import json, sys
from selm_ray.engines import gloo_device
if sys.argv[2] == "torch":  # torch's own way, for comparison: a device per group
    gloo_device.apply = lambda: False
from selm_ray.engines.vllm_engine import EngineOptions, VLLMEngine
engine = VLLMEngine(EngineOptions(model=sys.argv[1], kv_cache_gib=1, max_model_len=256))
loops = gloo_device.loop_threads()
out = engine.generate(["<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n"], 2, 0.7, 1.0, 8, 0, seed=1)
print(json.dumps({"loops": loops, "texts": [c.text for c in out[0]]}))
"""


def _engine(model: str, mode: str) -> dict:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, "-c", ENGINE, model, mode], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
def test_cpu_engine_runs_its_process_groups_on_one_gloo_thread(tiny_model_path):
    shared, own = _engine(str(tiny_model_path), "shared"), _engine(str(tiny_model_path), "torch")
    assert (shared["loops"], own["loops"]) == (1, 13)
    assert len(shared["texts"]) == 2 and shared["texts"] == own["texts"]  # same seeded answers
