"""Generator: one vLLM engine turning prompt batches into Rollouts, tagged with a policy version."""
from __future__ import annotations

import time
from typing import Any, Sequence

from selm_ray.actors.tally import JudgeTally, catch_up, node_id, redirect_output
from selm_ray.core.config import Config, config_from_dict
from selm_ray.core.data import PromptRecord, render_prompt
from selm_ray.core.pairs import NO_PAIR_PROMPT_TOO_LONG
from selm_ray.core.records import Candidate, Rollout
from selm_ray.engines.vllm_engine import build_engine


class Generator:
    def __init__(self, config: dict[str, Any], model_path: str, name: str = "generator",
                 channel: Any = None, version: int = 0, adapter_path: str | None = None) -> None:
        redirect_output()
        self.cfg: Config = config_from_dict(config)
        self.name = name
        self.engine = build_engine(self.cfg, model_path, adapter_path=adapter_path)  # adapter: a resume
        self.version = version  # of the weights in model_path (a resumed run starts from a checkpoint)
        self.busy_seconds = 0.0
        self.tokens = 0
        self.calls = 0
        self._judge: Any = None  # a SelfJudge on this engine, made on first use (judge.colocate)
        self.tally = JudgeTally()
        catch_up(self, channel)

    def ready(self) -> int:
        return self.version

    def generate(self, records: Sequence[PromptRecord], seed: int | None = None) -> list[Rollout]:
        t0 = time.time()
        g = self.cfg.generation
        prompts = [render_prompt(self.engine.tokenizer, r.messages) for r in records]
        fits = self.engine.fits(prompts, g.max_new_tokens)
        ok = [p for p, f in zip(prompts, fits) if f]  # a prompt too long for the context is skipped, not fatal
        if g.ref_response and ok:  # samples and greedy y_ref decode together, in one engine call
            n = g.num_candidates - 1 if g.ref_in_candidates else g.num_candidates  # y_ref is one of them
            sampled, greedy = self.engine.generate_with_greedy(ok, n, g.temperature, g.top_p,
                                                               g.max_new_tokens, self.version, seed)
        else:
            sampled = self.engine.generate(ok, g.num_candidates, g.temperature, g.top_p, g.max_new_tokens,
                                           self.version, seed) if ok else []
            greedy = []
        samples, refs = iter(sampled), iter(greedy)
        out = []
        prompt_ids = self.engine.prompt_token_ids(prompts)
        for rec, text, ids, fit in zip(records, prompts, prompt_ids, fits):
            if not fit:
                out.append(Rollout(rec.prompt_id, rec.messages, text, (), None, ids, meta=rec.meta,
                                   skipped=NO_PAIR_PROMPT_TOO_LONG))
                continue
            cands, ref = next(samples), next(refs) if g.ref_response else None
            self.tokens += sum(c.num_tokens for c in cands) + (ref.num_tokens if ref else 0)
            if g.ref_in_candidates:
                cands = [ref] + cands  # first: a pairwise judge's anchor is candidate 0
            extras = [Candidate(e, len(self.engine.tokenizer.encode(e)), None) for e in rec.extra_candidates]
            out.append(Rollout(rec.prompt_id, rec.messages, text, tuple(cands + extras), ref, ids,
                               meta=rec.meta))
        self.busy_seconds += time.time() - t0
        self.calls += 1
        return out

    def answer(self, records: Sequence[PromptRecord], max_tokens: int | None = None) -> list[Candidate]:
        """One greedy answer per prompt (evaluation); ``max_tokens`` defaults to generation's."""
        prompts = [render_prompt(self.engine.tokenizer, r.messages) for r in records]
        return self.engine.greedy(prompts, max_tokens or self.cfg.generation.max_new_tokens, self.version)

    def create_prompts(self, requests: Sequence[Sequence[str]], seed: int | None = None) -> list[tuple[str, str]]:
        """Self-instruct: for each list of example instructions, one sampled new instruction
        (raw reply, finish reason); the controller filters them."""
        from selm_ray.core.selfinstruct import fewshot_messages

        t0 = time.time()
        c = self.cfg.create
        prompts = [render_prompt(self.engine.tokenizer, fewshot_messages(ex)) for ex in requests]
        outs = self.engine.generate(prompts, 1, c.temperature, c.top_p, c.max_new_tokens, self.version, seed)
        self.tokens += sum(o[0].num_tokens for o in outs)
        self.busy_seconds += time.time() - t0
        self.calls += 1
        return [(o[0].text, o[0].finish_reason) for o in outs]

    def judge(self, rollouts: Sequence[Rollout]) -> list[Any]:
        """Self-judge with this generator's own engine (judge.colocate)."""
        from selm_ray.engines.judges import make_self_judge

        if self._judge is None:
            self._judge = make_self_judge(self.cfg, self.engine)
        self._judge.version = self.version
        return self.tally.run(self._judge, rollouts)

    def update_weights(self, version: int, weights: dict[str, Any]) -> float:
        if version <= self.version:
            return 0.0  # already have it (e.g. a restarted actor was given the latest on start)
        seconds = self.engine.update_weights(weights)
        self.version = version
        return seconds

    def weights_checksum(self) -> float:
        return self.engine.weights_checksum()

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "node": node_id(), "version": self.version, "busy_seconds": self.busy_seconds,
                "dtype": self.engine.dtype, "adapters_loaded": self.engine.adapter_version,
                "tokens": self.tokens, "calls": self.calls, "weights_checksum": self.weights_checksum(),
                "compiled_graphs": self.engine.compiled_graphs(),
                "compiled_model": self.engine.compiled_model(), "kv_block_size": self.engine.block_size,
                "judge_busy_seconds": self.tally.busy_seconds, "candidates": self.tally.candidates,
                "failures": self.tally.failures,
                **({"judge_stats": self._judge.stats()} if hasattr(self._judge, "stats") else {})}
