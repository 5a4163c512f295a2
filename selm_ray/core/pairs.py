"""Judged candidates -> preference pairs of one prompt, pure Python.

Rule ``best_worst`` (both papers, the default): failed judgements are dropped first; chosen = highest
score, rejected = lowest; no pair when fewer than two candidates were scored, or the best and worst
are tied (or closer than ``min_margin``). Ties on a score are broken deterministically: among equally
best candidates the SHORTER one is chosen and among equally worst the LONGER one is rejected (this
leans against the length growth the Self-Rewarding paper reports), then the lower candidate index wins.
With ``tie_break="first"`` length plays no part: the lower candidate index wins (candidates are
independent samples, so this is length-neutral). With a graded judge many candidates tie at the top,
and "shorter" then teaches "shorter" as well as "follow the instructions".

Rule ``best_vs_rest`` (ours, opt-in): the same chosen against EVERY other scored candidate at least
``min_margin`` below it (and strictly below), worst first: up to N-1 pairs from N candidates. With a
graded judge most of a prompt's candidates differ, and the papers' single pair discards all but two
of them although generating them was the expensive part.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from selm_ray.core.records import Candidate, Judgement, PreferencePair, Rollout

# Reasons a prompt yields no pair; the buffer and stats count them by these names.
NO_PAIR_TOO_FEW_SCORED = "too_few_scored"
NO_PAIR_TIE = "tie"
NO_PAIR_PROMPT_TOO_LONG = "prompt_too_long"  # prompt + max_new_tokens exceed model.max_model_len

PAIR_RULES = ("best_worst", "best_vs_rest")
TIE_BREAKS = ("shorter", "first")


@dataclass(frozen=True)
class PairOutcome:
    """A pair, or the reason there is none for this prompt."""

    pair: PreferencePair | None
    reason: str | None = None
    more: tuple[PreferencePair, ...] = ()  # best_vs_rest: the pairs after ``pair``

    @property
    def pairs(self) -> list[PreferencePair]:
        return [] if self.pair is None else [self.pair, *self.more]


def make_pair_id(prompt_id: str, chosen: Candidate, rejected: Candidate) -> str:
    """Stable id from content, so the same judged pair added twice is recognisably the same."""
    h = hashlib.sha1()
    for part in (prompt_id, chosen.text, str(chosen.policy_version), rejected.text,
                 str(rejected.policy_version)):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def _length_key(cand: Candidate, tie_break: str) -> int:
    return cand.num_tokens if tie_break == "shorter" else 0


def _pick(scored: list[tuple[int, float, Candidate]], tie_break: str) -> tuple[int, int]:
    """Indices (into ``scored``) of chosen and rejected under the tie-break rule."""
    best = min(range(len(scored)),
               key=lambda k: (-scored[k][1], _length_key(scored[k][2], tie_break), scored[k][0]))
    worst = min(range(len(scored)),
                key=lambda k: (scored[k][1], -_length_key(scored[k][2], tie_break), scored[k][0]))
    return best, worst


def build_pair(rollout: Rollout, judgement: Judgement, min_margin: float = 0.0,
               rule: str = "best_worst", tie_break: str = "shorter") -> PairOutcome:
    """The pairs of one judged rollout under ``rule`` and ``tie_break`` (see the module docstring)."""
    if rule not in PAIR_RULES:
        raise ValueError(f"unknown pair rule {rule!r}; expected one of {PAIR_RULES}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie break {tie_break!r}; expected one of {TIE_BREAKS}")
    if rollout.skipped is not None:
        return PairOutcome(None, rollout.skipped)
    if judgement.prompt_id != rollout.prompt_id:
        raise ValueError(
            f"judgement for prompt {judgement.prompt_id!r} does not belong to rollout {rollout.prompt_id!r}"
        )
    if len(judgement.scores) != len(rollout.candidates):
        raise ValueError(
            f"prompt {rollout.prompt_id!r}: {len(judgement.scores)} scores for "
            f"{len(rollout.candidates)} candidates"
        )
    scored = [
        (i, s.score, c)
        for i, (s, c) in enumerate(zip(judgement.scores, rollout.candidates))
        if s.ok and s.score is not None
    ]
    if len(scored) < 2:
        return PairOutcome(None, NO_PAIR_TOO_FEW_SCORED)
    b, w = _pick(scored, tie_break)
    margin = scored[b][1] - scored[w][1]
    if margin <= 0 or margin < min_margin:
        return PairOutcome(None, NO_PAIR_TIE)
    first = _make(rollout, judgement, scored[b], scored[w])
    if rule == "best_worst":
        return PairOutcome(first)
    best = scored[b][1]
    rest = [k for k in range(len(scored)) if k not in (b, w) and best - scored[k][1] >= max(min_margin, 1e-12)]
    # worst first (the papers' pair leads), then by the same tie-break as _pick
    rest.sort(key=lambda k: (scored[k][1], -_length_key(scored[k][2], tie_break), scored[k][0]))
    return PairOutcome(first, more=tuple(_make(rollout, judgement, scored[b], scored[k]) for k in rest))


def _make(rollout: Rollout, judgement: Judgement, win: tuple, lose: tuple) -> PreferencePair:
    (_, chosen_score, chosen), (_, rejected_score, rejected) = win, lose
    ref = rollout.ref_response
    return PreferencePair(
        pair_id=make_pair_id(rollout.prompt_id, chosen, rejected),
        prompt_id=rollout.prompt_id,
        messages=rollout.messages,
        prompt_text=rollout.prompt_text,
        chosen=chosen.text,
        rejected=rejected.text,
        chosen_score=chosen_score,
        rejected_score=rejected_score,
        chosen_tokens=chosen.num_tokens,
        rejected_tokens=rejected.num_tokens,
        chosen_version=chosen.policy_version,
        rejected_version=rejected.policy_version,
        ref_response=ref.text if ref is not None else None,
        ref_tokens=ref.num_tokens if ref is not None else None,
        judge=judgement.judge,
        prompt_ids=rollout.prompt_token_ids,
        chosen_ids=chosen.token_ids,
        rejected_ids=rejected.token_ids,
        ref_ids=ref.token_ids if ref is not None else (),
        chosen_gen_logp=chosen.logprob,
        rejected_gen_logp=rejected.logprob,
        ref_gen_logp=ref.logprob if ref is not None else None,
    )
