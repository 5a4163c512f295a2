"""Text checks behind the verifiable instructions (`instructions.py` holds the registry).

Each kind has a ``check(text, **kwargs) -> bool`` and, where a partial answer can be measured,
a ``partial(text, **kwargs) -> float`` in [0, 1]. The registry wraps them: a graded score is 1.0
exactly when the check passes, so a partial function only has to be meaningful when it fails.
Pure Python, standard library only.
"""
from __future__ import annotations

import json
import re

_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")
# a sentence ends at . ! or ? followed by space or the end; a line break also ends one, so a
# header or a bullet without final punctuation still counts once
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*[*-]\s+\S", re.MULTILINE)
_SEPARATOR = re.compile(r"^[ \t]*\*\*\*[ \t]*$", re.MULTILINE)
# *text*: no space just inside the stars, so a "* " bullet marker does not open a highlight
_HIGHLIGHT = re.compile(r"\*(?=[^\s*])[^\n*]*(?<=[^\s*])\*")
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]*\S[^\[\]\n]*\]")
_TITLE = re.compile(r"<<[^\n<>]*\S[^\n<>]*>>")
_FENCE = re.compile(r"^```[A-Za-z]*[ \t]*\n(.*?)\n?```$", re.DOTALL)
_DIGIT = re.compile(r"[0-9]")
_QUOTES = (('"', '"'), ("\u201c", "\u201d"))


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if re.search(r"\w", s)]


def _ratio(have: int, want: int) -> float:
    """How close a count is to a wanted one: 1.0 when equal, smaller the further apart."""
    return min(have, want) / max(have, want) if max(have, want) else 1.0


def _keyword(word: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.IGNORECASE)


def _norm_words(text: str) -> list[str]:
    return [w.casefold() for w in words(text)]


# -- case ------------------------------------------------------------------------------------------
def _case_counts(text: str) -> tuple[int, int]:
    return sum(c.islower() for c in text), sum(c.isupper() for c in text)


def lowercase(text: str) -> bool:
    low, up = _case_counts(text)
    return low > 0 and up == 0


def lowercase_partial(text: str) -> float:
    low, up = _case_counts(text)
    return low / (low + up) if low + up else 0.0


def uppercase(text: str) -> bool:
    low, up = _case_counts(text)
    return up > 0 and low == 0


def uppercase_partial(text: str) -> float:
    low, up = _case_counts(text)
    return up / (low + up) if low + up else 0.0


# -- length ----------------------------------------------------------------------------------------
def max_words(text: str, n: int) -> bool:
    return 0 < len(words(text)) <= n


def max_words_partial(text: str, n: int) -> float:
    count = len(words(text))
    return n / count if count else 0.0


def min_words(text: str, n: int) -> bool:
    return len(words(text)) >= n


def min_words_partial(text: str, n: int) -> float:
    return min(1.0, len(words(text)) / n)


def max_sentences(text: str, n: int) -> bool:
    return 0 < len(sentences(text)) <= n


def max_sentences_partial(text: str, n: int) -> float:
    count = len(sentences(text))
    return n / count if count else 0.0


def min_sentences(text: str, n: int) -> bool:
    return len(sentences(text)) >= n


def min_sentences_partial(text: str, n: int) -> float:
    return min(1.0, len(sentences(text)) / n)


# -- structure -------------------------------------------------------------------------------------
def bullets_exact(text: str, n: int) -> bool:
    return len(_BULLET.findall(text)) == n


def bullets_partial(text: str, n: int) -> float:
    return _ratio(len(_BULLET.findall(text)), n)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _SEPARATOR.split(text.strip())]


def paragraphs(text: str, n: int) -> bool:
    parts = _paragraphs(text)
    return len(parts) == n and all(parts)


def paragraphs_partial(text: str, n: int) -> float:
    return _ratio(sum(bool(p) for p in _paragraphs(text)), n)


def _section_numbers(text: str, marker: str) -> list[int]:
    header = re.compile(r"^[ \t]*#*[ \t]*" + re.escape(marker) + r"[ \t]+(\d+)\b", re.MULTILINE)
    return [int(m) for m in header.findall(text)]


def sections(text: str, n: int, marker: str) -> bool:
    return _section_numbers(text, marker) == list(range(1, n + 1))


def sections_partial(text: str, n: int, marker: str) -> float:
    return _ratio(len(_section_numbers(text, marker)), n)


