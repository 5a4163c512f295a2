"""Prompt sources: JSONL, Parquet, or a `datasets.load_dataset` name/path; row validation.

A row gives its prompt as ``prompt`` (a string) or ``messages`` (a chat list ending in a user
turn); ``prompt`` wins when both exist. UltraFeedback-style ``chosen``/``rejected`` columns
(a string, or a chat list whose last turn is the assistant's answer) are ignored, or kept as extra
candidates to be judged alongside the policy's own samples. An optional ``id`` column gives the
prompt id; otherwise the id is a hash of the messages, so the same prompt has the same id anywhere.
An optional ``meta`` column (a JSON object, or a string holding one, as Parquet files often store
nested data) travels with the prompt to the judge (e.g. the instructions a verifiable prompt carries).

Built-in sources: ``seed`` (hand-written instructions) and ``builtin:ifeval-train`` /
``builtin:ifeval-dev`` (prompts with checkable instructions, ``core/ifeval_data.py``; the train set
takes an optional size and seed: ``builtin:ifeval-train:2000:1``).

A bad row raises :class:`DataError` naming the source, the row index and the problem, or is
skipped and counted when ``on_bad_row="skip"``.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from selm_ray.core.records import Message

SEED_SOURCE = "seed"
IFEVAL_SOURCES = {"builtin:ifeval-train": ("train", 600), "builtin:ifeval-dev": ("dev", 120)}
_ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A dataset row or source is unusable; the message names the source and row."""


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: str
    messages: tuple[Message, ...]
    extra_candidates: tuple[str, ...] = ()
    meta: dict[str, Any] | None = field(default=None, hash=False)  # the row's ``meta`` column


@dataclass
class LoadReport:
    """What loading saw: rows read, kept, and skipped (with the first few reasons)."""

    source: str
    rows: int = 0
    kept: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)


