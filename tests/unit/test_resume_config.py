import pytest

from selm_ray.core.config import dump_config, load_config
from selm_ray.learner.checkpoint import ResumeError
from selm_ray.run.resume import check_resume_config, resume_conflicts


def test_resume_refuses_keys_that_reslice_prompts_or_change_the_loss_and_allows_the_rest(tmp_path):
    saved = load_config(None, []).to_dict()
    ok = load_config(None, ["schedule.iterations=5", "cluster.num_generators=3", "learner.lr=1e-5"]).to_dict()
    assert resume_conflicts(saved, ok) == []
    bad = load_config(None, ["schedule.prompts_per_iteration=7", "learner.beta=0.5", "data.source=x.jsonl"]).to_dict()
    got = resume_conflicts(saved, bad)
    assert got == ["data.source: 'seed' -> 'x.jsonl'", "schedule.prompts_per_iteration: 32 -> 7",
                   "learner.beta: 0.1 -> 0.5"]
    (tmp_path / "config.yaml").write_text(dump_config(load_config(None, [])))
    with pytest.raises(ResumeError, match=r"schedule.prompts_per_iteration: 32 -> 7.*start a new run"):
        check_resume_config(tmp_path, bad)
    check_resume_config(tmp_path, ok)
    check_resume_config(tmp_path / "no-config", bad)  # nothing saved to compare with


def test_model_path_is_compared_only_without_an_sft_stage():
    saved = load_config(None, ["sft.enabled=true", "model.path=/runs/x/sft"]).to_dict()
    assert resume_conflicts(saved, load_config(None, ["sft.enabled=true"]).to_dict()) == []
    plain = load_config(None, ["model.path=/other"]).to_dict()
    assert resume_conflicts(load_config(None, []).to_dict(), plain)[0].startswith("model.path:")
