"""SFT data: IFT/EFT rows, errors naming the row, and the answer-only loss mask."""
import json

import pytest

from selm_ray.core.data import DataError
from selm_ray.core.judging import parse_score
from selm_ray.core.sft_data import load_sft
from selm_ray.learner.batching import collate_sft


def test_builtin_sets_load_and_every_eft_evaluation_parses():
    ift, eft = load_sft("builtin:ift", "ift"), load_sft("builtin:eft", "eft")
    assert len(ift) >= 10 and len(eft) >= 10
    assert all(e.kind == "eft" and parse_score(e.response) is not None for e in eft)
    assert eft[0].messages[-1]["role"] == "user" and "Score" in eft[0].messages[-1]["content"]


@pytest.mark.parametrize("kind,row,msg", [
    ("ift", {"prompt": "q"}, "row 0: 'response' must be a non-empty string"),
    ("ift", {"messages": [{"role": "user", "content": "q"}]}, "ending with an assistant turn"),
    ("eft", {"prompt": "q", "response": "a", "evaluation": "Looks fine."}, "must end with a score"),
    ("eft", ["not", "an", "object"], "must be a JSON object"),
])
def test_bad_rows_are_named(tmp_path, kind, row, msg):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=msg):
        load_sft(str(path), kind)
    with pytest.raises(DataError, match="existing .jsonl"):
        load_sft(str(tmp_path / "missing.jsonl"), kind)


def test_only_answer_tokens_are_trained(smollm2_tokenizer):
    ex = load_sft("builtin:ift", "ift")[:2]
    batch = collate_sft(smollm2_tokenizer, ex, 512)
    for i, e in enumerate(ex):
        ids = batch["input_ids"][i][batch["loss_mask"][i].bool()].tolist()
        assert ids[-1] == smollm2_tokenizer.eos_token_id
        assert smollm2_tokenizer.decode(ids[:-1]) == e.response
