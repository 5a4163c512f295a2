"""`selm-ray eval`: model vs baseline on a prompt set, judged by the configured judge (see
core/evaluation.py for how the verdicts are counted)."""
from __future__ import annotations

from typing import Any, Sequence

from selm_ray.core.evaluation import win_tie_loss
from selm_ray.core.records import Rollout


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 2) if xs else None


def compare(cfg: Any, model: str, baseline: str, prompts: str, max_prompts: int | None = None) -> dict[str, Any]:
    import ray

    from selm_ray.actors import launch
    from selm_ray.core.data import load_prompts
    from selm_ray.engines.models import resolve_model

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

