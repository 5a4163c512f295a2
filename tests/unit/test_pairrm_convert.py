"""llm-blender's own PairRM class and ours give the same logits on the same weights, and its
checkpoint folder converts into one our judge loads (`selm-ray model convert-pairrm`)."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from selm_ray.engines.pairrm import MARKERS, PairRanker, build_tiny_pairrm, convert_llm_blender


def _blender_class():
    """llm_blender.pair_ranker.pairrm.DebertaV2PairRM, read from its own file: the package's
    __init__ imports its whole ensembling stack (and dependencies this project does not pin)."""
    spec = importlib.util.find_spec("llm_blender")
    assert spec is not None, "llm-blender is installed by `make test` (pip install --no-deps llm-blender==0.0.2)"
    path = spec.submodule_search_locations[0] + "/pair_ranker/pairrm.py"
    mod_spec = importlib.util.spec_from_file_location("llm_blender_pairrm", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.DebertaV2PairRM


@pytest.fixture(scope="module")
def blender_folder(smollm2_tokenizer, tmp_path_factory):
    """A tiny random DebertaV2PairRM saved the way llm-blender saves it (pytorch_model.bin)."""
    from transformers import AutoTokenizer, DebertaV2Config

    base = build_tiny_pairrm(tmp_path_factory.mktemp("tiny"), seed=0, tokenizer=smollm2_tokenizer)
    tok = AutoTokenizer.from_pretrained(base)
    cfg = DebertaV2Config.from_pretrained(base)
    ids = [tok.convert_tokens_to_ids(m) for m in MARKERS]
    cfg.update({"n_tasks": 1, "drop_out": 0.05, "sep_token_id": tok.eos_token_id, "source_prefix_id": ids[0],
                "cand_prefix_id": ids[1], "cand1_prefix_id": ids[1], "cand2_prefix_id": ids[2]})
    torch.manual_seed(1)
    theirs = _blender_class()(cfg).eval()
    src = tmp_path_factory.mktemp("blender")
    theirs.save_pretrained(src)
    # as the published PairRM ships its weights: a pickled state dict (transformers 5 writes safetensors)
    (src / "model.safetensors").unlink()
    torch.save(theirs.state_dict(), src / "pytorch_model.bin")
    tok.save_pretrained(src)
    return src, theirs


def test_llm_blender_pairrm_and_ours_give_the_same_logits(blender_folder, tmp_path):
    src, theirs = blender_folder
    assert (src / "pytorch_model.bin").is_file()
    ranker = PairRanker.load(convert_llm_blender(src, tmp_path / "ours", 96, 48))
    items = [("Name a colour.", "Blue.", "I would rather not say anything about colours at all."),
             ("Add 2 and 3.", "5", "The answer is six, " * 20)]  # the second one is truncated
    encoded = [ranker.encode_one(*it) for it in items]
    ids, mask, positions = ranker._batch(encoded)
    with torch.no_grad():
        ours = ranker.module(ids, mask, positions)
        want = theirs(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    assert ours.abs().min() > 1e-4  # a real comparison, not two zeros
    assert json.loads((tmp_path / "ours" / "pairrm_config.json").read_text())["candidate_max_length"] == 48


def test_convert_names_what_is_wrong(blender_folder, tmp_path):
    src, _ = blender_folder
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "cand2_prefix_id"}))
    with pytest.raises(ValueError, match="no integer cand2_prefix_id"):
        convert_llm_blender(bad, tmp_path / "o1")
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="neither model.safetensors nor pytorch_model.bin"):
        convert_llm_blender(bad, tmp_path / "o2")
    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "model", "convert-pairrm", str(bad),
                          str(tmp_path / "o3")], capture_output=True, text=True)
    assert out.returncode == 2 and "neither model.safetensors nor pytorch_model.bin" in out.stderr
