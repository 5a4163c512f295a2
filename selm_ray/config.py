"""The one validated config tree for a whole run.

Nested dataclasses, one per component. ``load_config`` reads YAML, applies ``--set a.b=c``
overrides, and builds the tree strictly: an unknown key, a wrong type or a bad value raises
:class:`ConfigError` naming the full key path (e.g. ``learner.alpha``). YAML files in jobs/configs
are instances of this tree.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config value a user wrote is wrong; the message names the key path."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass
class ModelConfig:
    # A prepared alias (see `selm-ray model list`), a local Hugging Face folder, or a hub id.
    path: str = "smollm2-135m-instruct"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 on CPU, bf16 on GPU
    max_model_len: int = 2048

    def __post_init__(self) -> None:
        _check(bool(self.path.strip()), "path", "must name a model")
        _check(self.max_model_len >= 64, "max_model_len", f"must be >= 64, got {self.max_model_len}")


@dataclass
class DataConfig:
    # "seed" = the bundled hand-written instructions; else a .jsonl/.parquet file or a datasets name.
    source: str = "seed"
    split: str = "train"
    max_prompts: int | None = None
    on_bad_row: Literal["error", "skip"] = "error"
    # UltraFeedback-style chosen/rejected columns: ignore them, or judge them with the samples.
    extra_candidates: Literal["ignore", "use"] = "ignore"
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        _check(self.max_prompts is None or self.max_prompts > 0, "max_prompts", "must be > 0 or null")


@dataclass
class GenerationConfig:
    num_candidates: int = 2
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 64
    # Also generate one greedy answer y_ref per prompt; required by the selm loss.
    ref_response: bool = True

    def __post_init__(self) -> None:
        _check(self.num_candidates >= 2, "num_candidates", f"need >= 2 to form a pair, got {self.num_candidates}")
        _check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")


@dataclass
class JudgeConfig:
    # self: the policy judges its own answers (LLM-as-a-Judge); reward_model: an HF classifier.
    # function: `module:function(prompt, response) -> float | None` (verifiable rewards).
    kind: Literal["self", "reward_model", "function"] = "self"
    # generate: k sampled written verdicts, parsed; expected: probability-weighted score digit.
    mode: Literal["generate", "expected"] = "expected"
    num_samples: int = 3
    min_valid: int = 1
    temperature: float = 0.7
    max_new_tokens: int = 160
    follow_policy: bool = True  # self-judge takes each new policy version (Self-Rewarding)
    # Self-judge inside each generator's engine instead of a separate judge pool: one engine
    # (weights + KV cache) less per generator; generation and judging then share that engine.
    colocate: bool = False
    reward_model: str | None = None
    function: str | None = None  # e.g. selm_ray.judging.functions:math_answer
    # Labelled pairs (chosen/rejected) the judge pool is scored on after every iteration
    # (accuracy, tie and failure rates in metrics.jsonl, event judge_eval); null: off.
    eval_data: str | None = None
    eval_max_pairs: int = 64
    min_margin: float = 0.0  # a best-worst gap below this is treated as a tie (no pair)

    def __post_init__(self) -> None:
        _check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        _check(1 <= self.min_valid <= self.num_samples, "min_valid",
               f"must be in 1..num_samples ({self.num_samples}), got {self.min_valid}")
        _check(self.min_margin >= 0, "min_margin", f"must be >= 0, got {self.min_margin}")
        if self.kind == "reward_model":
            _check(bool(self.reward_model), "reward_model", "required when kind is reward_model")
        if self.kind == "function":
            spec = self.function or ""
            _check(spec.count(":") == 1 and all(spec.split(":")), "function",
                   f"kind function needs 'package.module:function', got {self.function!r}")
        if self.colocate:
            _check(self.kind == "self" and self.follow_policy, "colocate",
                   "needs kind: self and follow_policy: true (the judge then IS the generator's engine)")


@dataclass
class BufferConfig:
    capacity: int = 4096
    max_policy_lag: int = 2
    eviction: Literal["fifo", "oldest_version"] = "fifo"
    replay: bool = False  # serve a pair more than once per epoch

    def __post_init__(self) -> None:
        _check(self.capacity >= 1, "capacity", f"must be >= 1, got {self.capacity}")
        _check(self.max_policy_lag >= 0, "max_policy_lag", f"must be >= 0, got {self.max_policy_lag}")


@dataclass
class LearnerConfig:
    loss: Literal["selm", "dpo", "ipo"] = "selm"
    beta: float = 0.1
    # SELM optimism weight. Never silently 0: selm with alpha 0 is rejected (use loss: dpo).
    alpha: float = 0.001
    lr: float = 5e-7
    # Per-iteration peak lr (the SELM recipe lowers it each iteration); overrides lr when set.
    lr_by_iteration: list[float] | None = None
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    batch_size: int = 4
    engine: Literal["deepspeed", "ddp"] = "deepspeed"
    zero_stage: int = 2
    num_workers: int = 1
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: int = 16
    max_length: int = 1024
    checkpoint_every: int = 0  # async: learner steps between checkpoints (iterative: each iteration)
    # Take log pi_ref(y|x) from the engine that sampled y when that engine served the reference
    # policy (the iterative schedule): no reference forward pass on the learner for those batches.
    ref_logps_from_engine: bool = True
    # Batch layout: "packed" gives each pair one row holding its prompt once, followed by y_w,
    # y_l and y_ref (each attends only to the prompt and itself): the prompt is computed once, not
    # three times; "padded" gives every response its own row. "auto": packed on CPU, where compute
    # is the limit; padded on GPU, where flash-attention kernels want plain causal rows.
    layout: Literal["auto", "packed", "padded"] = "auto"

    def packed(self, on_gpu: bool) -> bool:
        return self.layout == "packed" or (self.layout == "auto" and not on_gpu)

    def __post_init__(self) -> None:
        _check(self.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        _check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        _check(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        _check(not (self.loss == "selm" and self.alpha == 0), "alpha",
               "is 0 with loss selm, which is plain DPO; set alpha > 0 or loss: dpo")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(not self.lr_by_iteration or all(x > 0 for x in self.lr_by_iteration), "lr_by_iteration",
               "every entry must be > 0")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.zero_stage in (0, 1, 2, 3), "zero_stage", f"must be 0..3, got {self.zero_stage}")
        _check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        _check(self.lora_rank >= 0, "lora_rank", f"must be >= 0, got {self.lora_rank}")


@dataclass
class ScheduleConfig:
    # iterative: the papers' T iterations, stages overlapped; async: continuous online training;
    # sequential: iterative without overlap (generate all, judge all, then train): a baseline.
    mode: Literal["iterative", "async", "sequential"] = "iterative"
    iterations: int = 2
    prompts_per_iteration: int = 32
    sync_every: int = 1  # learner steps between weight publications (async mode)
    ref_update_every: int = 0  # learner steps between reference refreshes (async); 0 = never

    def __post_init__(self) -> None:
        _check(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
        _check(self.prompts_per_iteration >= 1, "prompts_per_iteration",
               f"must be >= 1, got {self.prompts_per_iteration}")
        _check(self.sync_every >= 1, "sync_every", f"must be >= 1, got {self.sync_every}")
        _check(self.ref_update_every >= 0, "ref_update_every", f"must be >= 0, got {self.ref_update_every}")


@dataclass
class ClusterConfig:
    address: str | None = None  # None: start a local Ray; else an existing cluster's address
    num_generators: int = 1
    num_judges: int = 1
    generator_cpus: float = 1.0
    judge_cpus: float = 1.0
    learner_cpus: float = 1.0
    generator_gpus: float = 0.0
    judge_gpus: float = 0.0
    learner_gpus: float = 0.0
    threads_per_actor: int = 1  # real torch/OMP threads each generator/judge may use
    learner_threads: int = 1  # torch threads per learner worker (often the busiest stage)
    kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE per engine
    # Custom resources (one unit per actor / learner worker) that place each pool on its own
    # node group, e.g. generator_slot on the generator nodes (see cluster/); null: anywhere.
    generator_slot: str | None = None
    judge_slot: str | None = None
    learner_slot: str | None = None
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        _check(self.num_generators >= 1, "num_generators", f"must be >= 1, got {self.num_generators}")
        _check(self.num_judges >= 1, "num_judges", f"must be >= 1, got {self.num_judges}")
        for name in ("generator_cpus", "judge_cpus", "learner_cpus", "kv_cache_gib"):
            _check(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        _check(self.threads_per_actor >= 1, "threads_per_actor", "must be >= 1")
        _check(self.learner_threads >= 1, "learner_threads", "must be >= 1")


@dataclass
class EvalConfig:
    """After every iteration: the new policy vs the starting one on a prompt set (greedy answers,
    judged by the judge pool): win/tie/loss and lengths in metrics.jsonl (event eval)."""
    prompts: str | None = None  # .jsonl/.parquet/datasets name/seed; null: off
    max_prompts: int = 32

    def __post_init__(self) -> None:
        _check(self.max_prompts >= 1, "max_prompts", f"must be >= 1, got {self.max_prompts}")


@dataclass
class SFTConfig:
    """Supervised stage before the preference iterations (M0 -> M1): IFT and EFT data."""
    enabled: bool = False
    ift_data: str | None = "builtin:ift"  # .jsonl of prompt/response (or messages); null: none
    eft_data: str | None = "builtin:eft"  # .jsonl of prompt/response/evaluation; null: none
    epochs: int = 3
    lr: float = 5.5e-6  # the Self-Rewarding paper's SFT learning rate
    batch_size: int = 4
    max_length: int = 1024

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.max_length >= 16, "max_length", f"must be >= 16, got {self.max_length}")
        _check(bool(self.ift_data or self.eft_data), "ift_data", "SFT needs ift_data and/or eft_data")


@dataclass
class CreateConfig:
    """Self-instruct: the policy writes new prompts each iteration (selm_ray/selfinstruct.py)."""
    enabled: bool = False
    mix_ratio: float = 0.5  # share of each iteration's prompts that are created (rest: data.source)
    shots: int = 8
    temperature: float = 0.6  # the Self-Rewarding paper's sampling for prompt creation
    top_p: float = 0.9
    max_new_tokens: int = 96
    min_words: int = 3
    max_words: int = 150
    max_similarity: float = 0.7  # ROUGE-L F1 at or above this to any known prompt: a near-duplicate
    max_attempts_factor: int = 4  # give up after factor x wanted samples (the rest: dataset prompts)

    def __post_init__(self) -> None:
        _check(0 < self.mix_ratio <= 1, "mix_ratio", f"must be in (0, 1], got {self.mix_ratio}")
        _check(self.shots >= 1, "shots", f"must be >= 1, got {self.shots}")
        _check(1 <= self.min_words <= self.max_words, "min_words", "must be >= 1 and <= max_words")
        _check(0 < self.max_similarity <= 1, "max_similarity", f"must be in (0, 1], got {self.max_similarity}")
        _check(self.max_attempts_factor >= 1, "max_attempts_factor", "must be >= 1")
        _check(self.max_new_tokens >= 8, "max_new_tokens", "must be >= 8")


@dataclass
class AutoscaleConfig:
    """Resize the generator/judge pools from what the learner and buffer see (selm_ray/autoscale.py)."""
    enabled: bool = False
    min_generators: int = 1
    max_generators: int = 4
    min_judges: int = 1
    max_judges: int = 4
    interval_seconds: float = 30.0  # at most one change per window
    grow_wait_fraction: float = 0.3  # grow when the learner waited this share of a window
    shrink_fill_fraction: float = 0.9  # shrink when the buffer is this full (or pairs went stale)

    def __post_init__(self) -> None:
        for pool in ("generators", "judges"):
            lo, hi = getattr(self, f"min_{pool}"), getattr(self, f"max_{pool}")
            _check(lo >= 1, f"min_{pool}", f"must be >= 1, got {lo}")
            _check(hi >= lo, f"max_{pool}", f"must be >= min_{pool} ({lo}), got {hi}")
        _check(self.interval_seconds > 0, "interval_seconds", f"must be > 0, got {self.interval_seconds}")
        for name in ("grow_wait_fraction", "shrink_fill_fraction"):
            v = getattr(self, name)
            _check(0 < v <= 1, name, f"must be in (0, 1], got {v}")


@dataclass
class RunConfig:
    name: str = "selm"
    output_dir: str = "runs"
    seed: int = 0


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    create: CreateConfig = field(default_factory=CreateConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        lrs = self.learner.lr_by_iteration
        _check(not lrs or len(lrs) >= self.schedule.iterations, "learner.lr_by_iteration",
               f"has {len(lrs or [])} entries for {self.schedule.iterations} iterations")
        if self.learner.loss == "selm":
            _check(self.generation.ref_response, "generation.ref_response",
                   "must be true with learner.loss selm (the optimism term needs y_ref)")
        if self.eval.prompts:
            _check(self.schedule.mode != "async", "eval.prompts",
                   "per-iteration evaluation needs iteration boundaries; use schedule.mode iterative")
        if self.create.enabled:
            _check(self.schedule.mode != "async", "create.enabled",
                   "prompt creation runs at iteration starts; use schedule.mode iterative or sequential")
        a, c = self.autoscale, self.cluster
        if a.enabled:
            _check(a.min_generators <= c.num_generators <= a.max_generators, "cluster.num_generators",
                   f"{c.num_generators} is outside autoscale [{a.min_generators}, {a.max_generators}]")
            _check(c.num_judges <= a.max_judges or self.judge.colocate, "cluster.num_judges",
                   f"{c.num_judges} is above autoscale.max_judges ({a.max_judges})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Building the tree from plain data, strictly.


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            _check(type(None) in args, key, "must not be null")
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        _check(isinstance(value, list), key, f"must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads "1e-6" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _check(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {_describe(tp)} at {key}")  # our bug, not the user's


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "config"
    if data is None:
        data = {}
    _check(isinstance(data, dict), where, f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        path = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{path}: unknown key (valid keys here: {', '.join(names)})")
    kwargs = {
        name: _coerce(data[name], hints[name], f"{prefix}.{name}" if prefix else name)
        for name in names
        if name in data
    }
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # __post_init__ names the field; prefix it with where this section sits in the tree.
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data, "")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty part in key path {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides (values parsed as YAML scalars) to a plain dict, in place."""
    for item in overrides:
        parts, value = _parse_override(item)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or defaults when ``path`` is None), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        data = loaded or {}
    apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
