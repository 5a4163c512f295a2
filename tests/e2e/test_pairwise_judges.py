"""Pairwise judges as real judge-pool actors: the tiny PairRM-layout ranker (its ranking equals
the one computed from its own probabilities), `selm-ray judge-eval` on it, and SmolLM2 choosing
the better of two answers (A/B log-probs on a vLLM engine)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from selm_ray.actors import launch
from selm_ray.core.config import load_config
from selm_ray.core.judging.pairwise import rank
from selm_ray.core.records import Candidate, Rollout

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = {
    "sum": ("What is 2+2?", ("It is 4.", "It is 5.", "2+2 equals 4, since two plus two is four.")),
    "sky": ("What colour is a clear daytime sky?", ("Blue.", "Green, mostly.", "I am not sure.")),
}


def _rollouts():
    return [Rollout(pid, ({"role": "user", "content": q},), "", tuple(Candidate(t, len(t.split()), 0) for t in texts))
            for pid, (q, texts) in QUESTIONS.items()]


@pytest.fixture(scope="module")
def ranker_path(smollm2_tokenizer, tmp_path_factory):
    from selm_ray.engines.pairrm import build_tiny_pairrm

    return build_tiny_pairrm(tmp_path_factory.mktemp("pairrm") / "ranker", seed=0, tokenizer=smollm2_tokenizer)


def test_ranker_and_llm_pairwise_judges_in_the_judge_pool(ranker_path, smollm2_path, ray_address):
    from selm_ray.engines.pairrm import PairRanker

    rollouts = _rollouts()
    ray.init(address=ray_address)
    try:
        t0 = time.time()
        rm_cfg = load_config(None, ["judge.kind=pairwise_rm", f"judge.ranker={ranker_path}"])
        rm_judge = launch.launch_judge(rm_cfg, "t", 0, "unused", str(ranker_path), None)
        judged = ray.get(rm_judge.judge.remote(rollouts))
        stats = ray.get(rm_judge.stats.remote())
        launch.stop_actor(rm_judge)
        rm_seconds = time.time() - t0

        ranker = PairRanker.load(ranker_path)  # the same probabilities, computed here one by one
        for r, j in zip(rollouts, judged):
            texts = [c.text for c in r.candidates]
            want = rank(3, "all", lambda a, b: ranker.compare(r.messages[0]["content"], texts[a], texts[b]))
            assert [s.score for s in j.scores] == pytest.approx([s.score for s in want], abs=1e-5)
            order = sorted(range(3), key=lambda k: -j.scores[k].score)
            assert order == sorted(range(3), key=lambda k: -want[k].score)
            assert j.judge == f"pairrm:{ranker_path}"
        js = stats["judge_stats"]
        assert js["comparisons"] == 12 and js["comparisons_per_prompt"] == 6 and js["failed_comparisons"] == 0
        assert stats["candidates"] == 6 and stats["failures"] == 0

        t0 = time.time()
        llm_cfg = load_config(None, ["judge.kind=pairwise_llm", f"model.path={smollm2_path}",
                                     "model.max_model_len=1024", "cluster.kv_cache_gib=1"])
        llm_judge = launch.launch_judge(llm_cfg, "t", 1, str(smollm2_path), None, None)
        ray.get(llm_judge.ready.remote())
        t1 = time.time()
        judged = ray.get(llm_judge.judge.remote(rollouts))
        llm_seconds = time.time() - t1
        stats = ray.get(llm_judge.stats.remote())
        start_seconds = t1 - t0
    finally:
        ray.shutdown()
    for j in judged:
        assert j.judge == "pairwise:llm" and j.judge_version == 0
        assert all(s.ok and 0.0 <= s.score <= 1.0 and s.num_valid == 4 for s in j.scores)
        assert sum(s.score for s in j.scores) == pytest.approx(1.5, abs=1e-6)  # N/2 in mode all
    js = stats["judge_stats"]
    assert js["comparisons"] == 12 and js["comparisons_per_prompt"] == 6 and js["failed_comparisons"] == 0
    assert isinstance(js["position_bias"], float) and -0.5 <= js["position_bias"] <= 0.5
    print(f"\npairrm (tiny): {rm_seconds:.1f}s incl. actor start for 2 prompts x 6 comparisons; "
          f"pairwise LLM (SmolLM2): engine start {start_seconds:.1f}s, judging {llm_seconds:.1f}s for 12 "
          f"comparisons; position bias {js['position_bias']:+.3f}")


def test_judge_eval_command_with_the_ranker(ranker_path, tmp_path):
    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "judge-eval", "--data", "builtin:pairs",
                          "--set", "judge.kind=pairwise_rm", "--set", f"judge.ranker={ranker_path}",
                          "--out", str(tmp_path / "eval.json")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["pairs"] == 12 and result["failure_rate"] == 0.0 and 0.0 <= result["accuracy"] <= 1.0
    assert result["judge"] == f"pairrm:{ranker_path}"

    bad = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "judge-eval", "--data", "builtin:pairs",
                          "--set", "judge.kind=pairwise_rm"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and "judge.ranker: required when kind is pairwise_rm" in bad.stderr
