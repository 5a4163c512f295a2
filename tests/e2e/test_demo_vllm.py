"""The one-pass demo through real vLLM (generation, greedy y_ref, judging) on tiny models and SmolLM2.

Each run is a subprocess of the real CLI: vLLM owns process-wide state (threads, KV cache).
"""
import json
import os
import subprocess
import sys

import pytest


def _demo(tmp_path, *sets, prompts=3):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "selm_ray.ops.cli", "demo", "--prompts", str(prompts), "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    pairs = [json.loads(line) for line in (run_dir / "pairs.jsonl").read_text().splitlines()]
    return summary, pairs


def test_expected_score_judge_on_tiny_model(tmp_path, tiny_model_path):
    """Three everyday prompts, plus two that do not fit max_model_len=512 (the SmolLM2 tokenizer:
    ~1 token per 'apple '; the rubric adds ~250): one leaves no room for the 64-token answer and is
    skipped before generation, one fits generation but not the judge's rubric around it, whose
    candidates are failed judgements. Neither ends the run (data.on_bad_row: skip; with the default,
    error, the first is an error naming it: tests/e2e/test_runtime.py)."""
    data = tmp_path / "prompts.jsonl"
    rows = [{"id": f"ok-{i}", "prompt": f"Name a {w}."} for i, w in enumerate(("fruit", "colour", "river"))]
    rows += [{"id": "judge-too-long", "prompt": "apple " * 280}, {"id": "too-long", "prompt": "apple " * 500}]
    # rubric + this prompt fit, but not with a whole 64-token answer: the judge reads the answer cut
    rows += [{"id": "answer-capped", "prompt": "apple " * 225}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary, pairs = _demo(tmp_path, f"model.path={tiny_model_path}", "generation.num_candidates=3",
                           f"data.source={data}", "model.max_model_len=512", "data.on_bad_row=skip", prompts=6)
    assert summary["prompts"] == 6 and summary["candidates"] == 15  # 5 prompts x 3; none for the skipped one
    assert summary["no_pair"].get("prompt_too_long") == 1 and summary["no_pair"].get("too_few_scored", 0) >= 1
    # expected scores are probability-weighted digits: a failure only where the judge input was too long
    assert summary["judge_failures"] == 3
    assert summary["judge_stats"]["capped_answers"] >= 1  # answer-capped's long answers, judged
    assert summary["pairs"] + sum(summary["no_pair"].values()) == 6
    assert {p["prompt_id"] for p in pairs} <= {"ok-0", "ok-1", "ok-2", "answer-capped"}
    for p in pairs:
        assert 0 <= p["rejected_score"] < p["chosen_score"] <= 5
        assert p["ref_response"] is not None and p["chosen_version"] == 0
        assert p["chosen_tokens"] > 0


def test_generate_judge_counts_unparseable_verdicts_as_failures(tmp_path, tiny_model_path):
    # a random tiny model cannot write "Score: N": every verdict must be a counted failure, no pairs.
    # 12 x 2 candidates x 3 seeded verdicts of ~250 prompt tokens: more than one scheduler step of
    # tokens (4096), which on CPU must not split a seeded prompt (vLLM cannot rewind a CPU generator)
    summary, pairs = _demo(tmp_path, f"model.path={tiny_model_path}", "judge.mode=generate",
                           "judge.num_samples=3", "judge.max_new_tokens=16", prompts=12)
    assert summary["candidates"] == 24
    assert summary["judge_failures"] == 24 and summary["judge_failure_rate"] == 1.0
    assert pairs == [] and summary["no_pair"] == {"too_few_scored": 12}


def test_reward_model_judge(tmp_path, tiny_model_path, smollm2_tokenizer):
    from selm_ray.engines.models import build_tiny_reward_model

    rm = build_tiny_reward_model(tmp_path / "rm", seed=0, tokenizer=smollm2_tokenizer)
    summary, pairs = _demo(tmp_path, f"model.path={tiny_model_path}", "judge.kind=reward_model",
                           f"judge.reward_model={rm}")
    assert summary["judge_failures"] == 0 and summary["pairs"] == 3  # real-valued RM scores never tie
    assert all(p["judge"].startswith("rm:") for p in pairs)


def test_cli_rejects_bad_input_without_starting_anything(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "demo", "--set", "judge.mode=vibes"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "judge.mode: must be one of" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "demo", "--prompts", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "argument --prompts: '0': must be an integer >= 1" in bad.stderr


@pytest.mark.slow
def test_demo_on_smollm2_default(tmp_path, smollm2_path):
    summary, pairs = _demo(tmp_path, prompts=4)
    assert summary["prompts"] == 4 and summary["judge_failures"] == 0
    assert summary["pairs"] >= 1
    assert all(p["chosen"].strip() and p["rejected"].strip() for p in pairs)
