"""Bounded waits on real actors: a control call past cluster.call_timeout_s is an error naming it."""
import time

import pytest
import ray

from selm_ray.actors import remote


@pytest.fixture
def short_bounds():
    from types import SimpleNamespace

    before = SimpleNamespace(**{f"{k}_timeout_s": remote.bound(k) for k in ("call", "work", "start")})
    remote.configure(SimpleNamespace(call_timeout_s=0.5, work_timeout_s=1.0, start_timeout_s=1.0))
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
        with pytest.raises(remote.RemoteTimeout, match=r"nap: no answer within 0.5 s \(cluster.call_timeout_s\)"):
            remote.call_with_retry(actor.nap, 3.0)
        # work calls have their own, longer bound (the other actor: the first still naps)
        assert remote.call_with_retry(fresh.nap, 0.7, kind="work") == 0.7
        with pytest.raises(remote.RemoteTimeout, match=r"slow work: no answer within 1 s \(cluster.work_timeout_s\)"):
            remote.get(fresh.nap.remote(3.0), "slow work", "work")
    finally:
        ray.shutdown()
