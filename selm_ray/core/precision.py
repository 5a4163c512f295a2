"""Number formats, decided in one place for the engines, the learner and its reference.

``model.dtype`` names the format the weights are served and trained in; "auto" is bfloat16 on a
GPU and float32 on CPU. The learner keeps float32 master weights whatever the format (DeepSpeed's
bf16/fp16 mode, or float32 modules under autocast for DDP), so a 16-bit run rounds activations,
not the accumulated updates.
"""
from __future__ import annotations

from dataclasses import dataclass

HALF = ("bfloat16", "float16")


def resolve_dtype(configured: str, gpu: bool) -> str:
    """"auto" -> bfloat16 on GPU, float32 on CPU; anything else as configured."""
    if configured == "auto":
        return "bfloat16" if gpu else "float32"
    return configured


@dataclass(frozen=True)
class LearnerPrecision:
    """What a learner rank holds and computes in (reported beside the engines' dtype)."""
    weights: str  # the trained module's parameters
    compute: str  # the matmuls of forward and backward
    master: str = "float32"  # the optimizer's copy of the weights
    autocast: bool = False  # compute differs from weights: the forward runs under torch.autocast

    def as_dict(self) -> dict[str, object]:
        return {"weights": self.weights, "compute": self.compute, "master": self.master}


def learner_precision(model_dtype: str, engine: str, gpu: bool, cpu_bf16_autocast: bool) -> LearnerPrecision:
    """``cpu_bf16_autocast``: learner.autocast chose bf16 matmuls for a float32 model on CPU."""
    resolved = resolve_dtype(model_dtype, gpu)
    if resolved in HALF and engine == "deepspeed":
        return LearnerPrecision(resolved, resolved)  # DeepSpeed holds the fp32 masters itself
    if resolved in HALF:
        return LearnerPrecision("float32", resolved, autocast=True)
    if cpu_bf16_autocast and not gpu:
        return LearnerPrecision("float32", "bfloat16", autocast=True)
    return LearnerPrecision("float32", "float32")
