"""`selm-ray eval`: model vs baseline on a prompt set, judged by the configured judge.

Both models answer every prompt greedily (vLLM, one generator actor each); the judge scores the
two answers of a prompt, each alone (all judges here are pointwise, so there is no order to
swap). Win / tie / loss, the win rate (a tie counts half) with a 95% Wilson interval, and the
mean answer lengths (length growth is a known failure mode of preference training).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from selm_ray.records import CandidateScore, Rollout


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def win_tie_loss(scores: Sequence[tuple[CandidateScore, CandidateScore]]) -> dict[str, Any]:
    """Counts over prompts where both answers were scored; failures are counted apart."""
    scored = [(a.score, b.score) for a, b in scores if a.ok and b.ok]
    wins = sum(a > b for a, b in scored)
    ties = sum(a == b for a, b in scored)
    n = len(scored)
    rate = (wins + 0.5 * ties) / n if n else 0.0
    return {"prompts": len(scores), "scored": n, "wins": wins, "ties": ties, "losses": n - wins - ties,
            "failures": len(scores) - n, "win_rate": round(rate, 4), "win_rate_ci95": wilson(rate, n)}


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 2) if xs else None


def compare(cfg: Any, model: str, baseline: str, prompts: str, max_prompts: int | None = None) -> dict[str, Any]:
    import ray

    from selm_ray.actors import launch
    from selm_ray.data import load_prompts
    from selm_ray.models import resolve_model

    records, _ = load_prompts(prompts, "train", "error", "ignore", max_prompts)
    paths = [resolve_model(model), resolve_model(baseline)]
    j = cfg.judge
    rm = resolve_model(j.reward_model) if j.kind == "reward_model" else None
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        gens = [launch.launch_generator(cfg, "eval", i, p, None) for i, p in enumerate(paths)]
        answers = ray.get([g.answer.remote(records) for g in gens])  # both models at once
        for g in gens:
            launch.stop_actor(g)
        judge = launch.launch_judge(cfg, "eval", 0, resolve_model(cfg.model.path), rm, None)
        rollouts = [Rollout(r.prompt_id, r.messages, "", (a, b)) for r, a, b in zip(records, *answers)]
        judgements = ray.get(judge.judge.remote(rollouts))
    finally:
        ray.shutdown()
    return {"model": paths[0], "baseline": paths[1], "prompts_file": prompts, "judge": judgements[0].judge,
            **win_tie_loss([(jd.scores[0], jd.scores[1]) for jd in judgements]),
            "mean_tokens_model": _mean([a.num_tokens for a in answers[0]]),
            "mean_tokens_baseline": _mean([b.num_tokens for b in answers[1]])}

