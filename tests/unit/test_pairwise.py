"""Pairwise judging: the ranking math, the judge prompt, the config keys, the PairRM-layout ranker
(saved, loaded strictly, compared) and both pairwise judges (the LLM one on a fake engine)."""
import json
import math
import random

import pytest

from selm_ray.core.config import ConfigError, load_config
from selm_ray.core.judging.pairwise import (
    PairwiseTally,
    comparison_count,
    plan_comparisons,
    position_bias,
    rank,
    score_candidates,
)
from selm_ray.core.judging.pairwise_prompt import (
    VERDICT_PREFIX,
    choice_probability,
    choice_token_ids,
    pairwise_prompt,
)
from selm_ray.core.pairs import build_pair
from selm_ray.core.records import Candidate, Rollout

# P(row beats column) when row is shown first; the diagonal is never asked for
P3 = [[None, 0.8, 0.6],
      [0.3, None, 0.4],
      [0.5, 0.7, None]]


def _rollout(*texts, ref=None, pid="p"):
    return Rollout(pid, ({"role": "user", "content": "What is 2+2?"},), "",
                   tuple(Candidate(t, len(t.split()), 0) for t in texts),
                   Candidate(ref, 1, 0) if ref is not None else None)


# -- the math ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", range(0, 7))
def test_plans_have_the_stated_counts(n):
    assert comparison_count(n, "all") == len(plan_comparisons(n, "all").pairs) == n * (n - 1)
    assert comparison_count(n, "anchor") == len(plan_comparisons(n, "anchor").pairs) == 2 * max(0, n - 1)
    assert comparison_count(n, "anchor", True) == len(plan_comparisons(n, "anchor", True).pairs) == 2 * n
    for has_ref in (False, True):
        pairs = plan_comparisons(n, "anchor", has_ref).pairs
        assert sorted(pairs) == sorted((j, i) for i, j in pairs)  # every pair in both orders
    assert len(set(plan_comparisons(n, "all").pairs)) == n * (n - 1)


def test_all_mode_against_hand_worked_numbers():
    scores = rank(3, "all", lambda i, j: P3[i][j])
    # 0: (0.8 + (1-0.3) + 0.6 + (1-0.5)) / 4; 1: ((1-0.8) + 0.3 + 0.4 + (1-0.7)) / 4; 2: ((1-0.6) + 0.5 + (1-0.4) + 0.7) / 4
    assert [s.score for s in scores] == pytest.approx([0.65, 0.3, 0.55], abs=1e-12)
    assert all(s.ok and s.num_valid == s.num_samples == 4 for s in scores)


def test_anchor_mode_against_hand_worked_numbers():
    p = {(1, 0): 0.9, (0, 1): 0.2, (2, 0): 0.4, (0, 2): 0.7}
    scores = rank(3, "anchor", lambda i, j: p[(i, j)])
    assert [s.score for s in scores] == pytest.approx([0.5, (0.9 + 0.8) / 2, (0.4 + 0.3) / 2], abs=1e-12)
    # with y_ref (item 3) as the anchor every candidate gets a real score
    q = {(0, 3): 0.6, (3, 0): 0.5, (1, 3): 0.1, (3, 1): 0.8, (2, 3): 0.9, (3, 2): 0.2}
    scores = rank(3, "anchor", lambda i, j: q[(i, j)], has_ref=True)
    assert [s.score for s in scores] == pytest.approx([0.55, 0.15, 0.85], abs=1e-12)
    assert [s.num_samples for s in scores] == [2, 2, 2]


def _naive(n, mode, m, has_ref=False):
    """Straight from the definition: average each candidate's win probabilities, order by order."""
    anchor = (n if has_ref else 0) if mode == "anchor" else None
    out = []
    for i in range(n):
        if i == anchor:
            out.append(0.5)
            continue
        others = [anchor] if anchor is not None else [j for j in range(n) if j != i]
        wins = [m[i][j] for j in others] + [1 - m[j][i] for j in others]
        out.append(sum(wins) / len(wins))
    return out


