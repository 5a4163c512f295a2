"""Self-instruct filters on hand-written cases: one reason per rejected output, all counted."""
import random

import pytest

from selm_ray.core.selfinstruct import PromptFilter, fewshot_messages, parse_instruction, pick_examples, rouge_l, words

SEED = ["Write a haiku about autumn leaves.", "Explain how a bicycle gear works to a child.",
        "List three ways to save water at home."]


@pytest.mark.parametrize("reply,finish,reason", [
    ("Describe the water cycle in two sentences.", "length", "truncated"),
    ("   ", "stop", "empty"),
    ("Task 4:", "stop", "empty"),
    ("Summarize this.", "stop", "too_short"),
    ("word " * 151, "stop", "too_long"),
    ("List three ways to save water at home.", "stop", "near_duplicate"),  # known, not shown
    ("Write a short haiku about the autumn leaves.", "stop", "near_duplicate"),
    ("1. Write a poem about rain.\n2. Explain how rain forms in clouds.", "stop", "multiple_tasks"),
    ("Sure! Here is a recipe for pancakes with three ingredients.", "stop", "not_an_instruction"),
    ("I cannot think of a task that would fit here.", "stop", "not_an_instruction"),
    ("Describe what is happening in the attached picture of a beach.", "stop", "unsupported_modality"),
    ("Task 4: Compose a polite email declining a meeting invitation.", "stop", "accepted"),
])
def test_each_output_gets_exactly_one_reason(reply, finish, reason):
    f = PromptFilter(list(SEED))
    text, got = f.check(reply, finish, SEED[:2])
    assert got == reason and (text is not None) == (reason == "accepted")
    assert sum(f.counts.values()) == 1 and f.counts[reason] == 1


def test_copy_of_a_shown_example_is_named_as_such():
    f = PromptFilter(known=[])  # not known yet, but it was one of the few-shot examples
    assert f.check("write a haiku about AUTUMN leaves", "stop", SEED)[1] == "copied_example"


def test_accepted_prompts_join_the_known_set_so_repeats_are_duplicates():
    f = PromptFilter(list(SEED))
    assert f.check("Compose a polite email declining a meeting invitation.", "stop", [])[1] == "accepted"
    assert f.check("Compose a polite email that declines a meeting invitation.", "stop", [])[1] == "near_duplicate"
    assert f.counts["accepted"] == 1 and f.counts["near_duplicate"] == 1


def test_rouge_l():
    assert rouge_l(words("a b c d"), words("a b c d")) == 1.0
    assert rouge_l(words("a b c d"), words("x y")) == 0.0
    assert rouge_l(words("a b c d"), words("a c")) == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_parse_and_fewshot_prompt():
    assert parse_instruction('Task 9: "Name two rivers in Africa."\nTask 10: more') == "Name two rivers in Africa."
    [msg] = fewshot_messages(SEED)
    assert msg["role"] == "user" and "Task 3: List three ways" in msg["content"] and "as Task 4" in msg["content"]


def test_examples_mix_seed_and_created():
    rng = random.Random(0)
    ex = pick_examples(SEED * 3, ["c1", "c2", "c3", "c4", "c5"], 8, rng)
    assert len(ex) == 8 and sum(e.startswith("c") for e in ex) == 4
    assert len(pick_examples(SEED, [], 8, rng)) == 3  # a small pool gives what it has


def test_remembered_prompts_count_as_known_without_being_counted():
    f = PromptFilter(list(SEED))
    f.remember("Compose a polite email declining a meeting invitation.")
    assert sum(f.counts.values()) == 0
    assert f.check("Compose a polite email declining the meeting invitation.", "stop", [])[1] == "near_duplicate"


def test_logged_prompts_of_an_earlier_attempt(tmp_path):
    import json

    from selm_ray.core.jsonl import cut_torn_tail
    from selm_ray.run.creator import logged_prompts

    path = tmp_path / "created_prompts.jsonl"
    assert logged_prompts(path) == {}
    rows = [{"iteration": 0, "reason": "accepted", "prompt_id": "created-0-0", "prompt": "Name two rivers."},
            {"iteration": 0, "reason": "near_duplicate", "reply": "Name two rivers!"},
            {"iteration": 1, "reason": "accepted", "prompt_id": "created-1-1", "prompt": "Plan a picnic."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 1, "rea')  # cut by a kill
    got = logged_prompts(path)
    assert {t: [(r.prompt_id, r.messages[-1]["content"]) for r in rs] for t, rs in got.items()} == {
        0: [("created-0-0", "Name two rivers.")], 1: [("created-1-1", "Plan a picnic.")]}
    cut_torn_tail(path)  # what a resumed run appends then starts on a line of its own
    assert path.read_text().endswith("Plan a picnic.\"}\n") and logged_prompts(path) == got
    path.write_text("not json\n" + json.dumps(rows[0]) + "\n")  # damage before the end is an error
    with pytest.raises(ValueError, match=r"created_prompts.jsonl:1: not JSON"):
        logged_prompts(path)
