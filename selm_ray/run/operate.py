"""Operating a running job: pool resizes asked for by `selm-ray scale` or by the autoscale policy,
and the live snapshot behind `selm-ray stats` (also logged to stats.jsonl for `selm-ray report`).

``Operator.tick()`` runs from every wait loop of the controller, on the driver.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from selm_ray.actors import launch, remote
from selm_ray.core.autoscale import AutoscalePolicy, Observation
from selm_ray.core.jsonl import AppendLog
from selm_ray.core.livestats import LiveStats
from selm_ray.run.context import RunContext
from selm_ray.run.pools import PoolManager

SNAPSHOT_EVERY_S = 1.0
LOG_EVERY_S = 5.0  # stats.jsonl in the run dir (what `selm-ray report` plots)


class Operator:
    def __init__(self, ctx: RunContext, pools: PoolManager) -> None:
        self.ctx, self.pm = ctx, pools
        self.live = LiveStats()
        self.state = "starting"
        self.creation_counts: Callable[[], dict[str, int] | None] = lambda: None
        self.instruction_eval: Callable[[], list[dict[str, Any]]] = lambda: []  # the newest, if any
        self._last_snapshot = self._last_log = 0.0
        self._stats_log = AppendLog(ctx.run_dir / "stats.jsonl", durable=False)
        a = ctx.cfg.autoscale
        self.autoscale = AutoscalePolicy(a.min_generators, a.max_generators, a.min_judges, a.max_judges,
                                         a.interval_seconds, a.grow_wait_fraction, a.shrink_fill_fraction,
                                         judges_scalable=not ctx.cfg.judge.colocate) if a.enabled else None
        self._window: dict[str, Any] = {"t": time.time(), "wait": 0.0, "stale": 0, "busy": {}}
        self.control = launch.launch_control(ctx.run_id)

    def tick(self, force: bool = False) -> dict[str, Any] | None:
        """Admit and retire members; at most once a second, apply scale requests, take a snapshot
        (returned), publish it and let the autoscale policy decide."""
        self.pm.check_suspects()
        self.pm.admit()
        self.pm.retire_drained()
        now = time.time()
        if not force and now - self._last_snapshot < SNAPSHOT_EVERY_S:
            return None
        self._last_snapshot = now
        request = remote.get(self.control.take_scale_request.remote(), "control.take_scale_request")
        for name, n in request.items():
            self.pm.resize(name[:-1], n, "selm-ray scale")
        snap = self.snapshot(now)
        if self.autoscale is not None:
            self._autoscale(snap, now)
        self.control.publish.remote(snap)
        if force or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            self._stats_log.write(snap)
        return snap

    def _autoscale(self, snap: dict[str, Any], now: float) -> None:
        w, pm = self._window, self.pm
        span = now - w["t"]
        if span < self.autoscale.interval_seconds:
            return
        wait, stale = snap["learner"]["wait_seconds"], snap["buffer"]["dropped_stale"]
        busy = {p.kind: p.busy_share(w["busy"].setdefault(p.kind, {}), now, span) for p in pm.pools()}
        obs = Observation(now, pm.gens.size() + len(pm.gens.starting),
                          pm.judges.size() + len(pm.judges.starting), min(1.0, (wait - w["wait"]) / span),
                          snap["buffer"]["size"] / max(1, snap["buffer"]["capacity"]), stale - w["stale"],
                          busy.get("generator", 0.0), busy.get("judge", busy.get("generator", 0.0)))
        self._window.update(t=now, wait=wait, stale=stale)
        decision = self.autoscale.decide(obs)
        if decision is not None:
            self.pm.resize(decision.pool, decision.size, f"autoscale: {decision.reason}")

    def snapshot(self, now: float) -> dict[str, Any]:
        ctx, c = self.ctx, self.ctx.counters
        st = remote.call_with_retry(ctx.buffer.stats)  # the buffer may be restarting
        learner = remote.get(ctx.channel.state.remote(), "channel.state")
        pin, pout = self.live.rates(now, c.pairs, st.served)
        lags = {int(k): v for k, v in st.lag_histogram.items()}
        m = ctx.last_metrics
        members = [x for p in self.pm.pools() for x in p.members]
        pools = {p.kind: p.view(now) for p in self.pm.pools()}
        return {
            "run": ctx.run_id, "state": self.state, "mode": ctx.cfg.schedule.mode, "time": now,
            "iteration": ctx.iteration + 1, "elapsed_seconds": round(now - ctx.t0, 1),
            "buffer": {"size": st.size, "capacity": st.capacity, "pairs_in": c.pairs, "served": st.served,
                       "dropped_stale": st.dropped_stale, "duplicates": st.duplicates, "evicted": st.evicted,
                       "pairs_in_per_second": pin, "pairs_out_per_second": pout, "lag_histogram": lags,
                       "mean_lag": round(sum(k * v for k, v in lags.items()) / max(1, sum(lags.values())), 3)},
            "distributions": self.live.distributions(),
            "quality": {"prompts": c.prompts_done, "candidates": c.candidates,
                        "tie_rate": round(c.no_pair.get("tie", 0) / max(1, c.prompts_done), 4),
                        "judge_failure_rate": round(c.judge_failures / max(1, c.candidates), 4),
                        "no_pair": dict(c.no_pair)},
            "learner": {"step": learner["step"], "loss": m.get("loss"), "version": learner["version"],
                        "synced_version": min((x.version for x in members), default=0),
                        "wait_seconds": round(learner["wait_seconds"], 1),
                        "wait_fraction": round(learner["wait_seconds"] / max(1e-9, now - ctx.loop_t0), 3)},
            "pools": pools, "events": self.pm.events[-20:],
            "prompt_creation": self.creation_counts(),
            "instructions": _instruction_view(self.instruction_eval()),
            "autoscale": None if self.autoscale is None else {
                "min_generators": self.autoscale.min_generators, "max_generators": self.autoscale.max_generators,
                "min_judges": self.autoscale.min_judges, "max_judges": self.autoscale.max_judges},
        }

    def close(self) -> None:
        self.state = "done"
        self.tick(force=True)
        self._stats_log.close()


def _instruction_view(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest verifiable-instruction accuracy, as `selm-ray stats` shows it."""
    if not rows:
        return None
    r = rows[-1]
    return {k: r[k] for k in ("iteration", "policy_version", "prompts", "prompt_strict", "prompt_strict_ci95",
                              "prompt_loose", "instruction_strict", "instruction_loose", "mean_tokens")}
