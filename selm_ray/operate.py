"""Operating a running job: pool resizes (by `selm-ray scale` or the autoscale policy), new
actors joining, drained actors leaving, and the live snapshot behind `selm-ray stats`.

``Operator.tick()`` runs from every wait loop of the controller, on the driver.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import ray

from selm_ray.actors import launch
from selm_ray.autoscale import AutoscalePolicy, Observation
from selm_ray.livestats import LiveStats
from selm_ray.pool import Member, Pool

if TYPE_CHECKING:
    from selm_ray.controller import Controller

SNAPSHOT_EVERY_S = 1.0
LOG_EVERY_S = 5.0  # stats.jsonl in the run dir (what `selm-ray report` plots)


class Operator:
    def __init__(self, ctl: "Controller") -> None:
        self.ctl = ctl
        self.live = LiveStats()
        self.events: list[dict[str, Any]] = []
        self.state = "starting"
        self._last_snapshot = self._last_log = 0.0
        self._stats_log = (ctl.run_dir / "stats.jsonl").open("a")
        a = ctl.cfg.autoscale
        self.autoscale = AutoscalePolicy(a.min_generators, a.max_generators, a.min_judges, a.max_judges,
                                         a.interval_seconds, a.grow_wait_fraction, a.shrink_fill_fraction,
                                         judges_scalable=not ctl.cfg.judge.colocate) if a.enabled else None
        self._window: dict[str, Any] = {"t": time.time(), "wait": 0.0, "stale": 0, "busy": {}}
        self.control = launch.launch_control(ctl.run_id)

    # -- members joining and leaving --------------------------------------------------------------
    def launch(self, pool: Pool, n: int) -> None:
        for _ in range(n):
            actor, name = self.ctl.launch_member(pool.kind, pool.next_index)
            pool.next_index += 1
            pool.starting[actor.ready.remote()] = Member(actor, name, self.ctl.start_version)

    def admit(self, block: bool = False) -> int:
        """Members whose engine is up start taking work (and get the newest weights first)."""
        admitted = 0
        for pool in self.pools():
            if not pool.starting:
                continue
            refs = list(pool.starting)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=None if block else 0)
            for ref in ready:
                m = pool.starting.pop(ref)
                m.version, m.joined = ray.get(ref), time.time()
                pool.members.append(m)
                admitted += 1
                if not block:
                    self.ctl.log(f"{m.name} joined the {pool.kind} pool at policy v{m.version}")
        if admitted and not block:
            self.ctl.push_weights()  # anything published while it started; iterative waits for it
        return admitted

    def retire_drained(self) -> None:
        for pool in self.pools():
            for m in [m for m in pool.members if m.draining and m.inflight == 0]:
                pool.members.remove(m)
                launch.stop_actor(m.actor)
                self.ctl.log(f"{m.name} drained and left the {pool.kind} pool")

    def resize(self, kind: str, n: int, reason: str) -> None:
        pool = self.ctl.gens if kind == "generator" else self.ctl.judges
        if kind == "judge" and self.ctl.judges is self.ctl.gens:
            self.ctl.log(f"ignored: {n} judge(s) asked for, but judging runs inside the generators "
                         "(judge.colocate); scale the generators instead")
            return
        current = pool.size() + len(pool.starting)
        pool.target = n
        if n == current:
            return
        if n > current:
            self.launch(pool, n - current)
        else:
            self._shrink(pool, current - n)
        event = {"event": "pool_resize", "pool": kind, "from": current, "to": n, "reason": reason,
                 "time": time.time()}
        self.events.append(event)
        self.ctl.write_metrics(event)
        self.ctl.log(f"{kind} pool {current} -> {n} ({reason})")

    def _shrink(self, pool: Pool, k: int) -> None:
        for ref in list(pool.starting)[::-1][:k]:  # not serving yet: nothing to hand back
            launch.stop_actor(pool.starting.pop(ref).actor)
            k -= 1
        for m in pool.active()[::-1][:k]:  # newest first; they finish their calls, then leave
            m.draining = True

    # -- the periodic part ------------------------------------------------------------------------
    def pools(self) -> list[Pool]:
        return list({id(p): p for p in (self.ctl.gens, self.ctl.judges)}.values())

    def tick(self, force: bool = False) -> None:
        self.admit()
        self.retire_drained()
        now = time.time()
        if not force and now - self._last_snapshot < SNAPSHOT_EVERY_S:
            return
        self._last_snapshot = now
        request = ray.get(self.control.take_scale_request.remote())
        for name, n in request.items():
            self.resize(name[:-1], n, "selm-ray scale")
        snap = self.snapshot(now)
        if self.autoscale is not None:
            self._autoscale(snap, now)
        self.control.publish.remote(snap)
        if force or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            self._stats_log.write(json.dumps(snap) + "\n")
            self._stats_log.flush()

    def _autoscale(self, snap: dict[str, Any], now: float) -> None:
        w, ctl = self._window, self.ctl
        span = now - w["t"]
        if span < self.autoscale.interval_seconds:
            return
        wait, stale = snap["learner"]["wait_seconds"], snap["buffer"]["dropped_stale"]
        busy = {p.kind: p.busy_share(w["busy"].setdefault(p.kind, {}), now, span) for p in self.pools()}
        obs = Observation(now, ctl.gens.size() + len(ctl.gens.starting),
                          ctl.judges.size() + len(ctl.judges.starting), min(1.0, (wait - w["wait"]) / span),
                          snap["buffer"]["size"] / max(1, snap["buffer"]["capacity"]), stale - w["stale"],
                          busy.get("generator", 0.0), busy.get("judge", busy.get("generator", 0.0)))
        self._window.update(t=now, wait=wait, stale=stale)
        decision = self.autoscale.decide(obs)
        if decision is not None:
            self.resize(decision.pool, decision.size, f"autoscale: {decision.reason}")

    def snapshot(self, now: float) -> dict[str, Any]:
        ctl, c = self.ctl, self.ctl.counters
        st = launch.call_with_retry(ctl.buffer.stats)  # the buffer may be restarting
        learner = ray.get(ctl.channel.state.remote())
        pin, pout = self.live.rates(now, c.pairs, st.served)
        lags = {int(k): v for k, v in st.lag_histogram.items()}
        m = ctl.last_metrics
        members = [x for p in self.pools() for x in p.members]
        pools = {p.kind: p.view(now) for p in self.pools()}
        return {
            "run": ctl.run_id, "state": self.state, "mode": ctl.cfg.schedule.mode, "time": now,
            "iteration": ctl.iteration + 1, "elapsed_seconds": round(now - ctl.t0, 1),
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
                        "wait_fraction": round(learner["wait_seconds"] / max(1e-9, now - ctl.loop_t0), 3)},
            "pools": pools, "events": self.events[-20:],
            "prompt_creation": ctl.creator.counts if ctl.creator else None,
            "autoscale": None if self.autoscale is None else {
                "min_generators": self.autoscale.min_generators, "max_generators": self.autoscale.max_generators,
                "min_judges": self.autoscale.min_judges, "max_judges": self.autoscale.max_judges},
        }

    def close(self) -> None:
        self.state = "done"
        self.tick(force=True)
        self._stats_log.close()
