"""learner.micro_batch_pairs: a step in several forward/backward passes makes the same update and
reports the same metrics as one pass over all its pairs (DDP and DeepSpeed ZeRO-2, one CPU rank)."""
import copy

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


def test_a_primed_optimizer_steps_exactly_like_a_fresh_one():
    """engine.prime_optimizer allocates AdamW's state at start-up; the first real step must not move."""
    from selm_ray.learner.engine import prime_optimizer

    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = copy.deepcopy(a)
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    prime_optimizer(opt_b)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # priming moved nothing
    assert len(opt_b.state) == 2 and all(float(s["step"]) == 0 for s in opt_b.state.values())
    x = torch.randn(5, 8)
    for _ in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            model(x).pow(2).sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert opt_b.param_groups[0]["lr"] == 1e-2
