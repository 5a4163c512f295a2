import pytest

from selm_ray.core.pairs import NO_PAIR_TIE, NO_PAIR_TOO_FEW_SCORED, build_pair
from selm_ray.core.records import Candidate, CandidateScore, Judgement, PreferencePair, Rollout

MSGS = ({"role": "user", "content": "q"},)


def _rollout(lengths, versions=None, ref=True):
    versions = versions or [3] * len(lengths)
    cands = tuple(Candidate(f"answer {i}", n, v) for i, (n, v) in enumerate(zip(lengths, versions)))
    return Rollout("p1", MSGS, "<q>", cands, Candidate("greedy", 5, 3) if ref else None)


def _judged(scores):
    return Judgement("p1", tuple(
        CandidateScore(s, 1, 1) if s is not None else CandidateScore(None, 0, 1, failure="x") for s in scores
    ), "test")


def test_best_vs_worst_with_metadata():
    out = build_pair(_rollout([10, 20, 30], versions=[3, 4, 3]), _judged([2.0, 4.5, 1.0]))
    p = out.pair
    assert out.reason is None and p.chosen == "answer 1" and p.rejected == "answer 2"
    assert (p.chosen_score, p.rejected_score, p.margin) == (4.5, 1.0, 3.5)
    assert (p.chosen_tokens, p.rejected_tokens) == (20, 30)
    assert (p.chosen_version, p.rejected_version, p.policy_version) == (4, 3, 3)
    assert p.ref_response == "greedy" and p.ref_tokens == 5 and p.judge == "test"


def test_failed_judgements_excluded_first():
    # the failed candidate can be neither best nor worst
    p = build_pair(_rollout([5, 5, 5]), _judged([None, 3.0, 1.0])).pair
    assert (p.chosen, p.rejected) == ("answer 1", "answer 2")
    out = build_pair(_rollout([5, 5, 5]), _judged([None, 3.0, None]))
    assert out.pair is None and out.reason == NO_PAIR_TOO_FEW_SCORED


def test_tie_and_min_margin():
    assert build_pair(_rollout([5, 6]), _judged([3.0, 3.0])).reason == NO_PAIR_TIE
    assert build_pair(_rollout([5, 6]), _judged([3.0, 3.4]), min_margin=0.5).reason == NO_PAIR_TIE
    assert build_pair(_rollout([5, 6]), _judged([3.0, 3.5]), min_margin=0.5).pair is not None


def test_deterministic_tie_break_prefers_shorter_chosen_longer_rejected():
    p = build_pair(_rollout([30, 10, 50, 40]), _judged([4.0, 4.0, 1.0, 1.0])).pair
    assert p.chosen == "answer 1"  # shorter of the two best
    assert p.rejected == "answer 2"  # longer of the two worst
    # equal lengths: the lower index wins, and the result is stable across calls
    a = build_pair(_rollout([7, 7, 7, 7]), _judged([4.0, 4.0, 1.0, 1.0])).pair
    b = build_pair(_rollout([7, 7, 7, 7]), _judged([4.0, 4.0, 1.0, 1.0])).pair
    assert (a.chosen, a.rejected) == ("answer 0", "answer 2") and a.pair_id == b.pair_id


def test_dataset_candidates_and_no_ref():
    p = build_pair(_rollout([5, 5], versions=[None, 2], ref=False), _judged([5.0, 0.0])).pair
    assert p.chosen_version is None and p.policy_version == 2 and p.ref_response is None


def test_mismatched_judgement_is_an_error():
    with pytest.raises(ValueError, match="2 scores for 3 candidates"):
        build_pair(_rollout([1, 2, 3]), _judged([1.0, 2.0]))
    with pytest.raises(ValueError, match="does not belong"):
        build_pair(_rollout([1, 2]), Judgement("other", (), "t"))


def test_pair_row_roundtrip():
    p = build_pair(_rollout([10, 20]), _judged([1.0, 2.0])).pair
    assert PreferencePair.from_row(p.to_row()) == p


def test_candidate_score_needs_exactly_one_of_score_or_failure():
    with pytest.raises(ValueError):
        CandidateScore(1.0, 1, 1, failure="x")
    with pytest.raises(ValueError):
        CandidateScore(None, 0, 1)


def test_best_vs_rest_pairs_the_best_with_every_lower_candidate_worst_first():
    out = build_pair(_rollout([10, 20, 30, 40]), _judged([0.5, 1.0, 0.0, 0.5]), rule="best_vs_rest")
    got = [(p.chosen, p.rejected, p.margin) for p in out.pairs]
    # the papers' pair leads; the two 0.5s follow, the longer one first (the worst's tie-break)
    assert got == [("answer 1", "answer 2", 1.0), ("answer 1", "answer 3", 0.5), ("answer 1", "answer 0", 0.5)]
    assert len({p.pair_id for p in out.pairs}) == 3
    # min_margin applies to each pair; a candidate tied with the best forms none
    out = build_pair(_rollout([10, 20, 30, 40]), _judged([1.0, 1.0, 0.0, 0.6]), min_margin=0.5,
                     rule="best_vs_rest")
    assert [(p.chosen, p.rejected) for p in out.pairs] == [("answer 0", "answer 2")]
    # best_worst (the default) is the first pair only; a tie is still no pair under either rule
    assert build_pair(_rollout([10, 20, 30]), _judged([0.5, 1.0, 0.0])).pairs == \
        build_pair(_rollout([10, 20, 30]), _judged([0.5, 1.0, 0.0]), rule="best_vs_rest").pairs[:1]
    assert build_pair(_rollout([5, 6]), _judged([3.0, 3.0]), rule="best_vs_rest").reason == NO_PAIR_TIE


def test_unknown_pair_rule_is_an_error():
    with pytest.raises(ValueError, match="unknown pair rule 'all'"):
        build_pair(_rollout([5, 6]), _judged([3.0, 1.0]), rule="all")


def test_tie_break_first_ignores_length():
    # the same scores as the "shorter" test above: now the lower index wins on both ends
    p = build_pair(_rollout([30, 10, 50, 40]), _judged([4.0, 4.0, 1.0, 1.0]), tie_break="first").pair
    assert (p.chosen, p.rejected) == ("answer 0", "answer 2")
    out = build_pair(_rollout([10, 20, 30, 40]), _judged([0.5, 1.0, 0.0, 0.5]), rule="best_vs_rest",
                     tie_break="first")
    assert [p.rejected for p in out.pairs] == ["answer 2", "answer 0", "answer 3"]
    with pytest.raises(ValueError, match="unknown tie break"):
        build_pair(_rollout([1, 2]), _judged([1.0, 2.0]), tie_break="longer")
