"""The core plan (core/cores.py): threads per stage and whether stages overlap, from the cores."""
import pytest

from selm_ray.core.config import ConfigError, load_config
from selm_ray.core.cores import apply_plan, plan_cores
from selm_ray.run.controller import prompts_per_call

DEFAULT = "jobs/configs/smollm2-cpu.yaml"


def _cfg(*sets, path=DEFAULT):
    return load_config(path, list(sets))


def test_two_cores_take_turns_with_all_cores_each():
    plan = plan_cores(_cfg(), 2)  # the default run: one generator (judging too), one learner worker
    assert (plan.overlap, plan.engine_threads, plan.learner_threads, plan.shared) == (False, 2, 2, False)
    assert "take turns" in plan.reason
    cfg = apply_plan(_cfg(), plan)
    assert cfg.schedule.overlap == "off" and cfg.schedule.takes_turns
    assert (cfg.cluster.threads_per_actor, cfg.cluster.learner_threads) == (2, 2)


def test_enough_cores_overlap_with_one_core_per_engine_and_the_rest_for_the_learner():
    plan = plan_cores(_cfg("judge.colocate=false", "cluster.num_generators=2"), 16)
    assert (plan.overlap, plan.engine_threads, plan.learner_threads, plan.shared) == (True, 1, 13, False)
    cfg = apply_plan(_cfg(), plan_cores(_cfg(), 16))
    assert cfg.schedule.overlap == "on" and not cfg.schedule.takes_turns


def test_two_learner_workers_split_the_cores_the_engines_leave():
    plan = plan_cores(_cfg("learner.num_workers=2"), 9)
    assert (plan.overlap, plan.engine_threads, plan.learner_threads) == (True, 1, 4)
    assert not plan_cores(_cfg("learner.num_workers=2"), 4).overlap  # 3 cores left: not 2 per worker


def test_async_always_overlaps_and_says_when_threads_share_cores():
    plan = plan_cores(_cfg("schedule.mode=async", "judge.colocate=false"), 2)
    assert plan.overlap and plan.learner_threads == 1 and plan.shared  # 2 engines + 1 learner on 2 cores
    assert "share cores" in plan.reason
    assert not plan_cores(_cfg("schedule.mode=async"), 2).shared  # 1 engine + 1 learner thread


def test_configured_threads_and_overlap_are_kept():
    plan = plan_cores(_cfg("cluster.threads_per_actor=1", "cluster.learner_threads=2", "schedule.overlap=on"), 2)
    assert (plan.overlap, plan.engine_threads, plan.learner_threads, plan.shared) == (True, 1, 2, True)
    assert "schedule.overlap: on" in plan.reason and "cluster.threads_per_actor" in plan.reason
    assert not plan_cores(_cfg("schedule.mode=sequential"), 64).overlap


def test_gpus_autoscale_and_clusters_overlap():
    assert plan_cores(_cfg(path="jobs/configs/zephyr-7b-selm.yaml"), 2).overlap
    assert plan_cores(_cfg("autoscale.enabled=true"), 2).overlap
    plan = plan_cores(_cfg("cluster.generator_cpus=3", "cluster.learner_cpus=4"), None)
    assert (plan.overlap, plan.engine_threads, plan.learner_threads, plan.shared) == (True, 3, 4, False)


def test_overlap_off_survives_yaml_booleans_and_bad_values_name_their_key():
    assert _cfg("schedule.overlap=off").schedule.overlap == "off"
    with pytest.raises(ConfigError, match="schedule.overlap"):
        _cfg("schedule.overlap=sometimes")
    with pytest.raises(ConfigError, match="generation.prompts_per_call"):
        _cfg("generation.prompts_per_call=-1")
    with pytest.raises(ConfigError, match="cluster.learner_threads"):
        _cfg("cluster.learner_threads=-2")


def test_prompts_per_call():
    turns = apply_plan(_cfg(), plan_cores(_cfg(), 2))
    assert prompts_per_call(turns, 32, 1) == 32 and prompts_per_call(turns, 33, 2) == 17
    assert prompts_per_call(turns, 500, 1) == 64  # capped: one call's tokens/s flattens out
    overlapped = apply_plan(_cfg(), plan_cores(_cfg(), 16))
    assert prompts_per_call(overlapped, 32, 1) == overlapped.learner.batch_size
    assert prompts_per_call(_cfg("generation.prompts_per_call=5"), 32, 1) == 5


def test_a_job_driver_that_joins_through_ray_address_plans_for_a_cluster(monkeypatch):
    from selm_ray.core.cores import run_plan

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert run_plan(_cfg()).cores is not None  # a local Ray: this machine's cores
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # what `ray job submit` gives its driver
    plan = run_plan(_cfg())
    assert plan.cores is None and plan.overlap and "a cluster" in plan.reason


def test_on_a_cluster_overlap_off_applies_to_iterative_runs_only():
    assert not plan_cores(_cfg("schedule.overlap=off"), None).overlap
    assert plan_cores(_cfg("schedule.overlap=off", "schedule.mode=async"), None).overlap


