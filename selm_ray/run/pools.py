"""The generator and judge pools over their whole life: launching members, admitting them once
their engine is up, draining and retiring them, resizing, and pushing new weights to every engine.

New weights travel learner rank 0 -> object store -> each engine (no path shared between nodes).
"""
from __future__ import annotations

import time
from typing import Any

import ray

from selm_ray.actors import launch, remote
from selm_ray.run.context import RunContext
from selm_ray.run.pool import Member, Pool

# errors after which an engine is known to have restarted and caught up by itself (see catch_up)
RESTARTED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class PoolManager:
    def __init__(self, ctx: RunContext, model_path: str, judge_path: str, rm_path: str | None,
                 adapter_path: str | None = None) -> None:
        c = ctx.cfg.cluster
        self.ctx, self.model_path, self.judge_path, self.rm_path = ctx, model_path, judge_path, rm_path
        self.adapter_path = adapter_path  # engines serving LoRA adapters: the resumed one
        self.gens = Pool("generator", target=c.num_generators)
        # judge.colocate: the generators judge too: one pool, shared in-flight counts
        self.judges = self.gens if ctx.cfg.judge.colocate else Pool("judge", target=c.num_judges)
        self.log_dir = str(ctx.run_dir / "logs")  # each engine's own output: logs/<actor>.log
        self.events: list[dict[str, Any]] = []
        self._pending_syncs: list[Any] = []

    def pools(self) -> list[Pool]:
        return list({id(p): p for p in (self.gens, self.judges)}.values())

    # -- members joining and leaving --------------------------------------------------------------
    def start(self) -> None:
        c = self.ctx.cfg.cluster
        self.launch(self.gens, c.num_generators)
        if self.judges is not self.gens:
            self.launch(self.judges, c.num_judges)

    def _launch_member(self, kind: str, index: int) -> tuple[Any, str]:
        """Start one generator or judge actor (it loads the newest published weights itself)."""
        ctx = self.ctx
        v, name = ctx.start_version, f"{ctx.run_id}-{kind}-{index}"
        if kind == "generator":
            return launch.launch_generator(ctx.cfg, ctx.run_id, index, self.model_path, ctx.channel, v,
                                          self.log_dir, self.adapter_path), name
        return launch.launch_judge(ctx.cfg, ctx.run_id, index, self.judge_path, self.rm_path, ctx.channel, v,
                                  self.log_dir, self.adapter_path), name

    def launch(self, pool: Pool, n: int) -> None:
        for _ in range(n):
            actor, name = self._launch_member(pool.kind, pool.next_index)
            pool.next_index += 1
            pool.starting[actor.ready.remote()] = Member(actor, name, self.ctx.start_version)

    def admit(self, block: bool = False) -> int:
        """Members whose engine is up start taking work (and get the newest weights first)."""
        admitted = 0
        for pool in self.pools():
            if not pool.starting:
                continue
            refs = list(pool.starting)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=remote.bound("start") if block else 0)
            if block and len(ready) < len(refs):
                late = ", ".join(pool.starting[r].name for r in refs if r not in ready)
                raise remote.RemoteTimeout(f"{late}: engine not up within {remote.bound('start'):g} s "
                                           "(cluster.start_timeout_s); see logs/ in the run folder")
            for ref in ready:
                m = pool.starting.pop(ref)
                m.version, m.joined = ray.get(ref), time.time()
                pool.members.append(m)
                admitted += 1
                if not block:
                    self.ctx.log(f"{m.name} joined the {pool.kind} pool at policy v{m.version}")
        if admitted and not block:
            self.push_weights()  # anything published while it started; iterative waits for it
        return admitted

    # -- members that died ------------------------------------------------------------------------
    def suspect(self, m: Member) -> None:
        """One of ``m``'s calls failed because its actor died: keep it out of dispatch until a probe
        tells a restart (Ray's max_restarts) from an actor gone for good."""
        if m.probe is None:
            m.probe, m.dead_probes = m.actor.ready.remote(), 0

    def check_suspects(self) -> None:
        now, back = time.time(), False
        for pool in self.pools():
            for m in [m for m in pool.members if m.probe is not None and now >= m.probe_after]:
                done, _ = ray.wait([m.probe], timeout=0)
                if not done:
                    continue  # restarting: the probe waits in the new incarnation's queue
                try:
                    m.version, m.probe = ray.get(m.probe), None  # restarted (it caught up by itself)
                    back = True
                except ray.exceptions.ActorDiedError:
                    # twice, a second apart: a probe sent in the instant of death fails even when
                    # Ray is about to restart the actor; a dead one fails every time
                    m.dead_probes += 1
                    if m.dead_probes >= 2:
                        self._replace(pool, m)
                    else:
                        m.probe, m.probe_after = m.actor.ready.remote(), now + 1.0
                except RESTARTED:
                    m.probe = m.actor.ready.remote()
        if back:
            self.push_weights()  # a restart that read the channel before the newest version

    def member(self, pool: Pool, timeout: float | None = None) -> Member:
        """A member able to take a direct call (evaluation), waiting while every one is restarting
        or being replaced; bounded (cluster.work_timeout_s by default), with a named error."""
        timeout = remote.bound("work") if timeout is None else timeout
        deadline = time.time() + timeout
        while not pool.active():
            if time.time() > deadline:
                raise RuntimeError(f"no {pool.kind} could take work for {timeout:g} s (all restarting or replaced)")
            self.check_suspects()
            self.admit()
            time.sleep(0.2)
        return pool.pick()

    def kill_hung(self, pool: Pool, m: Member, what: str, seconds: float) -> None:
        """``m`` is alive but a call of its is overdue: kill its process so that Ray restarts it (or,
        with its restarts used up, the pool replaces it); the caller re-sends the work."""
        event = {"event": "actor_hung", "pool": pool.kind, "actor": m.name, "call": what,
                 "seconds": round(seconds, 1), "time": time.time(),
                 "reason": f"{m.name}: {what} unanswered after {seconds:.0f} s (cluster.work_timeout_s "
                           f"{remote.bound('work'):g}); killed, its work goes to another member"}
        self.events.append(event)
        self.ctx.write_metrics(event)
        self.ctx.log(event["reason"])
        ray.kill(m.actor, no_restart=False)
        self.suspect(m)

    def _replace(self, pool: Pool, m: Member) -> None:
        pool.members.remove(m)
        launch.stop_actor(m.actor)
        n = pool.size() + len(pool.starting)
        event = {"event": "actor_replaced", "pool": pool.kind, "from": n, "to": n + 1, "actor": m.name,
                 "reason": f"{m.name} is gone for good (its restarts are used up); a new one starts",
                 "time": time.time()}
        self.events.append(event)
        self.ctx.write_metrics(event)
        self.ctx.log(event["reason"])
        self.launch(pool, 1)

    def retire_drained(self) -> None:
        for pool in self.pools():
            for m in [m for m in pool.members if m.draining and m.inflight == 0]:
                pool.members.remove(m)
                launch.stop_actor(m.actor)
                self.ctx.log(f"{m.name} drained and left the {pool.kind} pool")

    def resize(self, kind: str, n: int, reason: str) -> None:
        pool = self.gens if kind == "generator" else self.judges
        if kind == "judge" and self.judges is self.gens:
            self.ctx.log(f"ignored: {n} judge(s) asked for, but judging runs inside the generators "
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
        self.ctx.write_metrics(event)
        self.ctx.log(f"{kind} pool {current} -> {n} ({reason})")

    @staticmethod
    def _shrink(pool: Pool, k: int) -> None:
        for ref in list(pool.starting)[::-1][:k]:  # not serving yet: nothing to hand back
            launch.stop_actor(pool.starting.pop(ref).actor)
            k -= 1
        for m in pool.active()[::-1][:k]:  # newest first; they finish their calls, then leave
            m.draining = True

    # -- weights ----------------------------------------------------------------------------------
    def iteration_version(self) -> int:
        return min((m.version for m in self.gens.active()), default=self.ctx.start_version)

    def push_weights(self) -> None:
        """Send the newest published version to every engine that lacks it (object store, no disk)."""
        version, box = remote.get(self.ctx.channel.latest_weights.remote(), "channel.latest_weights")
        if box is None:
            return
        sent = []
        for pool in self.pools():
            for m in pool.members:
                if m.version < version and m.probe is None:  # a suspect catches up by itself, if it comes back
                    sent.append((m, m.actor.update_weights.remote(version, box[0])))
                    m.version = version
        synced = self.ctx.counters.weight_sync_seconds
        if sent and self.ctx.cfg.schedule.mode != "async":
            # iteration t + 1 must generate with pi_{t+1}: wait for every engine to have it
            synced += [s for s in (self._await_update(m, r) for m, r in sent) if s is not None]
            self.ctx.log(f"weights v{version} loaded by {len(sent)} engine(s)")
        else:
            self._pending_syncs += [r for _, r in sent]  # async: timed when done, never waited on
        done, self._pending_syncs = ray.wait(self._pending_syncs, num_returns=len(self._pending_syncs),
                                             timeout=0) if self._pending_syncs else ([], [])
        self._record_syncs(done)

    def finish_syncs(self) -> None:
        """Time the weight loads still pending at the end of the run."""
        self._record_syncs(self._pending_syncs)
        self._pending_syncs = []

    def _record_syncs(self, refs: list[Any]) -> None:
        for ref in refs:
            try:
                self.ctx.counters.weight_sync_seconds.append(ray.get(ref))
            except RESTARTED:
                pass  # that engine restarted and caught up by itself (see catch_up)
            except ray.exceptions.ObjectLostError:
                pass  # async end: the learner left with a newer version pending; the engine keeps its own

    def _await_update(self, m: Member, ref: Any) -> float | None:
        t0 = time.time()
        try:
            return remote.get(ref, f"{m.name}.update_weights")
        except remote.RemoteTimeout:
            self.kill_hung(self._pool_of(m), m, "update_weights", time.time() - t0)
            return None  # its restart loads the newest weights itself (catch_up)
        except RESTARTED:
            # the actor died meanwhile: a suspect until its probe answers (then it is brought up
            # to the newest version, see check_suspects) or it is replaced (a new one loads it)
            self.suspect(m)
            return None

    def _pool_of(self, m: Member) -> Pool:
        return self.gens if m in self.gens.members else self.judges

    def stats(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The generators' and the separate judges' own stats (no judges when colocated)."""
        gen = remote.get([m.actor.stats.remote() for m in self.gens.members if m.probe is None], "generator.stats")
        judges = [] if self.judges is self.gens else remote.get(
            [m.actor.stats.remote() for m in self.judges.members if m.probe is None], "judge.stats")
        return gen, judges
