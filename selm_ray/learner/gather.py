"""Whole weights out of a (possibly ZeRO-3 partitioned) module, one module at a time.

Under ZeRO-3 each rank holds a slice of every parameter (``p.numel() == 0`` outside a gather);
``deepspeed.zero.GatheredParameters`` assembles a list of them on every rank (a collective: all
ranks must walk the modules in the same order) and partitions them again on exit. Gathering module
by module keeps at most one module's full weights in memory beside the partitions, which is what
lets the reference refresh and the publication of a 7B policy fit on the GPUs that train it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


def is_partitioned(params: list[torch.nn.Parameter]) -> bool:
    return any(hasattr(p, "ds_id") for p in params)


@contextlib.contextmanager
def gathered(params: list[torch.nn.Parameter]) -> Iterator[bool]:
    """Complete ``params`` for the duration (read only); yields whether a gather happened."""
    if not params or not is_partitioned(params):
        yield False
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield True


def gathered_modules(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """Each module of ``model`` with its own parameters (not its children's) complete."""
    for name, module in model.named_modules():
        with gathered(list(module.parameters(recurse=False))):
            yield name, module


def _own_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """What ``module.state_dict()`` holds of this module itself (persistent buffers only)."""
    for key, p in module._parameters.items():
        if p is not None:
            yield key, p
    for key, b in module._buffers.items():
        if b is not None and key not in module._non_persistent_buffers_set:
            yield key, b


def _merged_lora_weight(layer: Any) -> torch.Tensor:
    weight = layer.base_layer.weight
    if layer.disable_adapters:
        return weight.detach().clone()
    delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
    return (weight + delta).detach() if torch.is_tensor(delta) else weight.detach().clone()


def full_state_dict(model: torch.nn.Module, lora: bool = False, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """HF-named full weights on CPU (LoRA: merged into the base, out of place, under the base's
    own names). ``dtype``: cast to it on the way (what the engines load). Collective under ZeRO-3."""
    from_lora: Any = None
    if lora:
        from peft.tuners.lora import LoraLayer

        from_lora, model = LoraLayer, model.get_base_model()
    out: dict[str, torch.Tensor] = {}
    inside: str | None = None  # a LoRA layer whose subtree was already read whole
    with torch.no_grad():
        for name, module in model.named_modules():
            if inside is not None and name.startswith(inside + "."):
                continue
            prefix = f"{name}." if name else ""
            if from_lora is not None and isinstance(module, from_lora):
                inside = name
                with gathered(list(module.parameters())):
                    out[prefix + "weight"] = _cpu(_merged_lora_weight(module), dtype, copy=True)
                    bias = module.base_layer.bias
                    if bias is not None:
                        out[prefix + "bias"] = _cpu(bias, dtype, copy=True)
                continue
            with gathered(list(module.parameters(recurse=False))) as was_gathered:
                for key, t in _own_tensors(module):
                    # a gathered tensor is partitioned again on exit: it must be copied out
                    out[prefix + key] = _cpu(t, dtype, copy=was_gathered)
    return out


def _cpu(t: torch.Tensor, dtype: torch.dtype | None, copy: bool) -> torch.Tensor:
    t = t.detach()
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return t.to("cpu", dtype=dtype)
    return t.to("cpu", copy=copy)


def adapter_state_dict(peft_model: Any, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The active LoRA adapter's tensors on CPU, named as peft saves them
    (``base_model.model.<module>.lora_A.weight``: what vLLM's adapter loader reads). Gathered
    layer by layer under ZeRO-3 (collective): a few megabytes, whatever the base model's size."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            for adapter in module.active_adapters:
                if adapter not in module.lora_A:
                    continue
                pair = (("lora_A", module.lora_A[adapter].weight), ("lora_B", module.lora_B[adapter].weight))
                with gathered([p for _, p in pair]):
                    for part, weight in pair:
                        out[f"{name}.{part}.weight"] = _cpu(weight, dtype, copy=True)
    return out


def without_tied_copies(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` less the second name of each tied pair (an output layer that IS the embedding): one
    storage, saved and sent once, as transformers saves it; loaders (transformers, vLLM) tie it
    again from the config. A gathered state dict holds it twice."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the base's names
    tied = getattr(base, "_tied_weights_keys", None)
    if not (getattr(base.config, "tie_word_embeddings", False) and isinstance(tied, dict)):
        return sd
    return {k: v for k, v in sd.items() if not (k in tied and tied[k] in sd)}
