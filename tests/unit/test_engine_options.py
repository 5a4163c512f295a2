"""CPU engine options that are decided before vLLM starts (no engine is built here)."""
import pytest

from selm_ray.engines import cpu_compile, vllm_engine


def test_compiled_engine_without_a_cpp_compiler_names_the_option(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"cluster\.cpu_engine_compile.*no C\+\+ compiler"):
        cpu_compile.require_cpp_compiler()
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    cpu_compile.require_cpp_compiler()


def test_cpu_engines_save_and_load_the_compiled_model():
    env = vllm_engine.cpu_engine_env(1.0)
    assert env["VLLM_USE_AOT_COMPILE"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_a_loaded_inductor_artifact_gets_the_method_vllm_calls_on_it(monkeypatch):
    """vLLM calls finalize_loading on every loaded artifact; torch's inductor one loads as a plain
    function without it (the start then compiles again). After apply() it has a no-op one."""
    from torch._dynamo import aot_compile_types

    cls = aot_compile_types.BundledAOTAutogradSerializableCallable
    monkeypatch.setattr(cls, "deserialize_compile_artifacts", classmethod(lambda klass, data: (lambda *a: data)))
    monkeypatch.setattr(cls, "_loads_for_vllm", False, raising=False)  # restored after the test
    with pytest.raises(AttributeError):
        cls.deserialize_compile_artifacts(b"x").finalize_loading
    assert cpu_compile.apply() and cpu_compile.apply()  # idempotent
    fn = cls.deserialize_compile_artifacts(b"x")
    assert fn() == b"x" and fn.finalize_loading(None) is None


def test_the_smollm2_configs_compile_and_the_code_default_does_not():
    from selm_ray.core.config import load_config

    assert load_config(None).cluster.cpu_engine_compile is False
    for name in ("smollm2-cpu", "ifeval-selm", "ifeval-dpo"):
        assert load_config(f"jobs/configs/{name}.yaml").cluster.cpu_engine_compile is True
