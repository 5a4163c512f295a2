"""`selm-ray report` on a run directory written the way a run writes it."""
import json

import pytest

from selm_ray.ops.cli import main
from selm_ray.ops.report import ReportError, rolling, write_report


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _stats(t, pairs_in, gens):
    return {"time": 1000.0 + t, "elapsed_seconds": t,
            "buffer": {"pairs_in_per_second": pairs_in, "pairs_out_per_second": pairs_in / 2, "mean_lag": 0.5,
                       "dropped_stale": 0, "size": 3},
            "pools": {"generator": {"size": gens}, "judge": {"size": 1}}}


def test_rolling_mean():
    assert rolling([1.0, 3.0, 5.0, 7.0], n=2) == [1.0, 2.0, 4.0, 6.0]


def test_report_writes_charts_and_markdown(tmp_path):
    run = tmp_path / "run"
    _write(run / "metrics.jsonl", [{"step": s, "loss": 0.7 - 0.01 * s, "rewards/accuracy": 0.5} for s in range(1, 6)]
           + [{"event": "pool_resize", "pool": "generator", "from": 1, "to": 2, "reason": "selm-ray scale"}]
           + [{"event": "eval", "iteration": t, "win_rate": 0.5 + 0.1 * t} for t in range(2)]
           + [{"event": "judge_eval", "iteration": t, "accuracy": 0.6} for t in range(2)])
    _write(run / "stats.jsonl", [_stats(t, 0.1 * t, 1 if t < 3 else 2) for t in range(6)])
    _write(run / "buffer" / "pairs.jsonl", [{"chosen_score": 4.0, "rejected_score": 1.0 + i % 2,
                                             "chosen_tokens": 10 + i, "rejected_tokens": 12} for i in range(20)])
    (run / "summary.json").write_text(json.dumps({"pairs": 20, "pairs_per_second": 0.3}))
    assert main(["report", str(run)]) == 0
    out = run / "report"
    for name in ("scores", "loss", "lengths", "throughput", "staleness", "evaluation"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (out / "report.md").read_text()
    assert "| pairs | 20 |" in md and "generator 1 -> 2: selm-ray scale" in md and "![loss](loss.png)" in md


def test_report_on_a_folder_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ReportError, match="not a run directory"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_scale_and_stats_arguments_are_checked(capsys):
    assert main(["scale", "--address", "127.0.0.1:1"]) == 2
    assert "--generators and/or --judges" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["scale", "--generators", "0"])
    with pytest.raises(SystemExit):
        main(["stats", "--run", "bad id!"])


def _ieval(iteration, strict, tokens):
    return {"event": "instruction_eval", "iteration": iteration, "policy_version": iteration + 1,
            "prompts": 120, "prompt_strict": strict, "prompt_strict_ci95": [strict - 0.05, strict + 0.05],
            "prompt_loose": strict + 0.02, "instruction_strict": strict + 0.1, "instruction_loose": strict + 0.12,
            "mean_tokens": tokens}


def test_report_charts_and_tabulates_instruction_accuracy(tmp_path):
    from selm_ray.core.evaluation import accuracy_table

    rows = [_ieval(-1, 0.30, 100.0), _ieval(0, 0.36, 110.0), _ieval(1, 0.425, 90.0)]
    table = accuracy_table(rows)
    assert "| start (v0) | 30.0% [25.0, 35.0] |" in table
    assert "| after iteration 2 (v2) | 42.5% [37.5, 47.5] |" in table
    assert "+12.5 points, length x0.90 |" in table and "+0.0 points, length x1.00" in table
    run = tmp_path / "run"
    _write(run / "metrics.jsonl", rows)
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "instructions.png").read_bytes()[:4] == b"\x89PNG"
    assert "| after iteration 1 (v1) | 36.0%" in (run / "report" / "report.md").read_text()


def test_eval_needs_exactly_one_mode(capsys):
    assert main(["eval", "--model", "tiny-llama"]) == 2
    assert "give --instructions FILE" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny-llama", "--instructions", "builtin:ifeval-dev", "--baseline", "x",
                 "--prompts", "seed"]) == 2
    assert main(["eval", "--model", "tiny-llama", "--baseline", "x"]) == 2
    assert "needs both --baseline and --prompts" in capsys.readouterr().err
