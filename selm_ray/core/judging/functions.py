"""Function judges: ``module:function(prompt, response) -> float | None`` for verifiable rewards.

``None`` means "cannot score this one" (counted as a judge failure, never a number). A function
that takes a third parameter also gets the prompt row's metadata (``meta``, a dict or None):
``fn(prompt, response, meta)``. Examples ship here; any importable function with either
signature works (judge.function).
"""
from __future__ import annotations

import importlib
import inspect
import math
import re
from typing import Any, Callable

from selm_ray.core.judging.instructions import follows, graded

ScoreFn = Callable[..., "float | None"]


class FunctionJudgeError(ValueError):
    """judge.function cannot be loaded; the message names the spec and why."""


def load_function(spec: str) -> ScoreFn:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise FunctionJudgeError(f"judge.function: {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise FunctionJudgeError(f"judge.function: cannot import {module_name!r} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise FunctionJudgeError(f"judge.function: {module_name} has no callable {attr!r}")
    takes_meta(fn, spec)  # a signature we cannot call is a load error, not one failure per candidate
    return fn


def takes_meta(fn: Callable[..., Any], spec: str = "") -> bool:
    """Whether ``fn`` is called as ``fn(prompt, response, meta)`` (it can take a third positional
    argument) rather than ``fn(prompt, response)``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: call them the old way
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD]
    if len(required) > 3 or len(positional) < 2:
        raise FunctionJudgeError(f"judge.function: {spec or fn!r} must take (prompt, response) or "
                                 f"(prompt, response, meta); it takes {[p.name for p in params]}")
    return len(positional) >= 3


def check_score(value: Any) -> tuple[float | None, str | None]:
    """(score, None) for a finite number; (None, why) otherwise."""
    if value is None:
        return None, "function returned None"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"function returned {type(value).__name__}, not a number"
    if not math.isfinite(value):
        return None, f"function returned {value}"
    return float(value), None


# -- examples --------------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def math_answer(prompt: str, response: str) -> float | None:
    """1.0 if the last number in the response equals the prompt's ``[answer=X]`` tag, else 0.0;
    None when the prompt carries no tag (not a verifiable prompt)."""
    tag = re.search(r"\[answer=(-?\d+(?:\.\d+)?)\]", prompt)
    if tag is None:
        return None
    numbers = _NUMBER.findall(response)
    return float(bool(numbers) and float(numbers[-1]) == float(tag.group(1)))


def brevity(prompt: str, response: str) -> float | None:
    """Shorter non-empty answers score higher (a format rule): -words / 100; None if empty."""
    words = response.split()
    return -len(words) / 100.0 if words else None


def _instructions(meta: Any) -> list[Any] | None:
    items = meta.get("instructions") if isinstance(meta, dict) else None
    if items is None or items == []:
        return None
    if not isinstance(items, list):
        raise ValueError(f"meta['instructions'] must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise ValueError(f"meta['instructions'][{i}] must be a mapping with 'id' (and 'kwargs')")
    return items


def instructions_followed(prompt: str, response: str, meta: dict | None = None) -> float | None:
    """Share of ``meta["instructions"]`` (``[{"id": kind, "kwargs": {...}}]``, see
    ``core/judging/instructions.py``) the response follows, strictly; None when the prompt carries
    no instructions. A malformed instruction raises (the judge records a failure, not a 0)."""
    items = _instructions(meta)
    if items is None:
        return None
    return sum(follows(i["id"], i.get("kwargs"), prompt, response)[0] for i in items) / len(items)


def instructions_graded(prompt: str, response: str, meta: dict | None = None) -> float | None:
    """Like ``instructions_followed`` but the mean graded score: partial credit (e.g. the share of
    lowercase letters) separates answers that all miss the same instruction."""
    items = _instructions(meta)
    if items is None:
        return None
    return sum(graded(i["id"], i.get("kwargs"), prompt, response) for i in items) / len(items)
