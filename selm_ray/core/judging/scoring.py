"""Turn judge outputs into scores: parse a written verdict, aggregate samples, expected score."""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

from selm_ray.core.records import CandidateScore

MAX_SCORE = 5.0
SCORE_TOKENS = tuple(str(d) for d in range(6))  # "0".."5": one token each in SmolLM2's vocab

# "Score: 4", "**Score:** 4.5", "score = __3__/5", "Final score: 4 out of 5". The number is taken
# from the LAST "score" keyword in the text; markdown emphasis around either part is ignored.
_SCORE_RE = re.compile(
    r"score[\s*_`]*[:=][\s*_`]*(?P<num>[+-]?\d+(?:\.\d+)?)(?![\d.]*\d)",
    re.IGNORECASE,
)
_KEYWORD_RE = re.compile(r"score[\s*_`]*[:=]", re.IGNORECASE)


def parse_score(text: str | None) -> float | None:
    """The final ``Score: N`` of a judge's text, N in 0..5 in steps of 0.5; None if unusable.

    None (never -1 or 0) when there is no score line, the last one has no number, or the number
    is out of range or not a whole/half point. The last occurrence wins, because judges often
    restate the rubric ("Score: 0-5") before giving their verdict.
    """
    if not text:
        return None
    keywords = list(_KEYWORD_RE.finditer(text))
    if not keywords:
        return None
    last = keywords[-1]
    match = _SCORE_RE.match(text, last.start())
    if match is None:
        return None
    value = float(match.group("num"))
    if not 0.0 <= value <= MAX_SCORE or (value * 2) != int(value * 2):
        return None
    return value


def aggregate_samples(samples: Sequence[float | None], min_valid: int) -> CandidateScore:
    """Mean of the parsed scores of k sampled judgements of one candidate.

    Fewer than ``min_valid`` parsed scores makes the candidate a failed judgement, carried as
    such, so it can never be picked as best or worst.
    """
    if min_valid < 1:
        raise ValueError(f"min_valid must be >= 1, got {min_valid}")
    valid = [s for s in samples if s is not None]
    if len(valid) < min_valid:
        return CandidateScore(
            score=None,
            num_valid=len(valid),
            num_samples=len(samples),
            failure=f"only {len(valid)} of {len(samples)} judgements had a valid score "
            f"(need {min_valid})",
        )
    return CandidateScore(score=sum(valid) / len(valid), num_valid=len(valid), num_samples=len(samples))


def expected_score(logprobs: Mapping[str, float]) -> float | None:
    """Probability-weighted mean of the digits "0".."5" among next-token log-probs.

    ``logprobs`` maps decoded token text to its log-probability (other tokens are ignored; the
    digit probabilities are renormalised among themselves). None when no digit is present.
    """
    found = [(int(t.strip()), lp) for t, lp in logprobs.items()
             if t.strip() in SCORE_TOKENS and math.isfinite(lp)]
    if not found:
        return None
    top = max(lp for _, lp in found)  # shift before exp so tiny probabilities do not underflow
    probs: dict[int, float] = {}
    for digit, lp in found:
        # "4" and " 4" may both appear; they are the same verdict, so their mass adds up.
        probs[digit] = probs.get(digit, 0.0) + math.exp(lp - top)
    return sum(d * p for d, p in probs.items()) / sum(probs.values())


def score_from_expected(logprobs: Mapping[str, float]) -> CandidateScore:
    """Expected-score mode as a CandidateScore (a failure when no digit had any probability)."""
    value = expected_score(logprobs)
    if value is None:
        return CandidateScore(None, 0, 1, failure="no score digit among the judge's next-token log-probs")
    return CandidateScore(value, 1, 1)
