"""``selm-ray train CONFIG --dry-run``: the same run, shrunk to run on one CPU machine in minutes.

What changes: the model (a tiny random one of the same architecture family and tokenizer kind),
the judge's own model (a tiny ranker / reward model of the same kind), the prompts (the bundled
ones, when the config names a hub dataset), every size (prompts, tokens, batch, workers, engines)
and the hardware (no GPUs, fractional CPUs, no custom resource slots). What stays: the schedule,
the loss, dtype, DeepSpeed engine and ZeRO stage, LoRA, the judge kind and mode, prompt creation,
the SFT stage: the code paths the real run takes, CUDA kernels aside.

The result is a list of ``--set`` overrides applied over the config, so the shrunk run is
validated exactly as the real one, and the overrides are printed for the user to read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# (substring of the model name, lower case) -> tiny alias (engines/models.py)
FAMILIES = (("mistral", "tiny-mistral"), ("zephyr", "tiny-mistral"), ("llama-2", "tiny-llama-sp"),
            ("llama2", "tiny-llama-sp"), ("llama", "tiny-llama"))
DEFAULT_TINY = "tiny-llama"


def tiny_alias(model_path: str) -> str:
    """The tiny model standing in for ``model_path``: by the name (hub ids, folders), else by a
    local folder's config.json ``model_type``."""
    name = model_path.lower()
    for key, alias in FAMILIES:
        if key in name:
            return alias
    config = Path(model_path).expanduser() / "config.json"
    if config.is_file():
        import json

        kind = json.loads(config.read_text()).get("model_type", "")
        return "tiny-mistral" if kind == "mistral" else DEFAULT_TINY
    return DEFAULT_TINY


def _is_local_data(source: str) -> bool:
    return source == "seed" or Path(source).expanduser().is_file()


def dry_run_overrides(cfg: Any) -> list[str]:
    """``--set`` overrides that shrink the run ``cfg`` (a loaded Config) to a CPU dry run."""
    sets = {
        "run.name": f"{cfg.run.name}-dry-run",
        "model.path": tiny_alias(cfg.model.path),
        "model.max_model_len": 512,
        "generation.max_new_tokens": 16,
        "judge.max_new_tokens": 24,
        "learner.batch_size": 2,
        "learner.num_workers": min(2, cfg.learner.num_workers),
        "learner.max_length": 256,
        "schedule.prompts_per_iteration": 4,
        "schedule.iterations": min(2, cfg.schedule.iterations),
        "cluster.num_generators": 1,
        "cluster.num_judges": 1,
        "cluster.tensor_parallel_size": 1,
        "cluster.threads_per_actor": 1,
        "cluster.learner_threads": 1,
        "cluster.kv_cache_gib": 1,
    }
    if not _is_local_data(cfg.data.source):
        sets.update({"data.source": "seed", "data.split": "train"})
    if cfg.schedule.mode == "async":
        sets["schedule.sync_every"] = 1
    for pool in ("generator", "judge", "learner"):
        # fractional CPUs: the shrunk pools share the machine's cores as the real ones share nodes
        sets[f"cluster.{pool}_gpus"] = 0
        sets[f"cluster.{pool}_cpus"] = 0.25
        sets[f"cluster.{pool}_slot"] = "null"
    j = cfg.judge
    if j.kind == "pairwise_rm":
        sets["judge.ranker"] = "tiny-pairrm"
    if j.kind == "reward_model":
        sets["judge.reward_model"] = "tiny-rm"
    if j.kind == "self" and j.mode == "generate":
        sets["judge.force_score"] = "true"  # a random tiny model never writes 'Score: N' itself
    if j.num_samples > 2:
        sets["judge.num_samples"] = 2
        sets["judge.min_valid"] = min(j.min_valid, 2)
    if cfg.create.enabled:
        sets.update({"create.max_new_tokens": 32, "create.shots": min(cfg.create.shots, 4)})
    if cfg.sft.enabled:
        sets["sft.epochs"] = 1
    if cfg.eval.prompts:
        sets["eval.max_prompts"] = 2
    return [f"{k}={v}" for k, v in sets.items()]
