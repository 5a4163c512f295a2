"""Self-instruct prompt creation (Self-Rewarding step 1): few-shot requests and the filters.

The policy sees ``shots`` example instructions and writes one new one. Each output either becomes
a prompt or is rejected for exactly one reason, counted: empty, truncated, too_short, too_long,
copied_example, near_duplicate (ROUGE-L F1 against every prompt known so far), multiple_tasks,
not_an_instruction (an answer, a refusal), unsupported_modality (needs images, files, audio...).
Pure Python; the controller asks the generator pool for samples and feeds them here.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

REASONS = ("empty", "truncated", "too_short", "too_long", "copied_example", "near_duplicate",
           "multiple_tasks", "not_an_instruction", "unsupported_modality")
_WORD = re.compile(r"[a-z0-9]+")
_ANSWER_START = re.compile(r"^(sure|certainly|of course|here (is|are)|as an ai|i (am|'m|can|cannot|can't|will)|"
                           r"yes\b|no\b|thank|the answer)", re.I)
_LIST_ITEM = re.compile(r"^\s*(\d+[.)]|task\s*\d+\s*:|[-*•])\s+", re.I | re.M)
# Self-Instruct's filter: a text-only model cannot act on these
_MODALITY = re.compile(r"\b(image|images|picture|photo|graph|diagram|flowchart|draw|plot|video|audio|"
                       r"music|map|file|attached|link|url|website)\b", re.I)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 between two word sequences (longest common subsequence)."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def fewshot_messages(examples: Sequence[str]) -> list[dict[str, str]]:
    """One user turn showing the examples and asking for exactly one new instruction."""
    shown = "\n".join(f"Task {i + 1}: {e.strip()}" for i, e in enumerate(examples))
    return [{"role": "user", "content":
             "Here are some tasks a user might give an AI assistant:\n"
             f"{shown}\n\n"
             "Write one new task of the same kind, different from all of the above. Reply with the "
             f"task only, as Task {len(examples) + 1}, with no answer."}]


def parse_instruction(text: str) -> str:
    """The instruction in a sampled reply: the 'Task N:' prefix and anything after a next task go."""
    text = re.sub(r"^\s*(task\s*\d+\s*:|new task\s*:|instruction\s*:)\s*", "", text.strip(), flags=re.I)
    nxt = re.search(r"\n\s*task\s*\d+\s*:", text, flags=re.I)
    return (text[:nxt.start()] if nxt else text).strip().strip('"').strip()


@dataclass
class PromptFilter:
    known: list[str]  # every prompt so far: seed/dataset prompts, then each accepted one
    min_words: int = 3
    max_words: int = 150
    max_similarity: float = 0.7
    counts: dict[str, int] = field(default_factory=lambda: {r: 0 for r in ("accepted", *REASONS)})

    def __post_init__(self) -> None:
        self._known_words = [words(k) for k in self.known]

    def check(self, reply: str, finish_reason: str, examples: Sequence[str]) -> tuple[str | None, str]:
        """(instruction, "accepted") or (None, reason); counts either way."""
        text = parse_instruction(reply)
        reason = self._reason(text, finish_reason, examples)
        self.counts[reason] += 1
        if reason != "accepted":
            return None, reason
        self.remember(text)
        return text, reason

    def remember(self, text: str) -> None:
        """A prompt later ones must not duplicate (e.g. accepted by an earlier attempt of a run)."""
        self.known.append(text)
        self._known_words.append(words(text))

    def _reason(self, text: str, finish_reason: str, examples: Sequence[str]) -> str:
        if finish_reason == "length":
            return "truncated"
        w = words(text)
        if not w:
            return "empty"
        if len(w) < self.min_words:
            return "too_short"
        if len(w) > self.max_words:
            return "too_long"
        if any(w == words(e) for e in examples):
            return "copied_example"
        if any(rouge_l(w, k) >= self.max_similarity for k in self._known_words):
            return "near_duplicate"
        if len(_LIST_ITEM.findall(text)) >= 2:
            return "multiple_tasks"
        if _ANSWER_START.match(text):
            return "not_an_instruction"
        if _MODALITY.search(text):
            return "unsupported_modality"
        return "accepted"


def pick_examples(seed_pool: Sequence[str], created: Sequence[str], shots: int, rng: random.Random) -> list[str]:
    """``shots`` examples: up to half from accepted created prompts, the rest from the seed pool."""
    from_created = rng.sample(list(created), min(len(created), shots // 2))
    from_seed = rng.sample(list(seed_pool), min(len(seed_pool), shots - len(from_created)))
    out = from_seed + from_created
    rng.shuffle(out)
    return out
