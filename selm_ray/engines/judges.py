"""Judges: the policy grading its own answers (through a VLLMEngine), a reward model, a
function (verifiable rewards), or a pairwise judge (a PairRM-layout ranker, or the policy choosing
the better of two answers).

A pointwise judge sees every candidate alone, so no position or ordering effect can enter a score;
a pairwise judge shows every pair in both orders and turns the comparisons into per-candidate
scores (core/judging/pairwise.py), so the pair rule is the same for all. A verdict that cannot be
read is an explicit failure (counted, never a number).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from selm_ray.core.judging import (
    aggregate_samples,
    build_judge_messages,
    expected_score_prompt,
    parse_score,
    score_from_expected,
)
from selm_ray.core.judging.scoring import SCORE_TOKENS
from selm_ray.core.judging.pairwise import ComparisonPlan, PairwiseTally, plan_comparisons, score_candidates
from selm_ray.core.judging.pairwise_prompt import (
    choice_probability,
    choice_token_ids,
    pairwise_prompt,
    source_text,
)
from selm_ray.core.records import CandidateScore, Judgement, Message, Rollout


JUDGE_INPUT_TOO_LONG = "judge input (rubric + prompt + answer) longer than model.max_model_len allows"

def _flatten(rollouts: Sequence[Rollout]) -> list[tuple[Rollout, str]]:
    return [(r, c.text) for r in rollouts for c in r.candidates]


def _regroup(rollouts: Sequence[Rollout], scores: list[CandidateScore], judge: str,
             version: int | None) -> list[Judgement]:
    out, k = [], 0
    for r in rollouts:
        n = len(r.candidates)
        out.append(Judgement(r.prompt_id, tuple(scores[k:k + n]), judge, version))
        k += n
    return out


class SelfJudge:
    """LLM-as-a-Judge with the rubric; ``engine`` is a VLLMEngine holding the judge's weights."""

    def __init__(self, engine: Any, mode: str = "expected", num_samples: int = 3, min_valid: int = 1,
                 temperature: float = 0.7, max_new_tokens: int = 160, seed: int = 0,
                 force_score: bool = False) -> None:
        if mode not in ("expected", "generate"):
            raise ValueError(f"judge mode must be 'expected' or 'generate', got {mode!r}")
        self.engine, self.mode = engine, mode
        if mode == "expected":
            engine.digit_ids()  # at the judge's start: a tokenizer that splits digits fails here, named
        self.num_samples, self.min_valid = num_samples, min_valid
        self.temperature, self.max_new_tokens, self.seed = temperature, max_new_tokens, seed
        self.force_score = force_score
        self.forced = 0  # verdicts whose score was forced (force_score)
        self.version: int | None = 0
        self.raw_failures: list[str] = []  # a few unparseable verdicts, for inspection
        self.capped = 0  # answers cut so that rubric + prompt + answer fit the context

    def stats(self) -> dict[str, Any]:
        return {"capped_answers": self.capped, **({"forced_scores": self.forced} if self.force_score else {})}

    @property
    def name(self) -> str:
        return f"self:{self.mode}"

    def judge(self, rollouts: Sequence[Rollout]) -> list[Judgement]:
        items = _flatten(rollouts)
        scores = self._expected(items) if self.mode == "expected" else self._generate(items)
        return _regroup(rollouts, scores, self.name, self.version)

    def _fitting(self, prompts: list[str], fits: list[bool], score: Any) -> list[CandidateScore]:
        """``score(prompts that fit)`` -> their scores; a judge input too long for the engine's
        context (rubric + prompt + answer) is a failed judgement, never a crash of the batch."""
        done = iter(score([p for p, f in zip(prompts, fits) if f]) if any(fits) else [])
        return [next(done) if f else CandidateScore(None, 0, 1, failure=JUDGE_INPUT_TOO_LONG) for f in fits]

    def _capped(self, items: list[tuple[Rollout, str]], build: Any,
                max_tokens: int) -> tuple[list[str], list[bool]]:
        """Judge prompts, ``build(rollout, answer)``, and whether each fits the context; where the
        answer is what pushes an input past it, the judge reads the answer's beginning (cut to fit).
        An input whose rubric and prompt alone do not fit stays too long (a failed judgement)."""
        tok = self.engine.tokenizer
        prompts = [build(r, text) for r, text in items]
        lengths = [len(ids) for ids in self.engine.prompt_token_ids(prompts)]
        limit = self.engine.max_model_len - max_tokens
        fits = [n <= limit for n in lengths]
        for k, (r, text) in enumerate(items):
            if fits[k]:
                continue
            ids = tok.encode(text, add_special_tokens=False)
            keep = len(ids) - (lengths[k] - limit) - 8  # margin: the cut text may tokenize differently
            if keep > 0:
                prompts[k] = build(r, tok.decode(ids[:keep]))
                fits[k] = self.engine.fits([prompts[k]], max_tokens)[0]
                self.capped += fits[k]
        return prompts, fits

    def _expected(self, items: list[tuple[Rollout, str]]) -> list[CandidateScore]:
        tok = self.engine.tokenizer
        prompts, fits = self._capped(items, lambda r, text: expected_score_prompt(tok, r.messages, text), 1)
        return self._fitting(prompts, fits, lambda ps: [score_from_expected(lp) for lp in self.engine.digit_logprobs(ps)])

    def _generate(self, items: list[tuple[Rollout, str]]) -> list[CandidateScore]:
        tok = self.engine.tokenizer
        build = lambda r, text: tok.apply_chat_template(build_judge_messages(r.messages, text),  # noqa: E731
                                                        tokenize=False, add_generation_prompt=True)
        prompts, fits = self._capped(items, build, self.max_new_tokens)
        return self._fitting(prompts, fits, self._sampled)

    def _sampled(self, prompts: list[str]) -> list[CandidateScore]:
        verdicts = self.engine.sample_texts(prompts, self.num_samples, self.temperature,
                                            self.max_new_tokens, seed=self.seed)
        parsed_all = [[parse_score(t) for t in texts] for texts in verdicts]
        if self.force_score:
            self._force(prompts, verdicts, parsed_all)
        out = []
        for texts, parsed in zip(verdicts, parsed_all):
            if len(self.raw_failures) < 5:
                self.raw_failures += [t for t, p in zip(texts, parsed) if p is None][:1]
            out.append(aggregate_samples(parsed, self.min_valid))
        return out

    def _force(self, prompts: list[str], verdicts: list[list[str]], parsed: list[list[float | None]]) -> None:
        """Fill in the unparsed verdicts' scores: each is continued after "Score: " and the
        judge's own choice among the digits, sampled at the verdicts' temperature, is its score
        (in place in ``parsed``). No per-request seed: one seed for every request would draw the
        same digit wherever the judge's odds are alike."""
        where = [(i, k) for i, row in enumerate(parsed) for k, v in enumerate(row) if v is None]
        if not where:
            return
        texts = [f"{prompts[i]}{verdicts[i][k].rstrip()}\nScore: " for i, k in where]
        fits = self.engine.fits(texts, 2)  # a verdict that used the whole context stays failed
        chosen = iter(self.engine.choose([t for t, f in zip(texts, fits) if f], SCORE_TOKENS,
                                              self.temperature) if any(fits) else [])
        digits = [next(chosen) if f else None for f in fits]
        for (i, k), d in zip(where, digits):
            parsed[i][k] = float(d) if d is not None else None
        self.forced += sum(d is not None for d in digits)


