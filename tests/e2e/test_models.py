"""Model preparation on the real embedded SmolLM2 and the tiny builders (transformers side)."""
import os

import pytest
import torch
from safetensors.torch import load_file

from selm_ray.engines import models
from selm_ray.core.losses import sequence_logps
from selm_ray.engines.models import ModelError, prepare_model, resolve_model


def test_smollm2_prepared_folder_is_a_normal_hf_model(smollm2_path, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    assert (smollm2_path / models.COMPLETE_MARKER).is_file()
    assert (smollm2_path / "model.safetensors").is_file()
    assert smollm2_tokenizer.chat_template and "<|im_start|>" in smollm2_tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    ids = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = smollm2_tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer  # a real instruct model, not random weights


def test_prepare_is_idempotent(smollm2_path):
    before = os.stat(smollm2_path / "model.safetensors").st_mtime_ns
    assert prepare_model("smollm2-135m-instruct") == smollm2_path
    assert os.stat(smollm2_path / "model.safetensors").st_mtime_ns == before
    assert resolve_model("smollm2-135m-instruct") == str(smollm2_path)


def test_interrupted_preparation_leaves_nothing_that_looks_complete(monkeypatch, selm_home):
    def crash(out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # e.g. Ctrl-C mid-conversion

    monkeypatch.setitem(models.PREPARERS, "crashy", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_model("crashy")
    assert not (models.models_dir() / "crashy").exists()
    assert not [p for p in models.models_dir().iterdir() if p.name.startswith(".crashy.partial")]
    assert not models.is_prepared("crashy")


def test_tiny_models_deterministic_by_seed(tmp_path, smollm2_tokenizer):
    a = models.build_tiny_causal_lm(tmp_path / "a", seed=1, tokenizer=smollm2_tokenizer)
    b = models.build_tiny_causal_lm(tmp_path / "b", seed=1, tokenizer=smollm2_tokenizer)
    c = models.build_tiny_causal_lm(tmp_path / "c", seed=2, tokenizer=smollm2_tokenizer)
    ta, tb, tc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)


def test_tiny_reward_model_scores_a_batch(tmp_path, smollm2_tokenizer):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = models.build_tiny_reward_model(tmp_path / "rm", seed=0, tokenizer=smollm2_tokenizer)
    rm = AutoModelForSequenceClassification.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(["a short answer", "a somewhat longer answer here"], return_tensors="pt", padding=True)
    logits = rm(**enc).logits
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


def test_sequence_logps_matches_per_token_loop_on_real_logits(tiny_model_path, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float64)
    tok = smollm2_tokenizer
    prompt = tok("Question: what is two plus two?")["input_ids"]
    resp = tok(" Four, of course.")["input_ids"]
    ids = torch.tensor([prompt + resp])
    mask = torch.tensor([[0] * len(prompt) + [1] * len(resp)])
    with torch.no_grad():
        logits = model(ids).logits
        got = sequence_logps(logits, ids, mask).item()
        want = 0.0
        for t in range(len(prompt), len(prompt) + len(resp)):  # score token t given tokens < t
            step = model(ids[:, :t]).logits[0, -1].log_softmax(-1)
            want += step[ids[0, t]].item()
    assert got == pytest.approx(want, rel=1e-9)


def test_resolve_model_kinds_and_errors(tmp_path, tiny_model_path, monkeypatch):
    assert resolve_model(str(tiny_model_path)) == str(tiny_model_path.resolve())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="neither a known alias"):
        resolve_model("./does/not/exist")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"(?s)could not fetch hub model 'someorg/somemodel'.*offline"):
        resolve_model("someorg/somemodel")
    with pytest.raises(ModelError, match="unknown model alias"):
        prepare_model("gpt-9")


