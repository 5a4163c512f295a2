"""The benchmarks' command lines reject bad arguments with a message naming them (no run starts)."""
import pytest

from selm_ray.ops import bench_peers, peer_trl

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("argv, what", [(["--pairs", "12"], "--pairs must be a positive multiple of 8"),
                                        (["--repeats", "0"], "--repeats must be >= 1")])
def test_bench_peers_rejects_bad_arguments(argv, what, capsys):
    with pytest.raises(SystemExit) as e:
        bench_peers.main(argv)
    assert e.value.code == 2 and what in capsys.readouterr().err


def test_peer_trl_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        peer_trl.main(["--algo", "xpo", "--model", "m", "--reward-model", "r", "--pairs", "6"])
    assert "--pairs (6) must be a positive multiple of --prompts-per-step (4)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="algo must be one of online_dpo, xpo"):
        peer_trl.run_trl("ppo", "m", "r", ["p"], out_dir="x")


def test_bench_peers_writes_the_same_prompts_for_both_systems(tmp_path):
    from selm_ray.core.data import load_prompts

    path = bench_peers.write_prompts(tmp_path, 16)
    records, _ = load_prompts(str(path))
    assert len(records) == len({r.prompt_id for r in records}) == 16  # our loader reads it as is
    assert peer_trl._read_prompts(str(path)) == [r.messages[-1]["content"] for r in records]  # and TRL's side


def test_bench_splits_the_train_time_into_its_parts(tmp_path):
    """Iteration ends come from the learner's metrics (the stages wait on them); rest is what the
    named parts leave of the train time."""
    import json

    from selm_ray.ops import bench

    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "step_seconds": 5.0}, {"event": "iteration_end", "step": 1, "boundary_seconds": 1.5},
        {"step": 2, "step_seconds": 5.0}, {"event": "iteration_end", "step": 2, "boundary_seconds": 2.0}]) + "\n")
    # the reload after the train clock stopped (the third) is not part of the train time
    summary = {"run_dir": str(tmp_path), "train_seconds": 30.0, "weight_sync_seconds": [0.5, 0.0, 0.25],
               "weight_syncs_in_train": 2, "stage_busy_seconds": {"generate": 9.0, "judge": 1.0, "learn": 10.0}}
    parts = bench.parts(summary)
    assert parts == {"generate": 9.0, "judge": 1.0, "learner_steps": 10.0, "iteration_ends": 3.5,
                     "engine_reloads": 0.5, "rest": 6.0}
    line = bench_peers.report({"dpo": {"trl": [{"pairs_per_second": 0.2}],
                                       "ours": [{"pairs_per_second": 0.5, "loop_seconds": 30.0, "parts": parts}]}})
    assert line[0].startswith("dpo  loss") and "ratio 2.50x (meets the 2x target)" in line[0]
    assert line[1].strip() == ("selm-ray 30.0 s = generate 9.0 + judge 1.0 + learner_steps 10.0 + "
                               "iteration_ends 3.5 + engine_reloads 0.5 + rest 6.0")
