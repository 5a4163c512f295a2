"""Judge quality: agreement of the configured judge with labelled preference pairs.

Any prompt dataset with ``chosen`` and ``rejected`` answers works (data.py reads it). Each pair
becomes a rollout of two candidates, judged alone like any rollout; the judge agrees when it
scores chosen above rejected. Used by `selm-ray judge-eval` and, with judge.eval_data set, by
the controller at the end of every iteration (through the judge pool).
"""
from __future__ import annotations

from importlib import resources
from typing import Any, Sequence

from selm_ray.data import DataError, PromptRecord, load_prompts
from selm_ray.records import Candidate, Judgement, Rollout

# 12 hand-written general-knowledge pairs (a correct, helpful answer vs a vague or wrong one):
# enough to see whether a judge's verdicts parse and point the right way, not a benchmark.
BUILTIN_PAIRS = "builtin:pairs"


def load_labelled(source: str, split: str = "train", max_pairs: int | None = None) -> list[PromptRecord]:
    path = str(resources.files("selm_ray") / "assets" / "judge_pairs.jsonl") if source == BUILTIN_PAIRS else source
    records, _ = load_prompts(path, split, "error", "use", max_pairs)
    for i, r in enumerate(records):
        if len(r.extra_candidates) != 2:
            raise DataError(f"{source}: row {i} ({r.prompt_id}): a labelled pair needs both 'chosen' and "
                            f"'rejected'; found {len(r.extra_candidates)} answer(s)")
    if not records:
        raise DataError(f"{source}: no labelled pairs")
    return records


def as_rollouts(records: Sequence[PromptRecord]) -> list[Rollout]:
    """Candidate 0 is the chosen answer, candidate 1 the rejected one."""
    return [Rollout(r.prompt_id, r.messages, "", tuple(Candidate(t, len(t.split()), None)
                                                      for t in r.extra_candidates)) for r in records]


def agreement(judgements: Sequence[Judgement]) -> dict[str, Any]:
    """Pairwise accuracy over pairs with both answers scored; tie and failure rates over all."""
    n = len(judgements)
    failed = [j for j in judgements if not (j.scores[0].ok and j.scores[1].ok)]
    scored = [(j.scores[0].score, j.scores[1].score) for j in judgements if j not in failed]
    wins = sum(c > r for c, r in scored)
    ties = sum(c == r for c, r in scored)
    return {"pairs": n, "accuracy": round(wins / len(scored), 4) if scored else None,
            "tie_rate": round(ties / max(1, n), 4), "failure_rate": round(len(failed) / max(1, n), 4),
            "judge": judgements[0].judge if judgements else None}


def local_judge(cfg: Any) -> Any:
    """The configured judge, in this process (a self-judge gets its own vLLM engine)."""
    from selm_ray.engines.judges import FunctionJudge, RewardModelJudge, make_self_judge
    from selm_ray.models import resolve_model

    j = cfg.judge
    if j.kind == "reward_model":
        return RewardModelJudge(resolve_model(j.reward_model or ""))
    if j.kind == "function":
        return FunctionJudge(j.function or "")
    from selm_ray.actors.generator import build_engine

    return make_self_judge(cfg, build_engine(cfg, resolve_model(cfg.model.path)))


def evaluate(cfg: Any, source: str, split: str = "train", max_pairs: int | None = None) -> dict[str, Any]:
    rollouts = as_rollouts(load_labelled(source, split, max_pairs))
    return {"data": source, **agreement(local_judge(cfg).judge(rollouts))}
