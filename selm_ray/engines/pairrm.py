"""A pairwise ranker laid out like llm-blender's PairRM (DeBERTa-v3 encoder + a small head).

PairRM (Jiang et al., 2023; the SELM paper's ranker) reads one text
``<|source|> x <|candidate1|> a <|candidate2|> b`` and says how likely answer a beats answer b.
:class:`PairRMModule` is our own ``torch.nn.Module`` with that layout, so a checkpoint with PairRM's keys
loads into it; nothing of llm-blender is imported.

A ranker folder holds:
- ``config.json``: the encoder's ``DebertaV2Config`` (transformers' own format);
- ``pairrm_config.json``: the rest of the layout (:class:`PairRMLayout`: head size, marker token
  ids, length limits), read strictly;
- ``model.safetensors``: the weights, keyed as in PairRM:
  ``pretrained_model.*``  the ``DebertaV2Model`` encoder, its own key names below that prefix;
  ``head_layer.1.*``      Linear(2 * hidden_size -> head_hidden_size), applied to the concatenated
                          last-layer states at the source marker and at one candidate's marker;
  ``head_layer.4.*``      Linear(head_hidden_size -> n_tasks); (0 and 3 are Dropout, 2 is Tanh);
- the tokenizer, with the three marker tokens in its vocabulary.

The head scores (source, a) and (source, b) separately; the pair's logit is the mean over tasks
of score(a) - score(b), and P(a > b) = sigmoid(logit). Inputs are built like PairRM's own
tokenisation: each part is ``tokenizer.encode(marker + text)`` truncated on its own, the source to
``source_max_length`` and each candidate to half of what the source left of
``source_max_length + 2 * candidate_max_length``. For llm-blender/PairRM itself: hidden and head
size 1024, n_tasks 1, limits 1224 / 412 (as its model card's tokenisation uses); its weights come
as a PyTorch .bin and must be re-saved as safetensors under these names.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers import DebertaV2Model

CONFIG_FILE = "pairrm_config.json"
WEIGHTS_FILE = "model.safetensors"
MARKERS = ("<|source|>", "<|candidate1|>", "<|candidate2|>")
# Buffers older transformers saved with the encoder; they hold no learned value (arange indices).
IGNORED_KEYS = frozenset({"pretrained_model.embeddings.position_ids"})


@dataclass(frozen=True)
class PairRMLayout:
    """What ``pairrm_config.json`` says about a ranker, beyond the encoder's own config."""

    hidden_size: int
    head_hidden_size: int
    source_token_id: int
    candidate1_token_id: int
    candidate2_token_id: int
    n_tasks: int = 1
    dropout: float = 0.0  # only used in training; kept so a checkpoint's config round-trips
    source_max_length: int = 128
    candidate_max_length: int = 128

    @property
    def marker_ids(self) -> tuple[int, int, int]:
        return self.source_token_id, self.candidate1_token_id, self.candidate2_token_id

    @classmethod
    def read(cls, path: Path) -> "PairRMLayout":
        if not path.is_file():
            raise ValueError(f"{path.parent}: no {CONFIG_FILE} (not a PairRM-layout ranker folder)")
        data = json.loads(path.read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(f"{path}: unknown keys {unknown}, missing keys {missing}")
        bad = [k for k, v in data.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
        if bad:
            raise ValueError(f"{path}: {bad} must be numbers")
        return cls(**data)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


class PairRMModule(nn.Module):
    """Encoder + head; state_dict keys as in PairRM (see the module docstring)."""

    def __init__(self, encoder_config: Any, layout: PairRMLayout) -> None:
        super().__init__()
        self.pretrained_model = DebertaV2Model(encoder_config)
        h, d = layout.hidden_size, layout.dropout
        # the same Sequential as PairRM's, so the Linear layers keep their key indices 1 and 4
        self.head_layer = nn.Sequential(nn.Dropout(d), nn.Linear(2 * h, layout.head_hidden_size), nn.Tanh(),
                                        nn.Dropout(d), nn.Linear(layout.head_hidden_size, layout.n_tasks))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of candidate1 beating candidate2; ``positions`` (B, 3): the markers' positions."""
        states = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(states.shape[0], device=states.device)
        src, c1, c2 = (states[rows, positions[:, k]] for k in range(3))
        left = self.head_layer(torch.cat([src, c1], dim=-1))
        right = self.head_layer(torch.cat([src, c2], dim=-1))
        return (left - right).mean(dim=-1)


def check_keys(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str) -> None:
    """Strict: every key of the layout present with its shape, nothing else (IGNORED_KEYS aside)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected) - IGNORED_KEYS)
    shapes = sorted(f"{k} {found[k]} (layout: {expected[k]})" for k in set(expected) & set(found)
                    if tuple(found[k]) != tuple(expected[k]))
    if missing or unexpected or shapes:
        parts = [f"{what}: {_few(keys)}" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)) if keys]
        raise ValueError(f"{where} does not match the PairRM layout; " + "; ".join(parts))


def _few(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


class PairRanker:
    """P(a beats b) for (source, a, b) triples, in batches. Load a folder with :meth:`load`."""

    def __init__(self, module: Any, tokenizer: Any, layout: PairRMLayout, batch_size: int = 16) -> None:
        self.module, self.tokenizer, self.layout = module.eval(), tokenizer, layout
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def load(cls, path: str | Path, batch_size: int = 16, dtype: str = "float32",
             device: str = "cpu") -> "PairRanker":
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, DebertaV2Config

        folder = Path(path)
        layout = PairRMLayout.read(folder / CONFIG_FILE)
        encoder_cfg = DebertaV2Config.from_pretrained(folder)
        if encoder_cfg.hidden_size != layout.hidden_size:
            raise ValueError(f"{folder}: {CONFIG_FILE} says hidden_size {layout.hidden_size}, config.json "
                             f"{encoder_cfg.hidden_size}")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        _check_markers(tokenizer, layout, folder)
        weights_path = folder / WEIGHTS_FILE
        if not weights_path.is_file():
            raise ValueError(f"{folder}: no {WEIGHTS_FILE}")
        weights = load_file(str(weights_path))
        module = PairRMModule(encoder_cfg, layout).to(torch.float32)
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        check_keys(expected, {k: tuple(v.shape) for k, v in weights.items()}, str(weights_path))
        module.load_state_dict({k: v for k, v in weights.items() if k not in IGNORED_KEYS}, strict=True)
        return cls(module.to(device=device, dtype=getattr(torch, dtype)), tokenizer, layout, batch_size)

    # -- inputs -----------------------------------------------------------------------------------
    def _segment(self, marker: str, text: str, limit: int) -> list[int]:
        return self.tokenizer.encode(marker + text, max_length=max(2, limit), truncation=True)

    def encode_one(self, source: str, a: str, b: str) -> tuple[list[int], tuple[int, int, int]]:
        """Token ids of one comparison and the positions of its three markers."""
        lay = self.layout
        src = self._segment(MARKERS[0], source, lay.source_max_length)
        # PairRM's rule: what the source leaves unused goes to the candidates, split evenly
        budget = (lay.source_max_length + 2 * lay.candidate_max_length - len(src)) // 2
        c1 = self._segment(MARKERS[1], a, budget)
        c2 = self._segment(MARKERS[2], b, budget)
        positions = []
        for offset, seg, marker_id in ((0, src, lay.source_token_id), (len(src), c1, lay.candidate1_token_id),
                                       (len(src) + len(c1), c2, lay.candidate2_token_id)):
            if marker_id not in seg:
                raise ValueError(f"marker token {marker_id} missing from an encoded part {seg[:8]}...")
            positions.append(offset + seg.index(marker_id))
        return src + c1 + c2, (positions[0], positions[1], positions[2])

    def _batch(self, encoded: list[tuple[list[int], tuple[int, int, int]]]) -> tuple[Any, Any, Any]:
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (seq, _) in enumerate(encoded):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        return ids, mask, torch.tensor([p for _, p in encoded], dtype=torch.long)

    # -- comparing --------------------------------------------------------------------------------
    def compare_batch(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        """P(a beats b) for each (source, a, b); NaN where the model gave a non-finite logit."""
        encoded = [self.encode_one(*item) for item in items]
        # similar lengths together: less padding per batch
        order = sorted(range(len(encoded)), key=lambda k: len(encoded[k][0]))
        out = [math.nan] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            device = next(self.module.parameters()).device
            ids, mask, positions = (t.to(device) for t in self._batch([encoded[k] for k in chunk]))
            with torch.no_grad():
                logits = self.module(ids, mask, positions).float()
            for k, logit in zip(chunk, logits.tolist()):
                out[k] = _sigmoid(logit)
        return out

    def compare(self, source: str, a: str, b: str) -> float:
        return self.compare_batch([(source, a, b)])[0]


def _sigmoid(logit: float) -> float:
    """P from a logit; NaN for a non-finite logit (the judge counts that comparison as failed)."""
    if not math.isfinite(logit):
        return math.nan
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    e = math.exp(logit)  # exponent <= 0: no overflow for very negative logits
    return e / (1.0 + e)


def _check_markers(tokenizer: Any, layout: PairRMLayout, folder: Path) -> None:
    for marker, want in zip(MARKERS, layout.marker_ids):
        got = tokenizer.encode(marker, add_special_tokens=False)
        if got != [want]:
            raise ValueError(f"{folder}: the tokenizer encodes {marker!r} as {got}; {CONFIG_FILE} says [{want}] "
                             "(the marker must be one added token)")


def build_tiny_pairrm(out: str | Path, seed: int, tokenizer: Any, hidden_size: int = 64,
                      num_layers: int = 2, max_length: int = 128) -> Path:
    """A randomly initialised ranker in the PairRM layout (DeBERTa-v3 style encoder); same seed,
    same weights. ``tokenizer``: any HF tokenizer (a random model reads any ids; the ``tiny-pairrm``
    alias uses SmolLM2's); a copy of it gets the markers."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, DebertaV2Config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)  # a copy: the caller's tokenizer is left without the markers
    tok = AutoTokenizer.from_pretrained(out)
    tok.add_tokens(list(MARKERS), special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    encoder_cfg = DebertaV2Config(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32), intermediate_size=hidden_size * 2,
        max_position_embeddings=512, type_vocab_size=0, pad_token_id=tok.pad_token_id,
        # wider than DeBERTa's 0.02: a random ranker's verdicts then visibly depend on the texts
        initializer_range=0.3,
        # DeBERTa-v3's attention: relative positions only, shared keys, bucketed, normed
        relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
        pos_att_type=["p2c", "c2p"], position_biased_input=False,
    )
    ids = [tok.convert_tokens_to_ids(m) for m in MARKERS]
    layout = PairRMLayout(hidden_size, hidden_size, *ids, source_max_length=max_length,
                          candidate_max_length=max_length)
    torch.manual_seed(seed)
    module = PairRMModule(encoder_cfg, layout).to(torch.float32)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(out / WEIGHTS_FILE))
    encoder_cfg.save_pretrained(out)
    layout.write(out / CONFIG_FILE)
    tok.save_pretrained(out)
    return out


# llm-blender's DebertaV2PairRM config: the encoder's DebertaV2Config plus these (marker ids, heads)
BLENDER_MARKER_KEYS = ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id")


def _read_blender_weights(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if (src / WEIGHTS_FILE).is_file():
        return load_file(str(src / WEIGHTS_FILE))
    if (src / "pytorch_model.bin").is_file():
        return torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ValueError(f"{src}: neither {WEIGHTS_FILE} nor pytorch_model.bin")


def convert_llm_blender(src: str | Path, out: str | Path, source_max_length: int = 1224,
                        candidate_max_length: int = 412) -> Path:
    """An llm-blender PairRM folder (e.g. a download of ``llm-blender/PairRM``: config.json of
    ``DebertaV2PairRM`` with its marker ids, weights as pytorch_model.bin or model.safetensors, and
    its tokenizer) -> a ranker folder :meth:`PairRanker.load` reads. The weights keep their names;
    they are checked against this layout, key by key and shape by shape. The length limits default to
    those of PairRM's model card."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, DebertaV2Config

    src, out = Path(src), Path(out)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{src}: no config.json (not a model folder)")
    raw = json.loads(cfg_path.read_text())
    missing = [k for k in BLENDER_MARKER_KEYS if not isinstance(raw.get(k), int)]
    if missing:
        raise ValueError(f"{cfg_path}: no integer {', '.join(missing)} (not an llm-blender PairRM config)")
    weights = _read_blender_weights(src)
    head = weights.get("head_layer.1.weight")
    if head is None:
        raise ValueError(f"{src}: no head_layer.1.weight among the weights (not a PairRM checkpoint)")
    layout = PairRMLayout(int(raw["hidden_size"]), int(head.shape[0]), raw["source_prefix_id"],
                          raw["cand1_prefix_id"], raw["cand2_prefix_id"], n_tasks=int(raw.get("n_tasks", 1)),
                          dropout=float(raw.get("drop_out", 0.0)), source_max_length=source_max_length,
                          candidate_max_length=candidate_max_length)
    encoder_cfg = DebertaV2Config.from_pretrained(src)
    expected = {k: tuple(v.shape) for k, v in PairRMModule(encoder_cfg, layout).state_dict().items()}
    check_keys(expected, {k: tuple(v.shape) for k, v in weights.items()}, str(src))
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ValueError(f"{src}: no tokenizer that transformers can load ({e})") from None
    _check_markers(tokenizer, layout, src)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().to(torch.float32) for k, v in weights.items() if k not in IGNORED_KEYS},
              str(out / WEIGHTS_FILE))
    encoder_cfg.save_pretrained(out)
    layout.write(out / CONFIG_FILE)
    tokenizer.save_pretrained(out)
    return out
