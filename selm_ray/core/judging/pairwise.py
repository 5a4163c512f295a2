"""Pairwise comparisons turned into per-candidate scores, pure Python.

A pairwise judge (a PairRM-style ranker, or an LLM asked "A or B?") gives P(first beats second)
for an ordered pair of answers. A candidate's score is its mean win probability over every
comparison it took part in, in either position: P(i > j) from comparing (i, j) and 1 - P(j > i)
from comparing (j, i). Scores are then on one scale for the whole prompt, and the best-vs-worst
rule of ``core/pairs.py`` applies unchanged. Every pair is shown in both orders, so a judge's
liking for the first (or second) position cancels out of the scores; ``position_bias`` measures it.

Modes (``judge.pairwise_mode``):
- ``all``: every ordered pair of the N candidates, N(N-1) comparisons per prompt (the SELM
  paper's PairRM ranking of all candidates).
- ``anchor``: each candidate against one anchor, both orders; the anchor is y_ref when the rollout
  has one (2N comparisons), else candidate 0 (2(N-1) comparisons, and candidate 0 scores 0.5: it
  ties with itself). Linear instead of quadratic in N, at the price of a coarser ranking.

A comparison that failed is None: it is left out of its candidates' means and counted. A candidate
with no successful comparison is a failed ``CandidateScore`` (never a number).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from selm_ray.core.records import CandidateScore

MODES = ("all", "anchor")
ANCHOR_SCORE = 0.5  # an anchor candidate against itself


@dataclass(frozen=True)
class ComparisonPlan:
    """The ordered comparisons for one prompt.

    Items 0..num_candidates-1 are the candidates; item ``num_candidates`` is y_ref, present only
    when it is the anchor. ``pairs`` holds (shown first, shown second) item indices.
    """

    num_candidates: int
    pairs: tuple[tuple[int, int], ...]
    anchor: int | None = None

    @property
    def count(self) -> int:
        return len(self.pairs)

    @property
    def uses_ref(self) -> bool:
        return self.anchor == self.num_candidates


def comparison_count(num_candidates: int, mode: str, has_ref: bool = False) -> int:
    """How many ordered comparisons ``plan_comparisons`` makes for one prompt (the judge's cost)."""
    _check_mode(mode)
    n = num_candidates
    if mode == "all":
        return n * (n - 1)
    return 2 * n if has_ref else 2 * max(0, n - 1)


def plan_comparisons(num_candidates: int, mode: str, has_ref: bool = False) -> ComparisonPlan:
    """The ordered pairs to compare for one prompt (``has_ref``: the rollout carries a y_ref)."""
    _check_mode(mode)
    n = num_candidates
    if n < 0:
        raise ValueError(f"num_candidates must be >= 0, got {n}")
    if mode == "all":
        pairs = tuple((i, j) for i in range(n) for j in range(n) if i != j)
        return ComparisonPlan(n, pairs)
    anchor = n if has_ref else 0
    others = [i for i in range(n) if i != anchor]
    # both orders next to each other: the swap that cancels position bias is easy to read off
    pairs = tuple(p for i in others for p in ((i, anchor), (anchor, i)))
    return ComparisonPlan(n, pairs, anchor)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"pairwise mode must be one of {MODES}, got {mode!r}")


def _check_probs(plan: ComparisonPlan, probs: Sequence[float | None]) -> None:
    if len(probs) != plan.count:
        raise ValueError(f"{len(probs)} probabilities for {plan.count} comparisons")
    for p in probs:
        if p is not None and not 0.0 <= p <= 1.0:  # NaN fails this too: a judge must pass None
            raise ValueError(f"a win probability must be in [0, 1] or None, got {p!r}")


def score_candidates(plan: ComparisonPlan, probs: Sequence[float | None]) -> list[CandidateScore]:
    """One score per candidate: its mean win probability over its successful comparisons.

    ``probs[k]`` is P(first beats second) for ``plan.pairs[k]``, or None when that comparison
    failed. ``num_valid`` / ``num_samples`` of each score count its successful / all comparisons.
    """
    _check_probs(plan, probs)
    wins: list[list[float]] = [[] for _ in range(plan.num_candidates + 1)]
    tried = [0] * (plan.num_candidates + 1)
    for (first, second), p in zip(plan.pairs, probs):
        tried[first] += 1
        tried[second] += 1
        if p is not None:
            wins[first].append(p)
            wins[second].append(1.0 - p)
    ok_total = sum(p is not None for p in probs)
    out = []
    for i in range(plan.num_candidates):
        if i == plan.anchor:  # scores are P(beats the anchor); the anchor ties with itself
            out.append(_anchor_score(ok_total, plan.count))
        else:
            out.append(_mean_score(wins[i], tried[i]))
    return out


def _mean_score(wins: list[float], tried: int) -> CandidateScore:
    if not wins:
        why = (f"all {tried} pairwise comparisons of this candidate failed" if tried else
               "no pairwise comparison for this candidate (fewer than two items to compare)")
        return CandidateScore(None, 0, tried, failure=why)
    return CandidateScore(sum(wins) / len(wins), len(wins), tried)


def _anchor_score(ok_total: int, total: int) -> CandidateScore:
    if not ok_total:  # 0.5 means "ties with the anchor"; with nothing compared it means nothing
        return CandidateScore(None, 0, total, failure=f"all {total} comparisons against this anchor failed")
    return CandidateScore(ANCHOR_SCORE, ok_total, total)


def rank(num_candidates: int, mode: str, prob: Callable[[int, int], float | None],
         has_ref: bool = False) -> list[CandidateScore]:
    """``score_candidates`` with ``prob(first, second)`` asked for each planned pair (a matrix
    works too: ``lambda i, j: m[i][j]``). Item ``num_candidates`` is y_ref (anchor mode, has_ref)."""
    plan = plan_comparisons(num_candidates, mode, has_ref)
    return score_candidates(plan, [prob(i, j) for i, j in plan.pairs])


def position_bias(probs: Sequence[float | None]) -> float | None:
    """Mean P(the answer shown first wins) over successful comparisons, minus 0.5.

    0 for a judge without a position preference (over pairs shown in both orders); > 0 when it
    favours the first answer. None when nothing was compared.
    """
    ok = [p for p in probs if p is not None]
    return sum(ok) / len(ok) - 0.5 if ok else None


@dataclass
class PairwiseTally:
    """Counters a pairwise judge keeps over its life (its ``stats()``)."""

    prompts: int = 0
    comparisons: int = 0
    failed: int = 0
    _first_wins: float = 0.0  # sum of P(first wins) over successful comparisons
    per_prompt: dict[int, int] = field(default_factory=dict)  # comparisons per prompt -> prompts

    def add(self, plan: ComparisonPlan, probs: Sequence[float | None]) -> None:
        self.prompts += 1
        self.comparisons += plan.count
        self.failed += sum(p is None for p in probs)
        self._first_wins += sum(p for p in probs if p is not None)
        self.per_prompt[plan.count] = self.per_prompt.get(plan.count, 0) + 1

    @property
    def position_bias(self) -> float | None:
        ok = self.comparisons - self.failed
        return self._first_wins / ok - 0.5 if ok else None

    def as_dict(self) -> dict[str, object]:
        bias = self.position_bias
        return {"prompts": self.prompts, "comparisons": self.comparisons, "failed_comparisons": self.failed,
                "comparisons_per_prompt": round(self.comparisons / self.prompts, 3) if self.prompts else None,
                "comparisons_per_prompt_histogram": {str(k): v for k, v in sorted(self.per_prompt.items())},
                "position_bias": round(bias, 6) if bias is not None else None}
