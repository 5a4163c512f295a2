"""Function judges and judge-agreement figures, on hand-written cases."""
import json
import math

import pytest

from selm_ray.core.config import ConfigError, load_config
from selm_ray.core.data import DataError
from selm_ray.engines.judges import FunctionJudge
from selm_ray.core.evaluation import agreement, as_rollouts, load_labelled
from selm_ray.core.judging.functions import FunctionJudgeError, brevity, check_score, load_function, math_answer
from selm_ray.core.records import Candidate, Rollout

calls = []


def flaky(prompt, response):  # used by spec below: every failure kind a user's function can have
    calls.append(response)
    return {"ok": 2.5, "none": None, "nan": math.nan, "text": "7", "bool": True}.get(response) if response != "boom" \
        else 1 / 0


def test_load_function_errors_name_the_spec():
    assert load_function("selm_ray.core.judging.functions:brevity") is brevity
    for spec, msg in (("no_colon", "must look like"), ("selm_ray.nope:f", "cannot import"),
                      ("selm_ray.core.judging.functions:missing", "no callable 'missing'")):
        with pytest.raises(FunctionJudgeError, match=msg):
            load_function(spec)


def test_config_checks_the_function_spec():
    cfg = load_config(None, ["judge.kind=function", "judge.function=selm_ray.core.judging.functions:brevity"])
    assert cfg.judge.function.endswith(":brevity")
    with pytest.raises(ConfigError, match="judge.function: kind function needs"):
        load_config(None, ["judge.kind=function"])


def test_example_functions():
    assert math_answer("What is 6*7? [answer=42]", "6*7 = 42") == 1.0
    assert math_answer("What is 6*7? [answer=42]", "It is 41, or 43") == 0.0
    assert math_answer("Say hi", "hi") is None
    assert brevity("q", "one two three") == -0.03 and brevity("q", "  ") is None


def test_check_score():
    assert check_score(3) == (3.0, None)
    assert check_score(None)[1] == "function returned None"
    assert "not a number" in check_score("7")[1] and "not a number" in check_score(True)[1]
    assert "nan" in check_score(math.nan)[1]


def _rollout(*texts, prompt="q"):
    return Rollout("p", ({"role": "user", "content": prompt},), "", tuple(Candidate(t, 1, 0) for t in texts))


def test_function_judge_turns_every_bad_value_into_a_counted_failure():
    judge = FunctionJudge(f"{__name__}:flaky")
    [j] = judge.judge([_rollout("ok", "none", "nan", "text", "bool", "boom")])
    assert j.judge == f"fn:{__name__}:flaky" and j.scores[0].score == 2.5
    assert [s.failure is not None for s in j.scores] == [False, True, True, True, True, True]
    assert "ZeroDivisionError" in j.scores[5].failure and j.num_failed == 5


def test_agreement_counts_wins_ties_and_failures():
    judge = FunctionJudge("selm_ray.core.judging.functions:brevity")
    js = judge.judge([_rollout("short", "a longer one"), _rollout("a b c", "x"), _rollout("same", "tie"),
                      _rollout("", "x")])
    assert agreement(js) == {"pairs": 4, "accuracy": round(1 / 3, 4), "tie_rate": 0.25, "failure_rate": 0.25,
                             "judge": "fn:selm_ray.core.judging.functions:brevity"}


