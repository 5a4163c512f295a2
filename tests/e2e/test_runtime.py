"""The online loop end to end on the tiny model: real vLLM generators and judges, the real buffer
actor, Ray Train + DeepSpeed ZeRO-2 on CPU (DDP for the async run)."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selm_ray.core.config import load_config

SMOKE = "jobs/configs/smoke.yaml"


@pytest.fixture
def joined(ray_address):
    """The run's own `cluster.address` path onto the session's shared head (tests/conftest.py)."""
    return f"cluster.address={ray_address}"


def _train(tmp_path, *overrides, controller_hook=None):
    from selm_ray.run import runner

    cfg = load_config(SMOKE, list(overrides))
    return runner.train(cfg, tmp_path / "run", controller_hook=controller_hook)


def _checkpoint_checksum(path):
    # the parameters vLLM keeps in plain form on CPU (linear layers are repacked): see weights_checksum
    tensors = load_file(path / "model.safetensors")
    return sum(t.double().sum().item() for k, t in tensors.items() if "embed_tokens" in k or "norm" in k)


def _pair_ids(run_dir):
    return [json.loads(line)["pair_id"] for line in (run_dir / "buffer" / "pairs.jsonl").read_text().splitlines()]


def _served_ids(run_dir):
    rows = [json.loads(line) for line in (run_dir / "buffer" / "consumed.jsonl").read_text().splitlines()]
    return [r["pair_id"] for r in rows if r["reason"] == "served"]


def test_selm_two_iterations_deepspeed_survive_killed_generator_judge_and_buffer(tmp_path, tiny_model_path, joined):
    """One SELM run (a run's start-up is most of its cost) checks the loop's results and, with a
    generator, a judge and the buffer killed mid-run, that no judged pair is lost or duplicated."""
    import ray

    killed = {}

    def chaos(ctl):
        def run():
            while ctl.counters.pairs < 4:
                time.sleep(0.1)
            # the generator for good (as when its restarts are used up): it must be replaced;
            # the judge and the buffer so that Ray restarts them (max_restarts)
            ray.kill(ctl.gens.members[0].actor, no_restart=True)
            ray.kill(ctl.judges.members[0].actor, no_restart=False)
            ray.kill(ctl.buffer, no_restart=False)
            killed["at_pairs"] = ctl.counters.pairs

        threading.Thread(target=run, daemon=True).start()

    labelled = tmp_path / "labelled.jsonl"  # the judge pool is scored on these after every iteration
    labelled.write_text("".join(json.dumps({"prompt": f"Name a colour ({i})", "chosen": "Blue.",
                                            "rejected": "I do not know."}) + "\n" for i in range(3)))
    prompts = tmp_path / "eval.jsonl"  # and the new policy is compared with the start on these
    prompts.write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n" for w in ("tea", "sea")))
    s = _train(tmp_path, f"model.path={tiny_model_path}", f"judge.eval_data={labelled}", f"eval.prompts={prompts}",
               joined, controller_hook=chaos)
    assert killed, "the fault was never injected"
    assert s["learner_error"] is None
    assert [(r["iteration"], r["policy_version"], r["prompts"]) for r in s["eval"]] == [(0, 1, 2), (1, 2, 2)]
    assert all(r["wins"] + r["ties"] + r["losses"] + r["failures"] == 2 and r["mean_tokens_policy"] > 0
               for r in s["eval"])
    assert [(r["iteration"], r["pairs"]) for r in s["judge_eval"]] == [(0, 3), (1, 3)]
    assert all(r["judge"] == "self:expected" for r in s["judge_eval"])
    assert s["prompts"] == 16 and s["pairs"] >= 8
    assert s["learner_steps"] >= 4 and s["policy_version"] == 2
    # the dead generator was replaced (an event, also in the live stats) and its successor caught up
    replaced = [e for e in s["pool_events"] if e["event"] == "actor_replaced"]
    assert len(replaced) == 1 and replaced[0]["pool"] == "generator" and replaced[0]["actor"].endswith("-generator-0")
    assert len(s["generators"]) == 1 and s["generators"][0]["name"].endswith("-generator-1")
    assert all(g["version"] == 2 for g in s["generators"]) and all(j["version"] == 2 for j in s["judges"])
    run_dir = tmp_path / "run"
    # every judged pair was trained on exactly once, the kills notwithstanding: by the buffer's log
    # and by the learner's own record of each step
    ids = _pair_ids(run_dir)
    assert len(ids) == len(set(ids)) == s["pairs"]  # nothing duplicated on disk
    assert sorted(_served_ids(run_dir)) == sorted(ids)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(i for m in metrics if "loss" in m for i in m["pair_ids"]) == sorted(ids)
    # the generator serves exactly the weights the learner saved (vLLM fuses qkv/gate_up, sums survive)
    ckpt = s["checkpoint"]
    gen_sum = s["generators"][0]["weights_checksum"]
    assert gen_sum == pytest.approx(_checkpoint_checksum(Path(ckpt)), rel=1e-6)
    base_sum = _checkpoint_checksum(tiny_model_path)
    assert abs(gen_sum - base_sum) > 1e-6  # and they moved away from the starting weights
    steps = [m for m in metrics if "loss" in m]
    assert steps and all("logps/ref_response_gap" in m for m in steps)  # the SELM term was computed
    # iterative: every pair was sampled by the reference policy, so vLLM's log-probs served as pi_ref
    assert all(m["ref_from_engine"] == 1.0 for m in steps)
    assert [m["version"] for m in metrics if m.get("event") == "iteration_end"] == [1, 2]
    assert [m["iteration"] for m in metrics if m.get("event") == "judge_eval"] == [0, 1]
    # the live snapshots of the run were logged for `selm-ray report`
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["state"] == "done" and stats[-1]["buffer"]["pairs_in"] == s["pairs"]
    assert any(e["event"] == "actor_replaced" for e in stats[-1]["events"])  # shown live too


def _kill_learner_after_first_step_of_iteration_2(ctl, killed):
    """kill -9 of the Ray Train worker process once it trained a step past its first checkpoint."""
    import os
    import signal

    import ray

    def run():
        while True:
            st = ray.get(ctl.ctx.channel.state.remote())
            if st["version"] >= 1 and st["iteration"] >= 1 and st["step"] > killed.setdefault("v1_step", st["step"]):
                break
            if st["version"] < 1:
                killed.pop("v1_step", None)
            time.sleep(0.05)
        os.kill(st["learner_pid"], signal.SIGKILL)  # the worker's own process: this machine is its node
        killed["at_step"] = st["step"]

    threading.Thread(target=run, daemon=True).start()


def test_dpo_lora_two_iterations_survive_a_killed_learner_and_checkpoint_loads_in_transformers_and_vllm(
        tmp_path, tiny_model_path, joined):
    """DPO with a LoRA learner (one run for all: a run's start-up is most of its cost here): no y_ref
    asked for, the engines get only the adapter (lora_publish auto: vLLM serves LoRA for Llama),
    the checkpoint is a plain (merged) HF model with the adapter beside it, that
    transformers and vLLM load; and a kill -9 of the learner worker mid-iteration restarts it from
    its checkpoint, with the pairs it was served since then served again, each trained on once."""
    from transformers import AutoModelForCausalLM

    killed = {}
    s = _train(tmp_path, f"model.path={tiny_model_path}", "learner.loss=dpo", "learner.alpha=0",
               "generation.ref_response=false", "learner.lora_rank=4", "learner.lora_alpha=8", joined,
               controller_hook=lambda ctl: _kill_learner_after_first_step_of_iteration_2(ctl, killed))
    assert "at_step" in killed, "the learner was never killed"
    assert s["learner_error"] is None and s["policy_version"] == 2 and s["learner_steps"] >= 4
    assert s["learner_restarts"] == 1
    run_dir = tmp_path / "run"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    restart = [m for m in metrics if m.get("event") == "learner_restart"]
    assert len(restart) == 1 and restart[0]["from_step"] == killed["v1_step"] and restart[0]["version"] == 1
    assert restart[0]["pairs_served_again"] >= 1  # the step trained after the checkpoint was lost
    # steps after the restart continue from the checkpoint's step
    steps = [m["step"] for m in metrics if "loss" in m]
    again = metrics.index(restart[0])
    after = [m["step"] for m in metrics[again:] if "loss" in m]
    assert after and after == list(range(killed["v1_step"] + 1, after[-1] + 1)) and after[-1] == s["learner_steps"]
    assert len(steps) > s["learner_steps"]  # the lost step was reported once before the kill
    ids = _pair_ids(run_dir)
    assert sorted(_served_ids(run_dir)) == sorted(ids) and len(set(ids)) == s["pairs"]
    # the learner's own record: steps up to the checkpoint, then every step after the restart
    kept = [m for m in metrics[:again] if "loss" in m and m["step"] <= killed["v1_step"]] + \
        [m for m in metrics[again:] if "loss" in m]
    assert sorted(i for m in kept for i in m["pair_ids"]) == sorted(ids)
    # LoRA's reference is the base under the adapter: the restarted learner (loaded from the merged
    # checkpoint, then DeepSpeed's module state) trains against the same one
    refs = [m["ref_checksum"] for m in metrics if "ref_checksum" in m]
    assert len(refs) == 2 and refs[1] == pytest.approx(refs[0], rel=1e-12)
    assert s["generators"][0]["version"] == 2
    assert s["generators"][0]["adapters_loaded"] >= 2  # each version as an adapter, not full weights
    pairs = [json.loads(line) for line in (tmp_path / "run" / "buffer" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["ref_response"] is None for p in pairs)  # DPO asked for no y_ref
    ckpt = s["checkpoint"]
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert torch.isfinite(next(model.parameters())).all()
    # LoRA: the checkpoint is a plain (merged) HF model, no adapter keys, and it moved off the base
    keys = load_file(Path(ckpt) / "model.safetensors").keys()
    assert not [k for k in keys if "lora" in k or "base_layer" in k]
    assert (Path(ckpt) / "adapter" / "adapter_model.safetensors").is_file()
    base = load_file(tiny_model_path / "model.safetensors")
    new = load_file(Path(ckpt) / "model.safetensors")
    assert any(not torch.equal(base[k], new[k]) for k in base if "proj" in k)
    demo = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "demo", "--prompts", "2", "--set",
                           f"model.path={ckpt}", "--run-dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["candidates"] == 4


def test_a_stuck_judge_is_killed_after_work_timeout_and_its_work_resent(tmp_path, tiny_model_path, joined):
    """A judge that stops answering (its process SIGSTOPped: alive to Ray, answering nothing) must not
    hang the run: past cluster.work_timeout_s its call is overdue, the member is killed (Ray restarts
    it) and the batch re-sent; no judged pair is lost or duplicated."""
    import os
    import signal

    import ray

    stopped = {}

    def freeze(ctl):
        def run():
            while not getattr(getattr(ctl, "pm", None), "judges", None) or not ctl.judges.members:
                time.sleep(0.05)  # the judge joined its pool: stop it before it judges anything
            judge = ctl.judges.members[0].actor
            stopped["pid"] = ray.get(judge.__ray_call__.remote(lambda self: os.getpid()))
            os.kill(stopped["pid"], signal.SIGSTOP)  # this machine is its node

        threading.Thread(target=run, daemon=True).start()

    s = _train(tmp_path, f"model.path={tiny_model_path}", "schedule.iterations=1", "schedule.prompts_per_iteration=12",
               # the bound is wide enough that the re-sent batches, queued on the one restarted judge
               # while the learner starts beside it, all come back within it (a second hang would be
               # a false one)
               "cluster.work_timeout_s=15", "cluster.call_timeout_s=30", joined, controller_hook=freeze)
    assert "pid" in stopped, "the judge was never stopped"
    assert s["learner_error"] is None and s["prompts"] == 12
    hung = [e for e in s["pool_events"] if e["event"] == "actor_hung"]
    # "seconds" is rounded to 0.1 s: a call killed 15.04 s after it was sent reads 15.0
    assert len(hung) == 1 and hung[0]["pool"] == "judge" and hung[0]["call"] == "judge" and hung[0]["seconds"] >= 15, hung
    assert s["retries"] >= 1  # the batch it held was re-sent
    ids = _pair_ids(tmp_path / "run")
    assert len(ids) == len(set(ids)) == s["pairs"] and sorted(_served_ids(tmp_path / "run")) == sorted(ids)
    with pytest.raises(ProcessLookupError):
        os.kill(stopped["pid"], 0)  # the stuck process is gone, not left behind


def _kill_learner_at_version(ctl, killed, version):
    import os
    import signal

    import ray

    def run():
        while (st := ray.get(ctl.ctx.channel.state.remote()))["version"] < version:
            time.sleep(0.05)
        os.kill(st["learner_pid"], signal.SIGKILL)  # the worker's own process: this machine is its node
        killed.update(version=st["version"], step=st["step"])

    threading.Thread(target=run, daemon=True).start()


def test_async_schedule_with_ddp_survives_a_killed_learner_without_checkpoint(tmp_path, tiny_model_path, joined):
    """async, no learner.checkpoint_every: a killed learner restarts from the base model, and the
    versions it publishes go on from the engines' newest (an engine only loads a newer number: had the
    restart published v1 again, the engines would have kept the lost lineage's weights)."""
    killed = {}
    s = _train(tmp_path, f"model.path={tiny_model_path}", "schedule.mode=async", "schedule.sync_every=1",
               "schedule.ref_update_every=2", "learner.engine=ddp", "buffer.max_policy_lag=3",
               "judge.colocate=true", "schedule.prompts_per_iteration=12", joined,
               controller_hook=lambda ctl: _kill_learner_at_version(ctl, killed, 2))
    assert killed, "the learner was never killed"
    assert s["learner_error"] is None and s["learner_restarts"] == 1
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    restart = [m for m in metrics if m.get("event") == "learner_restart"]
    assert len(restart) == 1 and restart[0]["from_step"] == 0 and restart[0]["version"] > killed["version"]
    assert restart[0]["pairs_served_again"] >= 2  # no checkpoint: every pair it was served waits again
    after = [m for m in metrics[metrics.index(restart[0]):] if "loss" in m]
    assert after and [m["step"] for m in after] == list(range(1, len(after) + 1))
    assert s["policy_version"] == restart[0]["version"] + len(after)  # one publication per step, on from there
    # (without the fix the restart published v0, v1, ... again: numbers the engines, at v2, ignore)
    assert s["judges"] == [] and s["generators"][0]["candidates"] == s["candidates"]  # judged in place
    b = s["buffer"]
    assert b["served"] + b["dropped_stale"] + b["left"] == s["pairs"]
    # max_policy_lag 3: the restart (v3) still trains on what v0..v2 generated, nothing staler
    assert all(int(lag) <= 3 for lag in b["lag_histogram"])


def test_selm_with_y_ref_among_the_candidates_pairs_it_and_trains(tmp_path, tiny_model_path, joined):
    """generation.ref_in_candidates (XPO's shape): of the 2 candidates one is the greedy y_ref, so
    every pair holds y_ref as its chosen or rejected answer; the SELM loss trains on it with pi_ref
    from the engine."""
    out = _train(tmp_path, f"model.path={tiny_model_path}", "schedule.iterations=1", "learner.engine=ddp",
                 "generation.ref_in_candidates=true", joined)
    run_dir = tmp_path / "run"
    assert out["learner_error"] is None and out["policy_version"] == 1 and out["pairs"] > 0
    pairs = [json.loads(line) for line in (run_dir / "buffer" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["ref_ids"] and p["ref_ids"] in (p["chosen_ids"], p["rejected_ids"]) for p in pairs)
    assert all(p["ref_response"] in (p["chosen"], p["rejected"]) for p in pairs)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert steps and all(m["ref_from_engine"] == 1.0 and "logps/ref_response_gap" in m for m in steps)


def test_resume_continues_from_the_same_step(tmp_path, tiny_model_path, joined):
    from selm_ray.run import runner
    from selm_ray.learner import checkpoint
    from selm_ray.learner.checkpoint import ResumeError
    from selm_ray.learner.tensor_io import has_state

    # checkpoints on a folder every node would mount (run.storage_path), apart from the run folder
    shared = f"run.storage_path={tmp_path / 'shared'}"
    ddp = "learner.engine=ddp"  # (DeepSpeed's restart from its checkpoint: the LoRA test above)
    first = _train(tmp_path, f"model.path={tiny_model_path}", "schedule.iterations=1", shared, ddp, joined)
    run_dir = tmp_path / "run"
    assert first["learner_error"] is None and first["policy_version"] == 1
    assert not (run_dir / "checkpoints").exists() and (tmp_path / "shared" / "run" / "ray_train").is_dir()
    ckpt = checkpoint.latest(tmp_path / "shared" / "run")
    assert str(ckpt) == first["checkpoint"]
    state = checkpoint.load_state(ckpt)
    assert state["step"] == first["learner_steps"] and state["iteration"] == 1
    # an iteration's end starts the next with a fresh optimizer (learner.reset_optimizer): not written,
    # and the resume below starts a fresh one
    assert checkpoint.optimizer_fresh(state) and not has_state(ckpt / checkpoint.OPTIMIZER_DIR, "optimizer")

    # a config that would re-slice the prompts or change the loss is refused before anything starts
    bad = load_config(SMOKE, [f"model.path={tiny_model_path}", "schedule.iterations=2", shared, ddp, joined,
                              "learner.loss=dpo", "learner.alpha=0", "data.shuffle_seed=7"])
    with pytest.raises(ResumeError) as e:
        runner.train(bad, run_dir, resume=True)
    assert "learner.loss: 'selm' -> 'dpo'" in str(e.value) and "data.shuffle_seed" in str(e.value)
    assert "schedule.iterations:" not in str(e.value)  # a key that may change is not listed
    with pytest.raises(ResumeError, match="no complete checkpoint"):  # without the storage path: none here
        runner.train(load_config(SMOKE, [f"model.path={tiny_model_path}", "schedule.iterations=2", ddp, joined]),
                     run_dir, resume=True)
    cfg = load_config(SMOKE, [f"model.path={tiny_model_path}", "schedule.iterations=2", shared, ddp, joined])
    second = runner.train(cfg, run_dir, resume=True)
    assert second["learner_error"] is None and second["policy_version"] == 2
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == list(range(1, len(steps) + 1))  # no step repeated, none skipped
    assert steps[-1] == second["learner_steps"] > state["step"]
    # the resumed iteration used new prompts only: 8 + 8 distinct prompt ids
    prompts = [json.loads(line)["prompt_id"] for line in (run_dir / "buffer" / "pairs.jsonl").read_text().splitlines()]
    assert len(prompts) == len(set(prompts)) == first["pairs"] + second["pairs"]


def test_a_prompt_that_cannot_fit_is_an_error_naming_it_before_any_actor_starts(tmp_path, tiny_model_path, joined):
    from selm_ray.core.data import DataError

    data = tmp_path / "prompts.jsonl"
    rows = [{"id": f"ok-{i}", "prompt": f"Name a {w}."} for i, w in enumerate(("fruit", "river"))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + [{"id": "long-one", "prompt": "apple " * 300}]))
    with pytest.raises(DataError, match=r"prompt 'long-one' is 3\d\d tokens .* model.max_model_len 256"):
        _train(tmp_path, f"model.path={tiny_model_path}", f"data.source={data}", "model.max_model_len=256",
               "schedule.prompts_per_iteration=3", "schedule.iterations=1", joined)
    assert not (tmp_path / "run" / "buffer").exists()  # failed before the buffer actor was launched


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "train", SMOKE, "--resume", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no complete checkpoint" in proc.stderr


@pytest.mark.slow
def test_default_smollm2_config_cut_to_a_few_prompts(tmp_path, smollm2_path):
    """The default config as `make demo`'s user runs it: its own local Ray, SmolLM2."""
    from selm_ray.run import runner

    cfg = load_config("jobs/configs/smollm2-cpu.yaml", ["schedule.iterations=1", "schedule.prompts_per_iteration=4",
                                                        "generation.max_new_tokens=24"])
    s = runner.train(cfg, tmp_path / "run")
    assert s["learner_error"] is None and s["prompts"] == 4 and s["judge_failure_rate"] == 0.0
    assert s["pairs"] >= 1 and s["learner_steps"] >= 1 and s["policy_version"] == 1
    assert s["generators"][0]["version"] == 1
    # the core plan this machine gets is the one the run used and reported, with its start-up times
    from selm_ray.core.cores import local_cores, plan_cores

    assert s["core_plan"] == plan_cores(cfg, local_cores()).as_dict()
    assert 0 < s["startup_seconds"] < s["time_to_first_pair_seconds"]
    # trained (last policy checkpointed and published) after the first pair, before the loop's end
    assert 0 < s["time_to_first_pair_seconds"] - s["startup_seconds"] < s["train_seconds"] <= s["loop_seconds"]
    # the engine's reload to v1 comes after that clock stops (one iteration: no reload inside it)
    assert s["weight_syncs_in_train"] == 0 < len(s["weight_sync_seconds"])


def test_sigint_stops_cleanly_with_checkpoint_and_no_lost_pair(tmp_path, tiny_model_path):
    import os
    import signal

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "selm_ray.ops.cli", "train", SMOKE, "--run-dir", str(run_dir), "--set",
         f"model.path={tiny_model_path}", "--set", "schedule.prompts_per_iteration=40",
         # overlapping stages: pairs land while the iteration is still being generated, so the stop
         # (and the resume below) fall mid-iteration (taking turns, all 40 land at once)
         "--set", "schedule.overlap=on"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pairs_log = run_dir / "buffer" / "pairs.jsonl"
    deadline = time.time() + 300
    while not (pairs_log.is_file() and len(pairs_log.read_text().splitlines()) >= 8):
        assert proc.poll() is None and time.time() < deadline, "run ended before any pairs"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "stop requested" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prompts"] < 80 and summary["checkpoint"]  # stopped early, checkpoint written
    assert (Path(summary["checkpoint"]) / "model.safetensors").is_file()
    ids = _pair_ids(run_dir)
    assert len(ids) == len(set(ids))
    assert sorted(_served_ids(run_dir)) == sorted(ids)  # the buffer was drained into the learner

    # resume from that mid-iteration checkpoint: the reference is still iteration 0's start (the
    # base model), not the stopped policy; the learner reports what it trains against
    from selm_ray.learner import checkpoint

    state = checkpoint.load_state(Path(summary["checkpoint"]))
    base = sum(t.double().sum().item() for t in load_file(tiny_model_path / "model.safetensors").values())
    policy = sum(t.double().sum().item() for t in load_file(Path(summary["checkpoint"]) / "model.safetensors").values())
    assert state["ref_checksum"] == pytest.approx(base, rel=1e-9) and abs(policy - base) > 1e-6
    resumed = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "train", SMOKE, "--resume", str(run_dir),
                              "--set", f"model.path={tiny_model_path}", "--set", "schedule.prompts_per_iteration=40",
                              "--set", "schedule.overlap=on", "--set", "schedule.iterations=1"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    refs = [m["ref_checksum"] for m in metrics if "ref_checksum" in m]
    assert len(refs) == 2 and refs[1] == pytest.approx(state["ref_checksum"], rel=1e-12)  # before and after


def test_autoscale_grows_generators_while_the_learner_waits(tmp_path, tiny_model_path, joined):
    """Iterative schedule: the learner sits idle while an iteration is generated, which is the
    grow signal; the new generator joins at the current policy version and takes work."""
    s = _train(tmp_path, f"model.path={tiny_model_path}", "schedule.iterations=3", "schedule.prompts_per_iteration=16",
               "generation.max_new_tokens=48", "autoscale.enabled=true", "autoscale.interval_seconds=5",
               "autoscale.grow_wait_fraction=0.2", "autoscale.max_generators=2", "autoscale.max_judges=1",
               joined)
    assert s["learner_error"] is None and s["prompts"] == 48
    grow = [e for e in s["pool_events"] if e["pool"] == "generator"]
    assert grow and (grow[0]["from"], grow[0]["to"]) == (1, 2) and grow[0]["reason"].startswith("autoscale: learner")
    assert len(s["generators"]) == 2 and all(g["calls"] > 0 and g["version"] == 3 for g in s["generators"])
    # both, the one that joined mid-run included, serve the final weights (vLLM's weight-update API)
    final = _checkpoint_checksum(Path(s["checkpoint"]))
    assert [g["weights_checksum"] for g in s["generators"]] == pytest.approx([final, final], rel=1e-6)


def test_a_run_that_does_not_fit_fails_at_once_and_one_that_finds_cpus_held_gives_up_in_time(
        tmp_path, tiny_model_path, ray_address, joined):
    """The shared head has 8 CPUs (tests/conftest.py). A run asking for 10 fails before it starts
    anything, naming each request; one that fits but finds 7 CPUs held by other work waits for
    cluster.placement_timeout_s, then fails with a named error (exit 2 from the CLI), never a hang."""
    import ray

    from selm_ray.run.fit import PlacementError

    with pytest.raises(PlacementError, match=r"generator x1 \(CPU 6 each\); judge x1 \(CPU 3 each\); "
                                             r"learner worker x1 \(CPU 1 each\) = CPU 10 in all"):
        _train(tmp_path, f"model.path={tiny_model_path}", "cluster.generator_cpus=6", "cluster.judge_cpus=3", joined)
    assert not (tmp_path / "run" / "buffer").exists()  # nothing was started

    ray.init(address=ray_address, namespace="holder")
    try:
        holder = ray.remote(num_cpus=7)(type("Holder", (), {"ping": lambda self: 1})).remote()
        assert ray.get(holder.ping.remote()) == 1
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "selm_ray.ops.cli", "train", SMOKE, "--set",
                              f"model.path={tiny_model_path}", "--set", joined, "--set",
                              "cluster.placement_timeout_s=3", "--run-dir", str(tmp_path / "held")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 2, out.stderr[-3000:]
        assert "gave up after cluster.placement_timeout_s=3 s" in out.stderr and "short of CPU 2" in out.stderr
        assert "other work holds it now" in out.stdout  # said while it waited
        assert time.time() - t0 < 120
    finally:
        ray.shutdown()
