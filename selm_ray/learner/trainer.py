"""Build the Ray Train TorchTrainer (Train V2 API) that runs the learner loop."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selm_ray.core.config import Config


def learner_env(cfg: Config) -> dict[str, str]:
    """Set in each learner worker's process env at start (OpenMP reads it when it loads)."""
    from selm_ray.core.cores import memory_env, run_plan

    plan = run_plan(cfg)
    threads = str(plan.learner_threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if cfg.cluster.learner_gpus == 0:
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed on CPU: gloo collectives, no CUDA probing
        env.update(memory_env(cfg))
    if cfg.cluster.learner_gpus == 0 and plan.shared:
        # Running stages share cores. OpenMP's default spin-wait makes a thread whose partner was
        # preempted burn its time slice at every barrier: measured with one busy core beside it, a
        # 2-thread SmolLM2 step took 12.5 s spinning vs 8.2 s passive (4.5 s alone either way).
        # Passive threads sleep at barriers instead; with cores of its own (the plan's usual case)
        # passive waits cost ~17% (3.30 -> 3.88 s a step alone), so only here.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def _torch_trainer(cfg: Config, loop: Any, loop_config: dict[str, Any], run_dir: Path, name: str) -> Any:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = cfg.cluster.learner_gpus > 0
    resources = {"CPU": cfg.cluster.learner_cpus}
    if use_gpu:
        resources["GPU"] = cfg.cluster.learner_gpus
    if cfg.cluster.learner_slot:
        resources[cfg.cluster.learner_slot] = 1.0
    return TorchTrainer(
        loop,
        train_loop_config={"config": cfg.to_dict(), "run_dir": str(run_dir), **loop_config},
        scaling_config=ScalingConfig(num_workers=cfg.learner.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        # a failed worker group is restarted (the loop then starts from the newest checkpoint)
        run_config=RunConfig(storage_path=str((run_dir / "ray_train").resolve()), name=name,
                             failure_config=FailureConfig(max_failures=cfg.learner.max_restarts),
                             worker_runtime_env={"env_vars": learner_env(cfg)}),
    )


def build_trainer(cfg: Config, model_path: str, buffer: Any, channel: Any, run_dir: Path,
                  resume_from: str | None = None) -> Any:
    """The preference learner (reads the buffer, publishes weights through the channel)."""
    from selm_ray.learner.checkpoint import home
    from selm_ray.learner.loop import train_loop_per_worker

    return _torch_trainer(cfg, train_loop_per_worker, {"model_path": model_path, "buffer": buffer,
                                                       "channel": channel, "resume_from": resume_from},
                          home(run_dir, cfg.run.storage_path), "learner")


def build_sft_trainer(cfg: Config, model_path: str, examples: list[Any], out_dir: Path) -> Any:
    """The SFT stage (M0 -> M1) on the same workers, resources and engine as the learner."""
    from dataclasses import asdict

    from selm_ray.learner.sft_loop import sft_loop_per_worker

    return _torch_trainer(cfg, sft_loop_per_worker, {"model_path": model_path,
                                                     "examples": [asdict(e) for e in examples]}, out_dir, "sft")
