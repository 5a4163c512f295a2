"""The SFT stage on every learner worker: masked cross-entropy on the answers of IFT/EFT examples,
then an HF checkpoint (M1) in run_dir/sft/checkpoints/. Same engine as the preference learner."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from selm_ray.learner import checkpoint
from selm_ray.learner.engine import TrainEngine
from selm_ray.learner.loop import setup_worker
from selm_ray.core.sft_data import SFTExample
from selm_ray.learner.batching import collate_sft, row_logps


def sft_step(engine: TrainEngine, tok: Any, examples: list[SFTExample], max_length: int) -> dict[str, float]:
    batch = collate_sft(tok, examples, max_length)
    logps = row_logps(engine.forward_logits(batch), batch)
    tokens = batch["targets"].numel()
    loss = -logps.sum() / max(tokens, 1)  # mean NLL per answer token
    grad_norm = engine.backward_step(loss)
    return {"loss": loss.item(), "grad_norm": grad_norm, "tokens": tokens}


def sft_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg, rank, world, models, engine = setup_worker(loop_config)
    s = cfg.sft
    examples = [SFTExample(tuple(e["messages"]), e["response"], e["kind"]) for e in loop_config["examples"]]
    out_dir = Path(loop_config["run_dir"])
    engine.set_lr(s.lr)
    rng, step = random.Random(cfg.run.seed), 0
    log = (out_dir / "metrics.jsonl").open("a") if rank == 0 else None
    for epoch in range(s.epochs):
        order = examples[:]
        rng.shuffle(order)  # same seed on every rank: the same order everywhere
        for i in range(0, len(order), s.batch_size * world):
            chunk = order[i:i + s.batch_size * world]
            mine = chunk[rank::world] or chunk[-1:]
            t0 = time.time()
            m = sft_step(engine, models.tokenizer, mine, s.max_length)
            step += 1
            if log is not None:
                log.write(json.dumps({"stage": "sft", "epoch": epoch, "step": step, **m,
                                      "step_seconds": time.time() - t0, "time": time.time()}) + "\n")
                log.flush()
    state = {"step": step, "version": 0, "iteration": 0, "ref_version": 0, "phase_step": 0,
             "buffer_cursor": 0, "stage": "sft"}
    checkpoint.save(engine, models.tokenizer, state, out_dir, rank, cfg.learner.lora_rank > 0)