def make_self_judge(cfg: Any, engine: Any) -> Any:
    """The configured judge that runs on a VLLMEngine (``cfg`` is the run Config): the rubric
    self-judge, or the pairwise LLM judge (kind pairwise_llm); a colocated generator uses it too."""
    j = cfg.judge
    if j.kind == "pairwise_llm":
        # one token is generated after the prompt, so the prompt may fill the rest of the context
        return PairwiseLLMJudge(engine, j.pairwise_mode, max_prompt_tokens=cfg.model.max_model_len - 1)
    return SelfJudge(engine, j.mode, j.num_samples, j.min_valid, j.temperature, j.max_new_tokens,
                     seed=cfg.run.seed, force_score=j.force_score)


class RewardModelJudge:
    """A Hugging Face sequence-classification model scoring (prompt, response) pairs."""

    def __init__(self, path: str, batch_size: int = 8, max_length: int = 1024, dtype: str = "float32",
                 device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path, self.device, self.dtype = path, device, dtype
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {path} has {self.model.config.num_labels} labels; need 1 (a scalar)")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size, self.max_length = batch_size, max_length

    @property
    def name(self) -> str:
        return f"rm:{self.path}"

    def _texts(self, items: list[tuple[Rollout, str]]) -> list[str]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return [tok.apply_chat_template([*r.messages, {"role": "assistant", "content": t}], tokenize=False)
                    for r, t in items]
        return [r.messages[-1]["content"] + "\n" + t for r, t in items]

    def judge(self, rollouts: Sequence[Rollout]) -> list[Judgement]:
        import torch

        texts = self._texts(_flatten(rollouts))
        scores: list[CandidateScore] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_length).to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits[:, 0].float().cpu()  # (B,)
            scores += [
                CandidateScore(float(v), 1, 1) if torch.isfinite(v) else
                CandidateScore(None, 0, 1, failure="reward model returned a non-finite score")
                for v in logits
            ]
        return _regroup(rollouts, scores, self.name, None)


