"""LoRA adapters as vLLM serves them: which models can, the rank it needs, and the folder it reads.

A LoRA run can send the engines only its adapter each version (megabytes) instead of the whole
model with the adapter merged in: the engines keep the base weights and apply the adapter with
vLLM's LoRA kernels (``enable_lora``; on CPU its punica CPU wrapper). vLLM loads an adapter from a
folder in peft's layout (``adapter_config.json`` + ``adapter_model.safetensors``), so the engine
writes what it receives into a folder of its own, on its own node, and loads that.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CHECKPOINT_DIR = "adapter"  # a LoRA checkpoint's adapter, beside its merged weights
_VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks


@dataclass(frozen=True)
class PublishChoice:
    mode: str  # "adapter" | "merged"
    reason: str


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds ``rank``."""
    for r in _VLLM_RANKS:
        if r >= rank:
            return r
    raise ValueError(f"learner.lora_rank: {rank} is above vLLM's largest max_lora_rank {_VLLM_RANKS[-1]}")


def architectures(model_path: str) -> list[str]:
    cfg = Path(model_path) / "config.json"
    return list(json.loads(cfg.read_text()).get("architectures") or []) if cfg.is_file() else []


def vllm_supports_lora(arch: str) -> bool:
    from vllm.model_executor.models import ModelRegistry
    from vllm.model_executor.models.interfaces import supports_lora

    cls = ModelRegistry._try_load_model_cls(arch)
    return cls is not None and supports_lora(cls)


def choose_publish(configured: str, lora_rank: int, model_path: str,
                   supports: Any = vllm_supports_lora) -> PublishChoice:
    """What a run publishes (``learner.lora_publish`` resolved against the model)."""
    if lora_rank == 0:
        return PublishChoice("merged", "full fine-tuning: the whole policy")
    if configured == "merged":
        return PublishChoice("merged", "learner.lora_publish: merged")
    archs = architectures(model_path)
    able = [a for a in archs if supports(a)]
    if able:
        return PublishChoice("adapter", f"LoRA rank {lora_rank}: only the adapter (vLLM serves LoRA for {able[0]})")
    why = f"vLLM has no LoRA support for {archs or 'this model (no architectures in config.json)'}"
    if configured == "adapter":
        raise ValueError(f"learner.lora_publish: adapter, but {why} ({model_path}); use lora_publish: merged")
    return PublishChoice("merged", f"LoRA rank {lora_rank}: merged weights ({why})")


def adapter_config(peft_config: Any) -> dict[str, Any]:
    """peft's LoraConfig as the JSON its own save_pretrained writes (sets as sorted lists)."""
    data = peft_config.to_dict()
    return json.loads(json.dumps(data, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o)))


def write_adapter(folder: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """An adapter folder vLLM and peft both load (tensor names as peft saves them)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return folder


ENGINE_FOLDER_PREFIX = "selm-ray-adapter-"


def engine_adapter_root() -> Path:
    """A new folder for one engine's served adapters, named with the engine's pid; first, the folders
    of engines whose process is gone are removed (an engine killed by its run or by Ray never runs
    a cleanup of its own, and each run on the node would otherwise leave one behind)."""
    import os
    import tempfile

    sweep_engine_adapter_folders(Path(tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix=f"{ENGINE_FOLDER_PREFIX}{os.getpid()}-"))


def sweep_engine_adapter_folders(parent: Path) -> list[Path]:
    """Remove the engine adapter folders under ``parent`` whose owner pid no longer runs; returns them."""
    import os
    import shutil

    removed = []
    for folder in parent.glob(f"{ENGINE_FOLDER_PREFIX}*-*"):
        pid = folder.name[len(ENGINE_FOLDER_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue  # not ours to judge
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's process: EPERM below)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():  # another user's folder stays where it is
            removed.append(folder)
    return removed
