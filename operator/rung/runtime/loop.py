"""The Study loop: one scheduler, one runtime, one record store. Shared by `rung run` and
the Kubernetes operator, which steps it whenever something about the Study changes.

Each step: hand live reports to the scheduler (stopping trials it gives up on), take in
ended segments, fill free slots with new decisions, record the ends and the decisions in
one round of writes, make sure the current attempt of every running segment exists, and
release the ended attempts. The records are the truth and everything else is derived
from them: a decision is recorded before its segment starts; an ended attempt is released
only after its result is recorded; and when any call fails, the step stops and the next
one rebuilds the scheduler and the trials from the store. So a crash or a failed write at
any point neither loses nor duplicates a result, and never leaves a trial stuck.
"""

from __future__ import annotations

import enum
import math
import time
from typing import TYPE_CHECKING, Callable, Sequence

from rung.api import Study
from rung.records import DIVERGED, RecordStore, SegmentRecord, SegmentStatus, TrialRecord
from rung.runtime.base import (Ended, Outcome, Refused, Report, Runtime, SegmentSpec, run_name, segment_name,
                               trial_name)
from rung.schedulers import make_scheduler
from rung.schedulers.base import FAILED_LOSS, Scheduler
from rung.storage import trial_uri

if TYPE_CHECKING:
    from rung.sizing import Choice


NO_RESULT = "no trial produced a finite"   # a finished Study without a result starts its reason so
STUDY_FAILED = "the Study failed"          # why its running trials were stopped


class StudyState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"   # `rung run` stopped by the user; resumable


# Where a hold comes from (keys of StudyLoop.holds): the checkpoint store, the runtime
# (pods refused), or the API itself (set by the operator when a step fails).
HOLD_STORE, HOLD_RUNTIME, HOLD_API = "CheckpointStore", "Runtime", "Api"


