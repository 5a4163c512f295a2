"""The pairwise LLM judge's prompt and how its verdict is read, pure Python.

The judge sees the request and two answers labelled A and B; its assistant turn already starts
with "Better answer: ", so the next token is the verdict. P(A wins) is the softmax over the two
choice tokens' log-probs alone (as the expected-score judge reads its digits): no sampling, no
parsing, one forward pass per comparison.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from selm_ray.core.judging.rubric import request_text
from selm_ray.core.records import Message

CHOICES = ("A", "B")
VERDICT_PREFIX = "Better answer: "

_SYSTEM = "You are a careful, fair judge comparing two answers written by an AI assistant."

_TEMPLATE = """Below are a user's request and two answers to it, A and B. Decide which answer serves the request better: judge whether it is correct, on topic, complete and clearly written. The order of the answers says nothing about their quality, and an answer is not better for being longer.

<request>
{prompt}
</request>

<answer A>
{a}
</answer A>

<answer B>
{b}
</answer B>

Reply with one letter: A if answer A is better, B if answer B is better."""


def source_text(prompt: str | Sequence[Message]) -> str:
    """The request as one text (a ranker's "source"): the user turn, or the turns of a chat."""
    return request_text(prompt).strip()


def build_pairwise_messages(prompt: str | Sequence[Message], a: str, b: str) -> list[Message]:
    """Chat messages asking which of answers ``a`` (shown as A) and ``b`` (B) is better."""
    body = _TEMPLATE.format(prompt=source_text(prompt), a=a.strip(), b=b.strip())
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": body}]


def pairwise_prompt(tokenizer: Any, prompt: str | Sequence[Message], a: str, b: str) -> str:
    """Templated judge prompt ending in "Better answer: ": the next token is the verdict."""
    messages = build_pairwise_messages(prompt, a, b)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + VERDICT_PREFIX


def choice_token_ids(tokenizer: Any, choices: Sequence[str] = CHOICES) -> tuple[int, ...]:
    """The token id of each choice; a clear error when one is not a single token here."""
    ids = []
    for text in choices:
        enc = tokenizer.encode(text, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"pairwise judging needs each choice to be one token; {text!r} is {enc} "
                             "in this tokenizer")
        ids.append(enc[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {list(choices)} map to the same token ids {ids}")
    return tuple(ids)


def choice_probability(logprobs: Mapping[int, float], first: int, second: int) -> float | None:
    """P(first choice) = softmax over the two choice log-probs; None when either is missing or
    not finite (the comparison then counts as failed)."""
    la, lb = logprobs.get(first), logprobs.get(second)
    if la is None or lb is None or not (math.isfinite(la) and math.isfinite(lb)):
        return None
    # e^la / (e^la + e^lb), with the exponent kept <= 0 so it cannot overflow
    if la >= lb:
        return 1.0 / (1.0 + math.exp(lb - la))
    e = math.exp(la - lb)
    return e / (1.0 + e)