class FunctionJudge:
    """``module:function(prompt, response[, meta]) -> float | None`` per candidate (judge.function).

    ``prompt`` is the last user turn; ``meta`` the prompt row's metadata (``Rollout.meta``), passed
    only to a function that takes a third parameter. None, a non-number, a non-finite value or an
    exception is a counted failure for that candidate, with the reason kept in the score record.
    """

    def __init__(self, spec: str) -> None:
        from selm_ray.core.judging.functions import load_function, takes_meta

        self.spec, self.fn = spec, load_function(spec)
        self.with_meta = takes_meta(self.fn, spec)  # inspected once, not per candidate

    @property
    def name(self) -> str:
        return f"fn:{self.spec}"

    def score(self, prompt: str, response: str, meta: dict | None = None) -> CandidateScore:
        from selm_ray.core.judging.functions import check_score

        try:
            value, why = check_score(self.fn(prompt, response, meta) if self.with_meta else
                                     self.fn(prompt, response))
        except Exception as e:  # a user's function: one bad candidate must not stop the pool
            value, why = None, f"function raised {type(e).__name__}: {e}"
        return CandidateScore(value, 1, 1) if why is None else CandidateScore(None, 0, 1, failure=why)

    def judge(self, rollouts: Sequence[Rollout]) -> list[Judgement]:
        scores = [self.score(r.messages[-1]["content"], text, r.meta) for r, text in _flatten(rollouts)]
        return _regroup(rollouts, scores, self.name, None)


# -- pairwise judges ----------------------------------------------------------------------------
# One comparison = (request, text shown first, text shown second); the probabilities of all
# comparisons of one judge() call are computed together, then cut back into prompts.
Comparison = tuple[tuple[Message, ...], str, str]


def _plan(rollouts: Sequence[Rollout], mode: str) -> tuple[list[ComparisonPlan], list[Comparison]]:
    plans, jobs = [], []
    for r in rollouts:
        # y_ref among the candidates is compared as one (it is first: the anchor), never as an extra
        has_ref = r.ref_response is not None and not r.ref_is_candidate
        plan = plan_comparisons(len(r.candidates), mode, has_ref=has_ref)
        texts = [c.text for c in r.candidates] + ([r.ref_response.text] if plan.uses_ref else [])
        plans.append(plan)
        jobs += [(r.messages, texts[i], texts[j]) for i, j in plan.pairs]
    return plans, jobs


def _pairwise_judgements(rollouts: Sequence[Rollout], plans: list[ComparisonPlan],
                         probs: list[float | None], tally: PairwiseTally, judge: str,
                         version: int | None) -> list[Judgement]:
    out, k = [], 0
    for r, plan in zip(rollouts, plans):
        mine = probs[k:k + plan.count]
        k += plan.count
        tally.add(plan, mine)
        out.append(Judgement(r.prompt_id, tuple(score_candidates(plan, mine)), judge, version))
    return out


def _finite_or_none(p: float | None) -> float | None:
    return p if p is not None and math.isfinite(p) else None


