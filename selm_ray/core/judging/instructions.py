"""Verifiable instructions (in the spirit of IFEval, Zhou et al. 2023): a registry of kinds, each
with typed arguments and sampling ranges, a sentence that asks for it, and a check.

Public API:
- ``INSTRUCTIONS``: kind id -> :class:`Instruction` (``GRADED_KINDS``: those with a partial score).
- ``validate(kind, kwargs) -> dict``: the arguments, checked; a ``ValueError`` names kind and argument.
- ``describe(kind, kwargs) -> str``: the sentence a prompt carries to ask for the instruction.
- ``follows(kind, kwargs, prompt, response) -> (strict, loose)``: strict checks the raw answer;
  loose also passes when the check passes on the answer without its first and/or last line
  (a "Sure, here it is:" opener, a sign-off), each with and without markdown ``*`` characters.
- ``graded(kind, kwargs, prompt, response) -> float`` in [0, 1], 1.0 exactly when strict passes;
  below 1 it measures how close the answer came (share of lowercase letters, distance to a word
  limit, ...) for ``GRADED_KINDS``, else it is 0.
- ``compatible(a, b) -> bool``: whether two instructions can both be followed by one answer;
  ``a``/``b`` are kind ids or ``{"id": kind, "kwargs": {...}}`` (kwargs make value checks possible).
- ``sample_kwargs(kind, rng, task) -> dict``: arguments drawn from the kind's ranges.

An empty (blank) answer follows no instruction: otherwise "at most N words" or "no commas" would
reward saying nothing. ``prompt`` is accepted for checks that need the request; today every
kind gets what it needs from its kwargs (``start:repeat_request`` carries the request text).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from selm_ray.core.judging import instruction_checks as c


@dataclass(frozen=True)
class Arg:
    """One argument. ``int``: sampled in [low, high], valid from ``minimum``. ``text``: a non-empty
    string, sampled from ``pool`` (or the base task itself when ``from_task``). ``keywords``: a
    list of ``low``-``high`` words from ``pool`` (plus a topic word of the task when
    ``from_task``). ``letter``: one letter a-z, sampled from ``pool``."""

    name: str
    type: str
    low: int = 1
    high: int = 1
    minimum: int = 1
    pool: tuple[str, ...] = ()
    from_task: bool = False


@dataclass(frozen=True)
class Instruction:
    id: str
    args: tuple[Arg, ...]
    template: str  # str.format over the rendered kwargs
    check: Callable[..., bool]
    partial: Callable[..., float] | None = None  # how close a failing answer came


def _n(low: int, high: int, minimum: int = 1) -> Arg:
    return Arg("n", "int", low, high, minimum)


_INCLUDE_POOL = ("simple", "today", "example", "friend", "careful", "idea", "together", "future",
                 "small", "clear", "happy", "plan")
# words a small model reaches for without thinking: avoiding them takes attention, yet is possible
_FORBID_POOL = ("very", "really", "just", "also", "important", "great", "thing", "many", "however",
                "actually", "best", "always")
_REPEAT_POOL = ("because", "always", "together", "simple", "time", "people")
_START_POOL = ("Here is my answer:", "Sure thing.", "Good question.", "In short:", "Let me help.",
               "Okay, here goes.", "To begin with:", "Thanks for asking.")
_END_POOL = ("Is there anything else I can help with?", "Thank you for reading.", "Hope this helps!",
             "That is all for now.", "Have a wonderful day!", "Let me know what you think.")

_KINDS = (
    Instruction("case:lowercase", (), "Your entire answer must be in lowercase letters; no capitals at all.",
                c.lowercase, c.lowercase_partial),
    Instruction("case:uppercase", (), "Write your whole answer in capital letters only (ALL CAPS), with no "
                "lowercase letters.", c.uppercase, c.uppercase_partial),
    Instruction("length:max_words", (_n(30, 120),), "Keep your answer to at most {n} words.",
                c.max_words, c.max_words_partial),
    Instruction("length:min_words", (_n(20, 80),), "Your answer should be at least {n} words long.",
                c.min_words, c.min_words_partial),
    Instruction("length:max_sentences", (_n(2, 6),), "Use no more than {n} sentences.",
                c.max_sentences, c.max_sentences_partial),
    Instruction("length:min_sentences", (_n(2, 5),), "Write at least {n} sentences.",
                c.min_sentences, c.min_sentences_partial),
    Instruction("format:bullets_exact", (_n(2, 5),), 'Format your answer as exactly {n} bullet points, each on '
                'its own line starting with "* ".', c.bullets_exact, c.bullets_partial),
    Instruction("format:paragraphs", (_n(2, 4),), "Write exactly {n} paragraphs, with a line holding only *** "
                "between one paragraph and the next.", c.paragraphs, c.paragraphs_partial),
    Instruction("format:sections", (_n(2, 3), Arg("marker", "text", pool=("SECTION", "Section", "PART", "Part"))),
                'Divide your answer into {n} sections; start each one with a header line "{marker} 1", '
                '"{marker} 2" and so on.', c.sections, c.sections_partial),
    Instruction("format:highlights", (_n(1, 3),), "Highlight at least {n} parts of your answer with single "
                "asterisks, like *this part*.", c.highlights, c.highlights_partial),
    Instruction("format:placeholders", (_n(1, 3),), "Include at least {n} placeholders in square brackets, "
                "such as [name].", c.placeholders, c.placeholders_partial),
    Instruction("format:title", (), "Give your answer a title wrapped in double angle brackets, like "
                "<<a short title>>.", c.title),
    Instruction("format:postscript", (), 'At the end, add a postscript on its own line that starts with "P.S.".',
                c.postscript),
    Instruction("format:quoted", (), "Put your entire answer inside double quotation marks, from the very "
                "first character to the very last.", c.quoted, c.quoted_partial),
    Instruction("format:json", (), "Reply with valid JSON only (an object or a list); you may put it in a "
                "```json code block, but write nothing outside it.", c.is_json),
    Instruction("format:end_question", (), "End your answer with a question for the reader, so that the last "
                "character is a question mark.", c.end_question),
    Instruction("keywords:include", (Arg("keywords", "keywords", 1, 2, pool=_INCLUDE_POOL, from_task=True),),
                "Make sure your answer uses these words: {keywords}.", c.include, c.include_partial),
    Instruction("keywords:forbid", (Arg("keywords", "keywords", 1, 3, pool=_FORBID_POOL),),
                "Do not use the words {keywords} anywhere in your answer.", c.forbid, c.forbid_partial),
    Instruction("keywords:repeat", (Arg("word", "text", pool=_REPEAT_POOL), _n(2, 3)),
                'Use the word "{word}" at least {n} times.', c.repeat_word, c.repeat_word_partial),
    Instruction("keywords:letter_frequency", (Arg("letter", "letter", pool=tuple("bcdfghlmpuwy")), _n(3, 9)),
                'The letter "{letter}" must appear at least {n} times in your answer.',
                c.letter_frequency, c.letter_frequency_partial),
    Instruction("punctuation:no_comma", (), "Do not use any commas in your answer.", c.no_comma,
                c.no_comma_partial),
    Instruction("punctuation:no_digits", (), "Do not write any digits (0-9); spell every number out in words.",
                c.no_digits, c.no_digits_partial),
    Instruction("start:phrase", (Arg("phrase", "text", pool=_START_POOL),),
                'Begin your answer with exactly these words: "{phrase}"', c.start_phrase, c.start_phrase_partial),
    Instruction("end:phrase", (Arg("phrase", "text", pool=_END_POOL),),
                'Finish your answer with exactly these words: "{phrase}", and write nothing after them.',
                c.end_phrase, c.end_phrase_partial),
    Instruction("start:repeat_request", (Arg("request", "text", from_task=True),),
                'Start by repeating the request "{request}" word for word, with nothing before it; only '
                "then answer it.", c.repeat_request, c.repeat_request_partial),
)
INSTRUCTIONS: dict[str, Instruction] = {k.id: k for k in _KINDS}
GRADED_KINDS = frozenset(k.id for k in _KINDS if k.partial is not None)


# -- arguments -------------------------------------------------------------------------------------
def _spec(kind: Any) -> Instruction:
    spec = INSTRUCTIONS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ValueError(f"unknown instruction kind {kind!r}; known: {sorted(INSTRUCTIONS)}")
    return spec


def _check_arg(kind: str, arg: Arg, value: Any) -> Any:
    where = f"instruction {kind!r}: argument {arg.name!r}"
    if arg.type == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < arg.minimum:
            raise ValueError(f"{where} must be an integer >= {arg.minimum}, got {value!r}")
        return value
    if arg.type == "keywords":
        if (not isinstance(value, (list, tuple)) or not value
                or not all(isinstance(w, str) and w.strip() for w in value)):
            raise ValueError(f"{where} must be a non-empty list of non-empty strings, got {value!r}")
        return [w.strip() for w in value]
    if arg.type == "letter":
        if not isinstance(value, str) or len(value) != 1 or not ("a" <= value.lower() <= "z"):
            raise ValueError(f"{where} must be one letter a-z, got {value!r}")
        return value.lower()
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def validate(kind: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The kwargs of ``kind``, checked and normalised (a copy)."""
    spec = _spec(kind)
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"instruction {kind!r}: kwargs must be a mapping, got {type(kwargs).__name__}")
    names = {a.name for a in spec.args}
    extra = sorted(set(kwargs) - names, key=str)
    if extra:
        raise ValueError(f"instruction {kind!r}: unknown argument {extra[0]!r}; expected {sorted(names)}")
    out = {}
    for arg in spec.args:
        if arg.name not in kwargs:
            raise ValueError(f"instruction {kind!r}: missing argument {arg.name!r}")
        out[arg.name] = _check_arg(kind, arg, kwargs[arg.name])
    return out


