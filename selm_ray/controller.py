"""The online loop: prompts -> generator pool -> judge pool -> pairs -> buffer, learner alongside.

The controller owns WHEN things happen (dispatch, back-pressure, weight pushes, iteration
boundaries, shutdown); the actors own HOW. Work is dispatched to the actor with the fewest
calls in flight (at most ``MAX_INFLIGHT`` each, so an engine always has its next batch queued).
A call that fails because its actor died is re-sent, after the restarted actor got the current
weights; pairs are only acknowledged once the buffer has written them to disk.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from selm_ray.actors import launch
from selm_ray.buffer import PAIRS_FILE, rewind
from selm_ray.config import Config, dump_config
from selm_ray.data import PromptRecord, iteration_slices, load_prompts, shuffled
from selm_ray.learner import checkpoint
from selm_ray.learner.checkpoint import ResumeError
from selm_ray.learner.trainer import build_trainer
from selm_ray.models import resolve_model
from selm_ray.operate import Operator
from selm_ray.pairs import build_pair
from selm_ray.pool import Pool

MAX_INFLIGHT = 2


@dataclass
class Counters:
    prompts_done: int = 0
    candidates: int = 0
    judge_failures: int = 0
    pairs: int = 0
    no_pair: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    chosen_scores: list[float] = field(default_factory=list)
    rejected_scores: list[float] = field(default_factory=list)
    weight_sync_seconds: list[float] = field(default_factory=list)


class Controller:
    def __init__(self, cfg: Config, run_dir: Path, run_id: str, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.run_id, self.resume = cfg, run_dir, run_id, resume
        self.start_version = self.start_iteration = 0
        self.resume_from: str | None = None
        self.counters = Counters()
        self.t0 = time.time()
        self.stop_event = threading.Event()
        self.learner_result: list[Any] = []
        self.learner_error: list[BaseException] = []
        self._last_log = 0.0
        self._metrics = None
        self._held: list | None = None
        self.learn_seconds = 0.0
        self.loop_t0 = time.time()
        self._pending_syncs: list[Any] = []
        self.last_metrics: dict[str, Any] = {}
        self.judge_evals: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.creator: Any = None  # PromptCreator when create.enabled
        self.iteration = 0

    # -- start-up ---------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)

    def write_metrics(self, row: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()

    def launch_member(self, kind: str, index: int) -> tuple[Any, str]:
        """Start one generator or judge actor (it loads the newest published weights itself)."""
        v, name = self.start_version, f"{self.run_id}-{kind}-{index}"
        if kind == "generator":
            return launch.launch_generator(self.cfg, self.run_id, index, self.model_path, self.channel, v), name
        return launch.launch_judge(self.cfg, self.run_id, index, self._judge_path, self._rm_path,
                                   self.channel, v), name

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
        self._metrics = (self.run_dir / "metrics.jsonl").open("a")
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        c = self.cfg.cluster
        self.model_path = base_path = resolve_model(self.cfg.model.path)
        if self.resume:
            self._prepare_resume()
        v = self.start_version
        self._judge_path = self.model_path if self.cfg.judge.follow_policy else base_path
        self._rm_path = (resolve_model(self.cfg.judge.reward_model) if self.cfg.judge.kind == "reward_model"
                         else None)
        self._judge_eval = self._load_judge_eval()
        self.channel = launch.launch_channel(self.run_id, v)
        self.buffer = launch.launch_buffer(self.cfg, self.run_id, str(self.run_dir / "buffer"))
        self.gens = Pool("generator", target=c.num_generators)
        # judge.colocate: the generators judge too: one pool, shared in-flight counts
        self.judges = self.gens if self.cfg.judge.colocate else Pool("judge", target=c.num_judges)
        self.ops = Operator(self)
        self.ops.launch(self.gens, c.num_generators)
        if not self.cfg.judge.colocate:
            self.ops.launch(self.judges, c.num_judges)
        judges = "judging in the generators" if self.cfg.judge.colocate else f"{c.num_judges} judge(s)"
        self.log(f"started {c.num_generators} generator(s), {judges}; model {self.model_path}")
        trainer = build_trainer(self.cfg, self.model_path, self.buffer, self.channel, self.run_dir,
                                self.resume_from)
        self.learner_thread = threading.Thread(target=self._fit, args=(trainer,), daemon=True)
        self.learner_thread.start()
        self.ops.admit(block=True)
        self.ops.state = "running"
        self.log("engines ready")

    def _load_judge_eval(self) -> list | None:
        """Fail before any actor starts if the judge or its labelled set is unusable."""
        j = self.cfg.judge
        if j.kind == "function":
            from selm_ray.judging.functions import load_function

            load_function(j.function or "")
        if not j.eval_data:
            return None
        from selm_ray.judge_eval import as_rollouts, load_labelled

        return as_rollouts(load_labelled(j.eval_data, "train", j.eval_max_pairs))

    def _evaluate_judge(self, iteration: int) -> None:
        """Score the judge pool on the labelled pairs (judge.eval_data); logged per iteration."""
        if not self._judge_eval:
            return
        from selm_ray.judge_eval import agreement

        judgements = launch.call_with_retry(self.judges.pick().actor.judge, self._judge_eval)
        row = {"event": "judge_eval", "iteration": iteration, "data": self.cfg.judge.eval_data,
               **agreement(judgements), "time": time.time()}
        self.write_metrics(row)
        self.judge_evals.append(row)
        self.log(f"judge agreement with {row['pairs']} labelled pairs: accuracy {row['accuracy']} "
                  f"tie {row['tie_rate']} failure {row['failure_rate']}")

    def _start_eval(self) -> None:
        """Greedy answers of the starting policy (M0, or M1 after SFT) to the eval prompts: the
        baseline every later policy is compared with."""
        e = self.cfg.eval
        if not e.prompts or self.cfg.schedule.mode == "async":
            return
        records, _ = load_prompts(e.prompts, "train", "error", "ignore", e.max_prompts)
        self._eval_records = records
        self._baseline = launch.call_with_retry(self.gens.pick().actor.answer, records)

    def _evaluate_policy(self, iteration: int) -> None:
        """The policy the engines now serve vs the baseline, judged by the judge pool."""
        if not getattr(self, "_eval_records", None):
            return
        from selm_ray.evaluate import win_tie_loss
        from selm_ray.records import Rollout

        member = self.gens.pick()
        answers = launch.call_with_retry(member.actor.answer, self._eval_records)
        rollouts = [Rollout(r.prompt_id, r.messages, "", (a, b))
                    for r, a, b in zip(self._eval_records, answers, self._baseline)]
        judgements = launch.call_with_retry(self.judges.pick().actor.judge, rollouts)
        mean = lambda xs: round(sum(xs) / len(xs), 2)  # noqa: E731
        row = {"event": "eval", "iteration": iteration, "policy_version": member.version,
               **win_tie_loss([(j.scores[0], j.scores[1]) for j in judgements]),
               "mean_tokens_policy": mean([a.num_tokens for a in answers]),
               "mean_tokens_baseline": mean([b.num_tokens for b in self._baseline]), "time": time.time()}
        self.write_metrics(row)
        self.evals.append(row)
        self.log(f"eval v{member.version} vs start: win rate {row['win_rate']} {row['win_rate_ci95']} "
                  f"(W/T/L {row['wins']}/{row['ties']}/{row['losses']}), tokens {row['mean_tokens_policy']} "
                  f"vs {row['mean_tokens_baseline']}")

    def _prepare_resume(self) -> None:
        """Continue from the newest complete checkpoint: its weights, counters and buffer cursor."""
        ckpt = checkpoint.latest(self.run_dir)
        if ckpt is None:
            raise ResumeError(f"{self.run_dir}: no complete checkpoint under checkpoints/ to resume from")
        state = checkpoint.load_state(ckpt)
        rewound = rewind(self.run_dir / "buffer", state["buffer_cursor"])
        self.model_path, self.resume_from = str(ckpt), str(ckpt)
        self.start_version, self.start_iteration = state["version"], state["iteration"]
        self.log(f"resuming from {ckpt} (step {state['step']}, policy v{state['version']}, "
                  f"iteration {state['iteration'] + 1}); {rewound} pair(s) served after it will be served again")

    def _already_judged(self) -> set[str]:
        """Prompts of the current policy version that already have a pair (not generated again)."""
        path = self.run_dir / "buffer" / PAIRS_FILE
        if not path.is_file():
            return set()
        rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return {r["prompt_id"] for r in rows if self.cfg.schedule.mode == "async"
                or r["chosen_version"] == self.start_version}

    def _fit(self, trainer: Any) -> None:
        try:
            self.learner_result.append(trainer.fit())
        except BaseException as e:  # surfaced by the main loop
            self.learner_error.append(e)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        records, report = load_prompts(self.cfg.data.source, self.cfg.data.split, self.cfg.data.on_bad_row,
                                       self.cfg.data.extra_candidates, self.cfg.data.max_prompts)
        s = self.cfg.schedule
        n_create = round(s.prompts_per_iteration * self.cfg.create.mix_ratio) if self.cfg.create.enabled else 0
        slices = iteration_slices(shuffled(records, self.cfg.data.shuffle_seed), s.iterations,
                                  s.prompts_per_iteration - n_create)
        if n_create:
            from selm_ray.creator import PromptCreator

            self.creator = PromptCreator(self, [r.messages[-1]["content"] for r in records])
        self.log(f"{report.kept} prompts from {report.source}; schedule {s.mode}, "
                  f"{s.iterations} x {s.prompts_per_iteration} prompts")
        self._start_eval()
        self.loop_t0 = time.time()
        done = self._already_judged() if self.resume else set()
        slices = [[r for r in chunk if r.prompt_id not in done] for chunk in slices]
        if s.mode != "async":
            for t, chunk in enumerate(slices):
                if t < self.start_iteration:
                    continue
                self.iteration = t
                if n_create:  # self-instruct with the current policy, then answer those too
                    # (on resume, created prompts that already have a pair are not answered again)
                    chunk = chunk + [r for r in self.creator.create(t, n_create) if r.prompt_id not in done]
                if not chunk:  # e.g. create.mix_ratio 1.0 and every created prompt filtered out
                    self.log(f"WARNING iteration {t + 1}/{s.iterations}: no prompt left to answer; it trains "
                             "only on pairs already in the buffer (none unless resumed)")
                self.log(f"iteration {t + 1}/{s.iterations}: generating with policy v{t}")
                self._stream(chunk, iteration=t)
                if self.stop_event.is_set():
                    break
                self._evaluate_judge(t)  # the judge of this iteration, before weights move on
                self.channel.end_generation.remote(t)
                self._wait_for_version(t + 1)
                self.push_weights()
                self._evaluate_policy(t)
        else:
            self._stream([r for chunk in slices for r in chunk], iteration=0)
            self._evaluate_judge(0)
        ray.get(self.channel.request_stop.remote())
        self.ops.state = "finishing"
        self._wait_learner()
        summary = self._summary()
        self.ops.close()
        if self.creator:
            self.creator.close()
        return summary

    def _batches(self, records: list[PromptRecord]) -> deque:
        n = max(1, self.cfg.learner.batch_size)
        return deque(records[i:i + n] for i in range(0, len(records), n))

    def _stream(self, records: list[PromptRecord], iteration: int) -> None:
        """Generate and judge ``records``; sequential mode judges only after all generation."""
        sequential = self.cfg.schedule.mode == "sequential"
        self._held: list | None = [] if sequential else None
        self._pump(self._batches(records), {}, iteration)
        if sequential:
            held, self._held, inflight = self._held, None, {}
            for rollouts in held:
                self._submit(self.judges, "judge", rollouts, inflight)
            self._pump(deque(), inflight, iteration)

    def _pump(self, todo: deque, inflight: dict, iteration: int) -> None:
        while (todo or inflight) and not self.stop_event.is_set():
            self._check_learner()
            self.ops.tick()
            while todo and self.gens.min_inflight() < MAX_INFLIGHT:
                self._submit(self.gens, "generate", todo.popleft(), inflight)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                self._collect(ref, inflight.pop(ref), inflight)
            if self.cfg.schedule.mode == "async":
                self.push_weights()
            self._progress(iteration)

    def _submit(self, pool: Pool, method: str, payload: Any, inflight: dict) -> None:
        member = pool.pick()
        member.start_call()
        ref = getattr(member.actor, method).remote(payload)
        inflight[ref] = (pool, member, method, payload)

    def _collect(self, ref: Any, entry: tuple, inflight: dict) -> None:
        pool, member, method, payload = entry
        member.end_call()
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            self.counters.retries += 1
            self.log(f"{member.name} failed ({type(e).__name__}); re-sending its work")
            # the restarted actor loads the newest weights itself (catch_up) before taking work
            self._submit(pool, method, payload, inflight)
            return
        if method == "generate":
            member.tokens += sum(c.num_tokens for r in result for c in r.candidates)
        else:
            member.candidates += sum(len(j.scores) for j in result)
        if method == "generate" and self._held is not None:
            self._held.append(result)
        elif method == "generate":
            self._submit(self.judges, "judge", result, inflight)
        else:
            self._add_pairs(payload, result)

    def _add_pairs(self, rollouts: list, judgements: list) -> None:
        c, pairs = self.counters, []
        for r, j in zip(rollouts, judgements):
            c.candidates += len(j.scores)
            c.judge_failures += j.num_failed
            outcome = build_pair(r, j, self.cfg.judge.min_margin)
            if outcome.pair is None:
                c.no_pair[outcome.reason] = c.no_pair.get(outcome.reason, 0) + 1
            else:
                pairs.append(outcome.pair)
                c.chosen_scores.append(outcome.pair.chosen_score)
                c.rejected_scores.append(outcome.pair.rejected_score)
        self.ops.live.add_pairs(pairs)
        # returns once the pairs are on disk; re-sent if the buffer is restarting (ids dedupe)
        c.pairs += launch.call_with_retry(self.buffer.add, pairs)
        c.prompts_done += len(rollouts)

    # -- weights ----------------------------------------------------------------------------------
    def _wait_for_version(self, version: int) -> None:
        while not self.stop_event.is_set():
            self._check_learner()
            self.ops.tick()
            if ray.get(self.channel.state.remote())["version"] >= version:
                return
            self._progress(version - 1)
            time.sleep(0.2)

    def iteration_version(self) -> int:
        return min((m.version for m in self.gens.active()), default=self.start_version)

    def push_weights(self) -> None:
        """Send the newest published version to every engine that lacks it (object store, no disk)."""
        version, box = ray.get(self.channel.latest_weights.remote())
        if box is None:
            return
        sent = []
        for pool in {id(p): p for p in (self.gens, self.judges)}.values():
            for m in pool.members:
                if m.version < version:
                    sent.append((m.actor, m.actor.update_weights.remote(version, box[0])))
                    m.version = version
        if sent and self.cfg.schedule.mode != "async":
            # iteration t + 1 must generate with pi_{t+1}: wait for every engine to have it
            self.counters.weight_sync_seconds += [self._await_update(a, r, version, box[0]) for a, r in sent]
            self.log(f"weights v{version} loaded by {len(sent)} engine(s)")
        else:
            self._pending_syncs += [r for _, r in sent]  # async: timed when done, never waited on
        done, self._pending_syncs = ray.wait(self._pending_syncs, num_returns=len(self._pending_syncs),
                                             timeout=0) if self._pending_syncs else ([], [])
        for ref in done:
            try:
                self.counters.weight_sync_seconds.append(ray.get(ref))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                pass  # that engine restarted and caught up by itself (see catch_up)
            except ray.exceptions.ObjectLostError:
                pass  # async end: the learner left with a newer version pending; the engine keeps its own

    @staticmethod
    def _await_update(actor: Any, ref: Any, version: int, weights: Any) -> float:
        try:
            return ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            # the actor died meanwhile; once restarted it must still end up on this version
            return launch.call_with_retry(actor.update_weights, version, weights)

    # -- learner, progress, shutdown --------------------------------------------------------------
    def _check_learner(self) -> None:
        if self.learner_error:
            raise RuntimeError(f"learner failed: {self.learner_error[0]}") from self.learner_error[0]
        for m in ray.get(self.channel.drain_metrics.remote()):
            self._metrics.write(json.dumps(m) + "\n")
            self.learn_seconds += m.get("step_seconds", 0.0)
            for k, v in m.items():
                if isinstance(v, (int, float)) and k not in ("step", "time") and "step" in m:
                    self._tb.add_scalar(f"learner/{k}", v, m["step"])
            self.last_metrics = m
        self._metrics.flush()

    def _progress(self, iteration: int, force: bool = False) -> None:
        if not force and time.time() - self._last_log < 5:
            return
        self._last_log = time.time()
        c, m = self.counters, self.last_metrics
        loss = f"{m['loss']:.4f}" if "loss" in m else "-"
        where = "async" if self.cfg.schedule.mode == "async" else f"iter {iteration + 1}"
        self.log(f"{where} prompts {c.prompts_done} pairs {c.pairs} judge-fail "
                  f"{c.judge_failures}/{c.candidates} | learner step {m.get('step', 0)} v{m.get('version', 0)} "
                  f"loss {loss}")

    def _wait_learner(self) -> None:
        while self.learner_thread.is_alive():
            self._check_learner()
            self.ops.tick()
            self._progress(self.cfg.schedule.iterations - 1)
            self.learner_thread.join(timeout=0.5)
        self._check_learner()
        self._tb.close()

    def request_stop(self, *_: Any) -> None:
        self.log("stop requested: finishing in-flight work, draining the buffer, checkpointing")
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def _summary(self) -> dict[str, Any]:
        c = self.counters
        for ref in self._pending_syncs:
            try:
                c.weight_sync_seconds.append(ray.get(ref))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                    ray.exceptions.ObjectLostError):
                pass  # as in push_weights: a restarted engine, or weights whose owner (learner) left
        state = ray.get(self.channel.state.remote())
        stats = ray.get(self.buffer.stats.remote())
        gen_stats = ray.get([m.actor.stats.remote() for m in self.gens.members])
        judge_stats = gen_stats if self.judges is self.gens else ray.get([m.actor.stats.remote()
                                                                          for m in self.judges.members])
        mean = lambda xs: round(sum(xs) / len(xs), 3) if xs else None  # noqa: E731
        loop_s = time.time() - self.loop_t0
        busy = {"generate": sum(g["busy_seconds"] for g in gen_stats),
                "judge": sum(j.get("judge_busy_seconds", j["busy_seconds"]) for j in judge_stats),
                "learn": self.learn_seconds}
        return {
            "run_dir": str(self.run_dir), "seconds": round(time.time() - self.t0, 1),
            "prompts": c.prompts_done, "candidates": c.candidates, "pairs": c.pairs, "no_pair": c.no_pair,
            "judge_failure_rate": round(c.judge_failures / max(1, c.candidates), 3),
            "mean_chosen_score": mean(c.chosen_scores), "mean_rejected_score": mean(c.rejected_scores),
            "learner_steps": state["step"], "policy_version": state["version"],
            "checkpoint": state["checkpoint"], "learner_error": state["error"], "retries": c.retries,
            "buffer": {"served": stats.served, "dropped_stale": stats.dropped_stale, "left": stats.size,
                       "duplicates": stats.duplicates, "lag_histogram": stats.lag_histogram},
            "mean_chosen_tokens": stats.mean_chosen_tokens, "mean_rejected_tokens": stats.mean_rejected_tokens,
            "generators": gen_stats, "judges": [] if self.judges is self.gens else judge_stats,
            "weight_sync_seconds": [round(x, 3) for x in c.weight_sync_seconds],
            "pool_events": self.ops.events, "judge_eval": self.judge_evals, "eval": self.evals,
            "prompt_creation": self.creator.counts if self.creator else None,
            "loop_seconds": round(loop_s, 1),
            "stage_busy_seconds": {k: round(v, 1) for k, v in busy.items()},
            "overlap_ratio": round(loop_s / max(1e-9, max(busy.values())), 3),
            "pairs_per_second": round(c.pairs / max(1e-9, loop_s), 3),
            "generator_tokens_per_second": round(sum(g["tokens"] for g in gen_stats) / max(1e-9, busy["generate"]), 1),
        }
