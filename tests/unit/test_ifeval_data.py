"""The instruction-following prompt builder: determinism, disjoint splits, valid and compatible
instructions, the shipped base tasks, and the builtin sources."""
import itertools
import json

import pytest

from selm_ray.core.data import DataError, load_prompts
from selm_ray.core.ifeval_data import DEV_TASKS, build_prompts, load_tasks, split_tasks, write_jsonl
from selm_ray.core.judging.instructions import INSTRUCTIONS, compatible, describe, follows, graded


@pytest.fixture(scope="module")
def train():
    return build_prompts(600, "train", 0)


@pytest.fixture(scope="module")
def dev():
    return build_prompts(120, "dev")


def test_the_task_file_is_large_and_unique():
    tasks = load_tasks()
    assert len(tasks) >= 170 and len(set(tasks)) == len(tasks)
    assert len({t.split()[0] for t in tasks}) >= 8  # many kinds of request
    assert sum(t.startswith("Summarize") for t in tasks) >= 5


def test_same_arguments_same_rows(train):
    assert build_prompts(600, "train", 0) == train
    assert build_prompts(50, "train", 0) == train[:50]  # a larger n extends a smaller one
    other = build_prompts(50, "train", 1)
    assert other != train[:50] and other[0]["id"] == "ifeval-train-s1-000000"
    assert train[123]["id"] == "ifeval-train-000123" and len({r["id"] for r in train}) == 600
    assert len({r["prompt"] for r in train}) == 600


def test_dev_is_fixed_and_uses_its_own_tasks(train, dev):
    assert len(dev) == 120 and build_prompts(120, "dev", 7) == dev  # the seed does not move dev
    assert {r["meta"]["base_task"] for r in dev} <= set(split_tasks("dev"))
    assert not {r["meta"]["base_task"] for r in train} & set(split_tasks("dev"))
    assert split_tasks("dev") == list(range(len(load_tasks()) - DEV_TASKS, len(load_tasks())))
    assert len({r["meta"]["base_task"] for r in train}) == len(split_tasks("train"))  # every task used
    with pytest.raises(ValueError, match="split must be one of"):
        build_prompts(3, "test")


def test_rows_carry_valid_compatible_instructions(train, dev):
    counts = set()
    for row in train + dev:
        items = row["meta"]["instructions"]
        counts.add(len(items))
        task = load_tasks()[row["meta"]["base_task"]]
        assert row["prompt"].startswith(task + "\n\n")
        for item in items:
            assert describe(item["id"], item["kwargs"]) in row["prompt"]
            follows(item["id"], item["kwargs"], row["prompt"], "A dummy answer.")
            graded(item["id"], item["kwargs"], row["prompt"], "A dummy answer.")
        assert len({i["id"] for i in items}) == len(items)
        for a, b in itertools.combinations(items, 2):
            assert compatible(a, b), (row["id"], a, b)
        json.dumps(row)  # plain JSON all the way down
    assert counts == {1, 2, 3}
    kinds = {i["id"] for r in train for i in r["meta"]["instructions"]}
    assert kinds == set(INSTRUCTIONS)


def test_write_jsonl_and_load_back(tmp_path, dev):
    path = write_jsonl(dev[:5], tmp_path / "sub" / "dev.jsonl")
    recs, rep = load_prompts(str(path))
    assert rep.kept == 5 and [r.prompt_id for r in recs] == [r["id"] for r in dev[:5]]
    assert recs[0].meta == dev[0]["meta"] and recs[0].messages[0]["content"] == dev[0]["prompt"]


def test_builtin_sources():
    recs, _ = load_prompts("builtin:ifeval-train")
    assert len(recs) == 600 and recs[0].prompt_id == "ifeval-train-000000" and recs[0].meta["instructions"]
    dev, _ = load_prompts("builtin:ifeval-dev")
    assert len(dev) == 120 and dev[0].prompt_id == "ifeval-dev-000000"
    small, _ = load_prompts("builtin:ifeval-train:30:2")
    assert len(small) == 30 and small[0].prompt_id == "ifeval-train-s2-000000"
    for bad, msg in (("builtin:ifeval-test", "unknown built-in source"), ("builtin:ifeval-dev:5:1", "unknown"),
                     ("builtin:ifeval-train:x", "must be integers"), ("builtin:ifeval-train:0", ">= 1")):
        with pytest.raises(DataError, match=msg):
            load_prompts(bad)
