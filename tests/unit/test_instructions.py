"""Verifiable instructions: every kind on hand-written answers (strict and loose), descriptions,
argument errors, compatibility and graded scores."""
import random

import pytest

from selm_ray.core.judging.instructions import (
    GRADED_KINDS, INSTRUCTIONS, compatible, describe, follows, graded, loose_variants, sample_kwargs, validate,
)

LIST3 = "* apples\n* pears\n* plums"
JSON_OBJ = '{"name": "Ada", "tags": ["a", "b"]}'
REQ = "Write a note about the rain."

# (kind, kwargs, answer, strict, loose)
CASES = [
    ("case:lowercase", {}, "all quiet here, nothing shouting.", True, True),
    ("case:lowercase", {}, "Sure, here it is:\nall quiet here.", False, True),
    ("case:lowercase", {}, "All quiet Here.", False, False),
    ("case:lowercase", {}, "123 456", False, False),
    ("case:uppercase", {}, "EVERYTHING IS LOUD!", True, True),
    ("case:uppercase", {}, "Here you go:\nEVERYTHING IS LOUD!", False, True),
    ("case:uppercase", {}, "EVERYTHING is loud", False, False),
    ("length:max_words", {"n": 5}, "One two three four five.", True, True),
    ("length:max_words", {"n": 5}, "Here is a short answer for you:\nOne two three.", False, True),
    ("length:max_words", {"n": 5}, "One two three four five six seven.", False, False),
    ("length:max_words", {"n": 5}, "   ", False, False),
    ("length:min_words", {"n": 4}, "Four words are here.", True, True),
    ("length:min_words", {"n": 4}, "Too short.", False, False),
    ("length:max_sentences", {"n": 2}, "First one. Second one!", True, True),
    ("length:max_sentences", {"n": 2}, "Sure thing.\nFirst one. Second one!", False, True),
    ("length:max_sentences", {"n": 2}, "One. Two. Three.", False, False),
    ("length:min_sentences", {"n": 3}, "One. Two? Three!", True, True),
    ("length:min_sentences", {"n": 3}, "Only one sentence here.", False, False),
    ("format:bullets_exact", {"n": 3}, LIST3, True, True),
    ("format:bullets_exact", {"n": 3}, "- a\n- b\n- c", True, True),
    ("format:bullets_exact", {"n": 3}, LIST3 + "\n* extra", False, True),  # loose may drop the last line
    ("format:bullets_exact", {"n": 3}, "* one\n* two", False, False),
    ("format:paragraphs", {"n": 2}, "First part.\n***\nSecond part.", True, True),
    ("format:paragraphs", {"n": 2}, "First part.\n\nSecond part.", False, False),
    ("format:paragraphs", {"n": 2}, "First.\n***\n***\nSecond.", False, False),
    ("format:sections", {"n": 2, "marker": "SECTION"}, "SECTION 1\nIntro.\nSECTION 2\nMore.", True, True),
    ("format:sections", {"n": 2, "marker": "SECTION"}, "**SECTION 1**\nIntro.\n**SECTION 2**\nMore.", False, True),
    ("format:sections", {"n": 2, "marker": "SECTION"}, "SECTION 1\nIntro.\nSECTION 3\nMore.", False, False),
    ("format:sections", {"n": 2, "marker": "Part"}, "## Part 1\nIntro.\n## Part 2\nMore.", True, True),
    ("format:highlights", {"n": 2}, "This is *key* and *also key*.", True, True),
    ("format:highlights", {"n": 2}, "* item one\n* item *two*", False, False),
    ("format:highlights", {"n": 1}, "Nothing marked here.", False, False),
    ("format:placeholders", {"n": 2}, "Dear [name], see you at [place].", True, True),
    ("format:placeholders", {"n": 2}, "Dear [name], see you soon. []", False, False),
    ("format:title", {}, "<<Rainy Days>>\nIt rained.", True, True),
    ("format:title", {}, "Rainy Days\nIt rained.", False, False),
    ("format:title", {}, "<< >> It rained.", False, False),
    ("format:postscript", {}, "See you soon.\n\nP.S. Bring snacks.", True, True),
    ("format:postscript", {}, "See you soon.\n\n**P.S.** Bring snacks.", False, True),
    ("format:postscript", {}, "See you soon. PS bring snacks.", False, False),
    ("format:postscript", {}, "P.S. only a postscript.", False, False),
    ("format:quoted", {}, '"The whole thing is quoted."', True, True),
    ("format:quoted", {}, 'Here it is:\n"The whole thing is quoted."', False, True),
    ("format:quoted", {}, '"Only the start is quoted.', False, False),
    ("format:json", {}, JSON_OBJ, True, True),
    ("format:json", {}, "```json\n" + JSON_OBJ + "\n```", True, True),
    ("format:json", {}, "Here is the JSON:\n" + JSON_OBJ, False, True),
    ("format:json", {}, "{'name': 'Ada'}", False, False),
    ("format:json", {}, "42", False, False),
    ("format:end_question", {}, "What do you think?", True, True),
    ("format:end_question", {}, "What do you think?\nBye.", False, True),
    ("format:end_question", {}, "I think so.", False, False),
    ("keywords:include", {"keywords": ["rain", "cloud"]}, "Rain falls from a Cloud.", True, True),
    ("keywords:include", {"keywords": ["rain", "cloud"]}, "Rain falls. Clouds gather.", False, False),
    ("keywords:forbid", {"keywords": ["very"]}, "It is quite nice.", True, True),
    ("keywords:forbid", {"keywords": ["very"]}, "It is quite nice.\nVery nice.", False, True),
    ("keywords:forbid", {"keywords": ["very"]}, "It is Very nice indeed.", False, False),
    ("keywords:forbid", {"keywords": ["very"]}, "Everything is fine.", True, True),  # a word, not a substring
    ("keywords:repeat", {"word": "time", "n": 2}, "Time flies; take your time.", True, True),
    ("keywords:repeat", {"word": "time", "n": 2}, "Time flies; sometimes slowly.", False, False),
    ("keywords:letter_frequency", {"letter": "b", "n": 3}, "Big bubbles.", True, True),
    ("keywords:letter_frequency", {"letter": "b", "n": 3}, "A big dog.", False, False),
    ("punctuation:no_comma", {}, "No commas at all here.", True, True),
    ("punctuation:no_comma", {}, "Sure, here it is:\nNo commas at all here.", False, True),
    ("punctuation:no_comma", {}, "One, two and three.", False, False),
    ("punctuation:no_digits", {}, "Three cats and twelve dogs.", True, True),
    ("punctuation:no_digits", {}, "3 cats and 12 dogs.", False, False),
    ("start:phrase", {"phrase": "In short:"}, "In short: it works.", True, True),
    ("start:phrase", {"phrase": "In short:"}, "**In short:** it works.", False, True),
    ("start:phrase", {"phrase": "In short:"}, "Well, in short: it works.", False, False),
    ("end:phrase", {"phrase": "Hope this helps!"}, "Do this.\nHope this helps!  ", True, True),
    ("end:phrase", {"phrase": "Hope this helps!"}, "Do this. Hope this helps!\nBye.", False, True),
    ("end:phrase", {"phrase": "Hope this helps!"}, "Hope this helps! Do this.", False, False),
    ("start:repeat_request", {"request": REQ}, REQ + "\nThe rain is soft.", True, True),
    ("start:repeat_request", {"request": REQ}, "write a  note about the rain. It poured.", True, True),
    ("start:repeat_request", {"request": REQ}, "Sure!\n" + REQ + "\nIt poured.", False, True),
    ("start:repeat_request", {"request": REQ}, REQ, False, False),  # nothing answered after it
    ("start:repeat_request", {"request": REQ}, "The rain is soft.", False, False),
]


