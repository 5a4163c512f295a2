import math

import pytest

from selm_ray.core.judging import (
    SCORE_PREFIX, aggregate_samples, build_judge_messages, expected_score, parse_score,
    score_from_expected,
)

# (judge output, expected parse). Real-looking verdicts: valid, malformed, several scores,
# out of range, empty.
CASES = [
    ("The answer is relevant and clear.\nScore: 4", 4.0),
    ("Score: 5", 5.0),
    ("score: 3", 3.0),
    ("SCORE: 2", 2.0),
    ("The response covers the basics.\n\n**Score:** 3", 3.0),
    ("The response covers the basics.\n\nScore: **3**", 3.0),
    ("**Score: 4**", 4.0),
    ("__Score__: 1", 1.0),
    ("Final score: 4 out of 5", 4.0),
    ("Total Score: 3/5", 3.0),
    ("Score: 4.5", 4.5),
    ("Score:4", 4.0),
    ("Score :   2", 2.0),
    ("Justification: concise.\nScore: 0", 0.0),
    ("Score = 3", 3.0),
    ("Score: 4.", 4.0),
    ("I award points 1, 2 and 3.\nScore: 3\n", 3.0),
    ("  Score:\t5  ", 5.0),
    ("The rubric says Score: 0-5 points. Looking at it... Score: 2", 2.0),
    ("Score: 1\nOn reflection, the answer is better than that.\nScore: 3", 3.0),
    ("Score: `4`", 4.0),
    # unusable -> None, never a number
    ("", None),
    (None, None),
    ("The answer is good. I would give it four points.", None),
    ("Score: six", None),
    ("Score: 6", None),
    ("Score: -1", None),
    ("Score: 4.3", None),
    ("Score: 10/10", None),
    ("Score: 45", None),
    ("Score: 3\nScore: 7", None),  # last occurrence wins, and it is out of range
    ("Score:", None),
    ("Score: N/A", None),
    ("4", None),
    ("Points: 4", None),
    ("The score is high.", None),
    ("Score: 2.75", None),
]


@pytest.mark.parametrize("text,want", CASES)
def test_parse_score_table(text, want):
    got = parse_score(text)
    assert got == want
    if want is None:
        assert got is None  # explicitly not 0 or -1


def test_table_is_big_enough():
    assert len(CASES) >= 30


def test_aggregate_mean_and_failure():
    ok = aggregate_samples([4.0, None, 3.0], min_valid=2)
    assert ok.ok and ok.score == 3.5 and ok.num_valid == 2 and ok.num_samples == 3
    bad = aggregate_samples([4.0, None, None], min_valid=2)
    assert not bad.ok and bad.score is None and "only 1 of 3" in bad.failure
    with pytest.raises(ValueError):
        aggregate_samples([1.0], min_valid=0)


def test_expected_score_weighted_and_renormalised():
    lp = {"0": math.log(0.1), "5": math.log(0.1), "hello": math.log(0.8)}
    assert expected_score(lp) == pytest.approx(2.5)
    lp = {str(d): math.log(p) for d, p in zip(range(6), [0.0001, 0.0001, 0.0001, 0.0001, 0.2, 0.1])}
    assert expected_score(lp) == pytest.approx((4 * 0.2 + 5 * 0.1 + 6 * 0.0001) / 0.3004, rel=1e-9)
    # very small probabilities must not underflow to "no score"
    assert expected_score({"2": -900.0, "4": -901.0}) == pytest.approx((2 + 4 * math.exp(-1)) / (1 + math.exp(-1)))
    # " 4" and "4" are one verdict
    assert expected_score({"4": math.log(0.25), " 4": math.log(0.25), "2": math.log(0.5)}) == pytest.approx(3.0)


def test_expected_score_missing_digits_is_failure():
    assert expected_score({"a": -0.1}) is None
    assert expected_score({"3": float("-inf")}) is None
    s = score_from_expected({})
    assert not s.ok and s.score is None


def test_rubric_messages_mention_all_five_criteria_and_score_line():
    msgs = build_judge_messages("Name a fruit.", "An apple.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    body = msgs[1]["content"]
    assert "Name a fruit." in body and "An apple." in body
    for n in range(1, 6):
        assert f"\n{n}. " in body
    assert 'Score: <points>' in body
    assert SCORE_PREFIX == "Score: "
    chat = build_judge_messages([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], "yo")
    assert "user: hi" in chat[1]["content"]