def highlights(text: str, n: int) -> bool:
    return len(_HIGHLIGHT.findall(text)) >= n


def highlights_partial(text: str, n: int) -> float:
    return min(1.0, len(_HIGHLIGHT.findall(text)) / n)


def placeholders(text: str, n: int) -> bool:
    return len(_PLACEHOLDER.findall(text)) >= n


def placeholders_partial(text: str, n: int) -> float:
    return min(1.0, len(_PLACEHOLDER.findall(text)) / n)


def title(text: str) -> bool:
    return _TITLE.search(text) is not None


def postscript(text: str) -> bool:
    """A line starting with "P.S." after some main text, with something written after it."""
    lines = [ln.strip() for ln in text.strip().split("\n")]
    for i, line in enumerate(lines):
        if i > 0 and line.startswith("P.S.") and any(lines[:i]):
            return bool(line[4:].strip() or any(lines[i + 1:]))
    return False


def quoted(text: str) -> bool:
    s = text.strip()
    return len(s) >= 2 and any(s[0] == a and s[-1] == b for a, b in _QUOTES)


def quoted_partial(text: str) -> float:
    s = text.strip()
    return 0.5 * any(s.startswith(a) or s.endswith(b) for a, b in _QUOTES) if s else 0.0


def is_json(text: str) -> bool:
    """An object or array, alone or in one code fence (a bare number or string would be too easy
    to produce by accident to count as following the instruction)."""
    s = text.strip()
    fenced = _FENCE.match(s)
    if fenced:
        s = fenced.group(1).strip()
    try:
        value = json.loads(s)
    except ValueError:
        return False
    return isinstance(value, (dict, list))


def end_question(text: str) -> bool:
    return text.rstrip().endswith("?")


# -- words and characters --------------------------------------------------------------------------
def include(text: str, keywords: list[str]) -> bool:
    return all(_keyword(w).search(text) for w in keywords)


def include_partial(text: str, keywords: list[str]) -> float:
    return sum(bool(_keyword(w).search(text)) for w in keywords) / len(keywords)


def forbid(text: str, keywords: list[str]) -> bool:
    return not any(_keyword(w).search(text) for w in keywords)


def forbid_partial(text: str, keywords: list[str]) -> float:
    return sum(not _keyword(w).search(text) for w in keywords) / len(keywords)


def repeat_word(text: str, word: str, n: int) -> bool:
    return len(_keyword(word).findall(text)) >= n


def repeat_word_partial(text: str, word: str, n: int) -> float:
    return min(1.0, len(_keyword(word).findall(text)) / n)


def letter_frequency(text: str, letter: str, n: int) -> bool:
    return text.lower().count(letter.lower()) >= n


def letter_frequency_partial(text: str, letter: str, n: int) -> float:
    return min(1.0, text.lower().count(letter.lower()) / n)


def no_comma(text: str) -> bool:
    return "," not in text


def no_comma_partial(text: str) -> float:
    return 1.0 / (1 + text.count(","))


def no_digits(text: str) -> bool:
    return _DIGIT.search(text) is None


def no_digits_partial(text: str) -> float:
    return 1.0 / (1 + len(_DIGIT.findall(text)))


# -- where the answer starts and ends --------------------------------------------------------------
def _shared_prefix(a: list[str], b: list[str]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def start_phrase(text: str, phrase: str) -> bool:
    return text.lstrip().startswith(phrase)


def start_phrase_partial(text: str, phrase: str) -> float:
    want = _norm_words(phrase)
    return _shared_prefix(_norm_words(text), want) / len(want) if want else 0.0


def end_phrase(text: str, phrase: str) -> bool:
    return text.rstrip().endswith(phrase)


def end_phrase_partial(text: str, phrase: str) -> float:
    want = _norm_words(phrase)
    return _shared_prefix(_norm_words(text)[::-1], want[::-1]) / len(want) if want else 0.0


def repeat_request(text: str, request: str) -> bool:
    """The request, word for word (case and spacing aside), first; then an answer after it."""
    have, want = " ".join(text.split()).casefold(), " ".join(request.split()).casefold()
    return have.startswith(want) and bool(words(have[len(want):]))


def repeat_request_partial(text: str, request: str) -> float:
    want = _norm_words(request)
    return _shared_prefix(_norm_words(text), want) / len(want) if want else 0.0
