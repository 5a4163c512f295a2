"""LoRA resume: a checkpoint's model.safetensors holds MERGED weights, yet the reference of a LoRA
learner is the base model under its adapter; loading the checkpoint must restore both, unmerged."""
import copy

import torch

from selm_ray.core.config import load_config
from selm_ray.learner import checkpoint
from selm_ray.learner.engine import TrainEngine, load_models
from selm_ray.learner.loop import reference_checksum
from selm_ray.learner.tensor_io import has_state


def _engine(path, engine):
    cfg = load_config("jobs/configs/smoke.yaml", [f"learner.engine={engine}", "learner.lora_rank=4",
                                                  "learner.lora_alpha=8"]).learner
    return TrainEngine(load_models(str(path), cfg), cfg, 1)


def test_ddp_lora_checkpoint_restores_base_and_adapter(tiny_model_path, tmp_path):
    eng = _engine(tiny_model_path, "ddp")
    base = reference_checksum(eng)
    with torch.no_grad():  # a trained adapter: B is zero at the start
        for n, p in eng.models.policy.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    # the merged weights engines get equal peft's own merge, and taking them leaves the base untouched
    merged = copy.deepcopy(eng.models.policy).merge_and_unload().state_dict()
    got = eng.full_state_dict()
    assert got.keys() == merged.keys()
    for k in merged:
        torch.testing.assert_close(got[k], merged[k])
    assert reference_checksum(eng) == base
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    want = eng.models.policy(input_ids=ids).logits
    ckpt = checkpoint.save(eng, eng.models.tokenizer, {"step": 3}, tmp_path, 0, lora=True)

    again = _engine(ckpt, "ddp")  # as a restarted learner does: the checkpoint's (merged) weights...
    assert abs(reference_checksum(again) - base) > 1e-3  # ...alone would make the stopped policy the reference
    fresh = checkpoint.optimizer_fresh(checkpoint.load_state(ckpt))  # never stepped: no optimizer file
    assert fresh and not has_state(ckpt / checkpoint.OPTIMIZER_DIR, "optimizer")
    again.load_optimizer(ckpt / checkpoint.OPTIMIZER_DIR, fresh)  # ...then its optimizer and module state
    assert reference_checksum(again) == base
    torch.testing.assert_close(again.models.policy(input_ids=ids).logits, want)