def _check_messages(value: Any, column: str) -> tuple[Message, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{column!r} must be a non-empty list of {{role, content}} messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{column}[{i}] must be a mapping with 'role' and 'content'")
        if m["role"] not in _ROLES:
            raise ValueError(f"{column}[{i}].role is {m['role']!r}; expected one of {list(_ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"{column}[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


def _answer_text(value: Any, column: str) -> str:
    """The answer in a chosen/rejected column: a string, or the last (assistant) turn of a chat."""
    if isinstance(value, str):
        text = value
    else:
        msgs = _check_messages(value, column)
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f"{column!r} is a chat whose last turn is not the assistant's answer")
        text = msgs[-1]["content"]
    if not text.strip():
        raise ValueError(f"{column!r} is empty")
    return text


def _meta(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("'meta' is a string that is not JSON; it must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError(f"'meta' must be a JSON object, got {type(value).__name__}")
    return value


def prompt_id_for(messages: Iterable[Message]) -> str:
    blob = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def parse_row(row: Any, extra_candidates: str = "ignore") -> PromptRecord:
    """One dataset row -> PromptRecord; raises ValueError describing what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"row must be a mapping, got {type(row).__name__}")
    if row.get("prompt") is not None:
        if not isinstance(row["prompt"], str):
            raise ValueError(f"'prompt' must be a string, got {type(row['prompt']).__name__}")
        if not row["prompt"].strip():
            raise ValueError("'prompt' is empty")
        messages: tuple[Message, ...] = ({"role": "user", "content": row["prompt"]},)
    elif row.get("messages") is not None:
        messages = _check_messages(row["messages"], "messages")
        if messages[-1]["role"] != "user":
            raise ValueError("'messages' must end with a user turn (the prompt to answer)")
        if not messages[-1]["content"].strip():
            raise ValueError("'messages' ends with an empty user turn")
    else:
        raise ValueError("no 'prompt' (string) or 'messages' (chat list) column")
    extras: tuple[str, ...] = ()
    if extra_candidates == "use":
        extras = tuple(_answer_text(row[c], c) for c in ("chosen", "rejected") if row.get(c) is not None)
    pid = row.get("id")
    pid = str(pid) if pid is not None and str(pid).strip() else prompt_id_for(messages)
    return PromptRecord(prompt_id=pid, messages=messages, extra_candidates=extras, meta=_meta(row.get("meta")))


def _iter_jsonl(path: Path) -> Iterator[Any]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh):
            if not line.strip():
                yield _BLANK
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                yield _BadJson(f"invalid JSON ({e.msg} at column {e.colno}) on line {lineno + 1}")


class _BadJson:
    def __init__(self, why: str) -> None:
        self.why = why


_BLANK = object()


def _iter_rows(source: str, split: str) -> Iterator[Any]:
    if source == SEED_SOURCE:
        yield from _iter_jsonl(seed_prompts_path())
        return
    if source.startswith("builtin:ifeval"):
        yield from _ifeval_rows(source)
        return
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".parquet"):
        if not path.is_file():
            raise DataError(f"{source}: file does not exist")
        if path.suffix == ".jsonl":
            yield from _iter_jsonl(path)
        else:
            import pyarrow.parquet as pq

            yield from pq.read_table(path).to_pylist()
    elif path.is_file():
        raise DataError(f"{source}: unsupported file type {path.suffix!r}; use .jsonl or .parquet")
    else:
        yield from _load_hf(source, split)


def _ifeval_rows(source: str) -> list[dict[str, Any]]:
    """``builtin:ifeval-train[:N[:SEED]]`` (default 600 prompts, seed 0) or ``builtin:ifeval-dev``
    (120 prompts from its own base tasks, fixed seed)."""
    from selm_ray.core.ifeval_data import build_prompts

    name, *rest = source.split(":")[1:]
    name = "builtin:" + name
    if name not in IFEVAL_SOURCES or len(rest) > (2 if name.endswith("train") else 1):
        raise DataError(f"{source}: unknown built-in source; use builtin:ifeval-train[:N[:SEED]] "
                        "or builtin:ifeval-dev[:N]")
    split, n = IFEVAL_SOURCES[name]
    try:
        n, seed = (int(rest[0]) if rest else n), (int(rest[1]) if len(rest) > 1 else 0)
    except ValueError:
        raise DataError(f"{source}: size and seed must be integers") from None
    if n < 1:
        raise DataError(f"{source}: size must be >= 1")
    return build_prompts(n, split, seed)


def _load_hf(source: str, split: str) -> Iterator[Any]:
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as e:
        raise DataError(
            f"{source}: could not load as a .jsonl/.parquet file or with datasets.load_dataset "
            f"(split {split!r}): {type(e).__name__}: {e}"
        ) from None
    yield from ds


def seed_prompts_path() -> Path:
    return Path(str(resources.files("selm_ray") / "assets" / "seed_prompts.jsonl"))


def load_prompts(
    source: str = SEED_SOURCE,
    split: str = "train",
    on_bad_row: str = "error",
    extra_candidates: str = "ignore",
    max_prompts: int | None = None,
) -> tuple[list[PromptRecord], LoadReport]:
    """Read and validate every row of a source; duplicates (same prompt id) are kept once."""
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    report = LoadReport(source=source)
    records: list[PromptRecord] = []
    seen: set[str] = set()
    for index, row in enumerate(_iter_rows(source, split)):
        if row is _BLANK:
            continue
        report.rows += 1
        try:
            if isinstance(row, _BadJson):
                raise ValueError(row.why)
            rec = parse_row(row, extra_candidates)
        except ValueError as e:
            problem = f"{source}: row {index}: {e}"
            if on_bad_row == "error":
                raise DataError(problem + " (set data.on_bad_row: skip to skip such rows)") from None
            report.skipped += 1
            if len(report.skip_reasons) < 20:
                report.skip_reasons.append(problem)
            continue
        if rec.prompt_id in seen:
            continue
        seen.add(rec.prompt_id)
        records.append(rec)
        if max_prompts is not None and len(records) >= max_prompts:
            break
    report.kept = len(records)
    if not records:
        raise DataError(f"{source}: no usable prompt rows ({report.rows} read, {report.skipped} skipped)")
    return records, report


def shuffled(records: list[PromptRecord], seed: int) -> list[PromptRecord]:
    out = list(records)
    random.Random(seed).shuffle(out)
    return out


def iteration_slices(records: list[PromptRecord], iterations: int, per_iteration: int) -> list[list[PromptRecord]]:
    """Disjoint consecutive prompt slices, one per iteration (the papers never reuse prompts)."""
    need = iterations * per_iteration
    if len(records) < need:
        raise DataError(
            f"{iterations} iterations x {per_iteration} prompts need {need} distinct prompts, "
            f"the data has {len(records)}; lower schedule.prompts_per_iteration or add prompts"
        )
    return [records[i * per_iteration:(i + 1) * per_iteration] for i in range(iterations)]


def render_prompt(tokenizer: Any, messages: Iterable[Message]) -> str:
    """Apply the model's own chat template, ending where the assistant's answer begins."""
    msgs = [dict(m) for m in messages]
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')} has no chat template; "
            "use a chat/instruct model or set one on the tokenizer"
        )
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def templated_length(tokenizer: Any) -> Any:
    """``count_tokens`` for check_prompt_lengths: a prompt's length as the engines template it."""
    return lambda messages: len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])


def check_prompt_lengths(records: Sequence[PromptRecord], count_tokens: Any, max_new_tokens: int,
                         max_model_len: int, source: str, on_bad_row: str) -> int:
    """How many prompts leave no room for ``max_new_tokens`` answer tokens in ``max_model_len``
    (``count_tokens(messages)``: the templated prompt's length). With ``on_bad_row: error`` the
    first one is a DataError naming it; with ``skip`` the engine that gets it skips it and counts it
    (``no_pair.prompt_too_long``), so nothing else happens here."""
    too_long = 0
    for rec in records:
        n = count_tokens(rec.messages)
        if n + max_new_tokens <= max_model_len:
            continue
        too_long += 1
        if on_bad_row == "error":
            raise DataError(
                f"{source}: prompt {rec.prompt_id!r} is {n} tokens with its chat template; with "
                f"generation.max_new_tokens {max_new_tokens} it does not fit model.max_model_len "
                f"{max_model_len} (shorten it, raise model.max_model_len, or set data.on_bad_row: skip "
                "to skip such prompts)")
    return too_long
