"""The job's named control actor ("selm-ray-controller" in the run's namespace).

The dispatch loop runs in the job driver; this actor is how the outside world reaches it:
`selm-ray stats` reads the latest snapshot, `selm-ray scale` leaves a resize request that the
loop applies on its next tick. It also exports the snapshot as Ray metrics (see METRICS), so
the Ray Dashboard / Prometheus / Grafana see the same figures.
"""
from __future__ import annotations

import time
from typing import Any

CONTROL_NAME = "selm-ray-controller"

# metric name -> (snapshot path, description); every gauge is tagged with the run id
METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "selm_ray_buffer_size": (("buffer", "size"), "pairs waiting in the replay buffer"),
    "selm_ray_buffer_capacity": (("buffer", "capacity"), "replay buffer capacity"),
    "selm_ray_pairs_in_total": (("buffer", "pairs_in"), "judged pairs written to the buffer"),
    "selm_ray_pairs_served_total": (("buffer", "served"), "pairs handed to the learner"),
    "selm_ray_pairs_dropped_stale_total": (("buffer", "dropped_stale"), "pairs dropped as too old"),
    "selm_ray_pairs_in_per_second": (("buffer", "pairs_in_per_second"), "pairs in per second (30 s window)"),
    "selm_ray_pairs_out_per_second": (("buffer", "pairs_out_per_second"), "pairs out per second (30 s window)"),
    "selm_ray_policy_lag_mean": (("buffer", "mean_lag"), "mean policy lag of served pairs"),
    "selm_ray_chosen_score_mean": (("distributions", "chosen_score", "mean"), "recent chosen score"),
    "selm_ray_rejected_score_mean": (("distributions", "rejected_score", "mean"), "recent rejected score"),
    "selm_ray_reward_margin_mean": (("distributions", "margin", "mean"), "recent chosen - rejected score"),
    "selm_ray_chosen_tokens_mean": (("distributions", "chosen_tokens", "mean"), "recent chosen length"),
    "selm_ray_rejected_tokens_mean": (("distributions", "rejected_tokens", "mean"), "recent rejected length"),
    "selm_ray_tie_rate": (("quality", "tie_rate"), "prompts without a pair because of a tie"),
    "selm_ray_judge_failure_rate": (("quality", "judge_failure_rate"), "candidates the judge could not score"),
    "selm_ray_learner_step": (("learner", "step"), "learner optimizer steps"),
    "selm_ray_learner_loss": (("learner", "loss"), "last learner loss"),
    "selm_ray_policy_version": (("learner", "version"), "newest published policy version"),
    "selm_ray_synced_version": (("learner", "synced_version"), "oldest policy version any engine serves"),
}
POOL_METRIC = "selm_ray_pool_size"  # tags: run, pool
ACTOR_METRIC = "selm_ray_actor_throughput"  # tags: run, pool, actor (tokens/s or candidates/s)


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


class ControlPlane:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._snapshot: dict[str, Any] = {"run": run_id, "state": "starting", "time": time.time()}
        self._scale: dict[str, int] = {}
        self._gauges: dict[str, Any] | None = None

    # -- the outside world ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

    def request_scale(self, generators: int | None = None, judges: int | None = None) -> dict[str, int]:
        """Queue a resize; the controller validates it against the run (colocated judges etc.)."""
        for name, n in (("generators", generators), ("judges", judges)):
            if n is not None:
                if not isinstance(n, int) or n < 1:
                    raise ValueError(f"--{name}: must be an integer >= 1, got {n!r}")
                self._scale[name] = n
        return dict(self._scale)

    # -- the driver's loop ------------------------------------------------------------------------
    def take_scale_request(self) -> dict[str, int]:
        out, self._scale = self._scale, {}
        return out

    def publish(self, snapshot: dict[str, Any]) -> None:
        self._snapshot = snapshot
        self._export(snapshot)

    def _export(self, s: dict[str, Any]) -> None:
        from ray.util.metrics import Gauge

        if self._gauges is None:
            self._gauges = {name: Gauge(name, description=desc, tag_keys=("run",))
                            for name, (_, desc) in METRICS.items()}
            self._gauges[POOL_METRIC] = Gauge(POOL_METRIC, description="active actors per pool",
                                              tag_keys=("run", "pool"))
            self._gauges[ACTOR_METRIC] = Gauge(ACTOR_METRIC, description="generator tokens/s or judge "
                                               "candidates/s per actor", tag_keys=("run", "pool", "actor"))
        tags = {"run": self.run_id}
        for name, (path, _) in METRICS.items():
            value = _get(s, path)
            if isinstance(value, (int, float)):
                self._gauges[name].set(float(value), tags=tags)
        for pool in s.get("pools", {}).values():
            self._gauges[POOL_METRIC].set(pool["size"], tags={**tags, "pool": pool["kind"]})
            for a in pool["actors"]:
                rate = a["tokens_per_second"] if pool["kind"] == "generator" else a["candidates_per_second"]
                self._gauges[ACTOR_METRIC].set(rate, tags={**tags, "pool": pool["kind"], "actor": a["name"]})
