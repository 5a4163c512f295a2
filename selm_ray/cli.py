"""`selm-ray` command line. Every user error ends in one clear line and exit status 2."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from selm_ray.config import ConfigError, dump_config, load_config
from selm_ray.data import DataError
from selm_ray.learner.checkpoint import ResumeError
from selm_ray.models import PREPARERS, ModelError, is_prepared, models_dir, prepare_model

USER_ERRORS = (ConfigError, DataError, ModelError, ResumeError)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set learner.alpha=0.001 (repeatable)")


def _cmd_model(args: argparse.Namespace) -> int:
    if args.model_cmd == "list":
        for alias in sorted(PREPARERS):
            state = "prepared" if is_prepared(alias) else "not prepared"
            print(f"{alias:24s} {state:13s} {models_dir() / alias}")
        return 0
    t0 = time.time()
    path = prepare_model(args.name, force=args.force)
    print(f"{args.name}: {path} ({time.time() - t0:.1f}s)")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(dump_config(cfg), end="")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from selm_ray.onepass import run_one_pass

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or Path(cfg.run.output_dir) / f"{cfg.run.name}-onepass-{time.strftime('%Y%m%d-%H%M%S')}")
    print("selm-ray demo: one generate -> judge -> pair pass, no training (the online loop is "
          "`selm-ray train`)", flush=True)
    summary = run_one_pass(cfg, args.prompts, run_dir)
    print(json.dumps(summary, indent=2))
    print(f"pairs written to {run_dir / 'pairs.jsonl'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from selm_ray.runner import train

    cfg = load_config(args.config, args.overrides)
    run_dir = args.resume or args.run_dir
    summary = train(cfg, Path(run_dir) if run_dir else None, resume=bool(args.resume))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("generators", "judges")}, indent=2))
    print(f"checkpoint: {summary['checkpoint']}")
    return 0 if summary.get("learner_error") is None else 1


def _cmd_submit(args: argparse.Namespace) -> int:
    from selm_ray.submit import follow_hint, submit

    load_config(args.config, args.overrides)  # a bad config fails here, before anything is sent
    job_id = submit(args.config, args.address, args.overrides, args.working_dir)
    print(follow_hint(args.address, job_id))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selm-ray", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("model", help="prepare or list built-in models")
    msub = m.add_subparsers(dest="model_cmd", required=True)
    prep = msub.add_parser("prepare", help="make the HF folder for a built-in alias (idempotent)")
    prep.add_argument("name", choices=sorted(PREPARERS))
    prep.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    msub.add_parser("list", help="list aliases and whether they are prepared")
    m.set_defaults(func=_cmd_model)

    c = sub.add_parser("config", help="validate a config and print it fully resolved")
    _add_config_args(c)
    c.set_defaults(func=_cmd_config)

    t = sub.add_parser("train", help="run the online loop (generators, judges, buffer, learner) on Ray")
    _add_config_args(t)
    t.add_argument("--run-dir", help="run directory (default: <run.output_dir>/<name>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    t.set_defaults(func=_cmd_train)

    sb = sub.add_parser("submit", help="submit a training job to a Ray cluster (Ray Jobs API)")
    sb.add_argument("config", help="YAML config, relative to the working dir")
    sb.add_argument("--address", required=True, help="dashboard address, e.g. http://127.0.0.1:8265")
    sb.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sb.add_argument("--working-dir", default=".", help="uploaded as the job's working dir (default .)")
    sb.set_defaults(func=_cmd_submit)

    d = sub.add_parser("demo", help="one generate -> judge -> pair pass on the configured model")
    _add_config_args(d)
    d.add_argument("--prompts", type=int, default=8, help="number of prompts (default 8)")
    d.add_argument("--run-dir", help="where to write pairs and the summary")
    d.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "prompts", 1) is not None and getattr(args, "prompts", 1) < 1:
        print("selm-ray: error: --prompts must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"selm-ray: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
