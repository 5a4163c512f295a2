"""Self-instruct prompt creation through the real runtime (tiny model: the outputs are nonsense,
the filters and bookkeeping are what is checked) and with SmolLM2 (real instructions)."""
import json
import os

import pytest

from selm_ray.config import load_config
from selm_ray.selfinstruct import REASONS, PromptFilter


def test_created_prompts_are_filtered_logged_and_answered(tmp_path, tiny_model_path):
    from selm_ray import runner

    cfg = load_config("jobs/configs/smoke.yaml", [f"model.path={tiny_model_path}", "create.enabled=true",
                                                  "create.mix_ratio=0.5", "create.max_new_tokens=12",
                                                  "create.min_words=1", "create.max_attempts_factor=2"])
    s = runner.train(cfg, tmp_path / "run")
    assert s["learner_error"] is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "created_prompts.jsonl").read_text().splitlines()]
    counts = s["prompt_creation"]
    # every sample is logged with one verdict, and the counts are exactly those verdicts
    assert sum(counts.values()) == len(rows) > 0 and set(counts) == {"accepted", *REASONS}
    assert all(counts[k] == sum(r["reason"] == k for r in rows) for k in counts)
    # 4 created prompts wanted per iteration, at most 2 x 4 samples each
    assert [sum(r["iteration"] == t for r in rows) <= 8 for t in (0, 1)] == [True, True]
    assert all(len(r["examples"]) == 8 for r in rows)
    assert {r["policy_version"] for r in rows if r["iteration"] == 1} == {1}  # written by pi_1
    # dataset prompts (4 per iteration) plus the accepted created prompts (up to 4 each) were answered
    made = [min(4, sum(r["iteration"] == t and r["reason"] == "accepted" for r in rows)) for t in (0, 1)]
    assert s["prompts"] == 8 + sum(made)


@pytest.mark.slow
def test_smollm2_writes_instructions_that_pass_the_filters(smollm2_path):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from selm_ray.actors.generator import Generator
    from selm_ray.data import load_prompts
    from selm_ray.selfinstruct import pick_examples

    import random

    cfg = load_config(None, [f"model.path={smollm2_path}", "create.enabled=true"])
    records, _ = load_prompts("seed")
    seeds = [r.messages[-1]["content"] for r in records]
    gen = Generator(cfg.to_dict(), str(smollm2_path))
    rng = random.Random(0)
    requests = [pick_examples(seeds, [], 8, rng) for _ in range(8)]
    replies = gen.create_prompts(requests, seed=0)
    f = PromptFilter(list(seeds))
    verdicts = [f.check(reply, finish, ex) for (reply, finish), ex in zip(replies, requests)]
    accepted = [t for t, _ in verdicts if t]
    assert accepted, f"no instruction accepted: {f.counts} {replies}"
    assert all(t not in seeds for t in accepted)
    print(f"\nSmolLM2 self-instruct, 8 samples: {f.counts}\n" + "\n".join(accepted))
