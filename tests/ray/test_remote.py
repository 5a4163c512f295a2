"""Bounded waits on real actors: a control call past cluster.call_timeout_s is an error naming it."""
import time

import pytest
import ray

from selm_ray.actors import remote


@pytest.fixture
def short_bounds():
    from types import SimpleNamespace

    before = SimpleNamespace(**{f"{k}_timeout_s": remote.bound(k) for k in ("call", "work", "start")})
    # wide enough that an answer in time is one on a loaded 2-core machine (a round trip there can
    # take a few hundred ms), and the naps past them long enough that none is a near miss
    remote.configure(SimpleNamespace(call_timeout_s=2.0, work_timeout_s=4.0, start_timeout_s=4.0))
    yield
    remote.configure(before)


def test_a_call_past_its_bound_names_the_call_and_the_setting(ray_address, short_bounds):
    class Slow:  # defined here: pickled by value (the shared head's workers cannot import tests/)
        def nap(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

    ray.init(address=ray_address)
    try:
        actor, fresh = (ray.remote(num_cpus=0)(Slow).remote() for _ in range(2))
        ray.get([actor.nap.remote(0.0), fresh.nap.remote(0.0)], timeout=120)  # both started (not timed)
        assert remote.call_with_retry(actor.nap, 0.0) == 0.0  # in time: the answer
        with pytest.raises(remote.RemoteTimeout, match=r"nap: no answer within 2 s \(cluster.call_timeout_s\)"):
            remote.call_with_retry(actor.nap, 8.0)
        # work calls have their own, longer bound (the other actor: the first still naps)
        assert remote.call_with_retry(fresh.nap, 2.5, kind="work") == 2.5  # past the call bound, within work's
        with pytest.raises(remote.RemoteTimeout, match=r"slow work: no answer within 4 s \(cluster.work_timeout_s\)"):
            remote.get(fresh.nap.remote(10.0), "slow work", "work")
    finally:
        ray.shutdown()
