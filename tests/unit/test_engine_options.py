"""CPU engine options that are decided before vLLM starts (no engine is built here)."""
import pytest

from selm_ray.engines import vllm_engine


def test_compiled_engine_without_a_cpp_compiler_names_the_option(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"cluster\.cpu_engine_compile.*no C\+\+ compiler"):
        vllm_engine._require_cpp_compiler()
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    vllm_engine._require_cpp_compiler()


def test_cpu_engines_compile_through_inductors_cache_not_vllms_aot_artifact():
    # the AOT artifact fails to load back with this torch and the model is compiled again at
    # every start; without it inductor's cache serves a later start
    env = vllm_engine.cpu_engine_env(1.0)
    assert env["VLLM_USE_AOT_COMPILE"] == "0" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_the_smollm2_configs_compile_and_the_code_default_does_not():
    from selm_ray.core.config import load_config

    assert load_config(None).cluster.cpu_engine_compile is False
    for name in ("smollm2-cpu", "ifeval-selm", "ifeval-dpo"):
        assert load_config(f"jobs/configs/{name}.yaml").cluster.cpu_engine_compile is True
