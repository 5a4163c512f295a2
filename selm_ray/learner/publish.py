"""Weights leaving the learner: put in the object store, announced as a policy version, and (at an
iteration end) checkpointed at the same time."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selm_ray.actors import remote
from selm_ray.core.config import Config
from selm_ray.learner.engine import TrainEngine


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank (as is with one worker)."""
    if world == 1:
        return obj
    import torch

    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def put_weights(engine: TrainEngine, rank: int) -> tuple[Any, float]:
    """The weights the engines serve, gathered, packed and put in the object store (rank 0's ref;
    None elsewhere), and the seconds it took."""
    import ray

    from selm_ray.engines.transfer import pack_state_dict

    t0 = time.time()
    if engine.cfg.lora_publish == "adapter":  # resolved at start: the engines serve LoRA adapters
        sd, adapter = engine.adapter(engine.publish_dtype)  # collective under ZeRO-3
    else:
        sd, adapter = engine.publish_state_dict(), None
    # numpy arrays are read zero-copy from the object store on the receiving side
    ref = ray.put(pack_state_dict(sd, adapter)) if rank == 0 else None
    return ref, time.time() - t0


def publish(engine: TrainEngine, st: Any, channel: Any, rank: int, bump: bool = True,
             put: tuple[Any, float] | None = None) -> None:
    """New policy version -> object store -> channel (controller forwards it to the engines);
    ``st`` is the loop's LearnerState (its version is bumped here).
    ``bump=False`` sends the current version again (a restarted rank 0: the object its dead
    predecessor put is gone with it, and a restarting engine would fetch it). ``put``: the
    weights already put (``put_weights``)."""
    ref, seconds = put or put_weights(engine, rank)
    st.version += int(bump)
    if rank == 0:
        remote.get(channel.publish.remote(st.version, [ref], seconds), "channel.publish")


def save_and_put(cfg: Config, engine: TrainEngine, rank: int, save: Any) -> tuple[tuple[Any, float], float]:
    """An iteration end's checkpoint and the engines' copy of the weights, at the same time: the
    checkpoint is mostly waiting on the disk (O_DIRECT writes of weights and Adam moments) and the
    copy is CPU work (pack, put). Nothing is announced here: the version is published only once
    the checkpoint is complete, so a failed group still restarts from exactly what engines serve.
    Returns (the put, as ``put_weights``; checkpoint seconds). DeepSpeed's checkpoint and ZeRO-3
    gathers are collectives that must not interleave: there, one after the other."""
    t0 = time.time()
    if cfg.learner.engine == "deepspeed":
        save()
        saved = time.time() - t0
        return put_weights(engine, rank), saved
    with ThreadPoolExecutor(1, thread_name_prefix="checkpoint") as pool:
        saving = pool.submit(lambda: (save(), time.time() - t0)[1])
        put = put_weights(engine, rank)
        return put, saving.result()


def hold_until_stop(channel: Any, rank: int, world: int) -> None:
    """Rank 0 owns the last published weights (its ray.put): if it exited now, an engine still
    fetching them would fail with OwnerDiedError. The controller requests the stop only after
    every engine has loaded them (and the final evaluation ran)."""

    while not broadcast(bool(remote.get(channel.poll.remote(), "channel.poll")["stop"]) if rank == 0 else None, world):
        time.sleep(0.2)