class PairwiseRMJudge:
    """A PairRM-layout ranker (engines/pairrm.py) comparing candidates two at a time, on torch."""

    def __init__(self, ranker_path: str, mode: str = "all", batch_size: int = 16, dtype: str = "float32",
                 device: str = "cpu") -> None:
        from selm_ray.engines.pairrm import PairRanker

        self.path, self.mode, self.dtype = ranker_path, mode, dtype
        self.ranker = PairRanker.load(ranker_path, batch_size, dtype=dtype, device=device)
        self.tally = PairwiseTally()

    @property
    def name(self) -> str:
        return f"pairrm:{self.path}"

    def judge(self, rollouts: Sequence[Rollout]) -> list[Judgement]:
        plans, jobs = _plan(rollouts, self.mode)
        raw = self.ranker.compare_batch([(source_text(m), a, b) for m, a, b in jobs]) if jobs else []
        return _pairwise_judgements(rollouts, plans, [_finite_or_none(p) for p in raw], self.tally,
                                    self.name, None)

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.tally.as_dict()}


class PairwiseLLMJudge:
    """An LLM on a VLLMEngine asked which of two answers is better; P(first wins) is the softmax
    over the log-probs of the two choice tokens at the first generated position.

    A prompt longer than ``max_prompt_tokens`` is not sent (vLLM would fail the whole batch): that
    comparison counts as failed.
    """

    def __init__(self, engine: Any, mode: str = "all", max_prompt_tokens: int | None = None) -> None:
        self.engine, self.mode, self.max_prompt_tokens = engine, mode, max_prompt_tokens
        self.choice_ids = choice_token_ids(engine.tokenizer)  # fails here, at judge start
        self.version: int | None = 0
        self.tally = PairwiseTally()
        self.too_long = 0

    @property
    def name(self) -> str:
        return "pairwise:llm"

    def judge(self, rollouts: Sequence[Rollout]) -> list[Judgement]:
        plans, jobs = _plan(rollouts, self.mode)
        return _pairwise_judgements(rollouts, plans, self._compare(jobs), self.tally, self.name, self.version)

    def _compare(self, jobs: list[Comparison]) -> list[float | None]:
        tok = self.engine.tokenizer
        prompts = [pairwise_prompt(tok, m, a, b) for m, a, b in jobs]
        fits = [True] * len(prompts)
        if self.max_prompt_tokens is not None:
            fits = [len(ids) <= self.max_prompt_tokens for ids in self.engine.prompt_token_ids(prompts)]
            self.too_long += fits.count(False)
        sent = [p for p, ok in zip(prompts, fits) if ok]
        logprobs = iter(self.engine.choice_logprobs(sent, self.choice_ids) if sent else [])
        first, second = self.choice_ids
        return [choice_probability(next(logprobs), first, second) if ok else None for ok in fits]

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.tally.as_dict(), "too_long": self.too_long}


def build_judge(cfg: Any, model_path: str, reward_model_path: str | None = None,
                adapter_path: str | None = None) -> tuple[Any, Any]:
    """The judge ``cfg.judge`` names, and the vLLM engine it owns (None for a reward model, a
    ranker or a function). ``reward_model_path``: the resolved ``cfg.judge.judge_model`` (reward
    model or ranker); ``adapter_path``: a LoRA adapter a policy-following judge serves from the
start. The one place a judge is built: the judge actor and the local commands use it."""
    j = cfg.judge
    if j.kind in ("reward_model", "pairwise_rm"):
        import torch

        from selm_ray.core.cores import engine_threads

        torch.set_num_threads(engine_threads(cfg))
        from selm_ray.core.precision import resolve_dtype

        device = "cuda" if torch.cuda.is_available() else "cpu"  # Ray gave this actor a GPU, or not
        dtype = resolve_dtype(cfg.model.dtype, device == "cuda")
        if j.kind == "pairwise_rm":
            return PairwiseRMJudge(reward_model_path or "", j.pairwise_mode, dtype=dtype, device=device), None
        return RewardModelJudge(reward_model_path or "", dtype=dtype, device=device), None
    if j.kind == "function":
        return FunctionJudge(j.function or ""), None
    from selm_ray.engines.vllm_engine import build_engine

    engine = build_engine(cfg, model_path, serves_policy=j.follow_policy, adapter_path=adapter_path)
    return make_self_judge(cfg, engine), engine


def build_local_judge(cfg: Any) -> Any:
    """``build_judge`` for a command running in this process: the config's models resolved."""
    from selm_ray.engines.models import resolve_model

    j = cfg.judge
    own = resolve_model(j.judge_model) if j.judge_model else None
    judge, _ = build_judge(cfg, resolve_model(cfg.model.path) if j.on_engine else "", own)
    return judge
