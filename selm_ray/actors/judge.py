"""Judge: scores rollouts with the policy itself (own vLLM engine), a reward model or a function."""
from __future__ import annotations

from typing import Any, Sequence

from selm_ray.actors.tally import JudgeTally, catch_up, node_id, redirect_output
from selm_ray.core.config import Config, config_from_dict
from selm_ray.core.records import Judgement, Rollout


class Judge:
    def __init__(self, config: dict[str, Any], model_path: str, reward_model_path: str | None = None,
                 name: str = "judge", channel: Any = None, version: int = 0,
                 adapter_path: str | None = None) -> None:
        redirect_output()
        from selm_ray.engines.judges import build_judge

        self.cfg: Config = config_from_dict(config)
        self.name = name
        self.impl, self.engine = build_judge(self.cfg, model_path, reward_model_path, adapter_path)
        self.version = version
        if self.engine is not None:
            self.impl.version = version
        self.tally = JudgeTally()
        catch_up(self, channel)

    def ready(self) -> int:
        return self.version

    def judge(self, rollouts: Sequence[Rollout]) -> list[Judgement]:
        return self.tally.run(self.impl, rollouts)

    def update_weights(self, version: int, weights: dict[str, Any]) -> float:
        """Self-judge following the policy takes every new version; a frozen judge ignores them."""
        if self.engine is None or not self.cfg.judge.follow_policy or version <= self.version:
            return 0.0
        seconds = self.engine.update_weights(weights)
        self.version = self.impl.version = version
        return seconds

    def stats(self) -> dict[str, Any]:
        t = self.tally
        out = {"name": self.name, "node": node_id(), "version": self.version, "busy_seconds": t.busy_seconds,
               "candidates": t.candidates, "failures": t.failures}
        dtype = getattr(self.engine, "dtype", None) or getattr(self.impl, "dtype", None)
        if dtype:
            out["dtype"] = dtype
        if hasattr(self.impl, "stats"):  # a judge's own counters (pairwise: comparisons, position bias)
            out["judge_stats"] = self.impl.stats()
        return out