def _probe(code: str, settings: dict[str, str], on: bool) -> int:
    """The last line a fresh Python prints running ``code``, with ``settings`` in its env or without."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in settings} | (settings if on else {})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_cpu_actors_keep_freed_memory_and_glibc_honours_it():
    from selm_ray.actors.launch import engine_env
    from selm_ray.core.cores import KEEP_FREED_MEMORY
    from selm_ray.learner.trainer import learner_env

    cfg = _cfg()
    assert KEEP_FREED_MEMORY.items() <= engine_env(cfg, 0).items()
    assert KEEP_FREED_MEMORY.items() <= learner_env(cfg).items()
    assert "MALLOC_MMAP_MAX_" not in engine_env(cfg, 1.0)  # GPU engines: host memory is not their limit
    off = _cfg("cluster.keep_freed_memory=false")
    assert "MALLOC_MMAP_MAX_" not in engine_env(off, 0) and "MALLOC_MMAP_MAX_" not in learner_env(off)
    # the mechanism itself: after freeing 256 MB, a process keeps it resident only with these settings
    probe = ("import numpy as np\n"
             "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20\n"
             "a = np.ones(64 << 20, dtype=np.float32); before = rss(); del a; print(before - rss())")
    freed = {name: _probe(probe, KEEP_FREED_MEMORY, on) for name, on in (("default", False), ("kept", True))}
    assert freed["default"] >= 200 and freed["kept"] < 16, freed  # MB handed back to the kernel


_HUGE = """
import torch
t = torch.empty(64 << 20, dtype=torch.uint8)
t.fill_(1)  # faulted in: with huge pages, in 2 MB pages
print(int(open("/proc/self/smaps_rollup").read().split("AnonHugePages:")[1].split()[0]))
"""


def _thp_mode() -> str | None:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")]


def test_cpu_actors_put_large_tensors_on_huge_pages_and_torch_honours_it():
    """cluster.huge_pages: the CPU actors' environment asks torch for THP-backed large tensors, and a
    process with that environment gets them (the kernel's THP mode permitting)."""
    from selm_ray.actors.launch import engine_env
    from selm_ray.core.cores import HUGE_PAGES
    from selm_ray.learner.trainer import learner_env

    cfg = _cfg()
    assert HUGE_PAGES.items() <= engine_env(cfg, 0).items() and HUGE_PAGES.items() <= learner_env(cfg).items()
    off = _cfg("cluster.huge_pages=false")
    assert not HUGE_PAGES.keys() & (engine_env(off, 0).keys() | learner_env(off).keys())
    assert not HUGE_PAGES.keys() & engine_env(cfg, 1.0).keys()  # GPU engines: not a host-memory matter
    mode = _thp_mode()
    if mode not in ("madvise", "always"):
        pytest.skip(f"this kernel's transparent huge pages are {mode or 'not available'}")
    kib = {name: _probe(_HUGE, HUGE_PAGES, on) for name, on in (("default", False), ("huge", True))}
    assert kib["huge"] >= 32 << 10, kib  # at least half of the 64 MiB tensor in huge pages
    if mode == "madvise":  # only what torch madvises gets them
        assert kib["default"] < 32 << 10, kib


_FAULTS = """
import sys, torch
from selm_ray.core.cores import reserve_heap
def faults():
    f = open("/proc/self/stat").read()
    return int(f[f.rfind(")") + 2:].split()[7])
n = 256 << 20
if sys.argv[1] == "reserve":
    assert reserve_heap(n) == n
before = faults()
torch.empty(200 << 20, dtype=torch.uint8).fill_(1)  # what a first learner step does to fresh memory
print(faults() - before)
"""


@pytest.mark.parametrize("reserve", [False, True])
def test_reserved_heap_memory_is_reused_without_page_faults(reserve):
    """reserve_heap under the learner's glibc settings: the next allocations fault (almost) nothing
    in; without the reserve the same allocation faults in every page (51,200 of 4 KiB)."""
    import os
    import subprocess
    import sys

    from selm_ray.core.cores import KEEP_FREED_MEMORY

    out = subprocess.run([sys.executable, "-c", _FAULTS, "reserve" if reserve else "plain"], check=True,
                         capture_output=True, text=True, env={**os.environ, **KEEP_FREED_MEMORY})
    faults = int(out.stdout.strip().splitlines()[-1])
    pages = (200 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert (faults < pages // 20) if reserve else (faults > pages // 2), faults


def test_machine_names_the_cpu_and_the_instruction_sets_that_change_costs():
    """Benchmarks print where they ran; the bf16 switch reads the same flags."""
    from selm_ray.core.cores import cpu_flags, machine, machine_text
    from selm_ray.learner.engine import cpu_has_native_bf16

    zen4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 vaes\n"
    m = machine(zen4)
    assert (m["cpu"], m["isa"]) == ("AMD EPYC 9R14", ["avx2", "avx512f", "avx512_bf16"])
    assert m["cores"] >= 1 and machine_text(m).startswith(f"AMD EPYC 9R14, {m['cores']} cores")
    assert cpu_has_native_bf16(zen4) and not cpu_has_native_bf16("flags\t: fpu avx2\n")
    assert cpu_flags("") == set() and machine("")["cpu"] == "unknown" and machine_text(machine("")).endswith("ISA unknown")
    assert machine_text(machine("flags\t: fpu sse\n")).endswith("no AVX2")
