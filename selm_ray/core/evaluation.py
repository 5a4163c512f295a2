"""Scoring a judged comparison, pure Python: win / tie / loss with a Wilson interval (`selm-ray eval`
and the per-iteration eval), and judge agreement with labelled pairs (`selm-ray judge-eval`).

`selm-ray eval`: model vs baseline on a prompt set, judged by the configured judge.

Both models answer every prompt greedily (vLLM, one generator actor each); the judge scores the
two answers of a prompt, each alone (all judges here are pointwise, so there is no order to
swap). Win / tie / loss, the win rate (a tie counts half) with a 95% Wilson interval, and the
mean answer lengths (length growth is a known failure mode of preference training).

Instruction following (``instruction_accuracy``): prompt- and instruction-level accuracy, strict
and loose, of answers to prompts carrying checkable instructions (``core/ifeval_data.py``).
"""
from __future__ import annotations

import math
from importlib import resources
from typing import Any, Iterable, Sequence

from selm_ray.core.data import DataError, PromptRecord, load_prompts
from selm_ray.core.judging.instructions import follows
from selm_ray.core.records import Candidate, CandidateScore, Judgement, Rollout


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def win_tie_loss(scores: Sequence[tuple[CandidateScore, CandidateScore]]) -> dict[str, Any]:
    """Counts over prompts where both answers were scored; failures are counted apart."""
    scored = [(a.score, b.score) for a, b in scores if a.ok and b.ok]
    wins = sum(a > b for a, b in scored)
    ties = sum(a == b for a, b in scored)
    n = len(scored)
    rate = (wins + 0.5 * ties) / n if n else 0.0
    return {"prompts": len(scores), "scored": n, "wins": wins, "ties": ties, "losses": n - wins - ties,
            "failures": len(scores) - n, "win_rate": round(rate, 4), "win_rate_ci95": wilson(rate, n)}


# -- judge agreement with labelled pairs ---------------------------------------------------------
# 12 hand-written general-knowledge pairs (a correct, helpful answer vs a vague or wrong one):
# enough to see whether a judge's verdicts parse and point the right way, not a benchmark.
BUILTIN_PAIRS = "builtin:pairs"


def load_labelled(source: str, split: str = "train", max_pairs: int | None = None) -> list[PromptRecord]:
    path = str(resources.files("selm_ray") / "assets" / "judge_pairs.jsonl") if source == BUILTIN_PAIRS else source
    records, _ = load_prompts(path, split, "error", "use", max_pairs)
    for i, r in enumerate(records):
        if len(r.extra_candidates) != 2:
            raise DataError(f"{source}: row {i} ({r.prompt_id}): a labelled pair needs both 'chosen' and "
                            f"'rejected'; found {len(r.extra_candidates)} answer(s)")
    if not records:
        raise DataError(f"{source}: no labelled pairs")
    return records


def as_rollouts(records: Sequence[PromptRecord]) -> list[Rollout]:
    """Candidate 0 is the chosen answer, candidate 1 the rejected one."""
    return [Rollout(r.prompt_id, r.messages, "", tuple(Candidate(t, len(t.split()), None)
                                                      for t in r.extra_candidates)) for r in records]


def agreement(judgements: Sequence[Judgement]) -> dict[str, Any]:
    """Pairwise accuracy over pairs with both answers scored; tie and failure rates over all."""
    n = len(judgements)
    failed = [j for j in judgements if not (j.scores[0].ok and j.scores[1].ok)]
    scored = [(j.scores[0].score, j.scores[1].score) for j in judgements if j not in failed]
    wins = sum(c > r for c, r in scored)
    ties = sum(c == r for c, r in scored)
    return {"pairs": n, "accuracy": round(wins / len(scored), 4) if scored else None,
            "tie_rate": round(ties / max(1, n), 4), "failure_rate": round(len(failed) / max(1, n), 4),
            "judge": judgements[0].judge if judgements else None}


# -- instruction following -----------------------------------------------------------------------
def _rate(hits: int, n: int) -> tuple[float, tuple[float, float]]:
    p = hits / n if n else 0.0
    return round(p, 4), wilson(p, n)


def instruction_accuracy(items: Iterable[tuple[dict[str, Any] | None, str, int]]) -> dict[str, Any]:
    """Accuracy over (meta, response_text, num_tokens) items, one per prompt. A prompt counts as
    followed when all its instructions are; each figure comes with its 95% Wilson interval.
    ``by_kind``: {kind: [followed strictly, total]}. Items whose meta carries no instructions are
    left out of every figure and counted as ``skipped``."""
    prompts = strict_prompts = loose_prompts = skipped = 0
    strict_hits = loose_hits = tokens = 0
    by_kind: dict[str, list[int]] = {}
    for meta, text, num_tokens in items:
        instructions = (meta or {}).get("instructions") or []
        if not instructions:
            skipped += 1
            continue
        verdicts = [follows(i["id"], i.get("kwargs"), "", text) for i in instructions]
        prompts, tokens = prompts + 1, tokens + num_tokens
        strict_prompts += all(s for s, _ in verdicts)
        loose_prompts += all(lo for _, lo in verdicts)
        strict_hits += sum(s for s, _ in verdicts)
        loose_hits += sum(lo for _, lo in verdicts)
        for i, (s, _) in zip(instructions, verdicts):
            counts = by_kind.setdefault(i["id"], [0, 0])
            counts[0], counts[1] = counts[0] + s, counts[1] + 1
    total = sum(c[1] for c in by_kind.values())
    out: dict[str, Any] = {"prompts": prompts, "instructions": total, "skipped": skipped,
                           "mean_tokens": round(tokens / prompts, 2) if prompts else 0.0}
    for name, hits, n in (("prompt_strict", strict_prompts, prompts), ("prompt_loose", loose_prompts, prompts),
                          ("instruction_strict", strict_hits, total), ("instruction_loose", loose_hits, total)):
        out[name], out[name + "_ci95"] = _rate(hits, n)
    out["by_kind"] = dict(sorted(by_kind.items()))
    return out


def _pct(x: float, ci: tuple[float, float] | list[float] | None = None) -> str:
    body = f"{100 * x:.1f}%"
    return f"{body} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else body


def accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of ``instruction_eval`` rows (iteration -1 is the starting policy), with the
    change of prompt-level strict accuracy and of mean length against the first row."""
    if not rows:
        return ""
    first = rows[0]
    lines = ["| policy | prompt strict (95% CI) | prompt loose | instruction strict | instruction loose "
             "| mean tokens | vs start |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = "start" if r["iteration"] < 0 else f"after iteration {r['iteration'] + 1}"
        gain = 100 * (r["prompt_strict"] - first["prompt_strict"])
        ratio = r["mean_tokens"] / first["mean_tokens"] if first["mean_tokens"] else float("nan")
        lines.append(f"| {name} (v{r['policy_version']}) | {_pct(r['prompt_strict'], r['prompt_strict_ci95'])} "
                     f"| {_pct(r['prompt_loose'])} | {_pct(r['instruction_strict'])} "
                     f"| {_pct(r['instruction_loose'])} | {r['mean_tokens']} "
                     f"| {gain:+.1f} points, length x{ratio:.2f} |")
    return "\n".join(lines)
