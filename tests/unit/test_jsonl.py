"""The one JSONL log policy: torn tails left out and cut before appending, damage is an error."""
import pytest

from selm_ray.core.jsonl import AppendLog, LogError, cut_torn_tail, read_log


def test_read_leaves_out_and_counts_a_torn_tail(tmp_path):
    path = tmp_path / "log.jsonl"
    assert read_log(path).rows == [] and read_log(path).torn == 0  # no file yet
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b')
    got = read_log(path)
    assert got.rows == [{"a": 1}, {"a": 2}] and got.torn == 1
    path.write_text('{"a": 1}\n{"a": 2}')  # a complete object without its newline is torn too
    assert read_log(path).rows == [{"a": 1}] and read_log(path).torn == 1


def test_damage_before_the_end_names_file_and_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(LogError, match=r"log.jsonl:2: not JSON"):
        read_log(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(LogError, match=r"log.jsonl:2: not a JSON object"):
        read_log(path)


def test_append_after_a_tear_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "tr')
    log = AppendLog(path)
    assert log.cut_bytes == len('{"a": 2, "tr')
    log.write({"a": 3})
    log.close()
    assert read_log(path).rows == [{"a": 1}, {"a": 3}] and read_log(path).torn == 0
    assert cut_torn_tail(path) == 0
