import pytest

from selm_ray.core.config import Config, ConfigError, load_config


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid_selm_with_positive_alpha():
    cfg = load_config()
    assert isinstance(cfg, Config) and cfg.learner.loss == "selm" and cfg.learner.alpha > 0


def test_yaml_and_overrides(tmp_path):
    p = _yaml(tmp_path, "learner:\n  beta: 0.01\njudge:\n  mode: generate\n")
    cfg = load_config(p, ["learner.alpha=0.0005", "cluster.num_generators=3", "data.max_prompts=null"])
    assert cfg.learner.beta == 0.01 and cfg.learner.alpha == 0.0005
    assert cfg.judge.mode == "generate" and cfg.cluster.num_generators == 3 and cfg.data.max_prompts is None


@pytest.mark.parametrize("overrides,key", [
    (["learner.bogus=1"], "learner.bogus: unknown key"),
    (["bogus.x=1"], "bogus: unknown key"),
    (["learner.beta=-1"], "learner.beta: must be > 0"),
    (["learner.loss=kto"], "learner.loss: must be one of"),
    (["judge.num_samples=three"], "judge.num_samples: must be an integer"),
    (["judge.min_valid=5"], "judge.min_valid: must be in 1..num_samples"),
    (["generation.num_candidates=1"], "generation.num_candidates: need >= 2"),
    (["learner.alpha=0"], "learner.alpha: is 0 with loss selm"),
    (["generation.ref_response=false"], "generation.ref_response: must be true with learner.loss selm"),
    (["learner.loss=dpo", "learner.alpha=0", "generation.ref_response=false", "generation.ref_in_candidates=true"],
     "generation.ref_in_candidates: needs generation.ref_response true"),
    (["judge.kind=reward_model"], "judge.reward_model: required"),
    (["generation.temperature=true"], "generation.temperature: must be a number"),
    (["learner=3"], "learner: must be a mapping"),
    (["learner.beta.x=1"], "learner.beta: must be a number"),
    (["learner.beta=0.1", "learner.beta.x=1"], "learner.beta is not a section"),
    (["noequals"], "expected KEY.PATH=VALUE"),
    (["learner.passes=0"], "learner.passes: must be >= 1"),
    (["learner.passes=2", "schedule.mode=async"], "learner.passes: passes over an iteration's pairs need"),
    (["judge.pair_rule=all"], "judge.pair_rule: must be one of"),
    (["judge.force_score=true"], "judge.force_score: only for kind: self with mode: generate"),
])
def test_errors_name_the_key_path(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert key in str(e.value)


def test_plain_dpo_with_alpha_zero_is_fine():
    cfg = load_config(None, ["learner.loss=dpo", "learner.alpha=0", "generation.ref_response=false"])
    assert cfg.learner.loss == "dpo"


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    p = _yaml(tmp_path, "learner:\n  nope: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: learner.nope: unknown key"):
        load_config(p)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_yaml(tmp_path, "- a\n- b\n"))


def test_every_job_config_validates_and_paper_recipes_match_the_papers():
    from pathlib import Path

    configs = {p.stem: load_config(p) for p in Path("jobs/configs").glob("*.yaml")}
    assert {"smoke", "smollm2-cpu", "zephyr-7b-selm", "llama3-8b-selm", "self-rewarding"} <= set(configs)
    z, l, sr = configs["zephyr-7b-selm"], configs["llama3-8b-selm"], configs["self-rewarding"]
    assert (z.learner.loss, z.learner.beta, z.learner.alpha) == ("selm", 0.01, 0.001)
    assert (l.learner.loss, l.learner.beta, l.learner.alpha) == ("selm", 0.01, 0.0001)
    for c in (z, l):
        assert c.learner.lr_by_iteration == [5e-7, 3e-7, 1e-7] and c.schedule.iterations == 3
        assert c.learner.batch_size * c.learner.num_workers == 128 and c.learner.zero_stage == 3
    assert (sr.learner.loss, sr.learner.beta, sr.generation.num_candidates) == ("dpo", 0.1, 4)
    assert (sr.judge.kind, sr.judge.mode, sr.judge.num_samples) == ("self", "generate", 3)
    assert configs["smollm2-cpu"].model.path == "smollm2-135m-instruct"