@pytest.mark.parametrize("kind,kwargs,answer,strict,loose", CASES)
def test_hand_written_answers(kind, kwargs, answer, strict, loose):
    assert follows(kind, kwargs, "prompt", answer) == (strict, loose)


def test_every_kind_has_passing_and_failing_cases():
    assert len(INSTRUCTIONS) >= 22
    for kind in INSTRUCTIONS:
        seen = {(s, lo) for k, _, _, s, lo in CASES if k == kind}
        assert (True, True) in seen and (False, False) in seen, kind
    loose_only = {k for k, _, _, s, lo in CASES if lo and not s}
    assert len(loose_only) >= 10


def test_describe_names_every_argument_value():
    rng = random.Random(1)
    for kind in INSTRUCTIONS:
        kwargs = sample_kwargs(kind, rng, "Describe a quiet harbour at dawn.")
        text = describe(kind, kwargs)
        assert text.strip() and text[0].isupper(), kind
        for value in kwargs.values():
            for part in value if isinstance(value, list) else [value]:
                assert str(part) in text, (kind, part)
    assert describe("case:lowercase", {}) == "Your entire answer must be in lowercase letters; no capitals at all."
    assert '"rain" and "cloud"' in describe("keywords:include", {"keywords": ["rain", "cloud"]})


