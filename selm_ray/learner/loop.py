"""The Ray Train worker loop: pull pairs from the buffer, take preference-loss steps, publish weights.

Rank 0 makes every decision (sample a batch, end an iteration, publish, stop) and broadcasts it,
so all ranks take the same steps; each rank trains on its own slice of rank 0's batch.
Schedules:
- iterative: the policy trains on iteration t's pairs while they arrive; when the controller
  says all of t's pairs are in the buffer and the buffer is drained, the new weights are
  published as version t + 1 and the reference becomes the policy (pi_ref of t + 1 = pi_{t+1}'s start).
- async: publish every ``sync_every`` steps, refresh the reference every ``ref_update_every``.
``learner.passes`` > 1 (iterative schedules) trains on an iteration's pairs again before it ends
(learner/passes.py).
"""
from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selm_ray.actors import remote
from selm_ray.core.config import Config, config_from_dict
from selm_ray.core.cores import learner_threads, reserve_heap
from selm_ray.learner import checkpoint
from selm_ray.learner.batching import collate, engine_reference_logps, pack, row_logps, split_logps
from selm_ray.learner.engine import TrainEngine, load_models, lr_at, refresh_reference
from selm_ray.learner.tensor_io import save_model
from selm_ray.learner.passes import IterationPlan
from selm_ray.learner.publish import broadcast, hold_until_stop, publish, save_and_put
from selm_ray.core.losses import compute_loss, get_loss
from selm_ray.core.precision import resolve_dtype


SELF_REF = "@policy"  # LearnerState.ref_path: the policy of the checkpoint about to be written


TURN_POLL_SECONDS = 0.5  # how often a learner waiting for its turn asks again


@dataclass
class LearnerState:
    step: int = 0
    version: int = 0
    iteration: int = 0
    phase_step: int = 0
    ref_version: int = 0  # the published version the reference model equals (-1: none)
    # a folder holding the reference model's weights (the start model, an iteration-end checkpoint,
    # or a checkpoint's reference/ copy); "" = only in memory (saved with the next checkpoint)
    ref_path: str = ""


@dataclass
class Decision:
    kind: str  # "train" | "end_iteration" | "wait" | "stop"
    pairs: list | None = None
    phase_steps: int = 1  # the lr schedule's length for this step (rank 0 knows it; all ranks use it)
    pass_: int = 1  # 1: pairs straight from the buffer; > 1: a later pass over the iteration's pairs
    turn: bool = False  # a wait for the learner's turn (stages taking turns), not for missing pairs


def _decide(cfg: Config, st: LearnerState, buffer: Any, channel: Any, world: int, request_id: str,
            plan: IterationPlan) -> Decision:
    """Rank 0 only: what every rank does next. ``request_id`` is new for every call: a re-sent
    sample (the buffer died before replying) gets the same batch back, not a second one."""

    from selm_ray.actors.remote import call_with_retry

    poll = remote.get(channel.poll.remote(), "channel.poll")
    want = cfg.learner.batch_size * world
    iterative = cfg.schedule.mode in ("iterative", "sequential")
    draining = poll["stop"] or (iterative and poll["generation_done_iteration"] >= st.iteration)
    if cfg.schedule.takes_turns and not draining:
        return Decision("wait", turn=True)  # strictly after generation and judging: the stages take turns
    if iterative and draining and not poll["stop"]:
        plan.size_at_drain(st.phase_step, call_with_retry(buffer.size), want)
    pairs = call_with_retry(buffer.sample, want, st.version, None, 1 if draining else want, request_id)
    if pairs:
        plan.record(pairs)
        return Decision("train", pairs, plan.phase_steps)
    if iterative and draining and not poll["stop"]:
        again = plan.next_batch(want, st.iteration)
        if again:
            return Decision("train", again, plan.phase_steps, plan.current_pass)
        return Decision("end_iteration")
    if poll["stop"]:
        return Decision("stop")
    return Decision("wait")


