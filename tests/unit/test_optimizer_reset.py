"""learner.reset_optimizer: an iteration end gives the next iteration a fresh AdamW (each iteration a
new DPO run, as both papers train them), and its checkpoint then writes no optimizer state."""
import pytest
import torch

from selm_ray.core.config import load_config
from selm_ray.learner import checkpoint
from selm_ray.learner.engine import TrainEngine, load_models, refresh_reference
from selm_ray.learner.loop import LearnerState, _train_step
from selm_ray.learner.tensor_io import has_state, save_model
from selm_ray.core.records import PreferencePair



def _cfg(engine="ddp"):
    return load_config("jobs/configs/smoke.yaml", [f"learner.engine={engine}", "learner.loss=dpo", "learner.alpha=0",
                                                   "learner.lr=1e-3", "learner.ref_logps_from_engine=false"])


def _pairs(tok, n):
    msgs = ({"role": "user", "content": "Name a colour."},)
    prompt = tok.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=True)
    return [PreferencePair(f"p{i}", f"q{i}", msgs, prompt, "Blue, the colour of the sky. " * (i + 1), "No.",
                           4.0, 1.0, 7 * (i + 1), 2, 0, 0) for i in range(n)]


def _engine(path, engine="ddp"):
    cfg = _cfg(engine).learner
    return TrainEngine(load_models(str(path), cfg), cfg, 1)


def _step(eng, pairs):
    _train_step(_cfg(eng.cfg.engine), eng, eng.models.tokenizer, pairs, LearnerState(), phase_steps=1)


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_a_reset_optimizer_steps_exactly_like_a_fresh_one(tiny_model_path, smollm2_tokenizer, gloo_rank, tmp_path,
                                                           engine):
    pairs = _pairs(smollm2_tokenizer, 3)
    used = _engine(tiny_model_path, engine)
    # a new engine's optimizer is fresh (all zero); DeepSpeed's checkpoint still carries it (and the module)
    assert used.optimizer_fresh and used.skips_optimizer_state() is (engine == "ddp")
    _step(used, pairs)
    _step(used, pairs)
    assert not used.optimizer_fresh
    assert any(float(s["exp_avg_sq"].abs().sum()) > 0 for s in used.optimizer.state.values())
    refresh_reference(used.models)  # an iteration end: the reference becomes the policy...
    used.reset_optimizer()  # ...and the optimizer a fresh one
    assert used.optimizer_fresh
    assert all(float(s["step"]) == 0 and not s["exp_avg"].any() and not s["exp_avg_sq"].any()
               for s in used.optimizer.state.values())

    # the same weights in a new engine, its optimizer never used (as a restarted learner loads them)
    save_model(used.models.policy, tmp_path / "weights", used.full_state_dict())
    used.models.tokenizer.save_pretrained(tmp_path / "weights")
    fresh = _engine(tmp_path / "weights", engine)
    _step(used, pairs)
    _step(fresh, pairs)
    a, b = used.full_state_dict(), fresh.full_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


@pytest.mark.parametrize("stepped", [False, True])
def test_checkpoints_leave_out_only_a_fresh_optimizer(tiny_model_path, smollm2_tokenizer, tmp_path, stepped):
    eng = _engine(tiny_model_path)
    if stepped:
        _step(eng, _pairs(smollm2_tokenizer, 2))
    ckpt = checkpoint.save(eng, eng.models.tokenizer, {"step": 1}, tmp_path, 0, lora=False)
    fresh = checkpoint.optimizer_fresh(checkpoint.load_state(ckpt))
    assert fresh is not stepped
    assert has_state(ckpt / checkpoint.OPTIMIZER_DIR, "optimizer") is stepped

    again = _engine(ckpt)  # as a restarted learner: the checkpoint's weights, then its optimizer
    again.load_optimizer(ckpt / checkpoint.OPTIMIZER_DIR, fresh)
    assert again.skips_optimizer_state() is fresh
    for p_old, p_new in zip(eng.optimizer.param_groups[0]["params"], again.optimizer.param_groups[0]["params"]):
        old, new = eng.optimizer.state[p_old], again.optimizer.state[p_new]
        assert torch.equal(old["exp_avg_sq"], new["exp_avg_sq"]) and float(old["step"]) == float(new["step"])
