"""The algorithm core must stay importable without Ray or vLLM (and without starting either)."""
import subprocess
import sys

PURE = ["selm_ray.losses", "selm_ray.judging", "selm_ray.pairs", "selm_ray.records", "selm_ray.data",
        "selm_ray.config"]


def test_core_imports_neither_ray_nor_vllm():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in PURE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm', 'deepspeed'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pure modules pulled in: {out.stdout.strip()}"
