"""The one place where plain classes become Ray actors, with their resources and environment."""
from __future__ import annotations

from typing import Any

import ray

from selm_ray.actors.buffer_actor import BufferActor
from selm_ray.actors.channel import LearnerChannel
from selm_ray.actors.control import CONTROL_NAME, ControlPlane
from selm_ray.actors.generator import Generator
from selm_ray.actors.judge import Judge
from selm_ray.core.config import Config
from selm_ray.core.cores import engine_threads, memory_env
from selm_ray.engines.vllm_engine import cpu_engine_env

MAX_RESTARTS = 3


def engine_env(cfg: Config, gpus: float, log_file: str | None = None) -> dict[str, str]:
    """Per-actor environment for a vLLM engine; must be in place before vllm is imported.
    ``log_file``: where the actor's own output goes (see tally.redirect_output)."""
    threads = str(engine_threads(cfg))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if log_file:
        env["SELM_RAY_LOG_FILE"] = log_file
    if gpus == 0:
        env.update(cpu_engine_env(cfg.cluster.kv_cache_gib))
        env.update(memory_env(cfg))
        # In-process engine: new weights go in as tensors, no disk and no extra process.
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return env


def _options(name: str, cpus: float, gpus: float = 0.0, env: dict[str, str] | None = None,
             resources: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"name": name, "num_cpus": cpus, "num_gpus": gpus,
                            "max_restarts": MAX_RESTARTS, "max_task_retries": 0, **extra}
    if env:
        opts["runtime_env"] = {"env_vars": env}
    if resources:
        opts["resources"] = resources
    return opts


def _slot(name: str | None) -> dict[str, float] | None:
    return {name: 1.0} if name else None


def launch_channel(run_id: str, version: int = 0) -> Any:
    return ray.remote(LearnerChannel).options(**_options(f"{run_id}-channel", 0)).remote(version)


def launch_control(run_id: str) -> Any:
    """The job's named control actor; found by `selm-ray stats/scale` in the run's namespace."""
    return ray.remote(ControlPlane).options(**_options(CONTROL_NAME, 0)).remote(run_id)


def stop_actor(actor: Any) -> None:
    """End a drained pool member for good (no restart)."""
    ray.kill(actor, no_restart=True)


def launch_buffer(cfg: Config, run_id: str, directory: str) -> Any:
    """On the driver's node, always (restarts included): its logs live in the run directory there,
    which the driver reads for the summary and a resume."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    b = cfg.buffer
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(BufferActor).options(**_options(f"{run_id}-buffer", 0, scheduling_strategy=here)).remote(
        directory, b.capacity, b.max_policy_lag, b.eviction, b.replay)


def _log_file(log_dir: str | None, name: str) -> str | None:
    return f"{log_dir}/{name}.log" if log_dir else None


def launch_generator(cfg: Config, run_id: str, index: int, model_path: str, channel: Any,
                     version: int = 0, log_dir: str | None = None, adapter_path: str | None = None) -> Any:
    c = cfg.cluster
    name = f"{run_id}-generator-{index}"
    env = engine_env(cfg, c.generator_gpus, _log_file(log_dir, name))
    opts = _options(name, c.generator_cpus, c.generator_gpus, env,
                    _slot(c.generator_slot))
    return ray.remote(Generator).options(**opts).remote(cfg.to_dict(), model_path, name, channel, version,
                                                                adapter_path)


def launch_judge(cfg: Config, run_id: str, index: int, model_path: str, rm_path: str | None,
                 channel: Any, version: int = 0, log_dir: str | None = None,
                 adapter_path: str | None = None) -> Any:
    c = cfg.cluster
    name = f"{run_id}-judge-{index}"
    env = engine_env(cfg, c.judge_gpus, _log_file(log_dir, name))
    opts = _options(name, c.judge_cpus, c.judge_gpus, env, _slot(c.judge_slot))
    return ray.remote(Judge).options(**opts).remote(cfg.to_dict(), model_path, rm_path, name, channel,
                                                            version, adapter_path)
