"""The verifiable-instruction recipe end to end on the tiny model (plumbing, not learning): the
function judge over the checks in the real judge pool, the development-split accuracy before
training and after every iteration in metrics, summary, the run's table and `selm-ray report`."""
import json

from selm_ray.core.config import load_config
from selm_ray.ops.cli import main


def test_ifeval_recipe_reports_accuracy_every_iteration(tmp_path, tiny_model_path, ray_address):
    from selm_ray.run import runner

    cfg = load_config("jobs/configs/ifeval-selm.yaml", [
        f"model.path={tiny_model_path}", "schedule.iterations=2", "schedule.prompts_per_iteration=8",
        "generation.max_new_tokens=16", "eval.max_new_tokens=16", "eval.instruction_max_prompts=6",
        "learner.max_length=256", "cluster.threads_per_actor=1", "cluster.learner_threads=1",
        "judge.pair_rule=best_vs_rest", "learner.passes=2",
        f"cluster.address={ray_address}"])
    run_dir = tmp_path / "run"
    s = runner.train(cfg, run_dir)
    assert s["learner_error"] is None and s["prompts"] == 16 and s["policy_version"] == 2
    # the function judge scored every candidate (graded, in [0, 1]); a failure would be counted
    assert s["judge_failure_rate"] == 0.0 and s["pairs"] >= 1
    pairs = [json.loads(line) for line in (run_dir / "buffer" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["judge"].endswith("instructions_graded") and 0 <= p["rejected_score"] < p["chosen_score"] <= 1
               for p in pairs)
    rows = s["instruction_eval"]
    assert [(r["iteration"], r["policy_version"], r["prompts"]) for r in rows] == [(-1, 0, 6), (0, 1, 6), (1, 2, 6)]
    assert all(0 <= r["prompt_strict"] <= r["prompt_loose"] <= 1 and r["mean_tokens"] > 0 for r in rows)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if m.get("event") == "instruction_eval"] == [-1, 0, 1]
    # best_vs_rest + passes 2: every judged pair trained once straight from the buffer, then once
    # more, in the same iteration, before the iteration ends (its version is the next one's start)
    steps = [m for m in metrics if "pair_ids" in m]
    for it in (0, 1):
        first = [i for m in steps if m["iteration"] == it and "pass" not in m for i in m["pair_ids"]]
        again = [i for m in steps if m["iteration"] == it and m.get("pass") == 2 for i in m["pair_ids"]]
        assert sorted(first) == sorted(again) and len(set(first)) == len(first)
    assert sorted(i for m in steps if "pass" not in m for i in m["pair_ids"]) == sorted(p["pair_id"] for p in pairs)
    assert any(m.get("pass") == 2 for m in steps) and len(pairs) <= 3 * 16  # <= N-1 pairs per prompt
    table = (run_dir / "instruction_accuracy.md").read_text()
    assert "| start (v0) |" in table and "| after iteration 2 (v2) |" in table
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["instructions"]["iteration"] == 1  # what `selm-ray stats` shows last
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "instructions.png").is_file()
    assert "| after iteration 1 (v1) |" in (run_dir / "report" / "report.md").read_text()
