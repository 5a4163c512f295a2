"""ZeRO-3 on CPU (DeepSpeed's CPU accelerator, one gloo rank): the parameters really are partitioned,
and the full weights (publication, checkpoints) and the reference refresh gather them module by
module, equal to the unpartitioned model; bf16 included."""
import pytest
import torch

from selm_ray.core.config import LearnerConfig
from selm_ray.core.precision import learner_precision
from selm_ray.learner.engine import TrainEngine, load_models, refresh_reference


def _plain(path, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).state_dict()


def _step(engine):
    ids = torch.randint(0, 1000, (2, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool), "first": 4,
             "predict": torch.tensor([[0, 3], [1, 5]])}
    engine.set_lr(1e-2)
    engine.backward_step(engine.forward_logits(batch).float().logsumexp(-1).mean())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_zero3_full_weights_and_reference_refresh(gloo_rank, tiny_model_path, dtype):
    cfg = LearnerConfig(engine="deepspeed", zero_stage=3)
    prec = learner_precision(dtype, "deepspeed", False, False)
    models = load_models(str(tiny_model_path), cfg, prec.weights)
    engine = TrainEngine(models, cfg, 1, prec)
    assert all(p.numel() == 0 for p in models.policy.parameters())  # partitioned: nothing whole here
    start = engine.full_state_dict()
    plain = _plain(str(tiny_model_path), getattr(torch, dtype))
    assert list(start) == list(plain)
    assert all(torch.equal(start[k], plain[k]) for k in plain)  # gathered = the model as loaded
    _step(engine)
    trained = engine.full_state_dict()
    assert any(not torch.equal(trained[k], plain[k]) for k in plain)  # the step moved them
    assert all(p.numel() == 0 for p in models.policy.parameters())  # partitioned again after the gather
    ref = models.reference.state_dict()
    assert all(torch.equal(ref[k], plain[k]) for k in plain)  # the reference still the start
    assert refresh_reference(models)
    ref = models.reference.state_dict()
    assert all(torch.equal(ref[k], trained[k]) for k in trained)  # now the trained policy
    half = engine.full_state_dict(torch.bfloat16)  # what bf16 engines get
    assert {v.dtype for v in half.values()} == {torch.bfloat16}


def test_published_weights_leave_out_the_tied_output_layer(tiny_model_path):
    """The tiny model ties lm_head to the embedding (as SmolLM2): the engines get it once, under
    the embedding's name (vLLM ties it again), everything else exactly as the full state dict."""
    cfg = LearnerConfig()
    models = load_models(str(tiny_model_path), cfg)
    engine = TrainEngine(models, cfg, 1)
    assert models.policy.config.tie_word_embeddings
    full, sent = engine.full_state_dict(), engine.publish_state_dict()
    assert set(full) - set(sent) == {"lm_head.weight"}
    assert torch.equal(sent["model.embed_tokens.weight"], full["lm_head.weight"])
    assert all(torch.equal(sent[k], full[k]) for k in sent)
    models.policy.config.tie_word_embeddings = False  # untied: both are sent
    assert set(engine.publish_state_dict()) == set(full)
