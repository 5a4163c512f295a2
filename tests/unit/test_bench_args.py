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
