"""The Study loop: one scheduler, one runtime, one record store. Shared by `rung run` and
the Kubernetes controller, which calls `step()` from its reconciler.

Each step: hand live reports to the scheduler (stopping trials it gives up on), turn
finished segments into observations, then fill free slots with new decisions. Every
decision is recorded before its segment starts, and names are deterministic, so a crash
at any point neither loses nor duplicates a trial: the next loop restores the scheduler
from the records and restarts the segments that were running (from their last sealed
checkpoint, which the trial SDK loads).
"""

from __future__ import annotations

import math
import time
from typing import Callable

from rung.api import Study
from rung.runtime.base import Finished, Outcome, Report, Runtime, SegmentSpec, trial_name
from rung.runtime.records import (COMPLETED, FAILED_STATE, RUNNING, STOPPED, RecordStore, SegmentDoc,
                                  TrialDoc)
from rung.schedulers.base import FAILED, Scheduler
from rung.storage import trial_uri

# Study states (status.json "state")
STUDY_RUNNING, SUCCEEDED, FAILED_STUDY, INTERRUPTED = "running", "succeeded", "failed", "interrupted"


class StudyLoop:
    def __init__(self, study: Study, scheduler: Scheduler, runtime: Runtime, records: RecordStore, *,
                 checkpoint_root: str | None = None, parallelism: int | None = None,
                 gate: Callable[[], str] | None = None,
                 on_segment_end: Callable[[TrialDoc], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        """`gate()`, asked before new segments start, returns "" when they may, else why not
        (e.g. the checkpoint store is unreachable): nothing starts, and the Study waits.
        `on_segment_end(trial)` runs when a segment has ended for good (checkpoint retention)."""
        self.study, self.scheduler, self.runtime, self.records = study, scheduler, runtime, records
        self.checkpoint_root = checkpoint_root or study.spec.checkpoints.uri
        if not self.checkpoint_root:
            raise ValueError("a checkpoint root is needed: set spec.checkpoints.uri or pass checkpoint_root")
        self.parallelism = parallelism or study.spec.limits.parallelism
        self.clock, self.wall = clock, wall
        self.sign = 1.0 if study.minimize else -1.0   # loss = sign * metric, always minimised
        self.trials: dict[int, TrialDoc] = {}
        self.state, self.reason = STUDY_RUNNING, ""
        self.gate, self.held, self.on_segment_end = gate, "", on_segment_end
        self._restored = False
        self._changed = False   # records or state changed since status.json was written
        self._t0 = 0.0
        self._elapsed_before = 0.0

    # ---- driving --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state in (SUCCEEDED, FAILED_STUDY)

    def step(self) -> bool:
        """One round of poll -> tell -> ask -> start. Returns False once the Study is over."""
        if not self._restored:
            self._restore()
        if self.done:
            return False
        self._handle(self.runtime.poll())
        failed = self.failed_trials()
        if failed > self.study.spec.limits.max_failed_trials:
            self._fail_study(failed)
        elif self._may_launch():
            self._launch()
            if not self.running_trials():
                if self.scheduler.finished():
                    self._set_state(SUCCEEDED, "")
                else:  # a scheduler that neither runs nor ends would spin forever
                    self._set_state(FAILED_STUDY, f"algorithm {self.study.spec.algorithm.name!r} has "
                                    "nothing to start but is not finished (a scheduler bug)")
        if self._changed:
            self._save_status()
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
            self._set_state(INTERRUPTED, "")
            self._save_status()

    # ---- views ----------------------------------------------------------------------
    def elapsed(self) -> float:
        """Wall time the Study has run, summed over every `rung run` (or operator) session."""
        return self._elapsed_before + (self.clock() - self._t0 if self._restored else 0.0)

    def running_trials(self) -> list[TrialDoc]:
        return [t for t in self.trials.values() if t.state == RUNNING]

    def failed_trials(self) -> int:
        return sum(t.state == FAILED_STATE for t in self.trials.values())

    # ---- restore ----------------------------------------------------------------------
    def _restore(self) -> None:
        self._restored, self._t0, self._changed = True, self.clock(), True
        docs = self.records.load()
        self.trials = {t.index: t for t in docs}
        self.scheduler.restore([t.to_scheduler() for t in docs])
        status = self.records.load_status()
        self._elapsed_before = float(status.get("elapsed", 0.0))
        if status.get("state") in (SUCCEEDED, FAILED_STUDY):
            self.state, self.reason = status["state"], status.get("reason", "")
            return
        live = self.runtime.running()
        for trial in self.running_trials():
            seg = trial.current
            spec = self._spec(trial)
            if spec.run_name in live:   # still running (a pod that outlived the operator): keep polling it
                if seg.stop_requested:
                    self.runtime.stop(spec.name)   # the stop may not have gone out before the crash
                continue
            if seg.stop_requested:  # it was told to stop; there is nothing left to run
                self._finish_stopped(trial, "stopped by the scheduler")
            else:
                seg.restarts += 1
                self._save(trial)
                self.runtime.start(self._spec(trial))

    # ---- events -----------------------------------------------------------------------
    def _handle(self, events) -> None:
        touched: dict[int, TrialDoc] = {}
        for event in events:
            trial = self._trial_of(event)
            if trial is None:
                continue
            if isinstance(event, Report):
                self._on_report(trial, event)
                touched[trial.index] = trial
            else:
                touched.pop(trial.index, None)   # _on_finished saves it
                self._on_finished(trial, event)
        for trial in touched.values():
            self._save(trial)

    def _trial_of(self, event: Report | Finished) -> TrialDoc | None:
        """The trial an event belongs to, if the event is about the current attempt of its
        current, running segment (an earlier attempt's news is stale)."""
        index = _index_of(event.trial, self.study.name)
        trial = self.trials.get(index) if index is not None else None
        if trial is None or trial.name != event.trial or trial.state != RUNNING:
            return None
        current = event.segment == len(trial.segments) - 1 and event.attempt == trial.current.restarts
        return trial if current else None

    def _on_report(self, trial: TrialDoc, event: Report) -> None:
        seg = trial.current
        seg.metrics.update(event.metrics)
        value = event.metrics.get(self.study.spec.objective.metric)
        if not _is_number(value) or not math.isfinite(value):
            return
        if seg.curve and event.step <= seg.curve[-1][0]:
            return  # a segment restarted from an earlier checkpoint repeats steps: no news
        loss = self.sign * float(value)
        seg.curve.append([float(event.step), loss])
        if not self.scheduler.report(trial.index, float(event.step), loss) and not seg.stop_requested:
            seg.stop_requested = True
            self.runtime.stop(self._spec(trial).name)

    def _on_finished(self, trial: TrialDoc, event: Finished) -> None:
        seg = trial.current
        seg.exit_code = event.exit_code
        if event.outcome == Outcome.LOST:
            seg.losses += 1
            limit = self.study.spec.limits.max_preemptions
            if seg.losses <= limit:
                seg.restarts += 1
                self._save(trial)
                self.runtime.start(self._spec(trial))
                return
            event = Finished(event.trial, event.segment, Outcome.FAILED, event.exit_code, None,
                             f"lost {seg.losses} times, more than limits.maxPreemptions ({limit}): "
                             f"{event.reason}")
        if event.outcome == Outcome.SUCCEEDED:
            value = _objective(event.result, seg.metrics, self.study.spec.objective.metric)
            if value is None:
                metric = self.study.spec.objective.metric
                self._finish_failed(trial, f"exited 0 without reporting the objective metric {metric!r}; "
                                           f"report it, e.g. trial.report(step, {metric}=...)")
            else:
                seg.status, seg.reached = COMPLETED, seg.budget
                loss = self.sign * value
                seg.loss = loss if math.isfinite(loss) else None
                seg.reason = "" if math.isfinite(loss) else f"the objective was {value}"
                self._close(trial)
                self.scheduler.tell(trial.index, seg.budget, loss)
                self._save(trial)
        elif event.outcome == Outcome.STOPPED:
            self._finish_stopped(trial, event.reason or "stopped by the scheduler")
        else:
            error = event.result.get("error") if isinstance(event.result, dict) else None
            self._finish_failed(trial, event.reason or str(error or "failed"))

    def _finish_failed(self, trial: TrialDoc, reason: str) -> None:
        seg = trial.current
        seg.status, seg.loss, seg.reached, seg.reason = FAILED_STATE, None, seg.budget, reason
        self._close(trial)
        self.scheduler.tell_failed(trial.index, seg.budget)
        self._save(trial)

    def _finish_stopped(self, trial: TrialDoc, reason: str, tell: bool = True) -> None:
        seg = trial.current
        seg.status, seg.reason = STOPPED, reason
        seg.loss = seg.curve[-1][1] if seg.curve else None
        seg.reached = seg.last_step if seg.curve else seg.budget
        self._close(trial)
        if tell:
            self.scheduler.tell(trial.index, seg.reached, FAILED if seg.loss is None else seg.loss)
        self._save(trial)

    def _close(self, trial: TrialDoc) -> None:
        seg = trial.current
        seg.ended, seg.elapsed = self.wall(), self.elapsed()
        if self.on_segment_end:
            self.on_segment_end(trial)

    # ---- decisions --------------------------------------------------------------------
    def _may_launch(self) -> bool:
        if self.gate is None or len(self.running_trials()) >= self.parallelism:
            return True
        held = self.gate()
        if held != self.held:
            self.held, self._changed = held, True
        return not held

    def _launch(self) -> None:
        while len(self.running_trials()) < self.parallelism:
            decision = self.scheduler.ask()
            if decision is None:
                return
            trial = self.trials.get(decision.trial)
            if trial is None:
                trial = TrialDoc(decision.trial, trial_name(self.study.name, decision.trial), decision.config)
                self.trials[trial.index] = trial
            trial.segments.append(SegmentDoc(decision.budget, decision.resume_from, started=self.wall()))
            self._save(trial)   # recorded first: a crash now restarts it, never loses it
            self.runtime.start(self._spec(trial))

    def _fail_study(self, failed: int) -> None:
        last = max((t for t in self.trials.values() if t.state == FAILED_STATE),
                   key=lambda t: t.current.ended or 0.0)
        limit = self.study.spec.limits.max_failed_trials
        self._set_state(FAILED_STUDY, f"{failed} trials failed, more than limits.maxFailedTrials ({limit}); "
                                      f"last: {last.name}: {last.current.reason}")
        for trial in self.running_trials():
            self.runtime.stop(self._spec(trial).name)
            self._finish_stopped(trial, "the Study failed", tell=False)

    def _spec(self, trial: TrialDoc) -> SegmentSpec:
        seg, spec, meta = trial.current, self.study.spec, self.study.metadata
        return SegmentSpec(
            study=meta.name, namespace=meta.namespace, trial=trial.name, index=trial.index,
            segment=len(trial.segments) - 1, params=trial.config, budget=seg.budget,
            resume_from=seg.resume_from,
            checkpoint_uri=trial_uri(self.checkpoint_root, meta.namespace, meta.name, trial.name),
            command=list(spec.trial.command), env=dict(spec.trial.env), attempt=seg.restarts)

    def _save(self, trial: TrialDoc) -> None:
        self.records.save(trial)
        self._changed = True

    def _set_state(self, state: str, reason: str) -> None:
        self.state, self.reason, self._changed = state, reason, True

    def _save_status(self) -> None:
        self._changed = False
        self.records.save_status({"state": self.state, "reason": self.reason, "held": self.held,
                                  "elapsed": self.elapsed(),
                                  "updated": self.wall()})


def _index_of(trial: str, study: str) -> int | None:
    prefix, _, index = trial.rpartition("-")
    return int(index) if prefix == study and index.isdigit() else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _objective(result: dict | None, reported: dict, metric: str) -> float | None:
    """The objective from the result file, else from the last live report that had it."""
    for metrics in ((result or {}).get("metrics") if isinstance(result, dict) else None, reported):
        if isinstance(metrics, dict) and _is_number(metrics.get(metric)):
            return float(metrics[metric])
    return None
