"""gloo groups of one process share one device, hence one event-loop thread (engines/gloo_device.py).

Each case runs in a fresh interpreter: torch.distributed's default group is per process."""
import json
import subprocess
import sys

import pytest

# 13 gloo groups, as vLLM makes for a one-process CPU engine; then a reduction on each of them
GROUPS = """
import json, sys, torch, torch.distributed as dist
from selm_ray.engines import gloo_device
applied = gloo_device.apply() if sys.argv[1] == "share" else False
rank, world = int(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo", init_method="file://" + sys.argv[4], rank=rank, world_size=world)
groups = [dist.new_group(list(range(world)), backend="gloo") for _ in range(12)]
sums = []
for k, g in enumerate(groups):
    t = torch.full((3,), float(k + rank))
    dist.all_reduce(t, group=g)
    sums.append(t.tolist())
dist.barrier()
print(json.dumps({"applied": applied, "again": gloo_device.apply() if applied else None,
                  "loops": gloo_device.loop_threads(), "sums": sums}))
"""


def _run(tmp_path, mode: str, world: int) -> list[dict]:
    store = tmp_path / f"store-{mode}-{world}"
    procs = [subprocess.Popen([sys.executable, "-c", GROUPS, mode, str(r), str(world), str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
def test_one_process_groups_share_one_loop_thread_and_still_reduce(tmp_path):
    plain, = _run(tmp_path, "plain", 1)
    shared, = _run(tmp_path, "share", 1)
    assert plain["loops"] == 13  # torch's own way: a device, and its 100-wakes-a-second thread, per group
    assert shared["applied"] is True and shared["again"] is True
    assert shared["loops"] == 1
    assert shared["sums"] == plain["sums"] == [[float(k)] * 3 for k in range(12)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
def test_two_ranks_reduce_across_their_shared_devices(tmp_path):
    """Each rank's groups open their own connections through its one device: the sums are
    those of both ranks (k + 0) + (k + 1) on every group."""
    outs = _run(tmp_path, "share", 2)
    for out in outs:
        assert out["loops"] == 1
        assert out["sums"] == [[float(2 * k + 1)] * 3 for k in range(12)]


OWN_OPTIONS = """
import datetime, json, torch, torch.distributed as dist
from torch.distributed import distributed_c10d as c10d
from selm_ray.engines import gloo_device
gloo_device.apply()
shared = [c10d.ProcessGroupGloo(dist.HashStore(), 0, 1, timeout=datetime.timedelta(seconds=60)) for _ in range(3)]
after_shared = gloo_device.loop_threads()
opts = c10d.ProcessGroupGloo._Options()
opts._devices = [c10d.ProcessGroupGloo.create_default_device()]
own = c10d.ProcessGroupGloo(dist.HashStore(), 0, 1, options=opts)
t = torch.ones(2)
own.allreduce([t]).wait()
shared[0].allreduce([t]).wait()
print(json.dumps({"after_shared": after_shared, "after_own": gloo_device.loop_threads(), "sum": t.tolist()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
def test_a_group_given_its_own_options_keeps_its_own_device():
    p = subprocess.run([sys.executable, "-c", OWN_OPTIONS], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert (out["after_shared"], out["after_own"]) == (1, 2)
    assert out["sum"] == [1.0, 1.0]