def test_labelled_rows_need_chosen_and_rejected(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "q1", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": "q2", "chosen": "a"}) + "\n")
    with pytest.raises(DataError, match="row 1 .*needs both 'chosen' and 'rejected'"):
        load_labelled(str(path))
    [r] = as_rollouts(load_labelled(str(path), max_pairs=1))
    assert [c.text for c in r.candidates] == ["a", "b"]


def test_builtin_labelled_pairs_ship_with_the_package():
    rollouts = as_rollouts(load_labelled("builtin:pairs"))
    assert len(rollouts) == 12 and len({r.prompt_id for r in rollouts}) == 12
    assert all(len(r.candidates) == 2 and r.candidates[0].text != r.candidates[1].text for r in rollouts)


def test_win_tie_loss_and_wilson_interval():
    from selm_ray.core.evaluation import win_tie_loss, wilson
    from selm_ray.core.records import CandidateScore

    ok = lambda x: CandidateScore(x, 1, 1)  # noqa: E731
    bad = CandidateScore(None, 0, 1, failure="x")
    r = win_tie_loss([(ok(3), ok(1)), (ok(2), ok(2)), (ok(0), ok(4)), (ok(5), ok(1)), (bad, ok(1))])
    assert (r["wins"], r["ties"], r["losses"], r["failures"], r["scored"]) == (2, 1, 1, 1, 4)
    assert r["win_rate"] == 0.625
    lo, hi = r["win_rate_ci95"]
    assert lo < 0.625 < hi and (lo, hi) == wilson(0.625, 4)
    assert wilson(0.5, 100) == (0.4038, 0.5962)  # the textbook Wilson interval


# -- instruction-following judge -------------------------------------------------------------------
IF_META = {"instructions": [{"id": "case:lowercase", "kwargs": {}},
                            {"id": "length:max_words", "kwargs": {"n": 5}},
                            {"id": "punctuation:no_comma", "kwargs": {}},
                            {"id": "format:end_question", "kwargs": {}}]}


def test_instructions_followed_is_the_strict_share():
    from selm_ray.core.judging.functions import instructions_followed, instructions_graded

    assert instructions_followed("q", "all small, and short", IF_META) == 0.5  # lowercase, <= 5 words
    assert instructions_followed("q", "ok then?", IF_META) == 1.0
    assert instructions_followed("q", "Sure:\nok then?", IF_META) == 0.75  # strict: the capital counts
    assert instructions_followed("q", "x", None) is None and instructions_followed("q", "x", {}) is None
    assert instructions_followed("q", "x", {"instructions": []}) is None
    assert instructions_graded("q", "ok then?", IF_META) == 1.0
    assert 0.5 < instructions_graded("q", "all small, and short", IF_META) < 1.0
    with pytest.raises(ValueError, match="'length:max_words': argument 'n'"):
        instructions_followed("q", "x", {"instructions": [{"id": "length:max_words", "kwargs": {"n": -1}}]})
    with pytest.raises(ValueError, match="must be a mapping with 'id'"):
        instructions_followed("q", "x", {"instructions": ["case:lowercase"]})


def two_args(prompt, response):
    return 1.0


def three_args(prompt, response, meta):
    return float(len(meta["tags"])) if meta else -1.0


def test_function_judge_passes_meta_to_a_three_argument_function():
    from selm_ray.core.judging.functions import takes_meta

    assert not takes_meta(two_args) and takes_meta(three_args) and takes_meta(lambda *a: 0)
    with pytest.raises(FunctionJudgeError, match="must take"):
        takes_meta(lambda a, b, c, d: 0)
    r = Rollout("p", ({"role": "user", "content": "q"},), "", (Candidate("a", 1, 0),), meta={"tags": [1, 2]})
    assert FunctionJudge(f"{__name__}:three_args").judge([r])[0].scores[0].score == 2.0
    assert FunctionJudge(f"{__name__}:three_args").judge([_rollout("a")])[0].scores[0].score == -1.0
    assert FunctionJudge(f"{__name__}:two_args").judge([r])[0].scores[0].score == 1.0


def test_function_judge_over_instructions():
    judge = FunctionJudge("selm_ray.core.judging.functions:instructions_followed")
    r = Rollout("p", ({"role": "user", "content": "q"},), "", (Candidate("ok then?", 2, 0), Candidate("NO", 1, 0)),
                meta=IF_META)
    bad = Rollout("b", r.messages, "", (Candidate("x", 1, 0),),
                  meta={"instructions": [{"id": "case:nope", "kwargs": {}}]})
    plain = Rollout("c", r.messages, "", (Candidate("x", 1, 0),))
    j, jb, jp = judge.judge([r, bad, plain])
    assert [s.score for s in j.scores] == [1.0, 0.5]
    assert jb.scores[0].score is None and "ValueError" in jb.scores[0].failure and "case:nope" in jb.scores[0].failure
    assert jp.scores[0].failure == "function returned None"


def test_instruction_accuracy_on_hand_worked_numbers():
    from selm_ray.core.evaluation import instruction_accuracy, wilson

    lower = {"id": "case:lowercase", "kwargs": {}}
    comma = {"id": "punctuation:no_comma", "kwargs": {}}
    items = [({"instructions": [lower, comma]}, "all good here", 10),       # both: prompt followed
             ({"instructions": [lower, comma]}, "Sure:\nyes, fine\nok", 20),  # strict 0/2; loose: lowercase
             ({"instructions": [comma]}, "Sure:\nno commas", 30),           # strict 1/1
             ({"instructions": [lower]}, "Here:\n**fine**", 40),            # strict 0, loose 1
             (None, "not verifiable", 99)]
    r = instruction_accuracy(items)
    assert (r["prompts"], r["instructions"], r["skipped"], r["mean_tokens"]) == (4, 6, 1, 25.0)
    assert r["prompt_strict"] == 0.5 and r["prompt_loose"] == 0.75
    assert r["instruction_strict"] == 0.5 and r["instruction_loose"] == round(5 / 6, 4)
    assert r["prompt_strict_ci95"] == wilson(0.5, 4) and r["instruction_loose_ci95"] == wilson(5 / 6, 6)
    assert r["by_kind"] == {"case:lowercase": [1, 3], "punctuation:no_comma": [2, 3]}
    empty = instruction_accuracy([])
    assert empty["prompts"] == 0 and empty["prompt_strict"] == 0.0 and empty["prompt_strict_ci95"] == (0.0, 1.0)