def _pass_loss(cfg: Config, engine: TrainEngine, tok: Any, pairs: list, st: LearnerState) -> tuple[Any, dict]:
    """Forward of one pass over ``pairs``: the loss (mean over them) and its metrics."""
    spec = get_loss(cfg.learner.loss)
    layout = pack if cfg.learner.packed(torch.cuda.is_available()) else collate
    batch = engine.to_device(layout(tok, pairs, cfg.learner.max_length, spec.needs_ref_response))
    n = len(pairs)
    policy_lp = row_logps(engine.forward_logits(batch), batch)
    ref_lp = None
    if cfg.learner.ref_logps_from_engine:
        ref_lp = engine_reference_logps(pairs, batch, st.ref_version, spec.needs_ref_response)
        ref_lp = None if ref_lp is None else ref_lp.to(engine.device)
    ref_from_engine = ref_lp is not None
    if ref_lp is None:
        ref_lp = row_logps(engine.reference_logits(batch), batch)
    logps = {**split_logps(policy_lp, n, "policy"), **split_logps(ref_lp.detach(), n, "ref")}
    loss, metrics = compute_loss(cfg.learner.loss, logps, cfg.learner.beta, cfg.learner.alpha)
    metrics["ref_from_engine"] = float(ref_from_engine)
    return loss, metrics


def _train_step(cfg: Config, engine: TrainEngine, tok: Any, pairs: list, st: LearnerState,
                phase_steps: int) -> dict[str, float]:
    """One optimizer step on ``pairs``, in passes of ``learner.micro_batch_pairs``: each pass's
    loss is weighted by its share of the pairs, so the step's gradient and metrics equal those
    of one pass over all of them (the losses are means over pairs)."""
    n = len(pairs)
    size = cfg.learner.micro_batch_pairs or n
    chunks = [pairs[i:i + size] for i in range(0, n, size)]
    lr = lr_at(st.phase_step, phase_steps, cfg.learner, min(st.iteration, cfg.schedule.iterations - 1))
    engine.set_lr(lr)
    metrics: dict[str, float] = {}
    for k, chunk in enumerate(chunks):
        share = len(chunk) / n
        loss, m = _pass_loss(cfg, engine, tok, chunk, st)
        engine.backward(loss * share, first=k == 0, last=k == len(chunks) - 1)
        for key, v in m.items():
            metrics[key] = metrics.get(key, 0.0) + v * share
    metrics["grad_norm"] = engine.step()
    metrics.update(lr=lr, pairs=n, passes_per_step=len(chunks),
                   chosen_tokens=sum(p.chosen_tokens for p in pairs) / n,
                   rejected_tokens=sum(p.rejected_tokens for p in pairs) / n)
    return metrics


def _save_reference(engine: TrainEngine, st: LearnerState, run_dir: Path, rank: int) -> None:
    """A checkpoint taken when the reference is not in any folder (an async refresh) carries a copy:
    a resume must continue with the very reference the run had, not one rebuilt from the policy."""
    if st.ref_path == SELF_REF:  # the reference was just set to the policy this checkpoint holds
        st.ref_path = str(checkpoint.checkpoint_dir(run_dir, st.step))
    if st.ref_path or engine.models.reference is None:
        return
    ref_dir = checkpoint.checkpoint_dir(run_dir, st.step) / checkpoint.REFERENCE_DIR
    if rank == 0:
        save_model(engine.models.reference, ref_dir)
    st.ref_path = str(ref_dir)


