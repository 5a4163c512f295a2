"""The learner's fused RMSNorm computes what the model's own layer does (learner/engine.py)."""
import copy

import torch
from transformers import AutoModelForCausalLM

from selm_ray.learner.engine import fuse_rms_norms


def _logits_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits
    logits.log_softmax(-1)[..., 7].sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_fused_rms_norm_gives_the_models_logits_and_gradients(tiny_model_path):
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    with torch.no_grad():  # norm weights away from 1, so a dropped weight would show
        for n, p in plain.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    fused = copy.deepcopy(plain)
    layers = sum(1 for m in plain.modules() if type(m).__name__.endswith("RMSNorm"))
    assert fuse_rms_norms(fused) == layers > 0
    ids = torch.randint(0, plain.config.vocab_size, (2, 19))
    (l0, g0), (l1, g1) = _logits_and_grads(plain, ids), _logits_and_grads(fused, ids)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5, msg=name)


def test_lower_precision_layers_are_left_to_the_model(tiny_model_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.bfloat16)
    assert fuse_rms_norms(model) == 0
