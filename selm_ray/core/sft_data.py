"""Supervised data for the SFT stage that makes M1 (Self-Rewarding): IFT and EFT examples.

IFT rows: ``{"prompt": str, "response": str}`` or ``{"messages": [..., {"role": "assistant"}]}``.
EFT rows: ``{"prompt", "response", "evaluation"}``: the model learns to answer the judge rubric
prompt for (prompt, response) with ``evaluation``, which must end in a score the judge parser
reads (else the row is an error: it would teach the format we rely on wrongly).
``builtin:ift`` / ``builtin:eft`` are the small example sets shipped for tests and demos.
Pure Python; batching for the learner is in learner/batching.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from selm_ray.core.data import DataError
from selm_ray.core.judging import build_judge_messages, parse_score
from selm_ray.core.records import Message

BUILTIN = {"builtin:ift": "sft_ift.jsonl", "builtin:eft": "sft_eft.jsonl"}


@dataclass(frozen=True)
class SFTExample:
    messages: tuple[Message, ...]  # the conversation up to the answer
    response: str
    kind: str  # "ift" | "eft"


def _path(source: str) -> Path:
    if source in BUILTIN:
        return Path(str(resources.files("selm_ray") / "assets" / BUILTIN[source]))
    path = Path(source)
    if not path.is_file() or path.suffix != ".jsonl":
        raise DataError(f"{source}: SFT data must be an existing .jsonl file or one of {sorted(BUILTIN)}")
    return path


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: '{key}' must be a non-empty string")
    return value


def _ift(row: dict, where: str) -> SFTExample:
    if "messages" in row:
        msgs = row["messages"]
        if not (isinstance(msgs, list) and len(msgs) >= 2 and isinstance(msgs[-1], dict)
                and msgs[-1].get("role") == "assistant"):
            raise DataError(f"{where}: 'messages' must be a chat list ending with an assistant turn")
        return SFTExample(tuple(msgs[:-1]), _text(msgs[-1], "content", where), "ift")
    return SFTExample(({"role": "user", "content": _text(row, "prompt", where)},), _text(row, "response", where),
                      "ift")


def _eft(row: dict, where: str) -> SFTExample:
    prompt, response = _text(row, "prompt", where), _text(row, "response", where)
    evaluation = _text(row, "evaluation", where)
    if parse_score(evaluation) is None:
        raise DataError(f"{where}: 'evaluation' must end with a score the judge can read, e.g. 'Score: 4'")
    return SFTExample(tuple(build_judge_messages(prompt, response)), evaluation, "eft")


def load_sft(source: str, kind: str) -> list[SFTExample]:
    path = _path(source)
    parse = {"ift": _ift, "eft": _eft}[kind]
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        where = f"{source}: row {i}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{where}: not JSON ({e})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: must be a JSON object")
        out.append(parse(row, where))
    if not out:
        raise DataError(f"{source}: no {kind.upper()} examples")
    return out