@pytest.mark.parametrize("mode,has_ref", [("all", False), ("anchor", False), ("anchor", True)])
def test_scores_match_a_naive_loop(mode, has_ref):
    rng = random.Random(7)
    for n in (2, 3, 5):
        m = [[rng.random() for _ in range(n + 1)] for _ in range(n + 1)]
        got = [s.score for s in rank(n, mode, lambda i, j: m[i][j], has_ref)]
        assert got == pytest.approx(_naive(n, mode, m, has_ref), abs=1e-12)
        if mode == "all":  # each comparison shares one unit of probability between two candidates
            assert sum(got) == pytest.approx(n / 2, abs=1e-12)


def test_a_failed_comparison_is_left_out_and_counted():
    plan = plan_comparisons(3, "all")
    probs = [None if pair == (0, 1) else P3[pair[0]][pair[1]] for pair in plan.pairs]
    s0, s1, s2 = score_candidates(plan, probs)
    assert s0.score == pytest.approx((0.7 + 0.6 + 0.5) / 3) and (s0.num_valid, s0.num_samples) == (3, 4)
    assert s1.score == pytest.approx((0.3 + 0.4 + 0.3) / 3) and (s1.num_valid, s1.num_samples) == (3, 4)
    assert s2.num_valid == 4
    tally = PairwiseTally()
    tally.add(plan, probs)
    assert tally.as_dict()["failed_comparisons"] == 1 and tally.comparisons == 6


def test_a_candidate_without_any_successful_comparison_fails_explicitly():
    plan = plan_comparisons(3, "all")
    probs = [None if 2 in pair else 0.6 for pair in plan.pairs]
    s0, s1, s2 = score_candidates(plan, probs)
    assert s0.ok and s1.ok and s0.score == s1.score == pytest.approx(0.5)
    assert not s2.ok and s2.score is None and s2.failure == "all 4 pairwise comparisons of this candidate failed"
    # anchor mode: nothing compared -> the anchor's 0.5 means nothing and fails too
    dead = score_candidates(plan_comparisons(2, "anchor"), [None, None])
    assert [s.ok for s in dead] == [False, False] and "anchor" in dead[0].failure
    [alone] = score_candidates(plan_comparisons(1, "all"), [])
    assert not alone.ok and "no pairwise comparison" in alone.failure


def test_bad_inputs_are_errors():
    plan = plan_comparisons(2, "all")
    with pytest.raises(ValueError, match="2 comparisons"):
        score_candidates(plan, [0.5])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        score_candidates(plan, [0.5, 1.5])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        score_candidates(plan, [0.5, math.nan])
    with pytest.raises(ValueError, match="pairwise mode"):
        plan_comparisons(2, "swiss")


def test_position_bias_and_tally():
    assert position_bias([0.7, 0.9, None]) == pytest.approx(0.3)
    assert position_bias([None]) is None
    tally = PairwiseTally()
    tally.add(plan_comparisons(3, "all"), [0.6] * 6)
    tally.add(plan_comparisons(2, "all"), [0.6, None])
    d = tally.as_dict()
    assert d["prompts"] == 2 and d["comparisons"] == 8 and d["failed_comparisons"] == 1
    assert d["comparisons_per_prompt"] == 4.0 and d["comparisons_per_prompt_histogram"] == {"2": 1, "6": 1}
    assert d["position_bias"] == pytest.approx(0.1)


def test_a_judge_that_always_prefers_the_first_answer_yields_a_tie_not_a_pair():
    from selm_ray.core.records import Judgement

    scores = rank(3, "all", lambda i, j: 0.9)  # pure position bias
    assert [s.score for s in scores] == pytest.approx([0.5, 0.5, 0.5])
    outcome = build_pair(_rollout("a", "b", "c"), Judgement("p", tuple(scores), "pairwise:test"))
    assert outcome.pair is None and outcome.reason == "tie"


# -- the LLM judge's prompt ----------------------------------------------------------------------
def test_choice_probability_is_a_two_way_softmax():
    assert choice_probability({1: math.log(0.3), 2: math.log(0.1)}, 1, 2) == pytest.approx(0.75)
    assert choice_probability({1: -1000.0, 2: -0.1}, 1, 2) == pytest.approx(0.0, abs=1e-300)
    assert choice_probability({1: -0.1}, 1, 2) is None
    assert choice_probability({1: -math.inf, 2: -1.0}, 1, 2) is None