def test_learner_logps_from_kept_logits_equal_full_logits(tiny_model_path, smollm2_tokenizer):
    """The learner projects only the positions that predict a response token; same log-probs."""
    from transformers import AutoModelForCausalLM

    from selm_ray.learner.batching import collate, row_logps
    from selm_ray.learner.engine import batch_logits
    from selm_ray.core.records import PreferencePair

    tok = smollm2_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float64)
    pairs = [PreferencePair(f"p{i}", "q", ({"role": "user", "content": q},),
                            tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                    add_generation_prompt=True),
                            "A fine answer." * (i + 1), "No.", 4.0, 1.0, 3, 2, 0, 0, ref_response="Greedy.")
             for i, q in enumerate(["Short question?", "A much longer question with many more words in it?"])]
    batch = collate(tok, pairs, 256, with_ref_response=True)
    assert batch["first"] > 0 and batch["input_ids"].shape[0] == 6
    with torch.no_grad():
        full = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                              batch["input_ids"], batch["loss_mask"])
        logits = batch_logits(model, batch)
        part = row_logps(logits, batch)
    assert logits.shape == (int(batch["loss_mask"][:, 1:].sum()), model.config.vocab_size)  # one per scored token
    assert part.tolist() == pytest.approx(full.tolist(), rel=1e-10)
    # masks: prompt tokens are never scored, each response ends with EOS
    ids, mask = batch["input_ids"][0], batch["loss_mask"][0]
    assert ids[mask.bool()][-1].item() == tok.eos_token_id


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("max_length", [256, 32])
def test_packed_layout_scores_and_trains_exactly_like_padded_rows(tiny_model_path, smollm2_tokenizer,
                                                                   attn, max_length):
    """One packed row (each prompt once, responses seeing only their prompt) gives the same
    per-response log-probs and the same gradient as one padded row per response."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from selm_ray.learner.batching import collate, pack, row_logps
    from selm_ray.learner.engine import batch_logits
    from selm_ray.core.records import PreferencePair

    tok = smollm2_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float64, attn_implementation=attn)
    questions = ["Short question?", "A much longer question with many more words in it, and a clause?", "Why?"]
    pairs = []
    for i, q in enumerate(questions):
        text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        pair = PreferencePair(f"p{i}", "q", ({"role": "user", "content": q},), text, "A fine answer. " * (3 * i + 1),
                              "No.", 4.0, 1.0, 3, 2, 0, 0, ref_response="Greedy answer " * (i + 1))
        if i == 2:  # the engine's own token ids, as generated pairs carry them
            pair = dataclasses.replace(pair, prompt_ids=tuple(tok(text, add_special_tokens=False)["input_ids"]),
                                       chosen_ids=(5, 6, 7, 8), rejected_ids=(9,), ref_ids=(10, 11))
        pairs.append(pair)
    padded = collate(tok, pairs, max_length, with_ref_response=True)
    packed = pack(tok, pairs, max_length, with_ref_response=True)
    assert packed["truncated"] == padded["truncated"] == (max_length == 32)
    # one row per pair holding its prompt once: width = the longest [x y_w y_l y_ref]
    lengths, prompts = padded["attention_mask"].sum(1), padded["loss_mask"].argmax(1)
    n = len(pairs)
    pair_tokens = [int(prompts[k] + sum(lengths[r] - prompts[r] for r in (k, k + n, k + 2 * n))) for k in range(n)]
    assert packed["input_ids"].shape == (n, max(pair_tokens))
    assert packed["input_ids"].numel() < padded["input_ids"].numel()

    def logps_and_grad(batch):
        model.zero_grad()
        lp = row_logps(batch_logits(model, batch), batch)
        lp.sum().backward()
        return lp.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    lp_padded, grad_padded = logps_and_grad(padded)
    lp_packed, grad_packed = logps_and_grad(packed)
    assert lp_packed.tolist() == pytest.approx(lp_padded.tolist(), rel=1e-9)
    # float64, but RoPE tables are float32 in transformers: ~1e-8 relative is the floor here;
    # attending across responses or to the wrong positions changes these at the 1e-2 level
    assert torch.allclose(grad_packed, grad_padded, rtol=1e-6, atol=1e-7 * grad_padded.abs().max().item())


def test_packed_row_computes_a_repeated_response_once(tiny_model_path, smollm2_tokenizer):
    """y_ref that is also the chosen or the rejected answer (generation.ref_in_candidates) is not
    put in the packed row twice: the twin's logits score it, with the padded rows' log-probs and
    gradient (the y_ref row's gradient flows through the shared tokens)."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from selm_ray.learner.batching import collate, pack, row_logps
    from selm_ray.learner.engine import batch_logits
    from selm_ray.core.records import PreferencePair

    tok = smollm2_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float64)
    pairs = []
    for i, q in enumerate(["Short question?", "Why?", "What now?"]):
        text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        chosen, rejected = "A fine answer. " * (2 * i + 1), "No, " * (i + 1)
        ref = [chosen, rejected, "Something else."][i]  # y_ref = y_w, = y_l, apart
        pairs.append(PreferencePair(f"p{i}", "q", ({"role": "user", "content": q},), text, chosen, rejected,
                                    4.0, 1.0, 3, 2, 0, 0, ref_response=ref))
    ids = tuple(tok(pairs[1].prompt_text, add_special_tokens=False)["input_ids"])
    pairs[1] = dataclasses.replace(pairs[1], prompt_ids=ids, chosen_ids=(5, 6, 7), rejected_ids=(9, 10),
                                   ref_ids=(9, 10))  # engine ids: the twin is found by tokens
    padded = collate(tok, pairs, 256, with_ref_response=True)
    packed = pack(tok, pairs, 256, with_ref_response=True)
    lengths, prompts = padded["attention_mask"].sum(1), padded["loss_mask"].argmax(1)
    n = len(pairs)
    resp = [int(lengths[r] - prompts[r]) for r in range(3 * n)]
    row_tokens = [int(prompts[k]) + resp[k] + resp[k + n] + (resp[k + 2 * n] if k == 2 else 0) for k in range(n)]
    assert int((packed["position_ids"] > 0).sum(1).add(1).max()) == max(row_tokens)  # no second copy
    assert packed["also_row"].tolist() == [2 * n] * resp[0] + [2 * n + 1] * resp[n + 1]

    def logps_and_grad(batch):
        model.zero_grad()
        lp = row_logps(batch_logits(model, batch), batch)
        (lp * torch.arange(1, 3 * n + 1, dtype=lp.dtype)).sum().backward()  # every row weighs apart
        return lp.detach(), model.model.layers[0].mlp.up_proj.weight.grad.clone()

    lp_padded, grad_padded = logps_and_grad(padded)
    lp_packed, grad_packed = logps_and_grad(packed)
    assert lp_packed.tolist() == pytest.approx(lp_padded.tolist(), rel=1e-9)
    assert lp_packed[2 * n].item() == lp_packed[0].item() and lp_packed[2 * n + 1].item() == lp_packed[n + 1].item()
    assert torch.allclose(grad_packed, grad_padded, rtol=1e-6, atol=1e-7 * grad_padded.abs().max().item())