def _render(value: Any) -> str:
    if isinstance(value, list):
        quoted = [f'"{w}"' for w in value]
        return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    return str(value)


def describe(kind: str, kwargs: Mapping[str, Any] | None = None) -> str:
    args = validate(kind, kwargs)
    return INSTRUCTIONS[kind].template.format(**{k: _render(v) for k, v in args.items()})


_STOP = frozenset("about after again against also another because before being below between could "
                  "describe explain friend friendly their there these thing things those three through "
                  "would write short simple someone something give using which while where what when "
                  "your yours with from into make list".split())


def _topic_words(task: str) -> list[str]:
    """Content words of a base task (long enough, not function words), first use order."""
    seen: list[str] = []
    for w in c.words(task.lower()):
        if len(w) >= 5 and w.isalpha() and w not in _STOP and w not in seen:
            seen.append(w)
    return seen


def _sample_arg(kind: str, arg: Arg, rng: random.Random, task: str) -> Any:
    if arg.type == "int":
        return rng.randint(arg.low, arg.high)
    if arg.type == "keywords":
        k = rng.randint(arg.low, arg.high)
        topic = _topic_words(task) if arg.from_task else []
        first = [rng.choice(topic)] if topic else []
        rest = [w for w in arg.pool if w not in first]
        return first + rng.sample(rest, k - len(first))
    if arg.from_task:
        if not task.strip():
            raise ValueError(f"instruction {kind!r}: argument {arg.name!r} is drawn from the base task; "
                             "none given")
        return task.strip()
    return rng.choice(arg.pool)


