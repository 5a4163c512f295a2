"""Benchmark (not a test): one learner step's forward + backward in each batch layout.

    python -m selm_ray.ops.bench_learner [--model smollm2-135m-instruct] [--pairs 4] [--tokens 64]
                                     [--threads 2] [--repeats 3]

Builds PAIRS preference pairs from the shipped seed prompts (chat template applied) with
response token ids of TOKENS each for y_w, y_l and y_ref (the SELM batch), then times the
policy forward and backward of the padded layout (one row per response) and the packed layout
(one row per pair, prompt once) on the same model, and prints the median seconds of each.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _pairs(tok, n: int, tokens: int) -> list:
    from selm_ray.core.data import load_prompts
    from selm_ray.core.records import PreferencePair

    gen = torch.Generator().manual_seed(0)
    ids = lambda: tuple(torch.randint(100, len(tok) - 1, (tokens,), generator=gen).tolist())  # noqa: E731
    out = []
    for rec in load_prompts(max_prompts=n)[0]:
        text = tok.apply_chat_template(list(rec.messages), tokenize=False, add_generation_prompt=True)
        prompt = tuple(tok(text, add_special_tokens=False)["input_ids"])
        out.append(PreferencePair(rec.prompt_id + "-pair", rec.prompt_id, rec.messages, text, "", "", 1.0, 0.0,
                                  tokens, tokens, 0, 0, ref_response="", prompt_ids=prompt,
                                  chosen_ids=ids(), rejected_ids=ids(), ref_ids=ids()))
    return out


def _time_step(model, batch) -> float:
    from selm_ray.learner.batching import row_logps
    from selm_ray.learner.engine import batch_logits

    t0 = time.perf_counter()
    row_logps(batch_logits(model, batch), batch).sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selm_ray.learner.batching import collate, pack
    from selm_ray.engines.models import resolve_model

    p = argparse.ArgumentParser(prog="python -m selm_ray.ops.bench_learner", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    pairs = _pairs(tok, args.pairs, args.tokens)
    print(f"{args.model}: {len(pairs)} pairs x 3 responses of {args.tokens} tokens, {args.threads} threads")
    for name, layout in (("padded", collate), ("packed", pack)):
        batch = layout(tok, pairs, 4096, with_ref_response=True)
        _time_step(model, batch)  # warm-up: allocator, kernels
        seconds = statistics.median(_time_step(model, batch) for _ in range(args.repeats))
        shape = "x".join(str(d) for d in batch["input_ids"].shape)
        print(f"{name:7s} input {shape:8s} ({batch['input_ids'].numel()} token slots) "
              f"forward+backward {seconds:.2f} s (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
