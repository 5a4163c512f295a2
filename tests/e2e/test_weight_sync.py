"""Engines really serve new weights after update_weights (linear layers included, which vLLM
repacks on CPU): a self-judge's expected scores (a smooth function of the logits) become those of a
judge started on the new weights, and a generator's seeded samples change and carry the version."""
import pytest
import ray

from selm_ray.actors import launch
from selm_ray.config import load_config
from selm_ray.data import PromptRecord
from selm_ray.models import build_tiny_causal_lm

PROMPTS = [PromptRecord(f"p{i}", ({"role": "user", "content": t},)) for i, t in
           enumerate(["Name a colour.", "Count to five.", "Say hello in French."])]


def _samples(actor):
    return [[c.text for c in r.candidates] for r in ray.get(actor.generate.remote(PROMPTS, 123))]


def _scores(judge, rollouts):
    return [s.score for j in ray.get(judge.judge.remote(rollouts)) for s in j.scores]


def test_update_weights_switches_engines_to_the_new_model(tmp_path, tiny_model_path, smollm2_tokenizer):
    other = build_tiny_causal_lm(tmp_path / "seed1", seed=1, tokenizer=smollm2_tokenizer)
    cfg = load_config(None, [f"model.path={tiny_model_path}", "generation.max_new_tokens=12"])
    ray.init(num_cpus=6, include_dashboard=False)
    try:
        from safetensors.numpy import load_file

        weights = ray.put(load_file(str(other / "model.safetensors")))
        gen = launch.launch_generator(cfg, "wsync", 0, str(tiny_model_path), None)
        judge_old = launch.launch_judge(cfg, "wsync", 0, str(tiny_model_path), None, None)
        judge_new = launch.launch_judge(cfg, "wsync", 1, str(other), None, None)
        before = _samples(gen)
        rollouts = ray.get(gen.generate.remote(PROMPTS, 7))
        old, target = _scores(judge_old, rollouts), _scores(judge_new, rollouts)
        assert max(abs(a - b) for a, b in zip(old, target)) > 1e-3  # two different random models

        assert ray.get(judge_old.update_weights.remote(1, weights)) > 0
        assert _scores(judge_old, rollouts) == pytest.approx(target, abs=1e-4)

        assert ray.get(gen.update_weights.remote(1, weights)) > 0
        assert _samples(gen) != before
        new_rollouts = ray.get(gen.generate.remote(PROMPTS))
        assert {c.policy_version for r in new_rollouts for c in r.candidates} == {1}
        assert ray.get(gen.update_weights.remote(1, weights)) == 0.0  # same version again: no-op
    finally:
        ray.shutdown()
