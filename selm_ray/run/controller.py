"""The online loop: prompts -> generator pool -> judge pool -> pairs -> buffer, learner alongside.

The controller owns WHEN things happen (dispatch, back-pressure, iteration boundaries, shutdown);
the actors own HOW. Its parts each take a narrow view of the run: ``RunContext`` (config,
counters, logs, run-wide actors) and ``PoolManager`` (engines, weight pushes); the operator
(scaling, live stats), the evaluator, the prompt creator, resume and the summary live beside it.

Work is dispatched to the actor with the fewest calls in flight (at most ``MAX_INFLIGHT`` each, so
an engine always has its next batch queued). A call that fails because its actor died is re-sent,
after the restarted actor got the current weights; pairs are only acknowledged once the buffer
has written them to disk.
"""
from __future__ import annotations

import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray

from selm_ray.actors import launch, remote
from selm_ray.core.config import Config
from selm_ray.core.data import (PromptRecord, check_prompt_lengths, iteration_slices, load_prompts,
                                shuffled, templated_length)
from selm_ray.core.pairs import build_pair
from selm_ray.engines.adapters import CHECKPOINT_DIR as ADAPTER_DIR
from selm_ray.engines.models import resolve_model
from selm_ray.learner.trainer import build_trainer
from selm_ray.run.context import RunContext
from selm_ray.run.evaluation import Evaluator
from selm_ray.run.learning import LearnerDriver
from selm_ray.run.operate import Operator
from selm_ray.run.pool import Pool
from selm_ray.run.pools import RESTARTED, PoolManager
from selm_ray.run.progress import Progress
from selm_ray.run.resume import already_judged, prepare_resume
from selm_ray.run.summary import build_summary

MAX_INFLIGHT = 2
MAX_PROMPTS_PER_CALL = 64  # turns: one call's prompts at most (a CPU engine's tokens/s flattens out)


