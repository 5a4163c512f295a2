"""The SFT stage (M0 -> M1) through Ray Train + DeepSpeed on the tiny model: the loss falls, and
the EFT-trained judge writes verdicts the score parser reads more often than before."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from selm_ray.actors import launch
from selm_ray.core.config import load_config
from selm_ray.core.records import Candidate, Rollout

ROOT = Path(__file__).resolve().parents[2]
SFT = ["sft.enabled=true", "sft.epochs=60", "sft.lr=5e-3", "sft.batch_size=24", "sft.max_length=512"]


def _failure_rate(model, questions):
    cfg = load_config("jobs/configs/smoke.yaml", [f"model.path={model}", "judge.mode=generate",
                                                  "judge.num_samples=2", "judge.max_new_tokens=64"])
    judge = launch.launch_judge(cfg, "sft-test", 0, str(model), None, None)
    rollouts = [Rollout(f"q{i}", ({"role": "user", "content": q},), "", (Candidate(a, 1, 0),))
                for i, (q, a) in enumerate(questions)]
    judgements = ray.get(judge.judge.remote(rollouts))
    launch.stop_actor(judge)
    return sum(j.num_failed for j in judgements) / len(judgements)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_path):
    """`selm-ray sft` once for the module (60 epochs are most of its cost): the tests below check
    what it made, and the loop test starts from its M1 the way a resumed run does."""
    run = tmp_path_factory.mktemp("sft") / "sft-run"
    args = [x for o in [f"model.path={tiny_model_path}", *SFT] for x in ("--set", o)]
    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "sft", "jobs/configs/smoke.yaml", *args,
                          "--run-dir", str(run)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    return run, out


def test_sft_lowers_loss_and_teaches_the_judge_format(sft_run, tiny_model_path, ray_address):
    run, out = sft_run
    assert out.returncode == 0, out.stderr[-3000:]
    m1 = Path(out.stdout.strip().splitlines()[-1].removeprefix("M1: "))
    assert m1.parent == run / "sft" / "checkpoints" and (m1 / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    first = [r["loss"] for r in rows if r["epoch"] == 0]
    last = [r["loss"] for r in rows if r["epoch"] == 59]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)
    assert {r["tokens"] > 0 for r in rows} == {True}

    questions = [("What is 2 + 2?", "4."), ("Name a color of the sky.", "Blue."),
                 ("Who wrote Hamlet?", "Shakespeare."), ("What is water made of?", "Hydrogen and oxygen.")]
    ray.init(address=ray_address)
    try:
        before, after = _failure_rate(tiny_model_path, questions), _failure_rate(m1, questions)
    finally:
        ray.shutdown()
    print(f"\njudge failure rate (unparseable verdicts): M0 {before:.2f} -> M1 {after:.2f}")
    assert after < before


def test_self_rewarding_smoke_sft_then_two_iterations_with_created_prompts(tmp_path, tiny_model_path, sft_run,
                                                                           ray_address):
    """The whole Self-Rewarding loop on the tiny model through the real runtime: SFT on IFT + EFT
    (M1), then 2 iterations that create prompts, answer them, judge with written verdicts
    (generate mode, the EFT-taught format) and train DPO on best-vs-worst pairs. The SFT stage is
    the module's (same data and settings): its M1 in the run folder is what the runner finds and
    starts from, as after an interruption (run_sft trains only when no M1 is there)."""
    from selm_ray.run import runner

    assert sft_run[1].returncode == 0, sft_run[1].stderr[-3000:]
    shutil.copytree(sft_run[0] / "sft", tmp_path / "run" / "sft")

    cfg = load_config("jobs/configs/smoke.yaml", [
        f"model.path={tiny_model_path}", *SFT, "create.enabled=true", "create.mix_ratio=0.5",
        "create.max_new_tokens=24", "create.min_words=1", "create.max_attempts_factor=2",
        "judge.mode=generate", "judge.num_samples=2", "judge.max_new_tokens=48", "learner.loss=dpo",
        "generation.num_candidates=4", "generation.temperature=1.0", f"cluster.address={ray_address}"])
    s = runner.train(cfg, tmp_path / "run")
    assert s["learner_error"] is None and s["policy_version"] == 2
    assert (tmp_path / "run" / "sft" / "checkpoints").is_dir()
    assert sum(s["prompt_creation"].values()) > 0
    # M0 writes no parseable verdict at all (test above); M1's verdicts make pairs
    assert s["judge_failure_rate"] < 1.0 and s["pairs"] > 0
