import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selm_ray.core.data import (
    DataError, iteration_slices, load_prompts, parse_row, prompt_id_for, seed_prompts_path, shuffled,
)


def _jsonl(tmp_path, rows, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_seed_set_is_large_diverse_and_valid():
    recs, rep = load_prompts("seed")
    assert len(recs) >= 100 and rep.skipped == 0
    texts = [r.messages[0]["content"] for r in recs]
    assert len(set(texts)) == len(texts)
    assert len({t.split()[0].lower() for t in texts}) >= 12  # many different ways to ask
    assert all(r.prompt_id.startswith("seed-") for r in recs)
    assert seed_prompts_path().is_file()


def test_prompt_and_messages_columns(tmp_path):
    src = _jsonl(tmp_path, [
        {"prompt": "Hi there"},
        {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "Q?"}]},
        {"prompt": "wins", "messages": [{"role": "user", "content": "loses"}]},
    ])
    recs, rep = load_prompts(src)
    assert [r.messages[-1]["content"] for r in recs] == ["Hi there", "Q?", "wins"]
    assert recs[1].messages[0]["role"] == "system" and rep.kept == 3
    assert recs[0].prompt_id == prompt_id_for(recs[0].messages)


def test_ultrafeedback_extra_candidates(tmp_path):
    row = {"prompt": "Q", "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
           "rejected": "bad"}
    assert parse_row(row, "ignore").extra_candidates == ()
    assert parse_row(row, "use").extra_candidates == ("good", "bad")


@pytest.mark.parametrize("row,problem", [
    ({"text": "x"}, "no 'prompt'"),
    ({"prompt": ""}, "'prompt' is empty"),
    ({"prompt": 3}, "'prompt' must be a string"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role is 'bot'"),
    ({"messages": [{"role": "user"}]}, "messages[0] must be a mapping"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "end with a user turn"),
])
def test_bad_rows_name_file_row_and_problem(tmp_path, row, problem):
    src = _jsonl(tmp_path, [{"prompt": "fine"}, row])
    with pytest.raises(DataError) as e:
        load_prompts(src)
    msg = str(e.value)
    assert src in msg and "row 1" in msg and problem in msg


def test_invalid_json_line_and_skip_mode(tmp_path):
    src = _jsonl(tmp_path, [{"prompt": "a"}, "{not json", {"prompt": ""}, {"prompt": "b"}])
    with pytest.raises(DataError, match=r"row 1: invalid JSON"):
        load_prompts(src)
    recs, rep = load_prompts(src, on_bad_row="skip")
    assert [r.messages[0]["content"] for r in recs] == ["a", "b"]
    assert rep.skipped == 2 and rep.rows == 4 and "row 2" in rep.skip_reasons[1]


def test_parquet_and_duplicates(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "x"}, {"prompt": "y"}, {"prompt": "x"}]), path)
    recs, _ = load_prompts(str(path))
    assert [r.messages[0]["content"] for r in recs] == ["x", "y"]


def test_datasets_loader_path_and_missing_sources(tmp_path):
    # a local folder of JSON files goes through datasets.load_dataset
    d = tmp_path / "ds"
    d.mkdir()
    (d / "train.json").write_text(json.dumps({"prompt": "from datasets"}) + "\n")
    recs, _ = load_prompts(str(d))
    assert recs[0].messages[0]["content"] == "from datasets"
    with pytest.raises(DataError, match="does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "x.csvv").write_text("a")
        load_prompts(str(tmp_path / "x.csvv"))
    with pytest.raises(DataError, match="no usable prompt rows"):
        load_prompts(_jsonl(tmp_path, [{"prompt": ""}], "empty.jsonl"), on_bad_row="skip")


def test_slices_are_disjoint_and_checked():
    recs, _ = load_prompts("seed")
    s = iteration_slices(shuffled(recs, 0), 3, 10)
    ids = [r.prompt_id for sl in s for r in sl]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert shuffled(recs, 0) == shuffled(recs, 0) and shuffled(recs, 0) != shuffled(recs, 1)
    with pytest.raises(DataError, match="need 1000 distinct prompts"):
        iteration_slices(recs, 10, 100)


def test_meta_column_travels_with_the_prompt(tmp_path):
    meta = {"instructions": [{"id": "case:lowercase", "kwargs": {}}], "base_task": 3}
    src = _jsonl(tmp_path, [{"id": "a", "prompt": "x", "meta": meta}, {"id": "b", "prompt": "y"},
                            {"id": "c", "prompt": "z", "meta": json.dumps(meta)}])
    recs, _ = load_prompts(src)
    assert recs[0].meta == meta and recs[1].meta is None and recs[2].meta == meta
    assert parse_row({"prompt": "x"}).meta is None


@pytest.mark.parametrize("meta,problem", [([1, 2], "'meta' must be a JSON object, got list"),
                                          ("not json", "'meta' is a string that is not JSON"),
                                          (7, "'meta' must be a JSON object, got int")])
def test_bad_meta_names_row_and_column(tmp_path, meta, problem):
    src = _jsonl(tmp_path, [{"prompt": "fine"}, {"prompt": "q", "meta": meta}, {"prompt": "also fine"}])
    with pytest.raises(DataError) as e:
        load_prompts(src)
    assert "row 1" in str(e.value) and problem in str(e.value)
    recs, rep = load_prompts(src, on_bad_row="skip")
    assert [r.messages[0]["content"] for r in recs] == ["fine", "also fine"] and rep.skipped == 1


def test_prompt_lengths_error_names_the_prompt_or_count_in_skip_mode():
    from selm_ray.core.data import PromptRecord, check_prompt_lengths

    recs = [PromptRecord(f"p{i}", ({"role": "user", "content": "w " * n},)) for i, n in enumerate((10, 90, 95))]
    count = lambda msgs: len(msgs[-1]["content"].split())  # noqa: E731
    assert check_prompt_lengths(recs, count, 10, 100, "f.jsonl", "skip") == 1
    assert check_prompt_lengths(recs[:2], count, 10, 100, "f.jsonl", "error") == 0  # 90 + 10 fits exactly
    with pytest.raises(DataError, match=r"f.jsonl: prompt 'p2' is 95 tokens .*max_new_tokens 10 .*max_model_len 100"):
        check_prompt_lengths(recs, count, 10, 100, "f.jsonl", "error")
