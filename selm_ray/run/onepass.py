"""One generate -> judge -> pair pass on the configured model, no training.

`selm-ray demo`: a quick look at what a model and judge produce, without Ray or training. Real vLLM
generation (n sampled candidates + greedy y_ref), real judging (self-judge rubric or a reward
model) and the pair rule, with every pair written to ``<run_dir>/pairs.jsonl``; one process.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from selm_ray.core.config import Config, dump_config
from selm_ray.core.data import check_prompt_lengths, load_prompts, shuffled, templated_length
from selm_ray.engines.models import resolve_model
from selm_ray.core.pairs import build_pair


def _log(t0: float, msg: str) -> None:
    print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)


def _summary(rollouts, judgements, outcomes, pairs) -> dict[str, Any]:
    scores = [s for j in judgements for s in j.scores]
    failed = sum(not s.ok for s in scores)
    reasons: dict[str, int] = {}
    for o in outcomes:
        if o.reason:
            reasons[o.reason] = reasons.get(o.reason, 0) + 1
    mean = lambda xs: round(statistics.fmean(xs), 3) if xs else None  # noqa: E731
    return {
        "prompts": len(rollouts),
        "candidates": len(scores),
        "pairs": len(pairs),
        "no_pair": reasons,
        "judge_failures": failed,
        "judge_failure_rate": round(failed / max(1, len(scores)), 3),
        "mean_chosen_score": mean([p.chosen_score for p in pairs]),
        "mean_rejected_score": mean([p.rejected_score for p in pairs]),
        "mean_chosen_tokens": mean([p.chosen_tokens for p in pairs]),
        "mean_rejected_tokens": mean([p.rejected_tokens for p in pairs]),
    }


def run_one_pass(cfg: Config, num_prompts: int, run_dir: Path) -> dict[str, Any]:
    t0 = time.time()
    # In-process engine: no engine-core subprocess to spawn, which a plain CLI process would need
    # to guard against re-importing.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from selm_ray.actors.generator import Generator

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    model = resolve_model(cfg.model.path)
    _log(t0, f"model {cfg.model.path} -> {model}")
    records, report = load_prompts(cfg.data.source, cfg.data.split, cfg.data.on_bad_row,
                                   cfg.data.extra_candidates, cfg.data.max_prompts)
    records = shuffled(records, cfg.data.shuffle_seed)[:num_prompts]
    _log(t0, f"{len(records)} prompts from {report.source} ({report.kept} valid, {report.skipped} skipped)")
    gen = Generator(cfg.to_dict(), model)  # the same class the runtime runs as a Ray actor
    if cfg.data.on_bad_row == "error":  # skip: the generator skips and counts it (prompt_too_long)
        check_prompt_lengths(records, templated_length(gen.engine.tokenizer), cfg.generation.max_new_tokens,
                             cfg.model.max_model_len, cfg.data.source, "error")
    _log(t0, "vLLM engine ready; generating")
    rollouts = gen.generate(records, seed=cfg.run.seed)
    _log(t0, f"generated {sum(len(r.candidates) for r in rollouts)} candidates; judging ({cfg.judge.kind})")
    if not cfg.judge.on_engine:
        from selm_ray.engines.judges import build_local_judge

        judgements = build_local_judge(cfg).judge(rollouts)  # reward model, ranker or function
    else:
        judgements = gen.judge(rollouts)  # self or pairwise LLM judge on the same engine
    outcomes = [build_pair(r, j, cfg.judge.min_margin, cfg.judge.pair_rule, cfg.judge.tie_break) for r, j in zip(rollouts, judgements)]
    pairs = [p for o in outcomes for p in o.pairs]
    with (run_dir / "pairs.jsonl").open("w") as fh:
        for p in pairs:
            fh.write(json.dumps(p.to_row(), ensure_ascii=False) + "\n")
    summary = _summary(rollouts, judgements, outcomes, pairs)
    if cfg.judge.on_engine:
        summary["judge_stats"] = gen.stats().get("judge_stats")
    summary["seconds"] = round(time.time() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _log(t0, "done")
    return summary