@pytest.mark.parametrize("kind,kwargs,problem", [
    ("case:nope", {}, "unknown instruction kind 'case:nope'"),
    ("length:max_words", {}, "'length:max_words': missing argument 'n'"),
    ("length:max_words", {"n": 0}, "'length:max_words': argument 'n' must be an integer >= 1"),
    ("length:max_words", {"n": "5"}, "argument 'n' must be an integer"),
    ("length:max_words", {"n": True}, "argument 'n' must be an integer"),
    ("length:max_words", {"n": 5, "m": 1}, "'length:max_words': unknown argument 'm'"),
    ("keywords:include", {"keywords": []}, "'keywords:include': argument 'keywords' must be a non-empty list"),
    ("keywords:include", {"keywords": "rain"}, "argument 'keywords' must be a non-empty list"),
    ("keywords:letter_frequency", {"letter": "ab", "n": 2}, "argument 'letter' must be one letter"),
    ("start:phrase", {"phrase": "  "}, "'start:phrase': argument 'phrase' must be a non-empty string"),
    ("case:lowercase", [1], "kwargs must be a mapping"),
])
def test_bad_kind_or_kwargs_is_a_value_error_naming_them(kind, kwargs, problem):
    with pytest.raises(ValueError) as e:
        follows(kind, kwargs, "p", "answer")
    assert problem in str(e.value)
    with pytest.raises(ValueError):
        graded(kind, kwargs, "p", "answer")


def test_validate_normalises_and_copies():
    kw = {"letter": "B", "n": 3}
    assert validate("keywords:letter_frequency", kw) == {"letter": "b", "n": 3} and kw["letter"] == "B"
    assert validate("case:lowercase", None) == {}


def _i(kind, **kwargs):
    return {"id": kind, "kwargs": kwargs}


