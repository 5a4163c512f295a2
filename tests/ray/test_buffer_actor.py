"""The buffer as a real Ray actor: restart after a kill reloads every waiting pair from disk."""
import time

import ray

from selm_ray.actors import launch, remote
from selm_ray.core.config import load_config
from selm_ray.core.records import PreferencePair


def _pair(i):
    return PreferencePair(f"p{i}", f"q{i}", ({"role": "user", "content": "q"},), "<q>", "good", "bad",
                          4.0, 1.0, 3, 4, 0, 0)


def test_buffer_actor_survives_kill_and_dedupes_resends(tmp_path):
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        buf = launch.launch_buffer(load_config(), "t", str(tmp_path))
        assert ray.get(buf.add.remote([_pair(i) for i in range(5)])) == 5
        assert [p.pair_id for p in ray.get(buf.sample.remote(2, 0))] == ["p0", "p1"]
        pid = ray.get(buf.pid.remote())
        ray.kill(buf, no_restart=False)
        deadline = time.time() + 60
        while remote.call_with_retry(buf.pid) == pid:  # until the restarted process answers
            assert time.time() < deadline, "the buffer actor did not restart"
            time.sleep(0.2)
        # a re-sent add after the crash (the caller could not know it had landed) adds nothing
        assert remote.call_with_retry(buf.add, [_pair(3), _pair(4), _pair(5)]) == 1
        assert [p.pair_id for p in ray.get(buf.sample.remote(10, 0))] == ["p2", "p3", "p4", "p5"]
        assert ray.get(buf.stats.remote()).reloaded == 3
    finally:
        ray.shutdown()