def _restore_reference(engine: TrainEngine, st: LearnerState, loaded_from: str) -> None:
    """After loading a checkpoint as the policy: the reference is what the checkpoint says it was
    (an iteration's start for a mid-iteration stop), not the checkpoint's policy."""
    ref = engine.models.reference
    if ref is None or not st.ref_path or Path(st.ref_path) == Path(loaded_from):
        return
    from transformers import AutoModelForCausalLM

    sd = AutoModelForCausalLM.from_pretrained(st.ref_path, dtype=next(ref.parameters()).dtype).state_dict()
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    if unexpected or missing:
        raise RuntimeError(f"reference weights in {st.ref_path} do not match the model "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def reference_checksum(engine: TrainEngine) -> float | None:
    """Sum of the reference's parameters: equal before a stop and after its resume (tests, logs)."""
    ref = engine.models.reference
    if ref is not None:
        return float(sum(p.double().sum().item() for p in ref.parameters()))
    # LoRA: the reference is the base under the adapter (every parameter but the adapter's)
    return float(sum(p.double().sum().item() for n, p in engine.models.policy.named_parameters() if "lora_" not in n))


def _checkpoint(cfg: Config, engine: TrainEngine, tok: Any, st: LearnerState, run_dir: Path,
                rank: int, buffer: Any) -> str:
    from selm_ray.actors.remote import call_with_retry

    _save_reference(engine, st, run_dir, rank)
    cursor = call_with_retry(buffer.cursor) if rank == 0 else 0
    state = {**st.__dict__, "buffer_cursor": cursor, "ref_checksum": reference_checksum(engine)}
    return str(checkpoint.save(engine, tok, state, run_dir, rank, cfg.learner.lora_rank > 0,
                               cfg.learner.keep_checkpoints))


def _phase_steps(cfg: Config, world: int) -> int:
    """The lr phase's length before the pairs are counted: at most this many pairs per prompt, each
    pass. Iterative schedules replace it by the count once generation is done (IterationPlan)."""
    per = cfg.learner.batch_size * world
    prompts = cfg.schedule.prompts_per_iteration
    if cfg.schedule.mode == "async":
        prompts *= cfg.schedule.iterations
    per_prompt = cfg.generation.num_candidates - 1 if cfg.judge.pair_rule == "best_vs_rest" else 1
    return math.ceil(prompts * per_prompt * cfg.learner.passes / per)


def setup_worker(loop_config: dict[str, Any]) -> tuple[Config, int, int, Any, TrainEngine]:
    """What every learner worker does first (preference loop and SFT stage alike):
    (config, rank, world size, models, engine)."""
    import ray.train

    cfg = config_from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(learner_threads(cfg))
    torch.manual_seed(cfg.run.seed)
    remote.configure(cfg.cluster)
    device = worker_device()
    precision = worker_precision(cfg, device)
    models = load_models(loop_config["model_path"], cfg.learner, precision.weights, device)
    engine = TrainEngine(models, cfg.learner, world, precision, device)
    if device.type == "cpu" and cfg.cluster.keep_freed_memory and cfg.learner.lora_rank == 0:
        # the memory the first steps take (activations, gradients: ~2.3x the weights' bytes for
        # SmolLM2), faulted in now while the engines start rather than inside the first step (LoRA
        # steps keep no full-size gradients: no estimate from the weights there)
        reserve_heap(3 * sum(p.numel() * p.element_size() for p in models.policy.parameters()))
    engine.publish_dtype = getattr(torch, resolve_dtype(cfg.model.dtype, cfg.cluster.generator_gpus > 0))
    return cfg, rank, world, models, engine


def worker_device() -> torch.device:
    """This rank's device: the GPU Ray Train assigned it, else the CPU. DeepSpeed's accelerator is
    chosen here too, for the node this worker runs on (read when deepspeed is first imported)."""
    import ray.train.torch

    device = ray.train.torch.get_device()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    return device


def worker_precision(cfg: Config, device: torch.device) -> Any:
    from selm_ray.core.precision import learner_precision
    from selm_ray.learner.engine import use_autocast

    return learner_precision(cfg.model.dtype, cfg.learner.engine, device.type == "cuda", use_autocast(cfg.learner))


def _restart_point(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Where this worker group starts: the newest complete checkpoint of the run, if any (a group
    Ray Train restarted after a failure, or a resumed run), else the configured model."""
    newest = checkpoint.latest(Path(loop_config["run_dir"]))
    if newest is None:
        return loop_config
    return {**loop_config, "model_path": str(newest), "resume_from": str(newest)}


def _after_restart(st: LearnerState, engine: TrainEngine, buffer: Any, channel: Any, rank: int, world: int,
                   cursor: int, resumed: bool) -> None:
    """A restarted group: the pairs served since its checkpoint wait in the buffer again (their
    training was lost with the old group), and the checkpoint's weights are published anew.

    In async the engines may hold versions newer than the restart point (published after the last
    checkpoint, or with no checkpoint at all: the base model). Re-publishing an older number would
    leave them on the lost lineage (an engine only loads a newer version), so the restart point is
    published as the next number instead."""
    from selm_ray.actors.remote import call_with_retry

    starts = broadcast(remote.get(channel.learner_start.remote(os.getpid()), "channel.learner_start")
                        if rank == 0 else None, world)
    if starts == 0:
        return  # the first start: a resume already rewound the buffer before it began
    served = broadcast(remote.get(channel.state.remote(), "channel.state")["version"] if rank == 0 else None, world)
    if served > st.version:
        st.version = served
        publish(engine, st, channel, rank, bump=True)
    elif resumed:
        publish(engine, st, channel, rank, bump=False)
    if rank == 0:
        undone = call_with_retry(buffer.rewind, cursor)
        remote.get(channel.report.remote({"event": "learner_restart", "restarts": starts, "from_step": st.step,
                                       "version": st.version, "pairs_served_again": undone}), "channel.report")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    loop_config = _restart_point(loop_config)
    cfg, rank, world, models, engine = setup_worker(loop_config)
    buffer, channel = loop_config["buffer"], loop_config["channel"]
    run_dir = Path(loop_config["run_dir"])
    st, cursor = LearnerState(ref_path=loop_config["model_path"]), 0
    plan = IterationPlan(cfg.learner.passes, cfg.run.seed, _phase_steps(cfg, world))
    resume = loop_config.get("resume_from")
    if resume:  # the model path above IS that checkpoint; now its optimizer, counters and reference
        saved = checkpoint.load_state(Path(resume))
        engine.load_optimizer(Path(resume) / checkpoint.OPTIMIZER_DIR, fresh=checkpoint.optimizer_fresh(saved))
        st = LearnerState(**{k: saved[k] for k in LearnerState.__dataclass_fields__ if k in saved})
        st.ref_path = saved.get("ref_path", resume)  # older checkpoints: the policy (as before)
        _restore_reference(engine, st, resume)
        cursor = saved.get("buffer_cursor", 0)
    _after_restart(st, engine, buffer, channel, rank, world, cursor, bool(resume))
    save = lambda: _checkpoint(cfg, engine, models.tokenizer, st, run_dir, rank, buffer)  # noqa: E731
    try:
        _run(cfg, engine, models.tokenizer, st, buffer, channel, rank, world, plan, save)
        last = checkpoint.latest(run_dir) if rank == 0 else None
        done = broadcast(last is not None and checkpoint.load_state(last)["step"] == st.step, world)
        ckpt = str(last) if done else save()
        if rank == 0:
            remote.get(channel.finish.remote(ckpt), "channel.finish")
    except Exception as e:
        if rank == 0:
            remote.get(channel.finish.remote(None, f"{type(e).__name__}: {e}"), "channel.finish")
        raise


def _run(cfg: Config, engine: TrainEngine, tok: Any, st: LearnerState, buffer: Any, channel: Any,
         rank: int, world: int, plan: IterationPlan, save: Any) -> None:
    import ray

    sched = cfg.schedule
    waited = 0.0  # seconds spent waiting on the buffer, not yet reported
    group, calls = uuid.uuid4().hex[:8], 0  # request ids: unique to this worker group's start
    first_step = True
    while True:
        calls += 1
        d = broadcast(_decide(cfg, st, buffer, channel, world, f"{group}-{calls}", plan) if rank == 0 else None,
                       world)
        if d.kind == "stop":
            return
        if d.kind == "wait":
            # a turn lasts a whole generation phase: 10 polls a second wake the learner, the channel
            # and Ray's processes on the cores the engine is using; 0.5 s late once per iteration is cheap
            pause = TURN_POLL_SECONDS if d.turn else 0.1
            time.sleep(pause)
            waited += pause
            if d.turn:  # waiting for its turn is not starvation: nothing to report
                waited = 0.0
            elif rank == 0 and waited >= 1.0:  # the autoscaler grows producers on this signal
                channel.add_wait.remote(waited)
                waited = 0.0
            continue
        if d.kind == "end_iteration":
            st.version += 1
            t0 = time.time()
            if refresh_reference(engine.models):
                st.ref_version = st.version  # pi_ref of the next iteration = what generators now serve
                st.ref_path = SELF_REF  # the policy that the save() below writes
            st.iteration, st.phase_step = st.iteration + 1, 0
            plan.reset()
            if cfg.learner.reset_optimizer:  # the next iteration is a new DPO run (learner.reset_optimizer)
                engine.reset_optimizer()
            t1 = time.time()
            # every iteration boundary is a resumable point, saved BEFORE the engines get it: a group
            # that fails in between restarts from (and publishes again) exactly this version
            put, saved = save_and_put(cfg, engine, rank, save)
            publish(engine, st, channel, rank, bump=False, put=put)
            if rank == 0:
                # where an iteration's end goes (the stages wait on it): reference copy, checkpoint and
                # (meanwhile) the weights put for the engines, then the whole boundary
                seconds = {"reference_seconds": t1 - t0, "checkpoint_seconds": saved, "put_seconds": put[1],
                           "boundary_seconds": time.time() - t0}
                remote.get(channel.report.remote({"event": "iteration_end", "step": st.step, "iteration": st.iteration,
                                               "version": st.version, **{k: round(v, 3) for k, v in seconds.items()}}),
                           "channel.report")
            if st.iteration >= sched.iterations:
                hold_until_stop(channel, rank, world)
                return
            continue
        per_rank = math.ceil(len(d.pairs) / world)
        mine = d.pairs[rank * per_rank:(rank + 1) * per_rank] or d.pairs[-1:]
        t_step = time.time()
        metrics = _train_step(cfg, engine, tok, mine, st, d.phase_steps)
        metrics["step_seconds"] = time.time() - t_step
        st.step, st.phase_step = st.step + 1, st.phase_step + 1
        if sched.mode == "async":
            published = st.step % sched.sync_every == 0
            if published:
                publish(engine, st, channel, rank)
            if sched.ref_update_every and st.step % sched.ref_update_every == 0:
                if refresh_reference(engine.models):
                    # equal to a served version only if these very weights were just published
                    st.ref_version = st.version if published else -1
                    st.ref_path = ""  # in memory only: the next checkpoint saves a copy
            if cfg.learner.checkpoint_every and st.step % cfg.learner.checkpoint_every == 0:
                save()
        if rank == 0:
            if st.step == 1:
                metrics["node"] = ray.get_runtime_context().get_node_id()
                metrics["precision"] = {**engine.precision.as_dict(), "device": str(engine.device),
                                        "published": str(engine.publish_dtype).removeprefix("torch.")}
            if first_step:  # of this worker group: the reference it trains against (resume checks)
                metrics["ref_checksum"] = reference_checksum(engine)
                first_step = False
            # pair_ids: the learner's own record of what it trained on (exactly-once checks)
            metrics.update(step=st.step, iteration=st.iteration, version=st.version, pair_ids=[p.pair_id for p in d.pairs],
                           **({"pass": d.pass_} if d.pass_ > 1 else {}),
                           policy_lag=max(0, st.version - min((p.policy_version or 0) for p in d.pairs)))
            remote.get(channel.report.remote(metrics), "channel.report")
