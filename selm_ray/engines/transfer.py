"""Weights from the learner to the engines, through vLLM's weight-transfer API.

The learner puts one version's full state dict in Ray's object store as numpy arrays (read
zero-copy by every engine on the node). An engine hands the arrays to vLLM with its own
weight-update calls (``start_weight_update`` / ``update_weights`` / ``finish_weight_update``),
which run the backend configured at the engine's start: ours (``selm_objstore``, registered
here under vLLM's ``WeightTransferEngineFactory``) takes the tensors from the update itself and
loads them layer by layer, the same reload path vLLM's own IPC backend takes on GPU.

A LoRA run with ``learner.lora_publish: adapter`` sends only the adapter's tensors (PackedWeights
with ``adapter`` set); the engine serves them over its base weights (engines/adapters.py).

bfloat16 has no numpy dtype: its tensors travel as int16 bit patterns with the dtype name beside
them, and are viewed back on arrival (no conversion, no rounding).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

BACKEND = "selm_objstore"

_BIT_VIEWS = {torch.bfloat16: torch.int16}  # dtypes numpy lacks -> a same-width integer view


@dataclass(frozen=True)
class PackedWeights:
    """One version's weights as numpy arrays (what goes in the object store)."""
    arrays: dict[str, np.ndarray]
    dtypes: dict[str, str] = field(default_factory=dict)  # name -> torch dtype of a bit-viewed array
    # set: the arrays are a LoRA adapter (peft names) with this peft config, served over the base
    adapter: dict[str, Any] | None = None

    def tensors(self) -> list[tuple[str, torch.Tensor]]:
        return [(k, unpack_tensor(a, self.dtypes.get(k))) for k, a in self.arrays.items()]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def pack_state_dict(sd: dict[str, torch.Tensor], adapter: dict[str, Any] | None = None) -> PackedWeights:
    arrays, dtypes = {}, {}
    for k, v in sd.items():
        v = v.detach().to("cpu").contiguous()
        view = _BIT_VIEWS.get(v.dtype)
        if view is not None:
            dtypes[k] = str(v.dtype).removeprefix("torch.")
            v = v.view(view)
        arrays[k] = v.numpy()
    return PackedWeights(arrays, dtypes, adapter)


def unpack_tensor(array: np.ndarray, dtype: str | None) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        # object-store arrays are read-only views; vLLM copies them into its own parameters
        warnings.simplefilter("ignore", UserWarning)
        t = torch.as_tensor(array)
    return t.view(getattr(torch, dtype)) if dtype else t


def as_packed(weights: Any) -> PackedWeights:
    """A PackedWeights, or a plain {name: array | tensor} (older callers, tests) wrapped as one."""
    if isinstance(weights, PackedWeights):
        return weights
    return pack_state_dict({k: unpack_tensor(v, None) if isinstance(v, np.ndarray) else v
                            for k, v in weights.items()})


# -- the vLLM side ------------------------------------------------------------------------------

def register() -> None:
    """Register our backend with vLLM (idempotent). Also a ``vllm.general_plugins`` entry point,
    so that engine processes vLLM starts itself (multiprocess engines, TP workers) know it too."""
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, __name__, "ObjectStoreTransferEngine")


def _engine_class() -> type:
    from vllm.distributed.weight_transfer.base import (WeightTransferEngine, WeightTransferInitInfo,
                                                       WeightTransferUpdateInfo)

    @dataclass
    class InitInfo(WeightTransferInitInfo):
        pass  # no rendezvous: the tensors ride each update

    @dataclass
    class UpdateInfo(WeightTransferUpdateInfo):
        names: list[str]
        tensors: list[Any]  # torch tensors (in-process engine) or arrays, in the order of names

        def __post_init__(self) -> None:
            if len(self.names) != len(self.tensors):
                raise ValueError(f"update_info: {len(self.names)} names for {len(self.tensors)} tensors")

    class ObjectStoreTransferEngine(WeightTransferEngine[InitInfo, UpdateInfo]):
        """Receives whole tensors in the update itself (CPU engines, and any engine the learner
        reaches through Ray's object store); loads them with vLLM's layerwise reload."""
        init_info_cls = InitInfo
        update_info_cls = UpdateInfo

        def init_transfer_engine(self, init_info: InitInfo) -> None:
            pass

        def start_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

            initialize_layerwise_reload(self.model)

        def receive_weights(self, update_info: UpdateInfo) -> None:
            tensors = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in update_info.tensors]
            self.model.load_weights(list(zip(update_info.names, tensors)))

        def finish_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

            finalize_layerwise_reload(self.model, self.model_config)

        def update_weights(self, update_info: dict[str, Any]) -> None:
            self.receive_weights(self.parse_update_info(update_info))  # CPU: nothing to synchronize

        def shutdown(self) -> None:
            pass

    return ObjectStoreTransferEngine


def __getattr__(name: str) -> Any:  # the class is built on first use: vLLM is imported only then
    if name == "ObjectStoreTransferEngine":
        cls = _engine_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
