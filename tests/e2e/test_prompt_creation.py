"""Self-instruct prompt creation through the real runtime (tiny model: the outputs are nonsense,
the filters and bookkeeping are what is checked) and with SmolLM2 (real instructions)."""
import json
import os

import pytest

from selm_ray.core.config import load_config
from selm_ray.core.selfinstruct import REASONS, PromptFilter


def test_created_prompts_are_filtered_logged_answered_and_resumed(tmp_path, tiny_model_path, ray_address):
    from selm_ray.run import runner
    from selm_ray.core.selfinstruct import rouge_l, words

    over = [f"model.path={tiny_model_path}", "create.enabled=true", "create.mix_ratio=0.5",
            "create.max_new_tokens=12", "create.min_words=1", "create.max_attempts_factor=2",
            f"cluster.address={ray_address}"]
    run_dir = tmp_path / "run"
    first = runner.train(load_config("jobs/configs/smoke.yaml", over + ["schedule.iterations=1"]), run_dir)
    assert first["learner_error"] is None
    log = run_dir / "created_prompts.jsonl"
    # an attempt at iteration 2 that was killed after accepting one prompt (and mid-way through a line)
    earlier = {"iteration": 1, "policy_version": 1, "reason": "accepted", "prompt_id": "created-1-900",
               "prompt": "Describe the water cycle to a ten year old in two sentences.", "examples": [""] * 8}
    with log.open("a") as f:
        f.write(json.dumps(earlier) + "\n" + '{"iteration": 1, "reason": "trunc')
    s = runner.train(load_config("jobs/configs/smoke.yaml", over + ["schedule.iterations=2"]), run_dir, resume=True)
    assert s["learner_error"] is None and s["policy_version"] == 2
    rows = [json.loads(line) for line in log.read_text().splitlines()]  # the cut line is gone
    assert rows.count(earlier) == 1
    rows.remove(earlier)
    counts = {k: first["prompt_creation"][k] + s["prompt_creation"][k] for k in first["prompt_creation"]}
    # every sample is logged with one verdict, and the counts are exactly those verdicts
    assert sum(counts.values()) == len(rows) > 0 and set(counts) == {"accepted", *REASONS}
    assert all(counts[k] == sum(r["reason"] == k for r in rows) for k in counts)
    # 4 created prompts wanted per iteration, at most 2 x 4 samples in iteration 1, 2 x 3 in the resumed 2
    assert sum(r["iteration"] == 0 for r in rows) <= 8 and sum(r["iteration"] == 1 for r in rows) <= 6
    assert all(len(r["examples"]) == 8 for r in rows)
    assert {r["policy_version"] for r in rows if r["iteration"] == 1} == {1}  # written by pi_1
    accepted = [r for r in rows if r["reason"] == "accepted"]
    # ids stay unique across attempts, and the resumed attempt knew the first one's prompts
    assert len({r["prompt_id"] for r in accepted} | {"created-1-900"}) == len(accepted) + 1
    known = [r["prompt"] for r in accepted if r["iteration"] == 0] + [earlier["prompt"]]
    for new in (r["prompt"] for r in accepted if r["iteration"] == 1):
        assert all(rouge_l(words(new), words(k)) < 0.7 for k in known)
    # dataset prompts (4 per iteration) plus the accepted created prompts (up to 4 each) were answered;
    # in iteration 2 the prompt accepted before the kill is one of them, not written again
    made = [min(4, sum(r["iteration"] == t for r in accepted) + t) for t in (0, 1)]
    assert first["prompts"] == 4 + made[0] and s["prompts"] == 4 + made[1]


@pytest.mark.slow
def test_smollm2_writes_instructions_that_pass_the_filters(smollm2_path):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from selm_ray.actors.generator import Generator
    from selm_ray.core.data import load_prompts
    from selm_ray.core.selfinstruct import pick_examples

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