def test_list_values_and_their_errors():
    cfg = load_config(None, ["learner.lr_by_iteration=[1e-6, 5e-7]"])
    assert cfg.learner.lr_by_iteration == [1e-6, 5e-7]
    with pytest.raises(ConfigError, match=r"learner.lr_by_iteration\[1\]: must be a number"):
        load_config(None, ["learner.lr_by_iteration=[1e-6, x]"])
    with pytest.raises(ConfigError, match="learner.lr_by_iteration: has 1 entries for 2 iterations"):
        load_config(None, ["learner.lr_by_iteration=[1e-6]"])


def test_json_schema_covers_every_section_with_defaults_and_descriptions():
    from selm_ray.core.config import LearnerConfig

    schema = Config.model_json_schema()
    assert set(schema["properties"]) == set(Config.model_fields)
    assert schema["additionalProperties"] is False  # unknown keys are errors in editors too
    ref = schema["properties"]["learner"]["$ref"].rsplit("/", 1)[-1]
    learner = schema["$defs"][ref]
    assert learner["properties"]["alpha"]["default"] == LearnerConfig().alpha == 0.001
    assert learner["properties"]["alpha"]["type"] == "number" and learner["additionalProperties"] is False
    assert learner["properties"]["loss"]["enum"] == ["selm", "dpo", "ipo"]
    for name, section in schema["$defs"].items():  # every field is documented
        for key, prop in section["properties"].items():
            assert prop.get("description"), f"{name}.{key} has no description"


def test_cli_prints_the_schema_as_json():
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "config", "--schema"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == Config.model_json_schema()


@pytest.mark.parametrize("overrides,key", [
    (["autoscale.bogus=1"], "autoscale.bogus: unknown key (valid keys here: enabled, min_generators"),
    (["cluster.num_judges=two"], "cluster.num_judges: must be an integer, got 'two'"),
    (["cluster.num_judges=2.0"], "cluster.num_judges: must be an integer, got 2.0"),
    (["learner.batch_size=true"], "learner.batch_size: must be an integer, got True"),
    (["judge.follow_policy=1"], "judge.follow_policy: must be true or false, got 1"),
    (["model.path=3"], "model.path: must be a string, got 3"),
    (["data.max_prompts=many"], "data.max_prompts: must be an integer, got 'many'"),
    (["learner.lr_by_iteration=3"], "learner.lr_by_iteration: must be a list, got 3"),
    (["learner.lr=x", "learner.beta=y"], "learner.beta: must be a number, got 'y'"),  # first field wins
])
def test_set_overrides_with_unknown_keys_or_wrong_types_name_the_key_path(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert key in str(e.value)


def test_coercion_rules():
    cfg = load_config(None, ["learner.beta=1", "learner.lr='1e-6'", "learner.lr_by_iteration=[1, 2]"])
    assert cfg.learner.beta == 1.0 and isinstance(cfg.learner.beta, float) and cfg.learner.lr == 1e-6
    lrs = cfg.learner.lr_by_iteration
    assert lrs == [1.0, 2.0] and all(isinstance(x, float) for x in lrs)
    assert load_config(None, ["learner=null"]).learner == Config().learner  # an empty section: defaults


def test_every_job_config_round_trips_through_to_dict():
    from pathlib import Path

    from selm_ray.core.config import config_from_dict, dump_config

    for p in Path("jobs/configs").glob("*.yaml"):
        cfg = load_config(p)
        again = config_from_dict(cfg.to_dict())
        assert again == cfg and dump_config(again) == dump_config(cfg), p


def test_cli_config_errors_name_the_key_path(capsys):
    from selm_ray.ops.cli import main

    assert main(["config", "--set", "sft.epochs=three"]) == 2
    assert "sft.epochs: must be an integer, got 'three'" in capsys.readouterr().err


def test_storage_path_must_be_a_mounted_folder():
    with pytest.raises(ConfigError, match=r"run.storage_path.*mount the bucket"):
        load_config(overrides=["run.storage_path=s3://bucket/runs"])
    assert load_config(overrides=["run.storage_path=/mnt/shared"]).run.storage_path == "/mnt/shared"


def test_autocast_off_survives_yaml_booleans():
    # YAML 1.1 reads a bare `off` as false: `--set learner.autocast=off` must still mean off
    assert load_config(overrides=["learner.autocast=off"]).learner.autocast == "off"
    with pytest.raises(ConfigError, match="learner.autocast"):
        load_config(overrides=["learner.autocast=on"])