def prompts_per_call(cfg: Config, prompts: int, generators: int) -> int:
    """generation.prompts_per_call, or its default: one learner batch a call when the stages
    overlap (the learner starts after one call), else the prompts split over the generators."""
    if cfg.generation.prompts_per_call:
        return cfg.generation.prompts_per_call
    if not cfg.schedule.takes_turns:
        return max(1, cfg.learner.batch_size)
    return max(1, min(MAX_PROMPTS_PER_CALL, -(-prompts // max(1, generators))))


class Controller:
    def __init__(self, cfg: Config, run_dir: Path, run_id: str, resume: bool = False) -> None:
        self.ctx = RunContext(cfg, run_dir, run_id, resume)
        self.cfg = cfg
        self.creator: Any = None  # PromptCreator when create.enabled
        # work whose pool has no member able to take it right now (all restarting or replaced)
        self._parked: deque = deque()
        self._held: list | None = None  # sequential mode: rollouts waiting for generation to end
        self._sent: dict[Any, float] = {}  # in-flight work call -> when it was sent (work_timeout_s)

    # the parts tests and hooks reach for
    @property
    def counters(self) -> Any:
        return self.ctx.counters

    @property
    def buffer(self) -> Any:
        return self.ctx.buffer

    @property
    def gens(self) -> Pool:
        return self.pm.gens

    @property
    def judges(self) -> Pool:
        return self.pm.judges

    def log(self, msg: str) -> None:
        self.ctx.log(msg)

    # -- start-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        ctx, cfg = self.ctx, self.cfg
        ctx.open()
        self.progress = Progress(ctx)
        base_path = model_path = resolve_model(cfg.model.path)
        resume_from = prepare_resume(ctx) if ctx.resume else None
        model_path = resume_from or model_path
        adapter_path = None
        if resume_from and cfg.learner.lora_publish == "adapter":
            # engines serving adapters start from the base and the checkpoint's adapter over it
            # (its model.safetensors is the merged policy: the adapter would count twice)
            model_path, adapter_path = base_path, str(Path(resume_from) / ADAPTER_DIR)
        judge_path = model_path if cfg.judge.follow_policy else base_path
        rm_path = resolve_model(cfg.judge.judge_model) if cfg.judge.judge_model else None  # reward model or ranker
        self.records, self.report = load_prompts(cfg.data.source, cfg.data.split, cfg.data.on_bad_row,
                                                 cfg.data.extra_candidates, cfg.data.max_prompts)
        self._check_lengths(base_path)  # before any actor starts: a prompt that cannot fit fails fast
        self._check_score_digits(judge_path)  # and a tokenizer the expected-score judge cannot read
        ctx.channel = launch.launch_channel(ctx.run_id, ctx.start_version)
        ctx.buffer = launch.launch_buffer(cfg, ctx.run_id, str(ctx.run_dir / "buffer"))
        self.pm = PoolManager(ctx, model_path, judge_path, rm_path, adapter_path)
        self.evaluator = Evaluator(ctx, self.pm)  # fails here if the judge's labelled set is unusable
        self.ops = Operator(ctx, self.pm)
        self.ops.instruction_eval = lambda: self.evaluator.instruction_evals[-1:]
        self.pm.start()
        c = cfg.cluster
        judges = "judging in the generators" if cfg.judge.colocate else f"{c.num_judges} judge(s)"
        self.log(f"started {c.num_generators} generator(s), {judges}; model {model_path}; "
                 f"engine output in {self.pm.log_dir}/")
        self.learner = LearnerDriver(ctx, build_trainer(cfg, resume_from or model_path, ctx.buffer, ctx.channel, ctx.run_dir,
                                                        resume_from))
        self.learner.start()
        self.pm.admit(block=True)
        self.ops.state = "running"
        self.log("engines ready")
        if cfg.schedule.takes_turns:
            self._wait_learner_started()

    def _wait_learner_started(self) -> None:
        """Stages taking turns: the loop starts once the learner has loaded too, so its start-up
        (imports, model, optimizer) does not time-slice the cores with the first generation."""
        limit = time.time() + self.cfg.cluster.start_timeout_s
        while not remote.get(self.ctx.channel.state.remote(), "channel.state")["started"]:
            self.learner.check()
            if time.time() > limit:
                raise TimeoutError(f"the learner did not start within cluster.start_timeout_s="
                                   f"{self.cfg.cluster.start_timeout_s:g} s")
            time.sleep(0.2)
        self.log("learner ready")

    def _check_lengths(self, model_path: str) -> None:
        """The prompts this run will use, templated as the engines do (data.on_bad_row decides)."""
        from transformers import AutoTokenizer

        cfg = self.cfg
        if cfg.data.on_bad_row != "error":
            return  # skip: the engine that gets one skips it and counts it (no_pair.prompt_too_long)
        s = cfg.schedule
        used = shuffled(self.records, cfg.data.shuffle_seed)[:s.iterations * s.prompts_per_iteration]
        count = templated_length(AutoTokenizer.from_pretrained(model_path))
        check_prompt_lengths(used, count, cfg.generation.max_new_tokens, cfg.model.max_model_len,
                             cfg.data.source, cfg.data.on_bad_row)

    def _check_score_digits(self, judge_path: str) -> None:
        """Expected-score judging reads the score digits as single tokens; a SentencePiece tokenizer
        (Llama-2, Mistral) splits them. Checked here, in a second, not by every engine at start."""
        from transformers import AutoTokenizer

        from selm_ray.core.judging.scoring import SCORE_TOKENS
        from selm_ray.engines.vllm_engine import single_token_id

        from selm_ray.core.config import ConfigError

        j = self.cfg.judge
        if j.kind == "self" and j.mode == "expected":
            tok = AutoTokenizer.from_pretrained(judge_path)
            try:
                for digit in SCORE_TOKENS:
                    single_token_id(tok, digit, judge_path)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        ctx, cfg, s = self.ctx, self.cfg, self.cfg.schedule
        records, report = self.records, self.report
        n_create = round(s.prompts_per_iteration * cfg.create.mix_ratio) if cfg.create.enabled else 0
        slices = iteration_slices(shuffled(records, cfg.data.shuffle_seed), s.iterations,
                                  s.prompts_per_iteration - n_create)
        if n_create:
            from selm_ray.run.creator import PromptCreator

            self.creator = PromptCreator(ctx, self.pm, [r.messages[-1]["content"] for r in records])
            self.ops.creation_counts = lambda: self.creator.counts
        self.log(f"{report.kept} prompts from {report.source}; schedule {s.mode}, "
                 f"{s.iterations} x {s.prompts_per_iteration} prompts")
        self.evaluator.start()
        if not ctx.resume:  # the starting policy's accuracy: what every iteration is compared with
            self.evaluator.instructions(-1)
        ctx.loop_t0 = time.time()
        ctx.startup_seconds = ctx.loop_t0 - ctx.t0
        done = already_judged(ctx) if ctx.resume else set()
        slices = [[r for r in chunk if r.prompt_id not in done] for chunk in slices]
        if s.mode != "async":
            self._iterations(slices, n_create, done)
        else:
            self._stream([r for chunk in slices for r in chunk], iteration=0)
            self.evaluator.judge_agreement(0)
        return self._finish()

    def _report_instructions(self) -> None:
        """The per-iteration accuracy table, printed and written next to the metrics."""
        from selm_ray.core.evaluation import accuracy_table

        rows = self.evaluator.instruction_evals
        if not rows:
            return
        table = accuracy_table(rows)
        (self.ctx.run_dir / "instruction_accuracy.md").write_text(
            f"# Verifiable-instruction accuracy ({self.cfg.eval.instructions})\n\n{table}\n")
        self.log(f"verifiable-instruction accuracy on {self.cfg.eval.instructions}:\n{table}")

    def _iterations(self, slices: list[list[PromptRecord]], n_create: int, done: set[str]) -> None:
        s = self.cfg.schedule
        for t, chunk in enumerate(slices):
            if t < self.ctx.start_iteration:
                continue
            self.ctx.iteration = t
            if n_create:  # self-instruct with the current policy, then answer those too
                # (on resume, created prompts that already have a pair are not answered again)
                chunk = chunk + [r for r in self.creator.create(t, n_create) if r.prompt_id not in done]
            if not chunk:  # e.g. create.mix_ratio 1.0 and every created prompt filtered out
                self.log(f"WARNING iteration {t + 1}/{s.iterations}: no prompt left to answer; it trains "
                         "only on pairs already in the buffer (none unless resumed)")
            self.log(f"iteration {t + 1}/{s.iterations}: generating with policy v{t}")
            self._stream(chunk, iteration=t)
            if self.ctx.stop_event.is_set():
                break
            self.evaluator.judge_agreement(t)  # the judge of this iteration, before weights move on
            self.ctx.channel.end_generation.remote(t)
            self._wait_for_version(t + 1)
            if t == len(slices) - 1 and not self.ctx.stop_event.is_set():
                self.ctx.train_seconds = time.time() - self.ctx.loop_t0  # the last policy is out
                self.ctx.train_syncs = len(self.ctx.counters.weight_sync_seconds)  # reloads inside it
            self.pm.push_weights()
            self.evaluator.policy_vs_start(t)
            self.evaluator.instructions(t)

    def _finish(self) -> dict[str, Any]:
        remote.get(self.ctx.channel.request_stop.remote(), "channel.request_stop")
        self.ops.state = "finishing"
        self._wait_learner()
        if self.cfg.schedule.mode == "async":  # no iteration boundaries: what the engines serve at the end
            self.evaluator.instructions(0)
        self._report_instructions()
        summary = build_summary(self.ctx, self.pm, self.evaluator, self.learner.learn_seconds,
                                self.creator.counts if self.creator else None)
        self.ops.close()
        self.progress.close()
        if self.creator:
            self.creator.close()
        return summary

    def _batches(self, records: list[PromptRecord]) -> deque:
        n = prompts_per_call(self.cfg, len(records), self.pm.gens.size())
        return deque(records[i:i + n] for i in range(0, len(records), n))

    def _stream(self, records: list[PromptRecord], iteration: int) -> None:
        """Generate and judge ``records``; stages taking turns judge only after all generation."""
        sequential = self.cfg.schedule.takes_turns
        self._held = [] if sequential else None
        self._pump(self._batches(records), {}, iteration)
        if sequential:
            held, self._held, inflight = self._held, None, {}
            for rollouts in held:
                self._dispatch(self.pm.judges, "judge", rollouts, inflight)
            self._pump(deque(), inflight, iteration)

    def _tick(self, iteration: int) -> None:
        """What every wait loop does: surface learner failures and metrics, operate the pools,
        update the progress display."""
        self.learner.check()
        self.ops.tick()
        self.progress.update(iteration)

    def _pump(self, todo: deque, inflight: dict, iteration: int) -> None:
        while (todo or inflight or self._parked) and not self.ctx.stop_event.is_set():
            self.learner.check()
            self.ops.tick()
            for _ in range(len(self._parked)):
                self._dispatch(*self._parked.popleft(), inflight)
            while todo and self.pm.gens.min_inflight() < MAX_INFLIGHT:
                self._submit(self.pm.gens, "generate", todo.popleft(), inflight)
            if not inflight:
                time.sleep(0.2)  # only parked work: wait for a member to come back or be replaced
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                self._collect(ref, inflight.pop(ref), inflight)
            self._kill_overdue(inflight)
            if self.cfg.schedule.mode == "async":
                self.pm.push_weights()
            self.progress.update(iteration)

    def _dispatch(self, pool: Pool, method: str, payload: Any, inflight: dict) -> None:
        """Submit, or park the work while no member of ``pool`` can take it."""
        if pool.active():
            self._submit(pool, method, payload, inflight)
        else:
            self._parked.append((pool, method, payload))

    def _submit(self, pool: Pool, method: str, payload: Any, inflight: dict) -> None:
        member = pool.pick()
        member.start_call()
        ref = getattr(member.actor, method).remote(payload)
        inflight[ref] = (pool, member, method, payload)
        self._sent[ref] = time.time()

    def _kill_overdue(self, inflight: dict) -> None:
        """A work call past cluster.work_timeout_s: its member is alive but stuck (a wedged engine,
        a stopped process). Killing it turns the call into an actor error, which _collect re-sends."""
        now, limit = time.time(), remote.bound("work")
        for ref, sent in list(self._sent.items()):
            if now - sent > limit and ref in inflight:
                pool, member, method, _ = inflight[ref]
                self._sent[ref] = float("inf")  # the error arrives through ray.wait
                if member.probe is None:  # not killed already for another of its calls
                    self.pm.kill_hung(pool, member, method, now - sent)

    def _collect(self, ref: Any, entry: tuple, inflight: dict) -> None:
        pool, member, method, payload = entry
        member.end_call()
        self._sent.pop(ref, None)
        try:
            result = ray.get(ref)
        except RESTARTED as e:
            self.ctx.counters.retries += 1
            self.log(f"{member.name} failed ({type(e).__name__}); re-sending its work")
            # out of dispatch until it answers again (a restarted actor loads the newest weights
            # itself, catch_up) or is replaced; meanwhile its work goes to another member or waits
            self.pm.suspect(member)
            self._dispatch(pool, method, payload, inflight)
            return
        if method == "generate":
            member.tokens += sum(c.num_tokens for r in result for c in r.candidates)
        else:
            member.candidates += sum(len(j.scores) for j in result)
        if method == "generate" and self._held is not None:
            self._held.append(result)
        elif method == "generate":
            self._dispatch(self.pm.judges, "judge", result, inflight)
        else:
            self._add_pairs(payload, result)

    def _add_pairs(self, rollouts: list, judgements: list) -> None:
        c, pairs = self.ctx.counters, []
        for r, j in zip(rollouts, judgements):
            c.candidates += len(j.scores)
            c.judge_failures += j.num_failed
            outcome = build_pair(r, j, self.cfg.judge.min_margin, self.cfg.judge.pair_rule,
                                 self.cfg.judge.tie_break)
            if outcome.pair is None:
                c.no_pair[outcome.reason] = c.no_pair.get(outcome.reason, 0) + 1
            for p in outcome.pairs:
                pairs.append(p)
                c.chosen_scores.append(p.chosen_score)
                c.rejected_scores.append(p.rejected_score)
        self.ops.live.add_pairs(pairs)
        # returns once the pairs are on disk; re-sent if the buffer is restarting (ids dedupe)
        c.pairs += remote.call_with_retry(self.ctx.buffer.add, pairs)
        if pairs and self.ctx.first_pair_seconds is None:
            self.ctx.first_pair_seconds = time.time() - self.ctx.t0
        c.prompts_done += len(rollouts)

    def _wait_for_version(self, version: int) -> None:
        while not self.ctx.stop_event.is_set():
            self._tick(version - 1)
            if remote.get(self.ctx.channel.state.remote(), "channel.state")["version"] >= version:
                return
            time.sleep(0.2)

    def _wait_learner(self) -> None:
        while self.learner.alive:
            self._tick(self.cfg.schedule.iterations - 1)
            self.learner.join(timeout=0.5)
        self.learner.close()

    # -- shutdown ---------------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self.log("stop requested: finishing in-flight work, draining the buffer, checkpointing")
        self.ctx.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
