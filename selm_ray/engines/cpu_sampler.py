"""vLLM's sampled-token rank without torch.compile on CPU.

Asking vLLM for log-probs (we always do: the learner takes log pi_ref from them) makes its sampler
rank each sampled token with ``batched_count_greater_than``, a ``torch.compile``d function. On CPU
its first call compiles C++ through inductor and gcc, inside the first generation call of a run:
measured on the 2-core machine (peer benchmark's DPO side, per-process /proc sampler and the
inductor cache's file times), gcc ran ~11 s while the generator waited, and the first iteration's
generation took 27.5 s against 14 s for the second. The compile saves GPU memory on very large
batches; on CPU the plain expression over a (sequences, vocabulary) comparison is a few MB and
needs no compiler. Same result: the count of log-probs >= the token's own, per row.
"""
from __future__ import annotations

import torch


def count_greater_or_equal(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B,) count of entries of each row of ``x`` (B, V) that are >= ``values`` (B, 1)."""
    if x.dim() != 2 or values.shape != (x.shape[0], 1):
        raise ValueError(f"expected x (B, V) and values (B, 1), got {tuple(x.shape)} and {tuple(values.shape)}")
    return (x >= values).sum(-1)


def apply() -> bool:
    """Use the eager ranking in this process's vLLM sampler, on CPU only (a GPU keeps vLLM's
    compiled kernel). Idempotent; True if the sampler now ranks eagerly. Also a
    ``vllm.general_plugins`` entry point, so engine processes vLLM starts itself get it too."""
    if torch.cuda.is_available():
        return False
    from vllm.v1.sample import sampler

    sampler.batched_count_greater_than = count_greater_or_equal
    return True
