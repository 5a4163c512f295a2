"""`selm-ray eval`: model vs baseline on a prompt set, judged by the configured judge, or (with
``--instructions``) one model's absolute accuracy on verifiable instructions (see
core/evaluation.py for how both are counted)."""
from __future__ import annotations

from typing import Any, Sequence

from selm_ray.core.evaluation import instruction_accuracy, win_tie_loss
from selm_ray.core.records import Rollout


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 2) if xs else None


def compare(cfg: Any, model: str, baseline: str, prompts: str, max_prompts: int | None = None) -> dict[str, Any]:
    import ray

    from selm_ray.actors import launch, remote
    from selm_ray.core.data import load_prompts
    from selm_ray.engines.models import resolve_model

    records, _ = load_prompts(prompts, "train", "error", "ignore", max_prompts)
    paths = [resolve_model(model), resolve_model(baseline)]
    j = cfg.judge
    rm = resolve_model(j.judge_model) if j.judge_model else None  # reward model or ranker
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    remote.configure(cfg.cluster)
    try:
        gens = [launch.launch_generator(cfg, "eval", i, p, None) for i, p in enumerate(paths)]
        answers = remote.get([g.answer.remote(records) for g in gens], "generator.answer", "work")  # both at once
        for g in gens:
            launch.stop_actor(g)
        judge = launch.launch_judge(cfg, "eval", 0, resolve_model(cfg.model.path), rm, None)
        rollouts = [Rollout(r.prompt_id, r.messages, "", (a, b), meta=r.meta) for r, a, b in zip(records, *answers)]
        judgements = remote.get(judge.judge.remote(rollouts), "judge.judge", "work")
    finally:
        ray.shutdown()
    return {"model": paths[0], "baseline": paths[1], "prompts_file": prompts, "judge": judgements[0].judge,
            **win_tie_loss([(jd.scores[0], jd.scores[1]) for jd in judgements]),
            "mean_tokens_model": _mean([a.num_tokens for a in answers[0]]),
            "mean_tokens_baseline": _mean([b.num_tokens for b in answers[1]])}



def instruction_eval(cfg: Any, model: str, prompts: str, max_prompts: int | None = None,
                     max_tokens: int | None = None) -> dict[str, Any]:
    """Greedy answers of ``model`` (one generator actor) scored by the instruction checks."""
    import ray

    from selm_ray.actors import launch, remote
    from selm_ray.core.data import DataError, load_prompts
    from selm_ray.engines.models import resolve_model

    records, _ = load_prompts(prompts, "train", "error", "ignore", max_prompts)
    bare = [r.prompt_id for r in records if not (r.meta or {}).get("instructions")]
    if bare:
        raise DataError(f"--instructions {prompts}: {len(bare)} row(s) carry no meta.instructions "
                        f"(first: {bare[0]}); every row must be verifiable")
    path = resolve_model(model)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    remote.configure(cfg.cluster)
    try:
        gen = launch.launch_generator(cfg, "eval", 0, path, None)
        answers = remote.get(gen.answer.remote(records, max_tokens or cfg.eval.max_new_tokens), "generator.answer", "work")
    finally:
        ray.shutdown()
    return {"model": path, "prompts_file": prompts,
            **instruction_accuracy([(r.meta, a.text, a.num_tokens) for r, a in zip(records, answers)])}