class StudyLoop:
    def __init__(self, study: Study, runtime: Runtime, records: RecordStore, *,
                 checkpoint_root: str | None = None, run_id: str | None = None, parallelism: int | None = None,
                 gate: Callable[[bool], str] | None = None,
                 sizer: Callable[[list[TrialRecord]], "Choice"] | None = None,
                 priors: Sequence = (),
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        """`gate(fresh)`, asked before new segments start, returns "" when they may, else why
        not (e.g. the checkpoint store is unreachable): nothing starts, and the Study waits.
        `fresh` asks it to look again now (a trial has just met a store fault).
        `parallelism` overrides spec.limits.parallelism (`rung run --parallel`).
        `run_id` names this run in checkpoint paths (default: the Study's uid).
        `sizer(running)`, asked before each new segment with the trials running then, says
        how many GPUs it gets (rung.sizing Choice); while it says wait, no new segment starts.
        `priors` seed the sampler (spec.warmStart: rung.warm_priors.priors_for)."""
        self.runtime, self.records = runtime, records
        self.run_id = run_id or study.uid
        if not self.run_id:
            raise ValueError("a run id is needed: pass run_id, or a Study read from the API server")
        self.checkpoint_root = checkpoint_root or study.spec.checkpoints.uri
        if not self.checkpoint_root:
            raise ValueError("a checkpoint root is needed: set spec.checkpoints.uri or pass checkpoint_root")
        self._parallelism = parallelism
        self.clock, self.wall, self.gate, self.sizer, self.priors = clock, wall, gate, sizer, priors
        self.update(study)
        self.scheduler: Scheduler | None = None
        self.trials: dict[int, TrialRecord] = {}
        self._live: dict[int, TrialRecord] = {}   # a superset of the running trials (running_trials)
        self._ended: dict[int, TrialRecord] = {}   # take_ended
        self._failed = 0
        self.state, self.reason = StudyState.RUNNING, ""
        self.holds: dict[str, dict] = {}  # HOLD_* -> {"reason", "message"}: why new work waits
        self._stale = True                # rebuild from the records before the next decision
        self._next_index = 0              # every trial number below it has (or had) its record
        self._changed = False             # status changed since it was last saved
        self._stops_sent: set[str] = set()   # attempts this loop asked the runtime to stop
        self._store_fault = False            # a trial met a store fault since the gate last looked
        self.waits = ""                      # why no new segment could start (no GPUs), if so
        self._fresh: set[str] = set()        # attempts this loop recorded and has not started yet
        self._unsaved: dict[int, TrialRecord] = {}   # changed records, written before anything acts on them
        self._t0: float | None = None
        self._elapsed_before = 0.0

    def update(self, study: Study) -> None:
        """A new generation of the spec (limits, the trial template): it applies from the
        next step, whose decisions are rebuilt from the records under it."""
        self.study = study
        self.parallelism = self._parallelism or study.spec.limits.parallelism
        # loss = sign * metric, always minimised; one sign per objective
        self.signs = [1.0 if o.goal == "minimize" else -1.0 for o in study.objectives]
        self.sign = self.signs[0]
        self._stale = True

    # ---- driving --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state in (StudyState.SUCCEEDED, StudyState.FAILED)

    @property
    def status_pending(self) -> bool:
        """The status changed since it was last written (the store put the write off)."""
        return self._changed

    def step(self) -> bool:
        """One round of poll -> record -> decide -> start. Returns False once the Study is
        over. Any exception leaves the records as they were written so far; the next step
        starts again from them."""
        try:
            restored = self._stale or self.records.changed()
            if restored:
                self._restore()
            ended = []
            if not self.done:
                ended = self._handle(self.runtime.poll(replay=restored))
                failed = self.failed_trials()
                if failed > self.study.spec.limits.max_failed_trials:
                    self._fail_study(failed)
                else:
                    if self._may_launch():
                        self._launch()
                    self._start_missing()
                    self._end_if_finished()
            self._flush()
            # Only now, with their ends recorded (or of no use: news of an attempt that is
            # over, or of a trial that is gone), may the runtime forget the attempts. After
            # the next segments have started: acknowledging is off the path to them.
            self.runtime.release_all(ended)
            self._stops_sent.difference_update(ended)
            if self._changed:
                self._save_status()
        except BaseException:
            self._stale, self._unsaved = True, {}
            raise
        return not self.done

    def run(self, interval: float = 0.1, on_step: Callable[["StudyLoop"], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep) -> str:
        """Step until the Study ends (or `should_stop()`: then leave it resumable). Returns the state."""
        while not should_stop():
            more = self.step()
            if on_step:
                on_step(self)
            if not more:
                return self.state
            sleep(interval)
        self.interrupt()
        return self.state

    def interrupt(self) -> None:
        """Stop everything but leave running segments recorded as running: the next loop restarts them."""
        self.runtime.close()
        if not self.done:
            self._set_state(StudyState.INTERRUPTED, "")
            self._save_status()

    # ---- views ----------------------------------------------------------------------
    def elapsed(self) -> float:
        """Wall time the Study has run, summed over every `rung run` (or operator) session."""
        return self._elapsed_before + (self.clock() - self._t0 if self._t0 is not None else 0.0)

    def running_trials(self) -> list[TrialRecord]:
        # Only trials given a segment since the restore can be running: a step's views cost
        # O(running), not O(trials), and the ones that have ended drop out here.
        self._live = {i: t for i, t in self._live.items() if t.state == SegmentStatus.RUNNING}
        return list(self._live.values())

    def failed_trials(self) -> int:
        return self._failed

    def take_ended(self) -> list[TrialRecord]:
        """The trials whose segments ended since the last call (every trial after a restore)."""
        ended, self._ended = list(self._ended.values()), {}
        return ended

    def status(self) -> dict:
        return {"state": self.state, "reason": self.reason, "holds": dict(self.holds), "waits": self.waits,
                "elapsed": self.elapsed(), "next_index": self._next_index, "updated": self.wall()}

    # ---- restore ----------------------------------------------------------------------
    def _restore(self) -> None:
        """Rebuild the trials and the scheduler from the records (first step, or after a
        failed call, an outside change or a new spec)."""
        records = self.records.load()
        status = self.records.load_status()
        if self._t0 is None:
            self._t0, self._elapsed_before = self.clock(), float(status.get("elapsed", 0.0))
        self._next_index = max(self._next_index, int(status.get("next_index", 0)))
        self.scheduler = make_scheduler(self.study, self.priors).restore(records, self._next_index)
        self._next_index = self.scheduler.next_number()
        self.trials = {t.index: t for t in records}
        self._failed = sum(t.state == SegmentStatus.FAILED for t in records)
        self._live = {t.index: t for t in records if t.state == SegmentStatus.RUNNING}
        self._ended = dict(self.trials)
        self._stale, self._changed = False, True
        finished = status.get("state") == StudyState.SUCCEEDED and self.scheduler.finished()
        if finished or status.get("state") == StudyState.FAILED:   # a raised maxTrials reopens a success
            self.state, self.reason = StudyState(status["state"]), status.get("reason", "")
            return
        self.state, self.reason = StudyState.RUNNING, ""
        for trial in self.trials.values():
            if not trial.segments:   # created, but its first segment was never recorded
                trial.segments.append(SegmentRecord(self.scheduler.running[trial.index], started=self.wall()))
                self._save(trial)
                self._fresh.add(_run_name(trial))

    # ---- events -----------------------------------------------------------------------
    def _handle(self, events) -> list[str]:
        """Take in the reports and ends; returns the attempts that ended. Their results are
        written with the step's decisions, in one round of writes (_flush)."""
        ended = []
        for event in events:
            trial = self._trial_of(event)
            if isinstance(event, Report):
                if trial is not None:
                    self._on_report(trial, event)
                continue
            if trial is not None:
                self._on_ended(trial, event)
            ended.append(event.run_name)
        return ended

    def _trial_of(self, event: Report | Ended) -> TrialRecord | None:
        """The trial an event belongs to, if the event is about the current attempt of its
        current, running segment (an earlier attempt's news is stale)."""
        index = _index_of(event.trial, self.study.name)
        trial = self.trials.get(index) if index is not None else None
        if trial is None or trial.name != event.trial or trial.state != SegmentStatus.RUNNING:
            return None
        current = event.segment == len(trial.segments) - 1 and event.attempt == trial.current.restarts
        return trial if current else None

    def _on_report(self, trial: TrialRecord, event: Report) -> None:
        """A live report. It is recorded with the segment's end (a restarted segment reports
        again), except when the scheduler stops the trial: that is recorded at once."""
        seg = trial.current
        seg.metrics.update(event.metrics)
        value = event.metrics.get(self.study.objective.metric)
        if not _is_number(value) or not math.isfinite(value):
            return
        if seg.curve and event.step <= seg.curve[-1][0]:
            return  # a segment restarted from an earlier checkpoint repeats steps: no news
        loss = self.sign * float(value)
        seg.curve.append([float(event.step), loss])
        if not self.scheduler.report(trial.index, float(event.step), loss) and not seg.stop_requested:
            seg.stop_requested = True
            self._save(trial)   # recorded first: a restarted loop must not run it again
            self._stop(trial)

    def _on_ended(self, trial: TrialRecord, event: Ended) -> None:
        seg = trial.current
        seg.exit_code = event.exit_code
        self._adopt_result(trial, event.result)
        if (fault := _store_fault(event)) is not None:
            # Not the trial's fault: like a lost pod, it runs again (within maxPreemptions),
            # and with a gate, nothing starts until the store answers again.
            event = Ended(event.trial, event.segment, Outcome.LOST, event.exit_code, event.result, fault,
                          event.attempt)
            if self.gate is not None:
                self.hold(HOLD_STORE, "CheckpointStoreUnavailable", fault)
                self._store_fault = True
        if event.outcome == Outcome.LOST:
            seg.losses += 1
            limit = self.study.spec.limits.max_preemptions
            if seg.losses <= limit:
                self._next_attempt(trial)   # _start_missing starts it
                return
            event = Ended(event.trial, event.segment, Outcome.FAILED, event.exit_code, None,
                          f"lost {seg.losses} times, more than limits.maxPreemptions ({limit}): "
                          f"{event.reason}", event.attempt)
        if event.outcome == Outcome.SUCCEEDED:
            values = [_objective(event.result, seg.metrics, o.metric) for o in self.study.objectives]
            missing = next((o.metric for o, v in zip(self.study.objectives, values) if v is None), None)
            wild = next(((o.metric, v) for o, v in zip(self.study.objectives, values)
                         if v is not None and not math.isfinite(v)), None)
            if missing is not None:
                self._finish_failed(trial, f"exited 0 without reporting the objective metric {missing!r}; "
                                           f"report it, e.g. trial.report(step, {missing}=...)")
            elif wild is not None:   # worst for the scheduler; a visible outcome in reports
                seg.status, seg.reached, seg.loss = SegmentStatus.COMPLETED, seg.budget, None
                seg.reason = f"{DIVERGED}: the objective {wild[0]} was {wild[1]}"
                self._close(trial)
                self._save(trial)
                self.scheduler.tell(trial.index, seg.budget, FAILED_LOSS)
            elif (short := _short_of(seg, event.result)) is not None:   # credited with the step it reached
                self._finish_stopped(trial, f"ended at step {short:g}, short of its budget {seg.budget:g}")
            else:
                losses = [sign * v for sign, v in zip(self.signs, values)]
                seg.status, seg.reached, seg.loss, seg.reason = SegmentStatus.COMPLETED, seg.budget, losses[0], ""
                seg.objectives = losses if self.study.multi_objective else None
                self._close(trial)
                self._save(trial)
                self.scheduler.tell(trial.index, seg.budget, seg.loss, seg.objectives)
        elif event.outcome == Outcome.STOPPED:
            self._finish_stopped(trial, event.reason or "stopped by the scheduler")
        else:
            error = event.result.get("error") if isinstance(event.result, dict) else None
            self._finish_failed(trial, event.reason or str(error or "failed"))

    def _adopt_result(self, trial: TrialRecord, result: dict | None) -> None:
        """The result file's final metrics, and its thinned curve where live reports left a
        gap (on a cluster they are read only for stop-based schedulers): the scheduler hears
        of those points as a restored one would."""
        seg = trial.current
        if not isinstance(result, dict):
            return
        if isinstance(result.get("metrics"), dict):
            seg.metrics.update({k: v for k, v in result["metrics"].items() if _is_number(v)})
        last = seg.last_step if seg.curve else -math.inf
        for point in result.get("curve") if isinstance(result.get("curve"), list) else ():
            if (isinstance(point, list) and len(point) == 2 and all(_is_number(x) and math.isfinite(x) for x in point)
                    and point[0] > last):
                seg.curve.append([float(point[0]), self.sign * float(point[1])])
                self.scheduler.report(trial.index, *seg.curve[-1])
                last = point[0]

    def _finish_failed(self, trial: TrialRecord, reason: str) -> None:
        seg = trial.current
        seg.status, seg.loss, seg.reached, seg.reason = SegmentStatus.FAILED, None, seg.budget, reason
        self._failed += 1
        self._close(trial)
        self._save(trial)
        self.scheduler.tell_failed(trial.index, seg.budget)

    def _finish_stopped(self, trial: TrialRecord, reason: str, tell: bool = True) -> None:
        seg = trial.current
        seg.status, seg.reason = SegmentStatus.STOPPED, reason
        seg.loss = seg.curve[-1][1] if seg.curve else None
        seg.reached = seg.last_step if seg.curve else seg.budget
        self._close(trial)
        self._save(trial)
        if tell:
            self.scheduler.tell(trial.index, seg.reached, FAILED_LOSS if seg.loss is None else seg.loss)

    def _close(self, trial: TrialRecord) -> None:
        seg = trial.current
        seg.ended, seg.elapsed = self.wall(), self.elapsed()
        self._ended[trial.index] = trial

    # ---- decisions --------------------------------------------------------------------
    def _may_launch(self) -> bool:
        if self.gate is not None and (len(self.running_trials()) < self.parallelism or HOLD_STORE in self.holds):
            self.hold(HOLD_STORE, "CheckpointStoreUnavailable", self.gate(self._store_fault))
            self._store_fault = False
        return not self.holds

    def _launch(self) -> None:
        running = self.running_trials()   # listed once: a step's work should not grow with trials x launches
        while len(running) < self.parallelism:
            size = self.sizer(running) if self.sizer is not None else None
            waits = size.reason if size is not None and size.waits else ""
            self._changed |= waits != self.waits
            self.waits = waits
            if self.waits:
                return   # no GPUs for it now: segments that end (here or in other Studies) free some
            decision = self.scheduler.ask()
            if decision is None:
                return
            trial = self.trials.get(decision.trial)
            if trial is None:
                trial = TrialRecord(decision.trial, trial_name(self.study.name, decision.trial), decision.config,
                                    parent=decision.parent, replaces=decision.replaces)
                self.trials[trial.index] = trial
            segment = SegmentRecord(decision.budget, decision.resume_from, started=self.wall())
            if size is not None:
                segment.gpus, segment.efficiency, segment.sizing = size.n, size.efficiency, size.reason
            trial.segments.append(segment)
            running.append(trial)
            self._live[trial.index] = trial
            self._save(trial)   # recorded first: _start_missing starts it
            self._fresh.add(_run_name(trial))

    def _start_missing(self) -> None:
        """Make sure the current attempt of every running segment exists, and that the ones
        the scheduler stopped are stopping. An attempt that is neither running nor one this
        loop has just recorded may have run before (a crash since, its pod gone): it is
        never run again under the same name; the segment goes on as its next attempt."""
        live = self.runtime.running()
        missing = []
        for trial in self.running_trials():
            run = _run_name(trial)
            if run in live:
                if trial.current.stop_requested:
                    self._stop(trial)   # the stop may not have gone out before a crash
                continue
            if trial.current.stop_requested:   # it was told to stop, and it has
                self._finish_stopped(trial, "stopped by the scheduler")
                continue
            if HOLD_STORE in self.holds:
                continue   # it would only meet the store's fault again
            if run not in self._fresh:
                if not self.runtime.gone(run):
                    continue   # it exists after all; its news is on the way
                self._next_attempt(trial)
            missing.append(self._spec(trial))
        if not missing:
            self.hold(HOLD_RUNTIME, "", "")
            return
        self._flush()   # recorded first: a restarted loop knows of every attempt it started
        refused = None
        try:
            self.runtime.start_all(missing)
        except Refused as e:
            refused = e
        live = self.runtime.running()
        self._fresh.difference_update(s.run_name for s in missing if s.run_name in live)
        self.hold(HOLD_RUNTIME, *((refused.cause, refused.line()) if refused else ("", "")))

    def _next_attempt(self, trial: TrialRecord) -> None:
        trial.current.restarts += 1
        self._save(trial)
        self._fresh.add(_run_name(trial))

    def _end_if_finished(self) -> None:
        if self.running_trials():
            return
        if self.scheduler.finished():
            if any(math.isfinite(o.loss) for o in self.scheduler.observations):
                self._set_state(StudyState.SUCCEEDED, "")
            else:
                self._set_state(StudyState.FAILED, self._no_result_reason())
        elif not self.holds and not self.waits:   # a scheduler that neither runs nor ends would spin forever
            self._set_state(StudyState.FAILED, f"algorithm {self.study.spec.algorithm.name!r} has "
                            "nothing to start but is not finished (a scheduler bug)")

    def _no_result_reason(self) -> str:
        failed = [t for t in self.trials.values()
                  if t.state == SegmentStatus.FAILED or t.current.reason.startswith(DIVERGED)]
        reason = f"{NO_RESULT} {self.study.objective.metric}"
        if failed:
            last = max(failed, key=lambda t: t.current.ended or 0.0)
            reason += (f" ({len(failed)} of {len(self.trials)} failed or diverged; "
                       f"last: {last.name}: {last.current.reason})")
        return reason

    def _fail_study(self, failed: int) -> None:
        last = max((t for t in self.trials.values() if t.state == SegmentStatus.FAILED),
                   key=lambda t: t.current.ended or 0.0)
        limit = self.study.spec.limits.max_failed_trials
        reason = (f"{failed} trials failed, more than limits.maxFailedTrials ({limit}); "
                  f"last: {last.name}: {last.current.reason}")
        for trial in self.running_trials():
            self._finish_stopped(trial, STUDY_FAILED, tell=False)
            self._stop(trial)
        self._set_state(StudyState.FAILED, reason)

    def _stop(self, trial: TrialRecord) -> None:
        run = _run_name(trial)
        if run not in self._stops_sent:
            self._flush()   # why it stops is recorded first
            self.runtime.stop(segment_name(trial.name, len(trial.segments) - 1))
            self._stops_sent.add(run)

    def _spec(self, trial: TrialRecord) -> SegmentSpec:
        seg, spec, meta = trial.current, self.study.spec, self.study.metadata
        parent = self.trials.get(trial.parent) if trial.parent is not None and len(trial.segments) == 1 else None
        return SegmentSpec(
            study=meta.name, namespace=meta.namespace, trial=trial.name, index=trial.index,
            segment=len(trial.segments) - 1, params=trial.config, budget=seg.budget,
            resume_from=seg.resume_from,
            checkpoint_uri=self._checkpoint_uri(trial),
            command=list(spec.trial.command), env=dict(spec.trial.env), attempt=seg.restarts,
            image=spec.trial.image, resources=dict(spec.trial.resources), timeout=spec.trial.timeout_seconds,
            objective=self.study.objective.metric, goal=self.study.objective.goal,
            keep_best=None if self.scheduler.copies_checkpoints else spec.checkpoints.keep_best,
            gpus=seg.gpus, gpu_resources=dict(spec.trial.gpus.per_gpu) if spec.trial.gpus else {},
            privileged=spec.trial.privileged,
            host_network=spec.trial.host_network,
            parent_uri=self._checkpoint_uri(parent) if parent else None, parent_params=parent.config if parent else None)

    def _checkpoint_uri(self, trial: TrialRecord) -> str:
        meta = self.study.metadata
        return trial_uri(self.checkpoint_root, meta.namespace, meta.name, self.run_id, trial.name)

    def _save(self, trial: TrialRecord) -> None:
        """Mark the record changed; `_flush` writes every changed one (at once, where the
        store can) before the runtime or the status acts on them."""
        self._unsaved[trial.index] = trial
        self._changed = True

    def _flush(self) -> None:
        if self._unsaved:
            trials = list(self._unsaved.values())
            self.records.save_all(trials)
            self._unsaved = {}
            # Every decision so far is recorded. A failed write leaves the bound where it
            # was, so a number whose create failed, under one that went through, is free.
            self._next_index = self.scheduler.next_number()

    def hold(self, source: str, reason: str, message: str) -> None:
        """Hold new work back for `reason` (CamelCase) with a one-line `message`; an empty
        message lifts the hold from that source."""
        held = {"reason": reason, "message": message} if message else None
        if self.holds.get(source) != held:
            if held:
                self.holds[source] = held
            else:
                self.holds.pop(source, None)
            self._changed = True

    def _set_state(self, state: StudyState, reason: str) -> None:
        self.state, self.reason, self._changed = state, reason, True

    def _save_status(self) -> None:
        self._flush()
        self._changed = self.records.save_status(self.status()) is False


def retry_failed(records: RecordStore) -> int:
    """Run every failed trial's last segment again (and those stopped only because the
    Study failed), as its next attempt, and reopen the Study; every other result stays
    as it is. Returns how many trials run again."""
    failed = [t for t in records.load() if t.state == SegmentStatus.FAILED
              or (t.state == SegmentStatus.STOPPED and t.current.reason == STUDY_FAILED)]
    for trial in failed:
        old = trial.current
        # The attempt that failed is not live, so the next loop starts the segment's next one.
        trial.segments[-1] = SegmentRecord(old.budget, old.resume_from, started=old.started, restarts=old.restarts)
        records.save(trial)
    status = records.load_status()
    if status.get("state") == StudyState.FAILED:
        records.save_status({**status, "state": StudyState.RUNNING, "reason": ""})
    return len(failed)


def _run_name(trial: TrialRecord) -> str:
    """The run name of the trial's current attempt (SegmentSpec.run_name, without building the spec)."""
    return run_name(segment_name(trial.name, len(trial.segments) - 1), trial.current.restarts)


def _index_of(trial: str, study: str) -> int | None:
    prefix, _, index = trial.rpartition("-")
    return int(index) if prefix == study and index.isdigit() else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


STORE_FAULT = "StoreUnavailable: "   # how the trial SDK records a checkpoint store error


def _store_fault(event: Ended) -> str | None:
    """The store's one-line error when a segment failed on it (not on its own code)."""
    error = event.result.get("error") if isinstance(event.result, dict) else None
    if event.outcome == Outcome.FAILED and isinstance(error, str) and error.startswith(STORE_FAULT):
        return error[len(STORE_FAULT):]
    return None


def _short_of(seg: SegmentRecord, result: dict | None) -> float | None:
    """The last step of a segment that ended before its budget, else None. The result
    file's step is the last one reported; live reports may have been missed. Whole steps
    count as reaching a fractional budget (11 of 11.1)."""
    step = result.get("step") if isinstance(result, dict) else None
    step = float(step) if _is_number(step) and math.isfinite(step) else seg.last_step
    return step if step is not None and step < math.floor(seg.budget + 1e-9) else None


def _objective(result: dict | None, reported: dict, metric: str) -> float | None:
    """The objective from the result file, else from the last live report that had it."""
    for metrics in ((result or {}).get("metrics") if isinstance(result, dict) else None, reported):
        if isinstance(metrics, dict) and _is_number(metrics.get(metric)):
            return float(metrics[metric])
    return None
