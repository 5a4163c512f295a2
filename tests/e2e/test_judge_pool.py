"""Function and reward-model judges as real judge-pool actors, and `selm-ray judge-eval`."""
import json
import subprocess
import sys
from pathlib import Path

import ray

from selm_ray.actors import launch
from selm_ray.core.config import load_config
from selm_ray.core.records import Candidate, Rollout

ROOT = Path(__file__).resolve().parents[2]


def _rollout(pid, prompt, *texts):
    return Rollout(pid, ({"role": "user", "content": prompt},), "", tuple(Candidate(t, 1, 0) for t in texts))


def _labelled(path):
    rows = [{"prompt": f"What is {a}+{b}? [answer={a + b}]", "chosen": f"It is {a + b}.", "rejected": f"It is {a + b + 1}."}
            for a, b in ((1, 2), (3, 4), (10, 5), (7, 7))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_function_and_reward_model_judges_in_the_judge_pool(tmp_path, smollm2_tokenizer, ray_address):
    from selm_ray.engines.models import build_tiny_reward_model

    rm = build_tiny_reward_model(tmp_path / "rm", seed=0, tokenizer=smollm2_tokenizer)
    ray.init(address=ray_address)
    try:
        fn_cfg = load_config(None, ["judge.kind=function", "judge.function=selm_ray.core.judging.functions:math_answer"])
        rm_cfg = load_config(None, ["judge.kind=reward_model", f"judge.reward_model={rm}"])
        fn_judge = launch.launch_judge(fn_cfg, "t", 0, "unused", None, None)
        rm_judge = launch.launch_judge(rm_cfg, "t", 1, "unused", str(rm), None)
        rollouts = [_rollout("a", "What is 2+2? [answer=4]", "2+2 = 4", "2+2 = 5"),
                    _rollout("b", "Say hi", "hi", "hello")]
        [a, b] = ray.get(fn_judge.judge.remote(rollouts))
        assert [s.score for s in a.scores] == [1.0, 0.0] and a.judge.startswith("fn:")
        assert b.num_failed == 2 and b.scores[0].failure == "function returned None"
        [ra, rb] = ray.get(rm_judge.judge.remote(rollouts))
        assert all(s.ok for s in ra.scores + rb.scores) and ra.judge == f"rm:{rm}"
        assert ra.scores[0].score != ra.scores[1].score  # a real forward pass on different texts
        stats = ray.get(fn_judge.stats.remote())
        assert stats["candidates"] == 4 and stats["failures"] == 2
    finally:
        ray.shutdown()


def test_judge_eval_command(tmp_path, smollm2_tokenizer):
    from selm_ray.engines.models import build_tiny_reward_model

    data = _labelled(tmp_path / "labelled.jsonl")
    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "judge-eval", "--data", str(data), "--set",
                          "judge.kind=function", "--set", "judge.function=selm_ray.core.judging.functions:math_answer",
                          "--out", str(tmp_path / "fn.json")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "fn.json").read_text())
    assert result["pairs"] == 4 and result["accuracy"] == 1.0 and result["tie_rate"] == 0.0

    rm = build_tiny_reward_model(tmp_path / "rm", seed=0, tokenizer=smollm2_tokenizer)
    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "judge-eval", "--data", str(data), "--set",
                          "judge.kind=reward_model", "--set", f"judge.reward_model={rm}"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["pairs"] == 4 and result["failure_rate"] == 0.0 and 0.0 <= result["accuracy"] <= 1.0

    bad = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "judge-eval", "--data", str(data), "--set",
                          "judge.kind=function", "--set", "judge.function=nope.mod:f"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "judge.function: cannot import 'nope.mod'" in bad.stderr


def test_eval_command_on_two_tiny_checkpoints(tmp_path, smollm2_tokenizer):
    from selm_ray.engines.models import build_tiny_causal_lm

    a = build_tiny_causal_lm(tmp_path / "a", seed=1, tokenizer=smollm2_tokenizer)
    b = build_tiny_causal_lm(tmp_path / "b", seed=2, tokenizer=smollm2_tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me one fact about the number {i}."}) + "\n"
                               for i in range(6)))
    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "eval", "--model", str(a), "--baseline", str(b),
                          "--prompts", str(prompts), "--set", "judge.kind=function", "--set",
                          "judge.function=selm_ray.core.judging.functions:brevity", "--set", "generation.max_new_tokens=24",
                          "--out", str(tmp_path / "eval.json")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "eval.json").read_text())
    assert r["prompts"] == 6 and r["wins"] + r["ties"] + r["losses"] + r["failures"] == 6
    lo, hi = r["win_rate_ci95"]
    assert 0 <= lo <= r["win_rate"] <= hi <= 1
    assert r["mean_tokens_model"] > 0 and r["mean_tokens_baseline"] > 0
    assert r["judge"] == "fn:selm_ray.core.judging.functions:brevity"
