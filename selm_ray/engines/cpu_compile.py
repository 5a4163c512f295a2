"""A compiled CPU engine (cluster.cpu_engine_compile): the C++ compiler it needs, and its saved model loading back.

With ``cluster.cpu_engine_compile`` vLLM compiles the model once and saves the result (its "AOT"
artifact) so that a later start loads it instead of compiling again. On CPU the model goes through
inductor, whose result torch wraps as a ``BundledAOTAutogradSerializableCallable``; loaded back, that
is a plain compiled function, and vLLM then calls ``finalize_loading`` on it, a method only its own
artifact class has ("'function' object has no attribute 'finalize_loading'"), so every start
compiled the model again. Such a function is complete as loaded (vLLM's own method is a no-op where
nothing is left to build), so it gets a no-op one. Measured on the 2-core machine (SmolLM2, warm
caches): an engine start takes 13.8 s with the artifact loaded, 22 s through inductor's cache alone
(the model traced again), 3.4 s eager.
"""
from __future__ import annotations

from typing import Any

import torch


def require_cpp_compiler() -> None:
    """Inductor builds the compiled CPU model with a C++ compiler at the engine's start."""
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise RuntimeError("cluster.cpu_engine_compile is true, but this node has no C++ compiler "
                           "(g++ / clang++) for torch.compile's CPU code: install one, or set "
                           "cluster.cpu_engine_compile: false (eager engine: generation ~15% slower on SmolLM2, 2 cores)")


def _nothing_to_finalize(vllm_config: Any) -> None:
    return None


def apply() -> bool:
    """Patch torch's artifact class in this process (CPU only; idempotent). True if patched."""
    if torch.cuda.is_available():
        return False
    try:
        from torch._dynamo.aot_compile_types import BundledAOTAutogradSerializableCallable as cls
    except ImportError:  # another torch: vLLM's own fallback (compile again) stays
        return False
    if getattr(cls, "_loads_for_vllm", False):
        return True
    original = cls.deserialize_compile_artifacts.__func__

    def deserialize(klass: type, data: bytes) -> Any:
        fn = original(klass, data)
        if not hasattr(fn, "finalize_loading"):
            fn.finalize_loading = _nothing_to_finalize
        return fn

    # a saved artifact names its loader by attribute (pickle of the bound method): keep the name
    deserialize.__name__ = deserialize.__qualname__ = "deserialize_compile_artifacts"
    cls.deserialize_compile_artifacts = classmethod(deserialize)
    cls._loads_for_vllm = True
    return True
