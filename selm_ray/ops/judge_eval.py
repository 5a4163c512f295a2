"""Judge quality: agreement of the configured judge with labelled preference pairs.

Any prompt dataset with ``chosen`` and ``rejected`` answers works (data.py reads it). Each pair
becomes a rollout of two candidates, judged alone like any rollout; the judge agrees when it
scores chosen above rejected. Used by `selm-ray judge-eval` and, with judge.eval_data set, by
the controller at the end of every iteration (through the judge pool).
"""
from __future__ import annotations

from typing import Any

from selm_ray.core.evaluation import agreement, as_rollouts, load_labelled


def evaluate(cfg: Any, source: str, split: str = "train", max_pairs: int | None = None) -> dict[str, Any]:
    """The configured judge, in this process, on the labelled pairs of ``source``."""
    from selm_ray.engines.judges import build_local_judge

    rollouts = as_rollouts(load_labelled(source, split, max_pairs))
    return {"data": source, **agreement(build_local_judge(cfg).judge(rollouts))}
