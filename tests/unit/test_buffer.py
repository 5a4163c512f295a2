import json

import pytest

from selm_ray.core.buffer import CONSUMED_FILE, PAIRS_FILE, ReplayBuffer
from selm_ray.core.records import PreferencePair


def _pair(i, version=0, score=(4.0, 1.0)):
    return PreferencePair(
        pair_id=f"p{i}", prompt_id=f"q{i}", messages=({"role": "user", "content": f"q{i}"},),
        prompt_text=f"<q{i}>", chosen=f"good {i}", rejected=f"bad {i}", chosen_score=score[0],
        rejected_score=score[1], chosen_tokens=10, rejected_tokens=20, chosen_version=version,
        rejected_version=version, ref_response="ref", ref_tokens=5,
    )


def _ids(pairs):
    return [p.pair_id for p in pairs]


def test_fifo_capacity_and_eviction(tmp_path):
    b = ReplayBuffer(tmp_path, capacity=3)
    assert b.add([_pair(i) for i in range(5)]) == 5
    assert len(b) == 3 and b.stats().evicted == 2
    assert _ids(b.sample(10, learner_version=0)) == ["p2", "p3", "p4"]


def test_oldest_version_eviction():
    b = ReplayBuffer(None, capacity=2, eviction="oldest_version", max_policy_lag=10)
    b.add([_pair(0, version=3), _pair(1, version=1), _pair(2, version=2)])
    assert _ids(b.sample(10, learner_version=3)) == ["p0", "p2"]


def test_staleness_filter_counts_and_never_serves_stale():
    b = ReplayBuffer(None, max_policy_lag=1)
    b.add([_pair(0, version=0), _pair(1, version=2), _pair(2, version=3), _pair(3, version=1)])
    got = b.sample(10, learner_version=3)
    assert _ids(got) == ["p1", "p2"]  # lags 1 and 0; p0 (lag 3) and p3 (lag 2) dropped
    s = b.stats()
    assert s.dropped_stale == 2 and s.lag_histogram == {1: 1, 0: 1} and s.size == 0
    # a per-call bound overrides the configured one
    b.add([_pair(4, version=0)])
    assert _ids(b.sample(1, learner_version=3, max_policy_lag=5)) == ["p4"]


def test_exactly_once_and_duplicates():
    b = ReplayBuffer(None)
    b.add([_pair(0), _pair(1)])
    assert b.add([_pair(1), _pair(2)]) == 1  # p1 again (e.g. a retried judge call) is ignored
    assert b.stats().duplicates == 1
    assert _ids(b.sample(2, 0)) == ["p0", "p1"]
    assert _ids(b.sample(2, 0)) == ["p2"]
    assert b.sample(2, 0) == []
    b.add([_pair(0)])  # even after being served, the same pair id never comes back
    assert b.sample(2, 0) == []


def test_min_size_waits_for_a_full_batch():
    b = ReplayBuffer(None)
    b.add([_pair(0), _pair(1)])
    assert b.sample(4, 0, min_size=4) == [] and len(b) == 2
    assert _ids(b.sample(4, 0, min_size=1)) == ["p0", "p1"]


def test_replay_serves_again_from_the_back():
    b = ReplayBuffer(None, replay=True)
    b.add([_pair(0), _pair(1)])
    assert _ids(b.sample(1, 0)) == ["p0"]
    assert _ids(b.sample(2, 0)) == ["p1", "p0"]


def test_durable_before_add_returns_and_reload(tmp_path):
    b = ReplayBuffer(tmp_path, capacity=10)
    b.add([_pair(i) for i in range(4)])
    # written and synced already: another reader sees all four without any close/flush call
    rows = [json.loads(line) for line in (tmp_path / PAIRS_FILE).read_text().splitlines()]
    assert [r["pair_id"] for r in rows] == ["p0", "p1", "p2", "p3"]
    assert _ids(b.sample(2, 0)) == ["p0", "p1"]
    # simulate a crash: no close(); a torn half line at the end of the log
    with (tmp_path / PAIRS_FILE).open("a") as fh:
        fh.write('{"pair_id": "p9", "tru')
    b2 = ReplayBuffer(tmp_path, capacity=10)
    assert len(b2) == 2 and b2.stats().reloaded == 2
    assert b2.add([_pair(0), _pair(3)]) == 0  # already known from the logs
    assert _ids(b2.sample(10, 0)) == ["p2", "p3"]
    reasons = [json.loads(line)["reason"] for line in (tmp_path / CONSUMED_FILE).read_text().splitlines()]
    assert reasons == ["served"] * 4


