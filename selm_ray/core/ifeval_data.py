"""Prompts with checkable instructions: an everyday base task plus 1-3 compatible instructions
from ``core/judging/instructions.py``, their arguments drawn from each kind's sampling range.

A row: ``{"id": "ifeval-train-000123", "prompt": "<task>\\n\\n<instruction sentences>",
"meta": {"instructions": [{"id": kind, "kwargs": {...}}], "base_task": <line of the task>}}``;
the judge ``selm_ray.core.judging.functions:instructions_followed`` scores an answer from ``meta``.

The base tasks are ``assets/ifeval_tasks.jsonl``. Its last ``DEV_TASKS`` lines are the dev split,
never used by train, so a dev accuracy measures answers to tasks the policy was not trained on.
Dev rows always come from ``DEV_SEED`` (whatever seed train uses): one fixed yardstick. Rows are
drawn one after the other, so a larger ``n`` extends a smaller one with the same first rows.
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from selm_ray.core.judging.instructions import INSTRUCTIONS, compatible, describe, sample_kwargs

TASKS_FILE = "ifeval_tasks.jsonl"
DEV_TASKS = 40
DEV_SEED = 2023
SPLITS = ("train", "dev")
_COUNTS = (1, 1, 2, 2, 3)  # instructions per prompt: mostly one or two, so some are within reach
_TRIES = 100


@lru_cache(maxsize=1)
def load_tasks() -> tuple[str, ...]:
    path = Path(str(resources.files("selm_ray") / "assets" / TASKS_FILE))
    tasks = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("task"), str) or not row["task"].strip():
                raise ValueError(f"{path}:{lineno}: expected {{\"task\": <non-empty string>}}")
            tasks.append(row["task"].strip())
    return tuple(tasks)


def split_tasks(split: str) -> list[int]:
    """Indices (lines of the tasks file) of the base tasks a split draws from."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    count = len(load_tasks())
    return list(range(count - DEV_TASKS, count)) if split == "dev" else list(range(count - DEV_TASKS))


def _instructions(rng: random.Random, task: str, k: int) -> list[dict[str, Any]]:
    """Up to ``k`` pairwise compatible instructions (a draw clashing with one kept is redrawn)."""
    kinds = sorted(INSTRUCTIONS)
    chosen: list[dict[str, Any]] = []
    for _ in range(_TRIES):
        if len(chosen) == k:
            break
        kind = rng.choice(kinds)
        item = {"id": kind, "kwargs": sample_kwargs(kind, rng, task)}
        if all(compatible(item, other) for other in chosen):
            chosen.append(item)
    return chosen


def _row_id(split: str, seed: int, i: int) -> str:
    # a train set drawn with another seed gets other ids: the same id never names two prompts
    tag = f"s{seed}-" if split == "train" and seed != 0 else ""
    return f"ifeval-{split}-{tag}{i:06d}"


def _prompt(task: str, items: list[dict[str, Any]]) -> str:
    return task + "\n\n" + " ".join(describe(x["id"], x["kwargs"]) for x in items)


def build_prompts(n: int, split: str = "train", seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows; the same (n, split, seed) gives identical rows. ``seed`` is ignored for dev."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool, tasks = split_tasks(split), load_tasks()
    rng = random.Random(f"ifeval:{split}:{DEV_SEED if split == 'dev' else seed}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    order: list[int] = []
    for i in range(n):
        if not order:  # every base task once per round, in a fresh order each round
            order = rng.sample(pool, len(pool))
        index = order.pop()
        for _ in range(_TRIES):  # the same task with the same instructions twice is redrawn
            items = _instructions(rng, tasks[index], rng.choice(_COUNTS))
            prompt = _prompt(tasks[index], items)
            if prompt not in seen:
                break
        seen.add(prompt)
        rows.append({"id": _row_id(split, seed, i), "prompt": prompt,
                     "meta": {"instructions": items, "base_task": index}})
    return rows


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as a prompt file ``data.source`` can read; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
