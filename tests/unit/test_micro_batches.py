"""learner.micro_batch_pairs: a step in several forward/backward passes makes the same update and
reports the same metrics as one pass over all its pairs (DDP and DeepSpeed ZeRO-2, one CPU rank)."""
import pytest
import torch

from selm_ray.core.config import load_config
from selm_ray.core.records import PreferencePair
from selm_ray.learner.engine import TrainEngine, load_models
from selm_ray.learner.loop import LearnerState, _train_step


def _pairs(tok, n):
    out = []
    for i in range(n):
        msgs = ({"role": "user", "content": f"Question number {i}?"},)
        prompt = tok.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=True)
        out.append(PreferencePair(f"p{i}", f"q{i}", msgs, prompt, "A fine answer. " * (i + 1), "No.",
                                  4.0, 1.0, 3 * (i + 1), 2, 0, 0))
    return out


def _step(path, engine, micro, pairs):
    cfg = load_config("jobs/configs/smoke.yaml", [f"learner.engine={engine}", f"learner.micro_batch_pairs={micro}",
                                                  "learner.loss=dpo", "learner.lr=1e-3",
                                                  "learner.ref_logps_from_engine=false"])
    eng = TrainEngine(load_models(str(path), cfg.learner), cfg.learner, 1)
    metrics = _train_step(cfg, eng, eng.models.tokenizer, pairs, LearnerState(), phase_steps=1)
    return eng.full_state_dict(), metrics


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_micro_batches_make_the_same_step(gloo_rank, tiny_model_path, smollm2_tokenizer, engine):
    pairs = _pairs(smollm2_tokenizer, 5)
    whole, m1 = _step(tiny_model_path, engine, 0, pairs)
    parts, m2 = _step(tiny_model_path, engine, 2, pairs)  # passes of 2, 2 and 1 pairs
    assert (m1["passes_per_step"], m2["passes_per_step"]) == (1, 3)
    for key in ("loss", "grad_norm", "rewards/accuracy"):
        if key in m1:
            assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    start = load_models(str(tiny_model_path), load_config("jobs/configs/smoke.yaml").learner).policy.state_dict()
    assert any(not torch.equal(whole[k], start[k]) for k in start)  # the step moved the weights...
    for k in whole:  # ...the same way in both
        torch.testing.assert_close(parts[k], whole[k], rtol=1e-4, atol=1e-6)
