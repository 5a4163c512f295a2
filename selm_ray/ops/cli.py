"""`selm-ray` command line. Every user error ends in one clear line and exit status 2."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from selm_ray.core.config import Config, ConfigError, dump_config, load_config
from selm_ray.core.data import DataError
from selm_ray.engines.models import PREPARERS, ModelError, is_prepared, models_dir, prepare_model

USER_ERRORS = (ConfigError, DataError, ModelError)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


# user errors of the modules that commands import only when used (`stats` and `scale` start in
# about a second: no torch unless a command needs it)
_LATE_ERRORS = {"selm_ray.ops.attach": "AttachError", "selm_ray.core.judging.functions": "FunctionJudgeError",
                "selm_ray.ops.report": "ReportError", "selm_ray.run.fit": "PlacementError",
                "selm_ray.learner.checkpoint": "ResumeError"}


def _late_errors() -> tuple[type, ...]:
    """Those of them whose module is loaded: an error of a module never imported cannot be in
    flight, and importing one (torch with it) only to match an exception costs seconds."""
    return tuple(getattr(sys.modules[m], name) for m, name in _LATE_ERRORS.items() if m in sys.modules)


def _run_id(value: str) -> str:
    if not RUN_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: use letters, digits, '.', '_' or '-' (at most 80)")
    return value


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be an integer >= 1")
    return n


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
    if args.model_cmd == "convert-pairrm":
        from selm_ray.engines.pairrm import convert_llm_blender

        try:
            out = convert_llm_blender(args.src, args.out, args.source_max_length, args.candidate_max_length)
        except ValueError as e:
            print(f"selm-ray: error: {e}", file=sys.stderr)
            return 2
        print(f"{args.src} -> {out} (judge.kind: pairwise_rm, judge.ranker: {out})")
        return 0
    t0 = time.time()
    path = prepare_model(args.name, force=args.force)
    print(f"{args.name}: {path} ({time.time() - t0:.1f}s)")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.schema:  # the tree's shape, not one config: CONFIG and --set do not apply
        print(json.dumps(Config.model_json_schema(), indent=2))
        return 0
    cfg = load_config(args.config, args.overrides)
    print(dump_config(cfg), end="")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from selm_ray.run.onepass import run_one_pass

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or Path(cfg.run.output_dir) / f"{cfg.run.name}-onepass-{time.strftime('%Y%m%d-%H%M%S')}")
    print("selm-ray demo: one generate -> judge -> pair pass, no training (the online loop is "
          "`selm-ray train`)", flush=True)
    summary = run_one_pass(cfg, args.prompts, run_dir)
    print(json.dumps(summary, indent=2))
    print(f"pairs written to {run_dir / 'pairs.jsonl'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from selm_ray.run.runner import train

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from selm_ray.core.dryrun import dry_run_overrides

        shrink = dry_run_overrides(cfg)
        print("dry run: " + " ".join(f"--set {o}" for o in shrink), flush=True)
        cfg = load_config(args.config, [*args.overrides, *shrink])
    run_dir = args.resume or args.run_dir
    summary = train(cfg, Path(run_dir) if run_dir else None, resume=bool(args.resume), run_id=args.run_id)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("generators", "judges")}, indent=2))
    print(f"checkpoint: {summary['checkpoint']}")
    return 0 if summary.get("learner_error") is None else 1


def _cmd_sft(args: argparse.Namespace) -> int:
    from selm_ray.run.runner import sft_only

    cfg = load_config(args.config, args.overrides)
    m1 = sft_only(cfg, Path(args.run_dir) if args.run_dir else None)
    print(f"M1: {m1}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from selm_ray.ops.submit import follow_hint, submit

    # a bad config fails here, before anything is sent
    cfg = load_config(args.config, args.overrides)
    from selm_ray.run.runner import new_run_id

    run_id = args.run_id or new_run_id(cfg.run.name)
    job_id = submit(args.config, args.address, args.overrides, args.working_dir, run_id)
    print(follow_hint(args.address, job_id))
    return 0


def _relay(args: argparse.Namespace, argv: list[str]) -> Any:
    """A dashboard URL: run this command as a short job on the cluster, return its JSON."""
    from selm_ray.ops.attach import last_json, via_job

    return last_json(via_job(args.address, argv))


def _quiet_ray(func):
    """Ray prints its own notices (e.g. raylet warnings) to sys.stdout of any connected driver;
    send them to stderr so that stdout carries only what the command prints (its JSON)."""
    def run(args: argparse.Namespace) -> int:
        out, sys.stdout = sys.stdout, sys.stderr
        try:
            return func(args, out)
        finally:
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                sys.modules["ray"].shutdown()  # before stdout is back: late notices go to stderr too
            sys.stdout = out
    return run


def _stats_source(args: argparse.Namespace) -> Any:
    """What one refresh reads: the live run ids (--list) or one run's snapshot. ``args.run`` is
    read at each call: a watch without --run follows the run it found first."""
    from selm_ray.ops import attach

    if attach.is_dashboard_url(args.address):
        return lambda: _relay(args, ["stats", "--json", *(["--list"] if args.list else
                                                          ["--run", args.run] if args.run else [])])
    attach.connect(args.address)
    if args.list:
        return lambda: {"time": time.time(), "runs": attach.live_runs()}
    return lambda: attach.snapshot(args.run)


def _render_list(snap: dict[str, Any]) -> str:
    return f"live runs: {', '.join(snap['runs'])}" if snap["runs"] else "no live selm-ray run on this cluster"


@_quiet_ray
def _cmd_stats(args: argparse.Namespace, out: Any) -> int:
    from selm_ray.ops import attach
    from selm_ray.core.livestats import render

    if args.list and args.run:
        print("selm-ray: error: stats --list lists every live run: leave out --run", file=sys.stderr)
        return 2
    get = _stats_source(args)
    seen = False
    while True:
        try:
            snap = get()
        except attach.AttachError:
            if seen:  # it was live a moment ago: its controller is gone with the job
                print("\nthe run has ended", file=sys.stderr if args.json else out)
                return 0
            raise
        seen = True
        if not args.list:
            args.run = args.run or snap.get("run")  # a second run starting later is not this one
        if args.json:  # with --watch: one JSON line per refresh, for scripts and monitors
            print(json.dumps(snap), file=out, flush=True)
        else:
            if args.watch:
                print("\x1b[H\x1b[2J", end="", file=out)  # redraw in place
            print(_render_list(snap) if args.list else render(snap), file=out, flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


@_quiet_ray
def _cmd_scale(args: argparse.Namespace, out_file: Any) -> int:
    from selm_ray.ops import attach

    if args.generators is None and args.judges is None:
        print("selm-ray: error: scale needs --generators and/or --judges", file=sys.stderr)
        return 2
    sizes = {k: v for k, v in (("generators", args.generators), ("judges", args.judges)) if v is not None}
    if attach.is_dashboard_url(args.address):
        argv = ["scale", *(["--run", args.run] if args.run else []), "--wait", str(args.wait)]
        argv += [x for k, v in sizes.items() for x in (f"--{k}", str(v))]
        print(json.dumps(_relay(args, argv)), file=out_file)
        return 0
    attach.connect(args.address)
    run, queued = attach.request_scale(args.run, args.generators, args.judges)
    out: dict[str, Any] = {"run": run, "requested": queued}
    if args.wait:
        snap = attach.wait_for_sizes(run, sizes, args.wait)
        out["pools"] = {k: {x: p[x] for x in ("size", "starting", "draining", "target")}
                        for k, p in snap.get("pools", {}).items()}
    print(json.dumps(out), file=out_file)
    return 0


def _emit(result: dict[str, Any], out: str | None) -> int:
    """Print a command's JSON result, and write it to --out when given."""
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return 0