def test_compatibility_by_kind_and_by_value():
    assert not compatible("case:lowercase", "case:uppercase")
    assert not compatible("case:uppercase", "case:uppercase")  # the same kind twice
    for other in ("format:title", "format:json", "format:postscript", "start:phrase", "end:phrase"):
        assert not compatible("format:quoted", other) and not compatible(other, "format:quoted")
    for other in ("format:bullets_exact", "format:paragraphs", "format:sections", "format:highlights"):
        assert not compatible("format:json", other)
    assert compatible("case:lowercase", "length:max_words") and compatible("format:title", "format:highlights")
    assert compatible("length:min_words", "length:max_words")  # no values: nothing to cross
    assert not compatible(_i("length:min_words", n=80), _i("length:max_words", n=60))
    assert not compatible(_i("length:max_words", n=60), _i("length:min_words", n=55))  # window too small
    assert compatible(_i("length:min_words", n=30), _i("length:max_words", n=60))
    assert not compatible(_i("length:min_sentences", n=5), _i("length:max_sentences", n=3))
    assert not compatible(_i("length:max_sentences", n=2), _i("format:bullets_exact", n=4))
    assert not compatible(_i("keywords:include", keywords=["rain"]), _i("keywords:forbid", keywords=["Rain"]))
    assert not compatible(_i("keywords:forbid", keywords=["thanks"]), _i("start:phrase", phrase="Thanks a lot."))
    assert not compatible(_i("punctuation:no_comma"), _i("start:phrase", phrase="Sure, here."))
    assert compatible(_i("punctuation:no_comma"), _i("start:phrase", phrase="In short:"))
    assert not compatible(_i("case:lowercase"), _i("end:phrase", phrase="Hope this helps!"))
    assert compatible(_i("case:lowercase"), _i("end:phrase", phrase="hope this helps!"))
    assert compatible(_i("case:uppercase"), _i("keywords:include", keywords=["rain"]))  # matched in any case
    assert not compatible(_i("case:uppercase"), _i("format:sections", n=2, marker="Part"))
    assert compatible(_i("case:uppercase"), _i("format:sections", n=2, marker="PART"))
    assert not compatible(_i("punctuation:no_digits"), _i("format:sections", n=2, marker="PART"))
    assert not compatible(_i("length:max_words", n=8), _i("start:repeat_request", request=REQ))
    assert not compatible(_i("case:lowercase"), "format:postscript")
    with pytest.raises(ValueError, match="unknown instruction kind"):
        compatible("format:nope", "case:lowercase")


def test_loose_variants():
    v = loose_variants("Sure:\n**body**\nBye")
    assert v[0] == "Sure:\n**body**\nBye" and "**body**" in v and "body" in v and "Sure:\nbody\nBye" in v
    assert len(v) == len(set(v)) and all(t.strip() for t in v)
    assert loose_variants("   ") == []


def test_graded_is_one_exactly_when_strict_passes():
    for kind, kwargs, answer, strict, _ in CASES:
        g = graded(kind, kwargs, "p", answer)
        assert 0.0 <= g <= 1.0 and (g == 1.0) == strict, (kind, answer, g)


def test_graded_gives_partial_credit():
    assert graded("case:lowercase", {}, "", "abcD") == 0.75
    assert graded("length:max_words", {"n": 5}, "", "a b c d e f g h i j") == 0.5
    assert graded("length:min_words", {"n": 4}, "", "a b") == 0.5
    assert graded("format:bullets_exact", {"n": 4}, "", "* a\n* b") == 0.5
    assert graded("keywords:include", {"keywords": ["rain", "sun"]}, "", "rain today") == 0.5
    assert graded("punctuation:no_comma", {}, "", "a, b") == 0.5
    assert graded("start:phrase", {"phrase": "in short: now"}, "", "In short, later.") == pytest.approx(2 / 3)
    assert graded("length:max_words", {"n": 100}, "", " ".join(["w"] * 101)) == 0.99  # kept below 1
    assert graded("format:title", {}, "", "no title") == 0.0 and "format:title" not in GRADED_KINDS
    assert graded("case:lowercase", {}, "", "") == 0.0
    assert len(GRADED_KINDS) >= 15 and GRADED_KINDS <= set(INSTRUCTIONS)


def test_sampled_arguments_are_valid_and_in_range():
    rng = random.Random(0)
    for kind, spec in INSTRUCTIONS.items():
        for _ in range(20):
            kwargs = sample_kwargs(kind, rng, "Explain how a compass helps hikers.")
            assert validate(kind, kwargs) == kwargs
            follows(kind, kwargs, "p", "A dummy answer.")
            for arg in spec.args:
                if arg.type == "int":
                    assert arg.low <= kwargs[arg.name] <= arg.high
    assert 30 <= INSTRUCTIONS["length:max_words"].args[0].low < INSTRUCTIONS["length:max_words"].args[0].high <= 120
    with pytest.raises(ValueError, match="'start:repeat_request': argument 'request' is drawn from the base task"):
        sample_kwargs("start:repeat_request", rng, "")
