"""Dry runs of the three paper recipes (`selm-ray train CONFIG --dry-run`): tiny models of their
families (Mistral for Zephyr, Llama for Llama-3 and Llama-2), bfloat16 learner and engines, DeepSpeed
ZeRO-3 with two learner workers, PairRM ranking or the self-judge in generate mode, prompt creation;
real Ray, vLLM and DeepSpeed on CPU. What a GPU would change is the kernels, not these paths.

Ray's CPUs: the session's head (tests/conftest.py) advertises more CPUs than the machine has, and
the dry run asks 0.25 per actor, so two learner workers, one generator and one judge fit."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from selm_ray.core.config import load_config
from selm_ray.core.dryrun import dry_run_overrides, tiny_alias

ROOT = Path(__file__).resolve().parents[2]


def _dry_config(recipe, ray_address, *extra):
    path = ROOT / f"jobs/configs/{recipe}.yaml"
    return load_config(path, [*dry_run_overrides(load_config(path)), f"cluster.address={ray_address}", *extra])


def _plain_checksums(ckpt):
    """The sums an engine serving exactly ``ckpt`` reports (weights_checksum: its non-empty params).
    Where vLLM on CPU repacks bf16 linear layers into its GEMM kernels (CPUs with native bf16,
    AVX-512 BF16 / AMX) their weights are empty and only embeddings, norms and an untied output
    layer count; on a CPU without (AVX2 only) every layer stays plain and all of them count."""
    tensors = load_file(Path(ckpt) / "model.safetensors")
    tied = json.loads((Path(ckpt) / "config.json").read_text()).get("tie_word_embeddings", False)
    kept = ("embed_tokens", "norm") if tied else ("embed_tokens", "norm", "lm_head")
    repacked = sum(t.double().sum().item() for k, t in tensors.items() if any(n in k for n in kept))
    return repacked, sum(t.double().sum().item() for t in tensors.values())


@pytest.mark.parametrize("recipe,family,judge", [
    ("zephyr-7b-selm", "MistralForCausalLM", "pairrm"),
    ("llama3-8b-selm", "LlamaForCausalLM", "pairrm"),
    ("self-rewarding", "LlamaForCausalLM", "self:generate"),
])
def test_paper_recipe_dry_run(recipe, family, judge, tmp_path, ray_address):
    from selm_ray.run import runner

    cfg = _dry_config(recipe, ray_address)
    assert (cfg.model.dtype, cfg.learner.engine, cfg.learner.zero_stage, cfg.learner.num_workers) == \
        ("bfloat16", "deepspeed", 3, 2)  # the recipe's own settings survive the shrinking
    s = runner.train(cfg, tmp_path / "run")
    assert s["learner_error"] is None
    assert s["pairs"] > 0 and s["policy_version"] == cfg.schedule.iterations
    assert s["precision"]["learner"] == {"weights": "bfloat16", "compute": "bfloat16", "master": "float32",
                                         "device": "cpu", "published": "bfloat16"}
    assert s["precision"]["engines"] == ["bfloat16"]
    ckpt = Path(s["checkpoint"])
    assert json.loads((ckpt / "config.json").read_text())["architectures"] == [family]
    # bf16 published, carried as bits, reloaded: the generator serves exactly the saved weights
    served = s["generators"][0]["weights_checksum"]
    assert any(served == pytest.approx(c, rel=1e-6) for c in _plain_checksums(ckpt)), (served, _plain_checksums(ckpt))
    assert s["judges"][0]["name"]  # one judge pool member...
    assert all(j.get("dtype") == "bfloat16" for j in s["judges"])  # ...in the run's dtype
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["version"] for m in metrics if m.get("event") == "iteration_end"] == [1, 2]
    if judge == "pairrm":
        assert s["judges"][0]["judge_stats"]["mode"] == "all"
    else:  # Self-Rewarding: the policy judges (following it) and writes new prompts
        assert s["judges"][0]["version"] == cfg.schedule.iterations
        assert s["prompt_creation"]["accepted"] > 0
        assert s["judges"][0]["judge_stats"]["forced_scores"] > 0  # a random model: scores forced


def test_dry_run_cli_and_a_tokenizer_that_splits_digits(ray_address):
    """`selm-ray train CONFIG --dry-run` prints what it changed; on the Zephyr recipe with the
    expected-score judge it stops before any actor starts: Mistral's SentencePiece tokenizer reads
    "4" as two tokens (the generate-mode dry run above works with the same kind of tokenizer)."""
    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "train", "jobs/configs/zephyr-7b-selm.yaml",
                          "--dry-run", "--set", "judge.kind=self", "--set", "judge.mode=expected",
                          "--set", f"cluster.address={ray_address}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "dry run: --set run.name=zephyr-7b-selm-dry-run --set model.path=tiny-mistral" in out.stdout
    assert "--set cluster.learner_gpus=0" in out.stdout
    assert "judge.ranker" not in out.stdout  # the user's judge.kind=self is what was shrunk
    assert ("selm-ray: error: judge.mode: expected needs each score digit to be one token; '0' is 2 tokens"
            in out.stderr and "(use judge.mode: generate)" in out.stderr), out.stderr[-2000:]


def test_dry_run_family_by_name_or_config(tmp_path):
    assert [tiny_alias(p) for p in ("HuggingFaceH4/mistral-7b-sft-beta", "HuggingFaceH4/zephyr-7b-beta",
                                    "meta-llama/Llama-2-70b-chat-hf", "meta-llama/Meta-Llama-3-8B-Instruct")] == \
        ["tiny-mistral", "tiny-mistral", "tiny-llama-sp", "tiny-llama"]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    assert tiny_alias(str(tmp_path)) == "tiny-mistral"
    cfg = load_config(ROOT / "jobs/configs/llama3-8b-selm.yaml")
    sets = dict(o.split("=", 1) for o in dry_run_overrides(cfg))
    assert sets["data.source"] == "seed"  # a hub dataset: the bundled prompts instead
    assert all(sets[f"cluster.{p}_gpus"] == "0" for p in ("generator", "judge", "learner"))
