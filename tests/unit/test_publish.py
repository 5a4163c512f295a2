"""An iteration end's checkpoint and the engines' copy of the weights run at the same time, and the
boundary waits for the checkpoint (learner/publish.py)."""
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from selm_ray.learner import publish


class _Engine:
    """What put_weights reads of a TrainEngine: its config and the weights it publishes."""

    def __init__(self, engine: str, log: list) -> None:
        self.cfg = SimpleNamespace(lora_publish="merged", engine=engine)
        self.log = log

    def publish_state_dict(self):
        self.log.append(("put", threading.current_thread().name))
        return {"w": torch.ones(2)}


def _cfg(engine: str):
    return SimpleNamespace(learner=SimpleNamespace(engine=engine))


def test_checkpoint_and_put_overlap_and_the_boundary_waits_for_the_checkpoint():
    log = []
    started = threading.Event()

    def save():
        started.set()
        time.sleep(0.3)  # a checkpoint slower than the put
        log.append(("saved", threading.current_thread().name))

    # rank 1: no object store involved (only rank 0 puts), the same code path otherwise
    put, seconds = publish.save_and_put(_cfg("ddp"), _Engine("ddp", log), 1, save)
    assert started.is_set() and put[0] is None and put[1] >= 0
    assert seconds >= 0.3  # returned only once the checkpoint was complete
    assert [e for e, _ in log] == ["put", "saved"]  # the put did not wait for the checkpoint
    assert log[0][1] != log[1][1]  # two threads


def test_deepspeed_checkpoints_first_then_puts_in_one_thread():
    # its checkpoint and ZeRO-3 gathers are collectives: interleaving them could deadlock the ranks
    log = []
    put, _ = publish.save_and_put(_cfg("deepspeed"), _Engine("deepspeed", log),
                                  1, lambda: log.append(("saved", threading.current_thread().name)))
    assert [e for e, _ in log] == ["saved", "put"] and log[0][1] == log[1][1]


def test_a_failed_checkpoint_fails_the_boundary():
    def save():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish.save_and_put(_cfg("ddp"), _Engine("ddp", []), 1, save)
