"""The additive 5-point judging rubric of Self-Rewarding LMs (Yuan et al., 2024), in our words.

One point per criterion met, so the score is 0..5. The judge writes a short justification and
ends with a line ``Score: <0-5>``; :func:`selm_ray.core.judging.parse_score` reads that line.
"""
from __future__ import annotations

from typing import Any, Sequence

from selm_ray.core.records import Message

SCORE_PREFIX = "Score: "

_SYSTEM = "You are a careful, fair grader of answers written by an AI assistant."

_RUBRIC = """Grade the answer below to the user's request. Start from 0 points and add one point for each of these that holds:

1. The answer is on topic: it relates to the request and gives some relevant information.
2. It deals with a large part of what was asked, even if it is not complete.
3. It usefully answers the core of the request, whatever its flaws in style or completeness.
4. It is written clearly from an AI assistant's point of view, speaks to the request directly and fully, and is well organised.
5. It reads like an expert's answer made for this exact request: accurate, insightful, engaging, with nothing off topic or padded.

<request>
{prompt}
</request>

<answer>
{response}
</answer>

Explain your grading in at most 100 words, then finish with a last line of the form "Score: <points>", where <points> is a number from 0 to 5."""


def request_text(prompt: str | Sequence[Message]) -> str:
    """A chat conversation is shown to the judge as its turns; a plain string as is."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def build_judge_messages(prompt: str | Sequence[Message], response: str) -> list[Message]:
    """Chat messages that ask a model to grade ``response`` to ``prompt`` with the rubric."""
    body = _RUBRIC.format(prompt=request_text(prompt).strip(), response=response.strip())
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": body}]


def expected_score_prompt(tokenizer: Any, prompt: str | Sequence[Message], response: str) -> str:
    """Templated judge prompt whose assistant turn already starts with "Score: ".

    The next token is then the score digit, so its distribution over "0".."5" gives an expected
    score (no sampling, no parsing).
    """
    messages = build_judge_messages(prompt, response)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + SCORE_PREFIX
