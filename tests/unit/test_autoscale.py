"""The autoscale policy as a pure object: no Ray, observations in, decisions out."""
from selm_ray.core.autoscale import AutoscalePolicy, Decision, Observation


def obs(t=100.0, gens=1, judges=1, wait=0.0, fill=0.2, stale=0, gen_busy=0.5, judge_busy=0.5):
    return Observation(t, gens, judges, wait, fill, stale, gen_busy, judge_busy)


def test_learner_waiting_grows_the_busier_producer_pool():
    p = AutoscalePolicy(max_generators=3, max_judges=3)
    assert p.decide(obs(wait=0.6, gen_busy=0.9, judge_busy=0.4)) == Decision(
        "generator", 2, "learner waited 60% of the window on an empty buffer")
    p = AutoscalePolicy(max_generators=3, max_judges=3)
    assert p.decide(obs(wait=0.6, gen_busy=0.4, judge_busy=0.9)).pool == "judge"


def test_grow_falls_back_to_the_other_pool_at_its_max_and_stops_at_both_maxes():
    p = AutoscalePolicy(max_generators=2, max_judges=2, interval_seconds=1)
    assert p.decide(obs(t=0, gens=2, wait=0.9, gen_busy=1.0, judge_busy=0.1)) == Decision(
        "judge", 2, "learner waited 90% of the window on an empty buffer")
    assert p.decide(obs(t=10, gens=2, judges=2, wait=0.9)) is None


def test_a_busy_learner_with_a_normal_buffer_changes_nothing():
    assert AutoscalePolicy().decide(obs(wait=0.1, fill=0.5)) is None


def test_full_buffer_or_stale_drops_shrink_the_less_busy_pool_but_never_below_min():
    p = AutoscalePolicy(interval_seconds=1)
    assert p.decide(obs(t=0, gens=3, judges=2, fill=0.95, gen_busy=0.9, judge_busy=0.2)) == Decision(
        "judge", 1, "buffer 95% full")
    d = p.decide(obs(t=5, gens=3, judges=1, stale=4, gen_busy=0.9, judge_busy=0.2))
    assert d == Decision("generator", 2, "4 pair(s) went stale before the learner reached them")
    assert p.decide(obs(t=10, gens=1, judges=1, fill=1.0)) is None


def test_at_most_one_decision_per_interval():
    p = AutoscalePolicy(interval_seconds=30, max_generators=8)
    assert p.decide(obs(t=0, wait=0.9)) is not None
    assert p.decide(obs(t=29, gens=2, wait=0.9)) is None
    assert p.decide(obs(t=30, gens=2, wait=0.9)) == Decision(
        "generator", 3, "learner waited 90% of the window on an empty buffer")


def test_colocated_judges_are_never_resized():
    p = AutoscalePolicy(max_generators=1, judges_scalable=False)
    assert p.decide(obs(wait=0.9, gen_busy=0.1, judge_busy=0.9)) is None
    p = AutoscalePolicy(judges_scalable=False)
    assert p.decide(obs(gens=2, judges=2, fill=1.0, gen_busy=0.9, judge_busy=0.1)).pool == "generator"
