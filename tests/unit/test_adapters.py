"""What a LoRA run publishes (learner.lora_publish resolved against the model) and the adapter
folder it writes: the one peft itself loads."""
import json

import pytest
import torch

from selm_ray.engines.adapters import adapter_config, choose_publish, vllm_max_lora_rank, write_adapter


def _model_dir(tmp_path, arch):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [arch]}))
    return str(tmp_path)


def test_auto_publishes_the_adapter_only_where_the_engines_serve_lora(tmp_path):
    able = {"LlamaForCausalLM"}.__contains__
    assert choose_publish("auto", 4, _model_dir(tmp_path, "LlamaForCausalLM"), able).mode == "adapter"
    fallback = choose_publish("auto", 4, _model_dir(tmp_path, "GPT2LMHeadModel"), able)
    assert fallback.mode == "merged" and "GPT2LMHeadModel" in fallback.reason
    assert choose_publish("merged", 4, _model_dir(tmp_path, "LlamaForCausalLM"), able).mode == "merged"
    assert choose_publish("auto", 0, _model_dir(tmp_path, "LlamaForCausalLM"), able).mode == "merged"
    with pytest.raises(ValueError, match="lora_publish: adapter.*GPT2LMHeadModel"):
        choose_publish("adapter", 4, _model_dir(tmp_path, "GPT2LMHeadModel"), able)


def test_vllm_rank_is_the_smallest_it_accepts():
    assert [vllm_max_lora_rank(r) for r in (1, 4, 8, 9, 64)] == [1, 8, 8, 16, 64]
    with pytest.raises(ValueError, match="lora_rank"):
        vllm_max_lora_rank(1024)


def test_adapter_config_rejects_adapter_without_lora(tmp_path):
    from selm_ray.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="lora_publish"):
        load_config(None, ["learner.lora_publish=adapter"])


def test_written_adapter_loads_in_peft_with_the_same_outputs(tmp_path, tiny_model_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from selm_ray.learner.gather import adapter_state_dict

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)  # peft starts B at 0: a fresh adapter changes nothing
    tensors = adapter_state_dict(model)
    assert tensors and all("lora_A" in k or "lora_B" in k for k in tensors)
    folder = write_adapter(tmp_path / "a", tensors, adapter_config(model.peft_config["default"]))
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), str(folder))
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_path)(input_ids=ids).logits
    assert not torch.allclose(base, model(input_ids=ids).logits, atol=1e-3)


def test_engine_adapter_folders_of_gone_engines_are_swept(tmp_path):
    """An engine's adapter folder carries its pid; a new engine removes those whose process is gone
    (a killed engine cleans up nothing) and leaves live engines' folders and anything else alone."""
    import os
    import subprocess
    import sys

    from selm_ray.engines.adapters import ENGINE_FOLDER_PREFIX, sweep_engine_adapter_folders

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{ENGINE_FOLDER_PREFIX}{gone.pid}-abc"
    live = tmp_path / f"{ENGINE_FOLDER_PREFIX}{os.getpid()}-def"
    other = tmp_path / f"{ENGINE_FOLDER_PREFIX}old_name"
    for folder in (dead, live, other):
        (folder / "a1").mkdir(parents=True)
    assert sweep_engine_adapter_folders(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists()
