"""Per-iteration measurements through the run's own pools: the judge's agreement with labelled
pairs (judge.eval_data), the served policy against the starting one (eval.prompts), and the
served policy's accuracy on verifiable instructions (eval.instructions)."""
from __future__ import annotations

import time
from typing import Any

from selm_ray.actors import remote
from selm_ray.core.data import DataError, load_prompts
from selm_ray.core.evaluation import (agreement, as_rollouts, instruction_accuracy, load_labelled,
                                      win_tie_loss)
from selm_ray.core.records import Rollout
from selm_ray.run.context import RunContext
from selm_ray.run.pools import PoolManager


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 2)


class Evaluator:
    def __init__(self, ctx: RunContext, pools: PoolManager) -> None:
        self.ctx, self.pm = ctx, pools
        self.judge_evals: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self._labelled = self._load_labelled()
        self._records: list | None = None
        self._baseline: list = []
        self.instruction_evals: list[dict[str, Any]] = []
        self._instructions = self._load_instructions()

    def _load_labelled(self) -> list | None:
        """Fail before any actor starts if the judge or its labelled set is unusable."""
        j = self.ctx.cfg.judge
        if j.kind == "function":
            from selm_ray.core.judging.functions import load_function

            load_function(j.function or "")
        if not j.eval_data:
            return None
        return as_rollouts(load_labelled(j.eval_data, "train", j.eval_max_pairs))

    def _load_instructions(self) -> list | None:
        e = self.ctx.cfg.eval
        if not e.instructions:
            return None
        records, _ = load_prompts(e.instructions, "train", "error", "ignore", e.instruction_max_prompts)
        missing = [r.prompt_id for r in records if not (r.meta or {}).get("instructions")]
        if missing:
            raise DataError(f"eval.instructions: {e.instructions}: {len(missing)} row(s) carry no "
                            f"meta.instructions (first: {missing[0]}); every row must be verifiable")
        return records

    def instructions(self, iteration: int) -> dict[str, Any] | None:
        """Greedy answers of the served policy to the verifiable prompts, scored by the checks.
        ``iteration`` -1 is the starting policy (before any training)."""
        if not self._instructions:
            return None
        member = self.pm.member(self.pm.gens)
        answers = remote.call_with_retry(member.actor.answer, self._instructions, self.ctx.cfg.eval.max_new_tokens, kind="work")
        acc = instruction_accuracy([(r.meta, a.text, a.num_tokens) for r, a in zip(self._instructions, answers)])
        row = {"event": "instruction_eval", "iteration": iteration, "policy_version": member.version,
               **acc, "time": time.time()}
        self.ctx.write_metrics(row)
        self.instruction_evals.append(row)
        self.ctx.log(f"instructions v{member.version}: prompt strict {row['prompt_strict']} "
                     f"{row['prompt_strict_ci95']}, instruction strict {row['instruction_strict']}, "
                     f"loose {row['prompt_loose']}, mean tokens {row['mean_tokens']} ({row['prompts']} prompts)")
        return row

    def judge_agreement(self, iteration: int) -> None:
        """Score the judge pool on the labelled pairs; logged per iteration."""
        if not self._labelled:
            return
        ctx = self.ctx
        judgements = remote.call_with_retry(self.pm.member(self.pm.judges).actor.judge, self._labelled, kind="work")
        row = {"event": "judge_eval", "iteration": iteration, "data": ctx.cfg.judge.eval_data,
               **agreement(judgements), "time": time.time()}
        ctx.write_metrics(row)
        self.judge_evals.append(row)
        ctx.log(f"judge agreement with {row['pairs']} labelled pairs: accuracy {row['accuracy']} "
                f"tie {row['tie_rate']} failure {row['failure_rate']}")

    def start(self) -> None:
        """Greedy answers of the starting policy (M0, or M1 after SFT) to the eval prompts: the
        baseline every later policy is compared with."""
        e = self.ctx.cfg.eval
        if not e.prompts or self.ctx.cfg.schedule.mode == "async":
            return
        self._records, _ = load_prompts(e.prompts, "train", "error", "ignore", e.max_prompts)
        self._baseline = remote.call_with_retry(self.pm.member(self.pm.gens).actor.answer, self._records, kind="work")

    def policy_vs_start(self, iteration: int) -> None:
        """The policy the engines now serve vs the baseline, judged by the judge pool."""
        if not self._records:
            return
        member = self.pm.member(self.pm.gens)
        answers = remote.call_with_retry(member.actor.answer, self._records, kind="work")
        rollouts = [Rollout(r.prompt_id, r.messages, "", (a, b), meta=r.meta)
                    for r, a, b in zip(self._records, answers, self._baseline)]
        judgements = remote.call_with_retry(self.pm.member(self.pm.judges).actor.judge, rollouts, kind="work")
        row = {"event": "eval", "iteration": iteration, "policy_version": member.version,
               **win_tie_loss([(j.scores[0], j.scores[1]) for j in judgements]),
               "mean_tokens_policy": _mean([a.num_tokens for a in answers]),
               "mean_tokens_baseline": _mean([b.num_tokens for b in self._baseline]), "time": time.time()}
        self.ctx.write_metrics(row)
        self.evals.append(row)
        self.ctx.log(f"eval v{member.version} vs start: win rate {row['win_rate']} {row['win_rate_ci95']} "
                     f"(W/T/L {row['wins']}/{row['ties']}/{row['losses']}), tokens {row['mean_tokens_policy']} "
                     f"vs {row['mean_tokens_baseline']}")