class _Tok:
    def __init__(self, table):
        self.table = table

    def encode(self, text, add_special_tokens=False):
        return self.table[text]


def test_choice_tokens_must_be_single_tokens():
    assert choice_token_ids(_Tok({"A": [5], "B": [6]})) == (5, 6)
    with pytest.raises(ValueError, match=r"'B' is \[6, 7\]"):
        choice_token_ids(_Tok({"A": [5], "B": [6, 7]}))
    with pytest.raises(ValueError, match="same token"):
        choice_token_ids(_Tok({"A": [5], "B": [5]}))


def test_pairwise_prompt_shows_both_answers_in_order(smollm2_tokenizer):
    text = pairwise_prompt(smollm2_tokenizer, ({"role": "user", "content": "Name a colour."},), "Red.", "Blue.")
    assert text.endswith(VERDICT_PREFIX) and "Name a colour." in text
    assert text.index("Red.") < text.index("Blue.")
    assert choice_token_ids(smollm2_tokenizer) == (smollm2_tokenizer.encode("A", add_special_tokens=False)[0],
                                                   smollm2_tokenizer.encode("B", add_special_tokens=False)[0])


# -- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["judge.kind=pairwise_rm"], "judge.ranker: required when kind is pairwise_rm"),
    (["judge.pairwise_mode=swiss"], "judge.pairwise_mode: must be one of"),
    (["judge.kind=pairwise_rm", "judge.ranker=x", "judge.colocate=true"], "judge.colocate: needs kind: self or pairwise_llm"),
    (["judge.kind=pairwise"], "judge.kind: must be one of"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


def test_config_kinds_say_what_they_load():
    rm = load_config(None, ["judge.kind=pairwise_rm", "judge.ranker=tiny-pairrm", "judge.pairwise_mode=anchor"]).judge
    assert (rm.judge_model, rm.on_engine, rm.pairwise_mode) == ("tiny-pairrm", False, "anchor")
    llm = load_config(None, ["judge.kind=pairwise_llm", "judge.colocate=true"]).judge
    assert (llm.judge_model, llm.on_engine, llm.pairwise_mode) == (None, True, "all")
    assert load_config().judge.on_engine and load_config(None, ["judge.kind=reward_model",
                                                                 "judge.reward_model=r"]).judge.judge_model == "r"


# -- the PairRM-layout ranker --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranker_path(smollm2_tokenizer, tmp_path_factory):
    from selm_ray.engines.pairrm import build_tiny_pairrm

    return build_tiny_pairrm(tmp_path_factory.mktemp("pairrm") / "ranker", seed=0, tokenizer=smollm2_tokenizer)


@pytest.fixture(scope="module")
def ranker(ranker_path):
    from selm_ray.engines.pairrm import PairRanker

    return PairRanker.load(ranker_path, batch_size=4)


def test_tiny_ranker_layout_and_batched_comparisons(ranker, ranker_path, smollm2_tokenizer):
    from safetensors import safe_open

    from selm_ray.engines.pairrm import MARKERS

    with safe_open(str(ranker_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"head_layer.1.weight", "head_layer.1.bias", "head_layer.4.weight", "head_layer.4.bias"} <= keys
    assert all(k.startswith(("pretrained_model.", "head_layer.")) for k in keys)
    layout = json.loads((ranker_path / "pairrm_config.json").read_text())
    assert layout["hidden_size"] == 64 and layout["n_tasks"] == 1 and layout["source_max_length"] == 128
    assert len(smollm2_tokenizer) + 3 == ranker.module.pretrained_model.config.vocab_size  # caller's copy untouched
    ids, positions = ranker.encode_one("What is 2+2?", "4", "5")
    assert [ids[p] for p in positions] == [ranker.tokenizer.convert_tokens_to_ids(m) for m in MARKERS]
    items = [("What is 2+2?", a, b) for a in ("It is 4.", "Five.", "I think it is four, because 2+2=4.")
             for b in ("It is 4.", "Five.")]
    batch = ranker.compare_batch(items)
    assert batch == pytest.approx([ranker.compare(*it) for it in items], abs=1e-6)
    assert all(0 < p < 1 for p in batch) and len({round(p, 6) for p in batch}) > 1


def test_long_texts_are_truncated_to_the_limits(ranker):
    ids, positions = ranker.encode_one("word " * 500, "answer " * 500, "other " * 500)
    assert len(ids) <= 128 * 3 and positions[0] == 0 and positions[1] <= 128


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_loader_is_strict_about_keys_and_shapes(ranker_path, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from selm_ray.engines.pairrm import PairRanker

    weights = load_file(str(ranker_path / "model.safetensors"))
    extra = _copy(ranker_path, tmp_path / "extra")
    save_file({**weights, "head_layer.7.weight": torch.zeros(1)}, str(extra / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected keys: head_layer\.7\.weight"):
        PairRanker.load(extra)
    missing = _copy(ranker_path, tmp_path / "missing")
    save_file({k: v for k, v in weights.items() if k != "head_layer.4.bias"}, str(missing / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys: head_layer\.4\.bias"):
        PairRanker.load(missing)
    shape = _copy(ranker_path, tmp_path / "shape")
    save_file({**weights, "head_layer.4.weight": torch.zeros(2, 64)}, str(shape / "model.safetensors"))
    with pytest.raises(ValueError, match=r"wrong shapes: head_layer\.4\.weight"):
        PairRanker.load(shape)
    cfg = _copy(ranker_path, tmp_path / "cfg")
    data = json.loads((cfg / "pairrm_config.json").read_text())
    (cfg / "pairrm_config.json").write_text(json.dumps({**data, "head": 3}))
    with pytest.raises(ValueError, match=r"unknown keys \['head'\]"):
        PairRanker.load(cfg)
    (cfg / "pairrm_config.json").write_text(json.dumps({**data, "source_token_id": 5}))
    with pytest.raises(ValueError, match="the marker must be one added token"):
        PairRanker.load(cfg)


# -- the judges ----------------------------------------------------------------------------------
def test_pairwise_rm_judge_scores_and_counts(ranker_path):
    from selm_ray.engines.judges import PairwiseRMJudge

    judge = PairwiseRMJudge(str(ranker_path), "all")
    rollouts = [_rollout("It is 4.", "Five.", "Four, since 2+2=4."), _rollout("same", "same", pid="q")]
    a, same = judge.judge(rollouts)
    assert judge.name == f"pairrm:{ranker_path}" and a.judge == judge.name and a.judge_version is None
    assert all(s.ok and 0 <= s.score <= 1 for s in a.scores)
    # identical answers: whatever P(first wins) is, the order swap makes it exactly a coin flip
    assert [s.score for s in same.scores] == pytest.approx([0.5, 0.5], abs=1e-12)
    st = judge.stats()
    assert st["comparisons"] == 6 + 2 and st["failed_comparisons"] == 0 and st["prompts"] == 2
    expected = rank(3, "all", lambda i, j: judge.ranker.compare("What is 2+2?", *(
        ("It is 4.", "Five.", "Four, since 2+2=4.")[k] for k in (i, j))))
    assert [s.score for s in a.scores] == pytest.approx([s.score for s in expected], abs=1e-6)


def test_a_ref_among_the_candidates_is_the_anchor_not_an_extra_answer():
    """generation.ref_in_candidates puts y_ref first among the candidates: anchor mode compares the
    samples against it once, as a candidate; y_ref apart is the extra item n."""
    import dataclasses

    from selm_ray.engines.judges import _plan

    greedy, sample = Candidate("Four.", 2, 0), Candidate("It is 4.", 3, 0)
    apart = dataclasses.replace(_rollout("It is 4.", "Five."), ref_response=greedy)
    among = dataclasses.replace(_rollout("Four.", "It is 4."), candidates=(greedy, sample), ref_response=greedy)
    assert among.ref_is_candidate and not apart.ref_is_candidate
    (plan_apart,), jobs_apart = _plan([apart], "anchor")
    (plan_among,), jobs_among = _plan([among], "anchor")
    assert plan_apart.uses_ref and plan_apart.count == 4 and {j[2] for j in jobs_apart} >= {"Four."}
    assert not plan_among.uses_ref and plan_among.pairs == ((1, 0), (0, 1))
    assert [j[1:] for j in jobs_among] == [("It is 4.", "Four."), ("Four.", "It is 4.")]


def test_pairwise_rm_judge_counts_a_failed_comparison(ranker_path, monkeypatch):
    from selm_ray.engines.judges import PairwiseRMJudge

    judge = PairwiseRMJudge(str(ranker_path), "anchor")
    real = judge.ranker.compare_batch
    # the ranker returns NaN for the first comparison (e.g. a non-finite logit)
    monkeypatch.setattr(judge.ranker, "compare_batch", lambda items: [math.nan] + real(items)[1:])
    [j] = judge.judge([_rollout("It is 4.", "Five.", ref="4")])  # y_ref is the anchor: 2N = 4 comparisons
    assert judge.stats()["failed_comparisons"] == 1 and judge.stats()["comparisons"] == 4
    assert (j.scores[0].num_valid, j.scores[0].num_samples) == (1, 2) and j.scores[0].ok
    assert (j.scores[1].num_valid, j.scores[1].num_samples) == (2, 2)


class _FakeEngine:
    """Stands in for a VLLMEngine: answers containing "good" win, and the first answer gets +0.1."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.a, self.b = choice_token_ids(tokenizer)

    def prompt_token_ids(self, prompts):
        return [tuple(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def choice_logprobs(self, prompts, token_ids):
        assert tuple(token_ids) == (self.a, self.b)
        out = []
        for p in prompts:
            first_good = "<answer A>\ngood" in p
            second_good = "<answer B>\ngood" in p
            pa = 0.5 + 0.1 + 0.3 * (first_good - second_good)
            out.append({self.a: math.log(pa), self.b: math.log(1 - pa)})
        return out


def test_pairwise_llm_judge_cancels_and_reports_position_bias(smollm2_tokenizer):
    from selm_ray.engines.judges import PairwiseLLMJudge

    judge = PairwiseLLMJudge(_FakeEngine(smollm2_tokenizer), "all", max_prompt_tokens=4000)
    [j, same] = judge.judge([_rollout("good answer", "bad answer", "bad too"), _rollout("x", "x", pid="q")])
    good, bad, bad2 = (s.score for s in j.scores)
    # good vs bad: P(good first) 0.9, P(bad first) 0.3 -> good wins 0.9 and 0.7; bad vs bad: 0.6, 0.4
    assert good == pytest.approx(0.8) and bad == pytest.approx((0.1 + 0.3 + 0.6 + 0.4) / 4) == bad2
    assert [s.score for s in same.scores] == pytest.approx([0.5, 0.5])
    st = judge.stats()
    assert st["comparisons"] == 8 and st["position_bias"] == pytest.approx(0.1) and st["too_long"] == 0
    assert j.judge == "pairwise:llm" and j.judge_version == 0


def test_pairwise_llm_judge_counts_over_long_prompts_as_failed(smollm2_tokenizer):
    from selm_ray.engines.judges import PairwiseLLMJudge

    judge = PairwiseLLMJudge(_FakeEngine(smollm2_tokenizer), "all", max_prompt_tokens=250)
    [j] = judge.judge([_rollout("good", "bad", "word " * 300)])
    assert judge.stats()["too_long"] == 4 and judge.stats()["failed_comparisons"] == 4
    assert not j.scores[2].ok and j.scores[0].score == pytest.approx(0.8) and j.scores[0].num_samples == 4


def test_pairwise_llm_judge_refuses_multi_token_choices():
    from selm_ray.engines.judges import PairwiseLLMJudge

    class Engine:
        tokenizer = _Tok({"A": [1, 2], "B": [3]})

    with pytest.raises(ValueError, match=r"'A' is \[1, 2\]"):
        PairwiseLLMJudge(Engine(), "all")