def test_pair_roundtrip_keeps_every_field(tmp_path):
    b = ReplayBuffer(tmp_path)
    p = _pair(7, version=4)
    b.add([p])
    assert ReplayBuffer(tmp_path).sample(1, 4) == [p]


def test_stats_scores_and_lengths():
    b = ReplayBuffer(None)
    b.add([_pair(0, score=(4.0, 2.0)), _pair(1, score=(5.0, 1.0))])
    s = b.stats()
    assert s.size == 2 and s.added == 2
    assert s.mean_chosen_score == pytest.approx(4.5) and s.mean_margin == pytest.approx(3.0)
    assert s.mean_chosen_tokens == 10 and s.mean_rejected_tokens == 20


def test_bad_settings():
    with pytest.raises(ValueError):
        ReplayBuffer(None, capacity=0)
    with pytest.raises(ValueError):
        ReplayBuffer(None, eviction="random")


def test_buffer_keeps_the_pair_acknowledged_after_a_torn_tail(tmp_path):
    """A crash leaves half a row; the next acknowledged pair must survive the following reload."""
    b = ReplayBuffer(tmp_path, capacity=10)
    b.add([_pair(0)])
    with (tmp_path / PAIRS_FILE).open("a") as fh:
        fh.write('{"pair_id": "p9", "tru')  # the crash
    b2 = ReplayBuffer(tmp_path, capacity=10)
    assert b2.add([_pair(1)]) == 1  # acknowledged: on disk
    rows = [json.loads(line) for line in (tmp_path / PAIRS_FILE).read_text().splitlines()]
    assert [r["pair_id"] for r in rows] == ["p0", "p1"]
    b3 = ReplayBuffer(tmp_path, capacity=10)
    assert sorted(p.pair_id for p in b3.sample(10, 0)) == ["p0", "p1"]


def test_rewind_serves_again_what_was_served_after_a_cursor_in_order_and_on_reload(tmp_path):
    """A learner restarted from a checkpoint: pairs served after the checkpoint's cursor wait
    again (their training was lost), first in line, once each; a reload agrees."""
    b = ReplayBuffer(tmp_path)
    b.add([_pair(i) for i in range(6)])
    assert _ids(b.sample(2, learner_version=0)) == ["p0", "p1"]
    cursor = b.cursor()  # a checkpoint here
    assert _ids(b.sample(2, learner_version=0)) == ["p2", "p3"]
    assert b.rewind(cursor) == 2
    s = b.stats()
    assert (s.served, s.rewound, s.size) == (2, 2, 4)
    assert _ids(b.sample(3, learner_version=0)) == ["p2", "p3", "p4"]
    b.close()
    again = ReplayBuffer(tmp_path)
    assert _ids(again.sample(10, learner_version=0)) == ["p5"]
    served = [json.loads(line)["pair_id"] for line in (tmp_path / CONSUMED_FILE).read_text().splitlines()]
    assert served == ["p0", "p1", "p2", "p3", "p4", "p5"]  # each once in the log, the undone rows gone
    assert ReplayBuffer(None).add([_pair(0)]) == 1
    with pytest.raises(RuntimeError, match="needs the buffer's directory"):
        ReplayBuffer(None).rewind(0)


def test_a_resent_sample_gets_the_same_batch_even_after_a_restart(tmp_path):
    """The buffer marks a batch served, then dies before its reply: the learner re-sends the same
    request to the restarted buffer and must get that batch, not a second one (the first would be
    marked served and never trained on)."""
    b = ReplayBuffer(tmp_path)
    b.add([_pair(i) for i in range(6)])
    first = b.sample(2, learner_version=0, request_id="g-1")
    assert _ids(first) == ["p0", "p1"] and _ids(b.sample(2, 0, request_id="g-1")) == ["p0", "p1"]
    assert b.stats().served == 2  # the re-sent call consumed nothing
    assert _ids(b.sample(2, 0, request_id="g-2")) == ["p2", "p3"]
    b.close()
    restarted = ReplayBuffer(tmp_path)  # what a restarted actor does: reload from the logs
    assert _ids(restarted.sample(2, 0, request_id="g-2")) == ["p2", "p3"]
    assert _ids(restarted.sample(2, 0, request_id="g-3")) == ["p4", "p5"]
    served = [json.loads(line)["pair_id"] for line in (tmp_path / CONSUMED_FILE).read_text().splitlines()]
    assert served == ["p0", "p1", "p2", "p3", "p4", "p5"]  # each served once
    assert _ids(restarted.sample(2, 0)) == []  # no request id: plain sampling (nothing left)
