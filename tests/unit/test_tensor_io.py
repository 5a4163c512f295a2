"""Checkpoint files written past the page cache: standard safetensors, exact bytes, any sizes."""
import errno
import os

import pytest
import torch
from safetensors.torch import load_file

from selm_ray.learner import tensor_io


def _tensors():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(tensor_io.CHUNK // 4 + 12345, generator=g)  # crosses a buffer boundary, odd size
    return {
        "big": big,
        "bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16),
        "ints": torch.arange(7, dtype=torch.int64),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "empty2": torch.zeros(0),
        "strided": torch.arange(12.0).reshape(3, 4).t(),  # not contiguous
    }


def _check(path, want):
    got = load_file(str(path))
    assert set(got) == set(want)
    for k, t in want.items():
        assert got[k].dtype == t.dtype and got[k].shape == t.shape and torch.equal(got[k], t), k


def test_safetensors_round_trip_exact_size(tmp_path):
    want = _tensors()
    path = tensor_io.save_safetensors(want, tmp_path / "w.safetensors", {"format": "pt"})
    _check(path, want)
    header = int.from_bytes(path.read_bytes()[:8], "little")
    data = sum(t.numel() * t.element_size() for t in want.values())
    assert os.path.getsize(path) == 8 + header + data  # direct writes' padding truncated away


def test_falls_back_to_buffered_writes_where_o_direct_is_refused(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return real_open(path, flags, *a)

    monkeypatch.setattr(tensor_io.os, "open", no_direct)
    want = _tensors()
    _check(tensor_io.save_safetensors(want, tmp_path / "w.safetensors"), want)


def test_tied_views_written_once_under_the_first_name(tmp_path):
    w = torch.randn(4, 3)
    path = tensor_io.save_safetensors({"embed": w, "head": w, "other": w[1:]}, tmp_path / "t.safetensors")
    got = load_file(str(path))
    assert set(got) == {"embed", "other"} and torch.equal(got["embed"], w) and torch.equal(got["other"], w[1:])
    with pytest.raises(TypeError, match="x has dtype"):
        tensor_io.save_safetensors({"x": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.safetensors")


def test_optimizer_state_resumes_bit_for_bit(tmp_path):
    torch.manual_seed(0)

    def model_and_opt():
        m = torch.nn.Linear(6, 3)
        return m, torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.8, 0.95))

    def step(m, opt, seed):
        x = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed))
        m(x).square().sum().backward()
        opt.step()
        opt.zero_grad()

    a, opt_a = model_and_opt()
    step(a, opt_a, 1)
    tensor_io.save_state(opt_a.state_dict(), tmp_path, "optimizer")
    b, opt_b = model_and_opt()
    b.load_state_dict(a.state_dict())
    loaded = tensor_io.load_state(tmp_path, "optimizer")
    assert loaded["param_groups"][0]["betas"] == (0.8, 0.95)  # tuples stay tuples
    opt_b.load_state_dict(loaded)
    step(a, opt_a, 2)
    step(b, opt_b, 2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert tensor_io.has_state(tmp_path, "optimizer") and not tensor_io.has_state(tmp_path, "other")


def test_save_model_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    # as a gathered state dict gives them: tied weights as two separate copies
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    out = tensor_io.save_model(model, tmp_path / "m", sd)
    assert "lm_head.weight" not in load_file(str(out / "model.safetensors"))
    back = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def test_files_written_at_the_same_time_each_get_their_own_buffer(tmp_path):
    # a checkpoint writes its weights and its optimizer state at once (two bounce buffers in use)
    from concurrent.futures import ThreadPoolExecutor

    from safetensors.torch import load_file

    from selm_ray.learner.tensor_io import CHUNK, save_safetensors

    g = torch.Generator().manual_seed(3)
    sets = [{f"w{i}": torch.randn(CHUNK // 4 + 1000 * (k + 1), generator=g) for i in range(3)} for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: save_safetensors(sets[k], tmp_path / f"f{k}.safetensors"), range(4)))
    for k, tensors in enumerate(sets):
        back = load_file(str(tmp_path / f"f{k}.safetensors"))
        assert set(back) == set(tensors) and all(torch.equal(back[n], t) for n, t in tensors.items())
