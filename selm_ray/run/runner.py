"""`selm-ray train`: start (or join) Ray, run the controller, write the summary."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from selm_ray.core.config import Config, config_from_dict


def _init_ray(cfg: Config, namespace: str) -> None:
    """Join the configured (or job's) cluster, else start a local one; one namespace per run so
    two runs on one cluster never see each other's named actors."""
    import ray

    from selm_ray.actors import remote

    c = cfg.cluster
    remote.configure(c)
    address = c.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=namespace)  # never a private cluster then
        return
    # address="local": always a new private cluster, never one some `ray start` left running here.
    # Ray schedules by logical CPUs: give every actor its declared share even on a 2-core box;
    # real thread counts are set per actor (threads_per_actor).
    a = cfg.autoscale
    gens, judges = (a.max_generators, a.max_judges) if a.enabled else (c.num_generators, c.num_judges)
    need = gens * c.generator_cpus + judges * c.judge_cpus
    need += cfg.learner.num_workers * c.learner_cpus + 1
    ray.init(address="local", num_cpus=max(int(need + 0.999), os.cpu_count() or 1),
             include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True, namespace=namespace)


def run_sft(cfg: Config, run_dir: Path) -> Path:
    """The SFT stage: M0 (model.path) -> M1 in run_dir/sft/checkpoints/; returns M1's folder.
    Needs Ray up (a TorchTrainer runs it)."""
    from selm_ray.learner import checkpoint
    from selm_ray.learner.trainer import build_sft_trainer
    from selm_ray.engines.models import resolve_model
    from selm_ray.core.sft_data import load_sft

    s = cfg.sft
    examples = (load_sft(s.ift_data, "ift") if s.ift_data else []) + (load_sft(s.eft_data, "eft") if s.eft_data else [])
    out = checkpoint.home(run_dir, cfg.run.storage_path) / "sft"
    done = checkpoint.latest(out)
    if done is not None:  # a resumed run: M1 exists already
        return done
    out.mkdir(parents=True, exist_ok=True)
    print(f"SFT: {len(examples)} examples ({sum(e.kind == 'ift' for e in examples)} IFT, "
          f"{sum(e.kind == 'eft' for e in examples)} EFT) x {s.epochs} epochs", flush=True)
    build_sft_trainer(cfg, resolve_model(cfg.model.path), examples, out).fit()
    m1 = checkpoint.latest(out)
    if m1 is None:
        raise RuntimeError(f"SFT finished without a checkpoint in {out}")
    print(f"SFT: M1 = {m1}", flush=True)
    return m1


def sft_only(cfg: Config, run_dir: Path | None = None) -> Path:
    """`selm-ray sft`: only the SFT stage, on a local Ray (or the configured cluster)."""
    import ray

    from selm_ray.run.fit import ensure_fits

    run_id = new_run_id(f"{cfg.run.name}-sft")
    run_dir = Path(run_dir or Path(cfg.run.output_dir) / run_id).resolve()
    _init_ray(cfg, namespace=run_id)
    try:
        ensure_fits(cfg, lambda msg: print(f"sft: {msg}", flush=True))
        return run_sft(cfg, run_dir)
    finally:
        ray.shutdown()


def with_model(cfg: Config, path: Path) -> Config:
    """The same config starting from ``path`` (validated again, like any config)."""
    data = cfg.to_dict()
    data["model"]["path"] = str(path)
    return config_from_dict(data)


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def train(cfg: Config, run_dir: Path | None = None, controller_hook: Any = None,
          resume: bool = False, run_id: str | None = None) -> dict[str, Any]:
    """Run the whole online loop; ``controller_hook(controller)`` runs once the actors are up
    (tests use it to inject faults). ``run_id`` names the run and its Ray namespace (what
    `selm-ray stats/scale --run` take); default: name-time-random."""
    import ray

    from selm_ray.run.controller import Controller
    from selm_ray.learner import checkpoint
    from selm_ray.learner.checkpoint import ResumeError
    from selm_ray.core.cores import apply_plan, run_plan
    from selm_ray.run.fit import ensure_fits

    run_id = run_id or new_run_id(cfg.run.name)
    run_dir = Path(run_dir or Path(cfg.run.output_dir) / run_id).resolve()
    ckpt_home = checkpoint.home(run_dir, cfg.run.storage_path)
    if resume and checkpoint.latest(ckpt_home) is None:  # fail before starting anything
        raise ResumeError(f"{ckpt_home}: no complete checkpoint under checkpoints/ to resume from")
    if resume:
        from selm_ray.run.resume import check_resume_config

        check_resume_config(run_dir, cfg.to_dict())
    _init_ray(cfg, namespace=run_id)
    # which cluster: a job's driver joins the one its head resolves, which the user may want to check
    print(f"run {run_id}: Ray cluster {ray.get_runtime_context().gcs_address}, namespace {run_id}, "
          f"directory {run_dir}", flush=True)
    try:
        ensure_fits(cfg, lambda msg: print(f"run {run_id}: {msg}", flush=True))  # before anything starts
        if cfg.sft.enabled:  # M1 first (Self-Rewarding); the preference iterations start from it
            cfg = with_model(cfg, run_sft(cfg, run_dir))
        plan = run_plan(cfg)
        cfg = apply_plan(cfg, plan)  # what every actor reads: threads and overlap, decided once
        print(f"run {run_id}: core plan: {plan.reason}", flush=True)
        cfg = resolve_lora_publish(cfg, lambda msg: print(f"run {run_id}: {msg}", flush=True))
        ctl = Controller(cfg, run_dir, run_id, resume=resume)
        ctl.ctx.core_plan = plan.as_dict()
        ctl.install_signal_handlers()
        ctl.start()
        if controller_hook is not None:
            controller_hook(ctl)
        summary = ctl.run()
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        ray.shutdown()


def resolve_lora_publish(cfg: Any, log: Any) -> Any:
    """``learner.lora_publish`` decided once for the model the run serves (what the learner sends
    and every engine expects must agree): adapter or merged, the reason printed."""
    if cfg.learner.lora_rank == 0:
        return cfg
    from selm_ray.core.config import config_from_dict
    from selm_ray.engines.adapters import choose_publish
    from selm_ray.engines.models import resolve_model

    choice = choose_publish(cfg.learner.lora_publish, cfg.learner.lora_rank, resolve_model(cfg.model.path))
    log(f"publishing: {choice.reason}")
    data = cfg.to_dict()
    data["learner"]["lora_publish"] = choice.mode
    return config_from_dict(data)
