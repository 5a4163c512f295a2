"""LLM-as-a-Judge scoring, pure Python: rubric prompt, score parsing, aggregation."""
from selm_ray.core.judging.rubric import SCORE_PREFIX, build_judge_messages, expected_score_prompt
from selm_ray.core.judging.scoring import (
    aggregate_samples,
    expected_score,
    parse_score,
    score_from_expected,
)

__all__ = [
    "SCORE_PREFIX",
    "build_judge_messages",
    "expected_score_prompt",
    "parse_score",
    "aggregate_samples",
    "expected_score",
    "score_from_expected",
]