def test_bf16_autocast_learner_keeps_the_output_layer_float32_and_logps_close(tiny_model_path, smollm2_tokenizer):
    """learner.autocast bf16: the transformer body runs in bfloat16, the vocabulary projection and
    the parameters stay float32; log-probs move by bf16 rounding only, and a step still trains."""
    from selm_ray.core.config import LearnerConfig
    from selm_ray.core.records import PreferencePair
    from selm_ray.learner.batching import pack, row_logps
    from selm_ray.learner.engine import TrainEngine, cpu_has_native_bf16, load_models

    assert cpu_has_native_bf16("flags\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert not cpu_has_native_bf16("flags\t: fpu sse avx2\n") and not cpu_has_native_bf16("")
    tok = smollm2_tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "Why?"}], tokenize=False, add_generation_prompt=True)
    pairs = [PreferencePair("p", "q", ({"role": "user", "content": "Why?"},), text, "Because it is. " * 6,
                            "No.", 4.0, 1.0, 3, 2, 0, 0, ref_response="Greedy.")]
    batch = pack(tok, pairs, 256, with_ref_response=True)
    plain = TrainEngine(load_models(str(tiny_model_path), LearnerConfig(engine="ddp")), LearnerConfig(engine="ddp"), 1)
    cfg = LearnerConfig(engine="ddp", autocast="bf16")
    fast = TrainEngine(load_models(str(tiny_model_path), cfg), cfg, 1)
    assert fast.autocast and not plain.autocast
    logits = fast.forward_logits(batch)
    assert logits.dtype == torch.float32 and all(p.dtype == torch.float32 for p in fast.module.parameters())
    lp_fast, lp_plain = row_logps(logits, batch), row_logps(plain.forward_logits(batch), batch)
    # bf16 keeps ~3 significant digits per activation: a few hundredths of a nat per row here, not 0
    assert 0 < (lp_fast - lp_plain).abs().max().item() < 0.5
    assert (row_logps(fast.reference_logits(batch), batch) - lp_fast.detach()).abs().max().item() < 1e-4
    before = fast.module.model.layers[0].mlp.up_proj.weight.detach().clone()
    fast.set_lr(1e-3)
    assert fast.backward_step(-lp_fast.sum()) > 0
    assert not torch.equal(before, fast.module.model.layers[0].mlp.up_proj.weight)