def sample_kwargs(kind: str, rng: random.Random, task: str = "") -> dict[str, Any]:
    """Arguments for ``kind`` drawn from its sampling ranges (``task``: the base task they go with)."""
    return validate(kind, {a.name: _sample_arg(kind, a, rng, task) for a in _spec(kind).args})


# -- checking --------------------------------------------------------------------------------------
def loose_variants(response: str) -> list[str]:
    """The answer, without its first line, without its last, without both; each also with every
    ``*`` removed (markdown emphasis). Duplicates and blank ones left out."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    out: list[str] = []
    for text in cut + [t.replace("*", "") for t in cut]:
        if text.strip() and text not in out:
            out.append(text)
    return out


def _passes(spec: Instruction, args: dict[str, Any], text: str) -> bool:
    return bool(text.strip()) and bool(spec.check(text, **args))


def follows(kind: str, kwargs: Mapping[str, Any] | None, prompt: str, response: str) -> tuple[bool, bool]:
    """(strict, loose) for one instruction; loose is True whenever strict is."""
    spec, args = _spec(kind), validate(kind, kwargs)
    strict = _passes(spec, args, response)
    return strict, strict or any(_passes(spec, args, v) for v in loose_variants(response))


def graded(kind: str, kwargs: Mapping[str, Any] | None, prompt: str, response: str) -> float:
    """1.0 when strict passes; else how close the answer came, kept below 1 (0 for 0/1 kinds)."""
    spec, args = _spec(kind), validate(kind, kwargs)
    if _passes(spec, args, response):
        return 1.0
    if spec.partial is None or not response.strip():
        return 0.0
    return min(0.99, max(0.0, float(spec.partial(response, **args))))


# -- compatibility ---------------------------------------------------------------------------------
_FORMAT_ONLY = ("format:title", "format:postscript", "start:phrase", "end:phrase", "start:repeat_request",
                "format:bullets_exact", "format:sections", "format:end_question")
_CONFLICTS_ONE_WAY = {
    "case:lowercase": ("case:uppercase", "format:postscript"),
    "format:quoted": _FORMAT_ONLY + ("format:json",),
    "format:json": _FORMAT_ONLY + ("format:paragraphs", "format:highlights", "format:placeholders",
                                   "length:max_sentences", "length:min_sentences", "punctuation:no_comma"),
    "start:repeat_request": ("start:phrase",),
    "end:phrase": ("format:postscript", "format:end_question"),
    "format:postscript": ("format:end_question",),
    "format:paragraphs": ("format:sections",),
    "punctuation:no_digits": ("format:sections",),
}
_CONFLICTS = {frozenset((a, b)) for a, bs in _CONFLICTS_ONE_WAY.items() for b in bs}
_LINES_NEEDED = {"format:bullets_exact": 1, "format:paragraphs": 1, "format:sections": 2}


def _required_text(kind: str, kw: dict[str, Any]) -> str:
    """Literal text an answer following ``kind`` must contain (to test it against other rules)."""
    if kind in ("start:phrase", "end:phrase"):
        return kw["phrase"]
    if kind == "start:repeat_request":
        return kw["request"]
    if kind == "format:sections":
        return f"{kw['marker']} 1"
    if kind == "format:postscript":
        return "P.S."
    if kind == "keywords:include":
        return " ".join(kw["keywords"])
    if kind == "keywords:repeat":
        return kw["word"]
    return ""


def _text_clash(a: str, kw: dict[str, Any], text: str) -> bool:
    """Does rule ``a`` forbid text that another instruction requires?"""
    if not text:
        return False
    if a == "case:lowercase":
        return any(ch.isupper() for ch in text)
    if a == "case:uppercase":
        return any(ch.islower() for ch in text)
    if a == "punctuation:no_comma":
        return "," in text
    if a == "punctuation:no_digits":
        return any(ch.isdigit() for ch in text)
    if a == "keywords:forbid":
        return not c.forbid(text, kw["keywords"])
    if a == "length:max_words":
        return len(c.words(text)) + 5 > kw["n"]
    return False


def _value_clash(a: str, ka: dict[str, Any], b: str, kb: dict[str, Any]) -> bool:
    if (a, b) == ("length:min_words", "length:max_words"):
        return ka["n"] > kb["n"] - 10  # leave a window of at least 10 words
    if (a, b) == ("length:min_sentences", "length:max_sentences"):
        return ka["n"] > kb["n"]
    if (a, b) == ("length:min_words", "length:max_sentences"):
        return ka["n"] > 30 * kb["n"]
    if (a, b) == ("length:max_words", "length:min_sentences"):
        return ka["n"] < 4 * kb["n"]
    if a == "length:max_words" and b in _LINES_NEEDED:
        return ka["n"] < 5 * kb["n"] * _LINES_NEEDED[b]
    if a == "length:max_sentences" and b in _LINES_NEEDED:
        return ka["n"] < kb["n"] * _LINES_NEEDED[b]
    if (a, b) == ("length:max_sentences", "start:repeat_request"):
        return ka["n"] < len(c.sentences(kb["request"])) + 1
    if a.startswith("case:") and b.startswith("keywords:"):
        return False  # keywords match whatever their case
    return _text_clash(a, ka, _required_text(b, kb))


def _parts(x: Any) -> tuple[str, dict[str, Any] | None]:
    if isinstance(x, Mapping):
        return x.get("id"), validate(x.get("id"), x.get("kwargs"))
    _spec(x)
    return x, ({} if not INSTRUCTIONS[x].args else None)


def compatible(a: Any, b: Any) -> bool:
    """False when no answer could follow both (same kind twice included). Value checks (crossing
    word limits, a forbidden word inside a required phrase, ...) need both kwargs."""
    ka, kwa = _parts(a)
    kb, kwb = _parts(b)
    if ka == kb or frozenset((ka, kb)) in _CONFLICTS:
        return False
    if kwa is None or kwb is None:
        return True
    return not (_value_clash(ka, kwa, kb, kwb) or _value_clash(kb, kwb, ka, kwa))
