"""Typed records that travel between components (and, later, between Ray actors).

Plain frozen dataclasses so they pickle cheaply through the object store and serialise to one
flat JSON row each (``to_row`` / ``from_row``) for durable storage.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class Candidate:
    """One response to a prompt.

    policy_version: the policy version that generated it; None for a response taken from the
    dataset (e.g. an UltraFeedback chosen/rejected answer used as an extra candidate).
    """

    text: str
    num_tokens: int
    policy_version: int | None
    finish_reason: str = "stop"
    token_ids: tuple[int, ...] = ()  # exactly as sampled (EOS included when it stopped on it)
    logprob: float | None = None  # summed log-prob of token_ids under the generating policy


@dataclass(frozen=True)
class Rollout:
    """The candidates a generator produced for one prompt (plus y_ref when the loss needs it)."""

    prompt_id: str
    messages: tuple[Message, ...]
    prompt_text: str  # the chat-templated prompt exactly as the engine saw it
    candidates: tuple[Candidate, ...]
    ref_response: Candidate | None = None
    prompt_token_ids: tuple[int, ...] = ()
    # the prompt row's metadata (e.g. the instructions a verifiable prompt carries), for judges;
    # left out of hashing: a dict is unhashable
    meta: dict[str, Any] | None = field(default=None, hash=False)
    # why no candidates were made (e.g. the prompt leaves no room for an answer in max_model_len)
    skipped: str | None = None

    @property
    def ref_is_candidate(self) -> bool:
        """y_ref is one of the candidates (generation.ref_in_candidates): judged as one of them."""
        return self.ref_response is not None and self.ref_response in self.candidates


@dataclass(frozen=True)
class CandidateScore:
    """A judge's verdict on one candidate: a score, or an explicit failure, never both."""

    score: float | None
    num_valid: int
    num_samples: int
    failure: str | None = None

    def __post_init__(self) -> None:
        if (self.score is None) == (self.failure is None):
            raise ValueError("CandidateScore needs exactly one of score / failure")

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class Judgement:
    """Scores for every candidate of one rollout, in the rollout's candidate order."""

    prompt_id: str
    scores: tuple[CandidateScore, ...]
    judge: str  # which judge produced it (e.g. "self:generate", "rm:<path>")
    judge_version: int | None = None

    @property
    def num_failed(self) -> int:
        return sum(not s.ok for s in self.scores)


@dataclass(frozen=True)
class PreferencePair:
    """One training example: chosen beats rejected for the prompt, per the judge."""

    pair_id: str
    prompt_id: str
    messages: tuple[Message, ...]
    prompt_text: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    chosen_tokens: int
    rejected_tokens: int
    chosen_version: int | None
    rejected_version: int | None
    ref_response: str | None = None
    ref_tokens: int | None = None
    judge: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Token ids as the engine saw/sampled them, and summed log-probs under the generating policy
    # (version chosen_version etc.): with them the learner scores exactly what was sampled and,
    # when that policy is its reference, needs no reference forward pass.
    prompt_ids: tuple[int, ...] = ()
    chosen_ids: tuple[int, ...] = ()
    rejected_ids: tuple[int, ...] = ()
    ref_ids: tuple[int, ...] = ()
    chosen_gen_logp: float | None = None
    rejected_gen_logp: float | None = None
    ref_gen_logp: float | None = None

    @property
    def margin(self) -> float:
        return self.chosen_score - self.rejected_score

    @property
    def policy_version(self) -> int | None:
        """The oldest policy version that produced a response of this pair (for staleness)."""
        versions = [v for v in (self.chosen_version, self.rejected_version) if v is not None]
        return min(versions) if versions else None

    def to_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["messages"] = [dict(m) for m in self.messages]
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "PreferencePair":
        row = dict(row)
        row["messages"] = tuple(dict(m) for m in row["messages"])
        for key in ("prompt_ids", "chosen_ids", "rejected_ids", "ref_ids"):
            row[key] = tuple(row.get(key) or ())
        return cls(**row)