def _cmd_judge_eval(args: argparse.Namespace) -> int:
    from selm_ray.ops.judge_eval import evaluate

    cfg = load_config(args.config, args.overrides)
    return _emit(evaluate(cfg, args.data, args.split, args.max_pairs), args.out)


def _cmd_eval(args: argparse.Namespace) -> int:
    from selm_ray.ops.evaluate import compare, instruction_eval

    if (args.instructions is None) == (args.baseline is None and args.prompts is None):
        raise ConfigError("eval: give --instructions FILE (absolute accuracy of --model), or --baseline "
                          "and --prompts (win rate against a baseline)")
    cfg = load_config(args.config, args.overrides)
    if args.instructions:
        return _emit(instruction_eval(cfg, args.model, args.instructions, args.max_prompts), args.out)
    if not (args.baseline and args.prompts):
        raise ConfigError("eval: a win-rate comparison needs both --baseline and --prompts")
    return _emit(compare(cfg, args.model, args.baseline, args.prompts, args.max_prompts), args.out)


def _cmd_report(args: argparse.Namespace) -> int:
    from selm_ray.ops.report import write_report

    out = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print(f"report: {out}")
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
    conv = msub.add_parser("convert-pairrm", help="an llm-blender PairRM folder (config.json, weights, "
                           "tokenizer) -> a ranker folder for judge.kind pairwise_rm")
    conv.add_argument("src", help="folder of the llm-blender checkpoint (e.g. a download of llm-blender/PairRM)")
    conv.add_argument("out", help="folder to write (judge.ranker points at it)")
    conv.add_argument("--source-max-length", type=int, default=1224)
    conv.add_argument("--candidate-max-length", type=int, default=412)
    m.set_defaults(func=_cmd_model)

    c = sub.add_parser("config", help="validate a config and print it fully resolved")
    _add_config_args(c)
    c.add_argument("--schema", action="store_true",
                   help="print the JSON Schema of the whole config tree instead (for editors that "
                        "complete and check YAML configs); CONFIG and --set are ignored")
    c.set_defaults(func=_cmd_config)

    t = sub.add_parser("train", help="run the online loop (generators, judges, buffer, learner) on Ray")
    _add_config_args(t)
    t.add_argument("--run-dir", help="run directory (default: <run.output_dir>/<name>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    t.add_argument("--run-id", type=_run_id, help="run id = Ray namespace (default: <run.name>-<time>-<random>)")
    t.add_argument("--dry-run", action="store_true",
                   help="the same run shrunk for one CPU machine: a tiny model of the same family, every "
                        "size scaled down, no GPUs; dtype, ZeRO stage, LoRA, judge and schedule kept")
    t.set_defaults(func=_cmd_train)

    sf = sub.add_parser("sft", help="only the SFT stage (IFT + EFT data, config section sft): M0 -> M1")
    _add_config_args(sf)
    sf.add_argument("--run-dir", help="where the checkpoint goes (default: <run.output_dir>/<name>-sft-<time>)")
    sf.set_defaults(func=_cmd_sft)

    sb = sub.add_parser("submit", help="submit a training job to a Ray cluster (Ray Jobs API)")
    sb.add_argument("config", help="YAML config, relative to the working dir")
    sb.add_argument("--address", required=True, help="dashboard address, e.g. http://127.0.0.1:8265")
    sb.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sb.add_argument("--working-dir", default=".", help="uploaded as the job's working dir (default .)")
    sb.add_argument("--run-id", type=_run_id, help="run id, also the submission id (default: <run.name>-<time>-<random>)")
    sb.set_defaults(func=_cmd_submit)

    address_help = ("Ray cluster address (host:6379, or auto on a cluster node) or dashboard URL "
                    "(http://host:8265)")
    st = sub.add_parser("stats", help="live statistics of a running job (buffer, judges, learner, pools)")
    st.add_argument("--address", default="auto", help=address_help + " (default auto)")
    st.add_argument("--run", type=_run_id, help="run id (default: the only live run)")
    st.add_argument("--list", action="store_true", help="the ids of the live runs on this cluster instead "
                    "(JSON: {time, runs})")
    st.add_argument("--watch", action="store_true", help="refresh in place until the run ends or Ctrl-C")
    st.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    st.add_argument("--json", action="store_true", help="print the snapshot as one JSON line (with --watch: "
                    "a line per refresh)")
    st.set_defaults(func=_cmd_stats)

    sc = sub.add_parser("scale", help="resize the generator / judge pools of a running job")
    sc.add_argument("--address", default="auto", help=address_help + " (default auto)")
    sc.add_argument("--run", type=_run_id, help="run id (default: the only live run)")
    sc.add_argument("--generators", type=_positive_int, help="new generator pool size")
    sc.add_argument("--judges", type=_positive_int, help="new judge pool size")
    sc.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="wait up to this long for the pools to reach the new sizes")
    sc.set_defaults(func=_cmd_scale)

    je = sub.add_parser("judge-eval", help="agreement of the configured judge with labelled chosen/rejected pairs")
    _add_config_args(je)
    je.add_argument("--data", required=True, help="pairs with prompt/messages + chosen + rejected (.jsonl, "
                    ".parquet or a datasets name), or builtin:pairs (12 shipped examples)")
    je.add_argument("--split", default="train")
    je.add_argument("--max-pairs", type=int, default=None, help="use at most this many pairs")
    je.add_argument("--out", help="also write the JSON result here")
    je.set_defaults(func=_cmd_judge_eval)

    ev = sub.add_parser("eval", help="win/tie/loss of a model against a baseline, judged by the configured "
                        "judge; or, with --instructions, its accuracy on verifiable instructions")
    _add_config_args(ev)
    ev.add_argument("--model", required=True, help="model (alias, folder or checkpoint) to evaluate")
    ev.add_argument("--baseline", help="model to compare against (with --prompts)")
    ev.add_argument("--prompts", help="prompt set (.jsonl/.parquet, a datasets name, or seed)")
    ev.add_argument("--instructions", help="verifiable-instruction prompts (rows with meta.instructions, e.g. "
                    "builtin:ifeval-dev): prompt/instruction-level strict and loose accuracy, 95%% intervals")
    ev.add_argument("--max-prompts", type=int, default=None)
    ev.add_argument("--out", help="also write the JSON result here")
    ev.set_defaults(func=_cmd_eval)

    rp = sub.add_parser("report", help="charts (PNG) and a markdown summary of a run directory")
    rp.add_argument("run_dir", help="a run directory (runs/<run id>)")
    rp.add_argument("--out", help="output folder (default RUN_DIR/report)")
    rp.set_defaults(func=_cmd_report)

    d = sub.add_parser("demo", help="one generate -> judge -> pair pass on the configured model")
    _add_config_args(d)
    d.add_argument("--prompts", type=_positive_int, default=8, help="number of prompts (default 8)")
    d.add_argument("--run-dir", help="where to write pairs and the summary")
    d.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS + _late_errors() as e:
        print(f"selm-ray: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
