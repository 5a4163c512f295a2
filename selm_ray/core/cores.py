"""The run's core budget: how many threads each engine and learner worker gets, and whether the
stages overlap or take turns. Pure: the driver resolves it once, before any actor starts.

Measured on a 2-core machine (SmolLM2-135M, fp32): a generator with 1 thread made ~64-121
tokens/s alone and a 1-thread learner step took twice a 2-thread one; with generator, reward
model and a 2-thread learner on the same 2 cores, in-loop generation fell to ~44 tokens/s and
the loop took 142 s for 32 pairs; the same work taking turns, every stage with both cores, took
126 s (97 s with one generation call per iteration). Where each stage cannot keep cores of its own,
overlapping only makes the stages time-slice the same cores, so the plan has them take turns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CorePlan:
    cores: int | None  # cores of this machine for a local run; None on a cluster
    overlap: bool  # stages run at the same time (else: generate, judge, then train, in turn)
    engine_threads: int  # per generator / judge actor
    learner_threads: int  # per learner worker
    shared: bool  # threads of running stages add up to more than the cores (OpenMP waits passively)
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def local_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# instruction sets that change what a CPU run costs: fp32 GEMMs use the widest vectors; native bf16
# (avx512_bf16 / AMX) made a bf16 GEMM 2.5-3x an fp32 one on a 2-core AVX-512 EPYC; emulated bf16 is slower
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo(cpuinfo: str | None) -> str:
    if cpuinfo is not None:
        return cpuinfo
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's flags in /proc/cpuinfo (or the text given); empty where there is none."""
    line = next((ln for ln in _cpuinfo(cpuinfo).splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def machine(cpuinfo: str | None = None) -> dict[str, Any]:
    """What a benchmark figure was measured on: CPU model, cores, memory, the ISA flags above."""
    text = _cpuinfo(cpuinfo)
    model = next((ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("model name")), "unknown")
    flags = cpu_flags(text)
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": model, "cores": local_cores(), "memory_gib": round(total / 2**30, 1) if total else None,
            "isa": [f for f in ISA_FLAGS if f in flags] if flags else None}  # None: flags unreadable


def machine_text(m: dict[str, Any]) -> str:
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    isa = "ISA unknown" if m["isa"] is None else " ".join(m["isa"]) or "no AVX2"
    return f"{m['cpu']}, {m['cores']} cores{mem}, {isa}"


def cpu_stages(cfg: Any) -> tuple[int, int]:
    """(engine actors on CPU, learner workers on CPU): what competes for a CPU machine's cores."""
    c = cfg.cluster
    gens = c.num_generators if c.generator_gpus == 0 else 0
    judges = c.num_judges if (not cfg.judge.colocate and c.judge_gpus == 0) else 0
    workers = cfg.learner.num_workers if c.learner_gpus == 0 else 0
    return gens + judges, workers


def plan_cores(cfg: Any, cores: int | None) -> CorePlan:
    """The plan for ``cfg`` on ``cores`` local cores (None: a cluster; each actor uses the CPUs
    Ray gives it). Thread counts the config sets (non-zero) are kept as they are."""
    c, mode, wanted = cfg.cluster, cfg.schedule.mode, cfg.schedule.overlap
    engines, workers = cpu_stages(cfg)
    gpu = c.generator_gpus > 0 or c.learner_gpus > 0
    if cores is None:
        # schedule.overlap applies to iterative runs only: async always overlaps, sequential never
        overlap = mode == "async" or (mode == "iterative" and wanted != "off")
        why = "a cluster: each actor uses the CPUs Ray gives it"
        eng, lrn = max(1, int(c.generator_cpus)), max(1, int(c.learner_cpus))
    else:
        overlap, why = _overlap(mode, wanted, gpu, cfg.autoscale.enabled, cores, engines, workers)
        if overlap:
            eng = 1
            lrn = max(1, (cores - engines) // max(1, workers)) if workers else 1
        else:
            eng, lrn = cores, max(1, cores // max(1, workers))
    eng = c.threads_per_actor or eng
    lrn = c.learner_threads or lrn
    busy = engines * eng + workers * lrn if overlap else max(eng, workers * lrn)
    shared = cores is not None and busy > cores
    why += f"; {eng} thread(s) per engine, {lrn} per learner worker"
    if c.threads_per_actor or c.learner_threads:
        why += " (set in cluster.threads_per_actor / learner_threads)"
    if shared:
        why += f"; {busy} threads on {cores} cores: they share cores (OpenMP waits passively)"
    return CorePlan(cores, overlap, eng, lrn, shared, why)


def _overlap(mode: str, wanted: str, gpu: bool, autoscale: bool, cores: int, engines: int,
             workers: int) -> tuple[bool, str]:
    if mode == "async":
        return True, "async: stages always overlap"
    if mode == "sequential":
        return False, "sequential: stages take turns"
    if wanted != "auto":
        return wanted == "on", f"schedule.overlap: {wanted}"
    if gpu:
        return True, "iterative with GPUs: stages overlap on their own devices"
    if autoscale:
        return True, "iterative with autoscale: stages overlap (the learner's waits drive scaling)"
    spare = cores - engines
    if spare >= 2 * max(1, workers):
        return True, (f"iterative on {cores} cores: {engines} engine(s) get a core each and every "
                      f"learner worker keeps {spare // max(1, workers)}: stages overlap")
    return False, (f"iterative on {cores} cores: {engines} engine(s) and {workers} learner worker(s) "
                   "cannot each keep cores of their own (a learner worker needs 2), so they take "
                   "turns with all the cores instead of time-slicing them")


def apply_plan(cfg: Any, plan: CorePlan) -> Any:
    """``cfg`` with the plan's thread counts and overlap written in (what every actor reads)."""
    from selm_ray.core.config import config_from_dict

    data = cfg.to_dict()
    data["cluster"]["threads_per_actor"] = plan.engine_threads
    data["cluster"]["learner_threads"] = plan.learner_threads
    if data["schedule"]["mode"] == "iterative":
        data["schedule"]["overlap"] = "on" if plan.overlap else "off"
    return config_from_dict(data)


def run_plan(cfg: Any) -> CorePlan:
    """The plan of ``cfg`` where it runs: local cores for a local Ray, Ray's CPUs on a cluster
    (configured, or the one a `ray job submit` driver joins through RAY_ADDRESS, as runner does)."""
    joins = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    return plan_cores(cfg, None if joins else local_cores())


# glibc's malloc hands large freed blocks straight back to the kernel (munmap) and trims its heaps;
# a VM whose host reclaims free guest pages then makes every re-touch fault in fresh memory. Measured
# on the 2-core machine: 1 GB re-touched within a second 0.2 s, after 2-8 s idle 2.5-5 s (kernel time);
# `python -m selm_ray.ops.bench_learner --repeats 5`: packed 3.36 -> 3.25 s, padded 4.51 -> 4.28 s a
# step with the heap kept; jemalloc (Ray's own) with decay off was slower (5 s steps), 1.6x the memory.
# One arena: Ray Train runs the learner loop in a thread of its worker, and glibc gives threads
# their own arenas, whose heaps are unmapped whenever they empty, whatever the trim threshold: a
# SmolLM2 step in a thread faulted in ~900 MB afresh every step (230k minor faults, 4.6-5.7 s), with
# one arena none after the second step (3.8-3.9 s, as on the main thread).
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_ARENA_MAX": "1"}


def available_bytes() -> int | None:
    """MemAvailable of this machine (Linux), or None where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reserve_heap(nbytes: int) -> int:
    """Touch ``nbytes`` of fresh memory, then free it; returns the bytes touched (capped at a quarter
    of the available memory). Under KEEP_FREED_MEMORY the freed block stays in the process's heap,
    so the allocations that follow (a learner's first steps) reuse pages already mapped instead of
    faulting each one in: SmolLM2's first learner step faulted ~320k pages (1.25 GB) without it and
    ~200 with 1.5 GB reserved first (0.26 s to reserve). Without those glibc settings the block goes
    straight back to the kernel: then it is only wasted time, so call it only with them."""
    import torch

    avail = available_bytes()
    n = max(0, min(nbytes, avail // 4 if avail else nbytes))
    if n:
        block = torch.empty(n, dtype=torch.uint8)
        block.fill_(1)  # torch.empty maps pages lazily: writing them is what faults them in
        del block
    return n


# torch's CPU allocator: tensors of 2 MB or more start on a 2 MB boundary and are madvise'd for
# transparent huge pages (read once by libc10 when torch loads). Measured on the 2-core AVX-512 EPYC,
# our side of the peer benchmark's DPO run, 6 runs with vs 9 without, same hour: an iteration end
# (checkpoint + weights put for the engines) 1.3-2.0 s vs 3.0-3.4 s, an engine's weight reload 0.3-0.5
# s vs 0.6-0.8 s, the loop 50.7-55.3 s vs 53.5-60.6 s; learner steps moved within their noise. Peak
# memory in use 11.70 vs 11.23 GiB (2 MB granules).
HUGE_PAGES = {"THP_MEM_ALLOC_ENABLE": "1"}


def memory_env(cfg: Any) -> dict[str, str]:
    """Allocator settings for a CPU actor's process (read by glibc and torch when the process starts)."""
    env = dict(KEEP_FREED_MEMORY) if cfg.cluster.keep_freed_memory else {}
    if cfg.cluster.huge_pages:
        env.update(HUGE_PAGES)
    return env


def engine_threads(cfg: Any) -> int:
    """Threads of one generator / judge actor (a config the driver has not planned yet plans here)."""
    return cfg.cluster.threads_per_actor or run_plan(cfg).engine_threads


def learner_threads(cfg: Any) -> int:
    return cfg.cluster.learner_threads or run_plan(cfg).learner_threads
