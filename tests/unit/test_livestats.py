"""Live snapshot pieces: distributions, in/out rates, pool bookkeeping and the terminal view."""
import time
from types import SimpleNamespace

from selm_ray.core.livestats import LiveStats, distribution, render
from selm_ray.run.pool import Member, Pool


def test_distribution_nearest_rank():
    d = distribution([float(x) for x in range(1, 11)])
    assert d == {"n": 10, "mean": 5.5, "p10": 2.0, "p50": 6.0, "p90": 10.0}
    assert distribution([])["mean"] is None


def test_rates_over_the_window():
    live = LiveStats()
    assert live.rates(100.0, 0, 0) == (0.0, 0.0)
    assert live.rates(110.0, 20, 5) == (2.0, 0.5)
    # older than the window: the rate only counts the last 30 s
    assert live.rates(150.0, 20, 5) == (0.0, 0.0)


def test_pairs_feed_the_recent_distributions():
    live = LiveStats(window=2)
    pair = lambda c, r, ct, rt: SimpleNamespace(chosen_score=c, rejected_score=r, margin=c - r,  # noqa: E731
                                                chosen_tokens=ct, rejected_tokens=rt)
    live.add_pairs([pair(5, 1, 10, 20), pair(4, 2, 30, 40), pair(3, 3, 50, 60)])
    d = live.distributions()
    assert d["margin"]["n"] == 2 and d["margin"]["mean"] == 1.0  # only the newest 2 kept
    assert d["chosen_tokens"]["p50"] == 50


def test_member_is_busy_exactly_while_it_has_calls_in_flight():
    m = Member(actor=None, name="g0", version=0)
    m.start_call()
    m.start_call()
    time.sleep(0.05)
    m.end_call()
    assert m.inflight == 1 and m.busy_seconds == 0.0  # still working on the second call
    m.end_call()
    assert m.busy_seconds >= 0.05 and m.calls == 2
    idle = m.busy_seconds
    time.sleep(0.02)
    assert m.busy_total(time.time()) == idle


def test_pool_picks_least_loaded_active_member_and_skips_draining():
    a, b, c = (Member(None, n, 0) for n in "abc")
    pool = Pool("generator", members=[a, b, c])
    a.inflight, b.inflight, c.inflight = 1, 2, 0
    c.draining = True
    assert pool.pick() is a and pool.size() == 2 and pool.min_inflight() == 1


def _snapshot():
    pool = Pool("generator", members=[Member(None, "run-generator-0", 2)], target=1)
    return {"run": "r1", "state": "running", "mode": "iterative", "iteration": 2, "elapsed_seconds": 12.0,
            "buffer": {"size": 3, "capacity": 100, "pairs_in": 9, "served": 6, "dropped_stale": 1,
                       "duplicates": 0, "pairs_in_per_second": 0.5, "pairs_out_per_second": 0.25,
                       "lag_histogram": {"0": 4, "1": 2}, "mean_lag": 0.333},
            "distributions": LiveStats().distributions(),
            "quality": {"tie_rate": 0.1, "judge_failure_rate": 0.0, "no_pair": {"tie": 1}},
            "learner": {"step": 3, "loss": 0.69, "version": 2, "synced_version": 2, "wait_fraction": 0.4},
            "pools": {"generator": pool.view(time.time())},
            "events": [{"pool": "generator", "from": 1, "to": 2, "reason": "selm-ray scale"}]}


def test_render_shows_every_section():
    text = render(_snapshot())
    for needle in ("buffer  3/100", "in 0.500/s", "stale-dropped 1", "lag  0:", "lag  1:", "chosen_score",
                   "tie rate 0.1", "learner step 3", "loss 0.6900", "synced to v2", "generators: 1 active",
                   "run-generator-0", "generator 1 -> 2: selm-ray scale"):
        assert needle in text, needle


def test_render_shows_the_newest_instruction_accuracy():
    snap = {**_snapshot(), "instructions": {"iteration": 0, "policy_version": 1, "prompts": 120,
                                            "prompt_strict": 0.4, "prompt_strict_ci95": [0.31, 0.49],
                                            "prompt_loose": 0.45, "instruction_strict": 0.55,
                                            "instruction_loose": 0.6, "mean_tokens": 98.5}}
    text = render(snap)
    assert "verifiable instructions (after iteration 1, v1, 120 prompts): prompt strict 0.400 [0.310, 0.490]" in text
    assert "verifiable instructions" not in render(_snapshot())
