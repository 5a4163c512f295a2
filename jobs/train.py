"""Job entrypoint: `ray job submit ... -- python jobs/train.py --config jobs/configs/smoke.yaml`.

Connects to the cluster the job runs on (Ray sets RAY_ADDRESS for job entrypoints; never starts a
private cluster then), runs the online loop in a namespace of its own, exits non-zero on failure.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="YAML config (see jobs/configs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--run-dir", help="run directory on the driver's node")
    p.add_argument("--run-id", help="run id and Ray namespace (what `selm-ray stats/scale --run` take); "
                   "pass the same value as `ray job submit --submission-id` to use one id for both")
    args = p.parse_args(argv)
    from selm_ray.ops.cli import main as cli_main

    cmd = ["train", args.config] + [x for o in args.overrides for x in ("--set", o)]
    if args.run_dir:
        cmd += ["--run-dir", args.run_dir]
    if args.run_id:
        cmd += ["--run-id", args.run_id]
    return cli_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
