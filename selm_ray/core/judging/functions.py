"""Function judges: ``module:function(prompt, response) -> float | None`` for verifiable rewards.

``None`` means "cannot score this one" (counted as a judge failure, never a number). Two
examples ship here; any importable function with that signature works (judge.function).
"""
from __future__ import annotations

import importlib
import math
import re
from typing import Any, Callable

ScoreFn = Callable[[str, str], "float | None"]


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
    return fn


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
