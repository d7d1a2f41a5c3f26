"""The Study loop driven by an in-memory runtime: parallelism, failures, stop decisions,
and restarts from records that neither lose nor duplicate trials."""

import math

import pytest

from rung.api import parse_study
from rung.errors import InputError
from rung.records import MemoryRecords
from rung.runtime.base import Ended, Outcome, Report, Runtime
from rung.runtime.loop import StudyLoop, StudyState
from rung.schedulers import make_scheduler

SUCCEEDED, FAILED_STUDY, INTERRUPTED = StudyState.SUCCEEDED, StudyState.FAILED, StudyState.INTERRUPTED

pytestmark = pytest.mark.unit


def study(algorithm="random", max_trials=8, parallelism=2, max_failed=3, bmin=1, bmax=9, goal="minimize",
          metric="loss", **settings):
    return parse_study({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": "s", "uid": "u1"},
        "spec": {
            "objective": {"metric": metric, "goal": goal},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1},
                            "y": {"type": "float", "low": 0, "high": 1}},
            "algorithm": {"name": algorithm, "seed": 5, "settings": settings},
            "budget": {"min": bmin, "max": bmax},
            "limits": {"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": max_failed,
                       "maxPreemptions": 2},
            "trial": {"command": ["train"]},
            "checkpoints": {"uri": "file:///ckpt"},
        }})


def quality(config, step):
    """Deterministic: ranks configs the same at every step, improves with steps."""
    return (config["x"] - 0.3) ** 2 + (config["y"] - 0.6) ** 2 + 1.0 / (1.0 + step)


class FakeRuntime(Runtime):
    """Each live segment trains one step per poll (a Report), then finishes.

    `ending(spec)` may return an Outcome to end a segment at its first poll instead
    (FAILED, LOST, or SUCCEEDED with no metric). Ended events come back until released."""

    def __init__(self, ending=lambda spec: None, metric="loss", sign=1.0):
        self.ending, self.metric, self.sign = ending, metric, sign
        self.live, self.step_of, self.stopping, self.ended = {}, {}, set(), {}
        self.started, self.stopped, self.max_live = [], [], 0

    def start(self, spec):
        assert spec.name not in self.live, f"{spec.name} started twice"
        assert spec.run_name not in self.ended, f"{spec.run_name} started again before it was released"
        self.live[spec.name] = spec
        self.step_of[spec.name] = spec.resume_from or 0
        self.started.append(spec)
        self.max_live = max(self.max_live, len(self.live))

    def poll(self, replay=False):
        events = list(self.ended.values())
        for name, spec in list(self.live.items()):
            if name in self.stopping:
                events.append(self._end(spec, Outcome.STOPPED))
                continue
            ending = self.ending(spec)
            if ending is not None:
                events.append(self._end(spec, ending, None if ending != Outcome.FAILED else 1,
                                        reason="boom" if ending != Outcome.SUCCEEDED else ""))
                continue
            step = self.step_of[name] = self.step_of[name] + 1
            value = self.sign * quality(spec.params, step)
            events.append(Report(spec.trial, spec.segment, step, {self.metric: value}, spec.attempt))
            if step >= spec.budget:
                events.append(self._end(spec, Outcome.SUCCEEDED, 0, {"step": step, "metrics": {self.metric: value}}))
        return events

    def _end(self, spec, outcome, code=0, result=None, reason=""):
        del self.live[spec.name]
        self.stopping.discard(spec.name)
        self.ended[spec.run_name] = Ended(spec.trial, spec.segment, outcome, code, result, reason, spec.attempt)
        return self.ended[spec.run_name]

    def release(self, run):
        self.ended.pop(run, None)

    def stop(self, name):
        if name in self.live:
            self.stopped.append(name)
            self.stopping.add(name)

    def running(self):
        return {spec.run_name for spec in self.live.values()} | set(self.ended)

    def close(self):
        self.live.clear()


def make_loop(st, runtime, records=None, **kw):
    return StudyLoop(st, runtime, records if records is not None else MemoryRecords(), **kw)


def drive(loop, max_steps=10_000):
    for _ in range(max_steps):
        if not loop.step():
            return loop.state
    raise AssertionError("the loop did not end")


def trials_of(records):
    return {t.index: t for t in records.load()}


def test_parallelism_is_respected_and_every_trial_completes():
    st = study(max_trials=7, parallelism=3)
    runtime, records = FakeRuntime(), MemoryRecords()
    assert drive(make_loop(st, runtime, records)) == SUCCEEDED
    assert runtime.max_live == 3
    trials = trials_of(records)
    assert sorted(trials) == list(range(7))
    assert all(t.state == "completed" and t.name == f"s-{t.index}" for t in trials.values())
    assert [s.name for s in runtime.started] == [f"s-{i}-s0" for i in range(7)]
    assert records.status["state"] == SUCCEEDED


def test_parallel_override_and_segment_spec_contents():
    st = study(max_trials=4, parallelism=1)
    runtime = FakeRuntime()
    drive(make_loop(st, runtime, parallelism=2))
    assert runtime.max_live == 2
    spec = runtime.started[0]
    assert spec.checkpoint_uri == "file:///ckpt/default/s/u1/s-0"
    assert spec.command == ["train"] and spec.budget == 9 and spec.segment == 0


def test_failures_are_counted_and_tolerated_up_to_the_limit():
    st = study(max_trials=6, max_failed=2)
    runtime = FakeRuntime(ending=lambda spec: Outcome.FAILED if spec.index in (1, 4) else None)
    records = MemoryRecords()
    loop = make_loop(st, runtime, records)
    assert drive(loop) == SUCCEEDED
    trials = trials_of(records)
    assert [i for i, t in trials.items() if t.state == "failed"] == [1, 4]
    assert trials[1].current.reason == "boom" and trials[1].current.exit_code == 1
    assert loop.failed_trials() == 2
    assert math.isinf(loop.scheduler.observations[[o.trial for o in loop.scheduler.observations].index(1)].loss)


def test_a_study_without_any_finite_result_fails_with_the_reason():
    st = study(max_trials=4, max_failed=100)
    records = MemoryRecords()
    assert drive(make_loop(st, FakeRuntime(ending=lambda spec: Outcome.FAILED), records)) == FAILED_STUDY
    assert records.status["reason"].startswith("no trial produced a finite loss (4 of 4 failed or diverged; last: s-")
    assert records.status["reason"].endswith(": boom)")


def test_too_many_failures_fail_the_study_and_stop_running_trials():
    st = study(max_trials=20, parallelism=3, max_failed=1)
    # trial 0 keeps running (budget 9 takes 9 polls); trials 1 and 2 fail at once
    runtime = FakeRuntime(ending=lambda spec: Outcome.FAILED if spec.index in (1, 2) else None)
    records = MemoryRecords()
    assert drive(make_loop(st, runtime, records)) == FAILED_STUDY
    assert "more than limits.maxFailedTrials (1)" in records.status["reason"]
    trials = trials_of(records)
    assert trials[0].state == "stopped" and trials[0].current.reason == "the Study failed"
    assert "s-0-s0" in runtime.stopped
    assert len(runtime.started) == 3   # nothing new starts once the Study has failed
    # a later loop on the same records sees a finished Study and does nothing
    again = FakeRuntime()
    assert drive(make_loop(st, again, records)) == FAILED_STUDY and again.started == []


def test_exit_zero_without_the_objective_is_a_failure_with_a_reason():
    st = study(max_trials=2, max_failed=5)
    runtime = FakeRuntime(ending=lambda spec: Outcome.SUCCEEDED)
    records = MemoryRecords()
    drive(make_loop(st, runtime, records))
    reason = trials_of(records)[0].current.reason
    assert trials_of(records)[0].state == "failed"
    assert "without reporting the objective metric 'loss'" in reason and "trial.report" in reason


def test_maximize_is_negated_into_a_loss():
    st = study(max_trials=3, goal="maximize", metric="acc")
    runtime, records = FakeRuntime(metric="acc", sign=-1.0), MemoryRecords()
    drive(make_loop(st, runtime, records))
    for t in trials_of(records).values():
        assert t.current.loss == pytest.approx(quality(t.config, 9))   # acc = -quality, loss = -acc
        assert t.current.metrics["acc"] < 0


def test_infrastructure_loss_restarts_without_counting_as_failure():
    st = study(max_trials=3, max_failed=0)
    lost_once = set()

    def ending(spec):
        if spec.index == 1 and spec.name not in lost_once:
            lost_once.add(spec.name)
            return Outcome.LOST
        return None

    runtime, records = FakeRuntime(ending), MemoryRecords()
    assert drive(make_loop(st, runtime, records)) == SUCCEEDED
    seg = trials_of(records)[1].current
    assert seg.status == "completed" and seg.losses == 1 and seg.restarts == 1
    assert [s.attempt for s in runtime.started if s.index == 1] == [0, 1]


def test_losses_beyond_max_preemptions_fail_the_trial():
    st = study(max_trials=2, max_failed=3)
    runtime, records = FakeRuntime(lambda spec: Outcome.LOST if spec.index == 0 else None), MemoryRecords()
    drive(make_loop(st, runtime, records))
    seg = trials_of(records)[0].current
    assert seg.status == "failed" and seg.losses == 3 and "maxPreemptions (2)" in seg.reason


def test_stop_decisions_stop_the_trial():
    # stop-based ASHA, milestones at steps 1 and 3: only the top third goes on at each
    st = study("asha-stop", max_trials=9, parallelism=3, reductionFactor=3)
    runtime, records = FakeRuntime(), MemoryRecords()
    assert drive(make_loop(st, runtime, records)) == SUCCEEDED
    trials = trials_of(records)
    stopped = [t for t in trials.values() if t.state == "stopped"]
    assert stopped and len(stopped) == len(runtime.stopped)
    for t in stopped:
        seg = t.current
        assert seg.stop_requested and seg.reached == seg.curve[-1][0] < 9
        assert seg.loss == seg.curve[-1][1]
    assert any(t.state == "completed" and t.current.reached == 9 for t in trials.values())


@pytest.mark.parametrize("algorithm", ["random", "asha", "hyperband", "asha-stop", "median-stop", "bohb"])
def test_restart_from_records_makes_the_same_decisions(algorithm):
    try:
        st = study(algorithm, max_trials=12, parallelism=3)
        make_scheduler(st)
    except InputError as e:
        pytest.skip(f"{algorithm} is not available: {e}")
    records = MemoryRecords()
    first = make_loop(st, FakeRuntime(), records)
    for _ in range(7):
        first.step()
    # crash: the process and its runtime are gone; only the records remain
    rebuilt = make_scheduler(st).restore(records.load())
    assert rebuilt.running == first.scheduler.running
    assert finish(first.scheduler) == finish(rebuilt)


def finish(scheduler):
    """Every decision a scheduler makes from here to the end, running segments ending oldest first."""
    pending = sorted(scheduler.running.items())
    decisions = []
    while not scheduler.finished():
        d = scheduler.ask()
        if d is not None:
            decisions.append(d)
            pending.append((d.trial, d.budget))
        else:
            trial, budget = pending.pop(0)
            scheduler.tell(trial, budget, quality(scheduler.configs[trial], budget))
    assert decisions
    return decisions


def test_restart_mid_study_neither_loses_nor_duplicates_trials():
    st = study("asha", max_trials=9, parallelism=2, reductionFactor=3)
    records = MemoryRecords()
    first_rt = FakeRuntime()
    first = make_loop(st, first_rt, records)
    for _ in range(6):
        first.step()
    running_before = {s.name for s in first_rt.live.values()}
    assert running_before

    second_rt = FakeRuntime()
    second = make_loop(st, second_rt, records)
    assert drive(second) == SUCCEEDED
    restarted = [s for s in second_rt.started if s.attempt == 1]
    assert {s.name for s in restarted} == running_before          # resumed, as their next attempt
    first_names = {s.name for s in first_rt.started}
    assert not (first_names - running_before) & {s.name for s in second_rt.started}   # nothing rerun
    trials = trials_of(records)
    assert sorted(trials) == list(range(9))
    assert all(t.state != "running" for t in trials.values())


class OneCreateRefused(MemoryRecords):
    """Writes a step's records side by side, as the operator's store does: trial
    `refused`'s first create fails while the others of its step go through."""

    def __init__(self, refused):
        super().__init__()
        self.refused, self.tripped = refused, False

    def save_all(self, trials):
        for t in trials:
            if t.index == self.refused and not self.tripped:
                self.tripped = True
                continue
            self.save(t)
        if any(t.index == self.refused for t in trials) and self.refused not in self.trials:
            raise RuntimeError("create refused")


@pytest.mark.parametrize("algorithm", ["asha", "hyperband", "random"])
def test_a_create_that_failed_among_parallel_ones_gives_its_number_again(algorithm):
    """Trial 1 was never created, trials 2 and 3 were: 1 is not a trial that gave no
    result but a number still to give, and every number up to maxTrials runs once."""
    records = OneCreateRefused(1)
    loop = make_loop(study(algorithm, max_trials=12, parallelism=4, max_failed=0), FakeRuntime(), records)
    with pytest.raises(RuntimeError):
        loop.step()
    assert sorted(records.trials) == [0, 2, 3]
    assert drive(loop) == SUCCEEDED
    trials = trials_of(records)
    assert sorted(trials) == list(range(12))
    assert all(t.segments[0].status == "completed" for t in trials.values())
    assert records.status["next_index"] == 12


def test_crash_between_record_and_start_runs_the_trial_once():
    st = study(max_trials=4, parallelism=2)

    class CrashOnThirdStart(FakeRuntime):
        def start(self, spec):
            if len(self.started) == 2:
                raise KeyboardInterrupt   # the process dies right after recording trial 2
            super().start(spec)

    records = MemoryRecords()
    with pytest.raises(KeyboardInterrupt):
        drive(make_loop(st, CrashOnThirdStart(), records))
    assert trials_of(records)[2].state == "running"
    runtime = FakeRuntime()
    assert drive(make_loop(st, runtime, records)) == SUCCEEDED
    started = [s.name for s in runtime.started]
    assert started.count("s-2-s0") == 1 and sorted(trials_of(records)) == [0, 1, 2, 3]


def test_a_step_writes_ends_and_decisions_in_one_round_and_acknowledges_after_starting():
    """The path from an ended segment to its successor's pod: one round of record writes
    (the end and the decision together), then the start; the end is acknowledged (released)
    only after both."""
    calls = []

    class Records(MemoryRecords):
        def save_all(self, trials):
            calls.append(("save", sorted((t.index, len(t.segments), t.state) for t in trials)))
            super().save_all(trials)

    class Runtime(FakeRuntime):
        def start_all(self, specs):
            calls.append(("start", sorted(s.name for s in specs)))
            super().start_all(specs)

        def release_all(self, runs):
            if runs:
                calls.append(("release", sorted(runs)))
            super().release_all(runs)

    assert drive(make_loop(study(max_trials=3, parallelism=1, bmax=1), Runtime(), Records())) == SUCCEEDED
    # trial 0 ends and trial 1 is decided in the same step: one write of both, the start, the release
    at = calls.index(("release", ["s-0-s0"]))
    assert calls[at - 2:at] == [("save", [(0, 1, "completed"), (1, 1, "running")]), ("start", ["s-1-s0"])]


def test_a_trial_told_to_stop_is_not_restarted():
    st = study("asha-stop", max_trials=3, parallelism=3, reductionFactor=3)
    records = MemoryRecords()
    first_rt = FakeRuntime()
    loop = make_loop(st, first_rt, records)
    while not first_rt.stopped:
        loop.step()
    name = first_rt.stopped[0]
    second_rt = FakeRuntime()
    drive(make_loop(st, second_rt, records))
    assert name not in {s.name for s in second_rt.started}
    index = int(name.split("-")[1])
    assert trials_of(records)[index].state == "stopped"


def test_interrupt_leaves_running_segments_resumable():
    st = study(max_trials=4, parallelism=2)
    records, runtime = MemoryRecords(), FakeRuntime()
    loop = make_loop(st, runtime, records)
    calls = iter(range(100))
    assert loop.run(interval=0, should_stop=lambda: next(calls) >= 3, sleep=lambda s: None) == INTERRUPTED
    assert records.status["state"] == INTERRUPTED and runtime.live == {}
    assert any(t.state == "running" for t in records.load())
    assert drive(make_loop(st, FakeRuntime(), records)) == SUCCEEDED


def test_a_closed_gate_starts_nothing_and_the_study_goes_on_when_it_opens():
    st = study(max_trials=4, parallelism=2)
    runtime, records = FakeRuntime(), MemoryRecords()
    why = ["checkpoint store unreachable: connection refused"]
    loop = make_loop(st, runtime, records, gate=lambda fresh=False: why[0])
    for _ in range(5):
        assert loop.step() is True                  # waiting, neither failed nor finished
    assert runtime.started == [] and records.load() == []
    assert records.status["holds"] == {"CheckpointStore": {"reason": "CheckpointStoreUnavailable", "message": why[0]}}
    assert records.status["state"] == "running"
    why[0] = ""
    assert drive(loop) == SUCCEEDED
    assert len(runtime.started) == 4 and records.status["holds"] == {}


def test_a_new_generation_of_limits_takes_effect_from_the_next_step():
    records, runtime = MemoryRecords(), FakeRuntime()
    loop = make_loop(study(max_trials=4, parallelism=1), runtime, records)
    for _ in range(3):
        loop.step()
    assert runtime.max_live == 1
    loop.update(study(max_trials=7, parallelism=3))
    assert drive(loop) == SUCCEEDED
    assert sorted(trials_of(records)) == list(range(7)) and runtime.max_live == 3


class ResultOnlyRuntime(FakeRuntime):
    """Like a cluster without live reports: each segment ends at its first poll, and only
    its result file (made by `result(spec)`) says what it did."""

    def __init__(self, result):
        super().__init__()
        self.result = result

    def poll(self, replay=False):
        events = list(self.ended.values())
        for spec in list(self.live.values()):
            events.append(self._end(spec, Outcome.SUCCEEDED, 0, self.result(spec)))
        return events


def test_the_result_files_metrics_and_curve_reach_the_records():
    st = study(max_trials=2)
    curve = [[1, 0.9], [4, 0.5], [9, 0.25]]
    runtime = ResultOnlyRuntime(lambda spec: {"step": 9, "metrics": {"loss": 0.25, "accuracy": 0.8, "seen": 900},
                                              "curve": curve})
    records = MemoryRecords()
    assert drive(make_loop(st, runtime, records)) == SUCCEEDED
    for t in trials_of(records).values():
        assert t.current.metrics == {"loss": 0.25, "accuracy": 0.8, "seen": 900}
        assert t.current.curve == [[1.0, 0.9], [4.0, 0.5], [9.0, 0.25]]


def test_a_segment_that_stops_short_of_its_budget_is_credited_with_what_it_trained():
    st = study(max_trials=2)
    runtime = ResultOnlyRuntime(lambda spec: {"step": 5, "metrics": {"loss": 0.1}, "curve": [[5, 0.1]]})
    records = MemoryRecords()
    loop = make_loop(st, runtime, records)
    drive(loop)
    for t in trials_of(records).values():
        seg = t.current
        assert (seg.status, seg.reached, seg.loss) == ("stopped", 5.0, 0.1)
        assert seg.reason == "ended at step 5, short of its budget 9"
    assert {o.budget for o in loop.scheduler.observations} == {5.0}


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_objective_is_a_diverged_outcome_worst_for_the_scheduler(value):
    st = study(max_trials=3, max_failed=0)
    runtime = ResultOnlyRuntime(lambda spec: {"step": 9, "metrics": {"loss": value if spec.index == 1 else 0.5}})
    records = MemoryRecords()
    loop = make_loop(st, runtime, records)
    assert drive(loop) == SUCCEEDED   # diverging is an outcome, not a failure of the trial code
    seg = trials_of(records)[1].current
    assert seg.status == "completed" and seg.loss is None
    assert seg.reason == f"diverged: the objective loss was {value}"
    assert [o.loss for o in loop.scheduler.observations if o.trial == 1] == [math.inf]


def test_raising_max_trials_extends_a_finished_study():
    records = MemoryRecords()
    assert drive(make_loop(study(max_trials=4), FakeRuntime(), records)) == SUCCEEDED
    before = trials_of(records)
    runtime = FakeRuntime()
    assert drive(make_loop(study(max_trials=6), runtime, records)) == SUCCEEDED
    after = trials_of(records)
    assert sorted(after) == list(range(6)) and [s.trial for s in runtime.started] == ["s-4", "s-5"]
    assert all(after[i] == before[i] for i in range(4))   # the finished trials are kept as they were


def test_retry_failed_runs_the_failed_trials_again_and_keeps_the_others():
    from rung.runtime.loop import retry_failed
    st = study(max_trials=5, max_failed=1)
    records = MemoryRecords()
    broken = FakeRuntime(ending=lambda spec: Outcome.FAILED if spec.index in (1, 3) else None)
    assert drive(make_loop(st, broken, records)) == FAILED_STUDY
    before = trials_of(records)
    fixed = FakeRuntime()
    assert drive(make_loop(st, fixed, records)) == FAILED_STUDY and fixed.started == []   # a replay
    again = {t.name for t in before.values() if t.state != "completed"}   # failed, or stopped by the failure
    assert {"s-1", "s-3"} <= again and retry_failed(records) == len(again)
    assert drive(make_loop(st, fixed, records)) == SUCCEEDED
    after = trials_of(records)
    retried = [s for s in fixed.started if s.trial in again]
    assert sorted(s.trial for s in retried) == sorted(again) and all(s.attempt == 1 for s in retried)
    assert all(t.state == "completed" for t in after.values()) and sorted(after) == list(range(5))
    assert all(after[i] == t for i, t in before.items() if t.state == "completed")   # kept as they were


def test_a_store_fault_is_not_the_trials_failure_and_holds_new_work_until_the_store_answers():
    st = study(max_trials=3, parallelism=1, max_failed=0)
    faults = {"s-0-s0"}   # the first attempt meets the store's fault; then the store is fixed
    full = "spec.checkpoints.uri: cannot write /ckpt/x: No space left on device; free some space"
    store, asked = [""], []   # open while the first trial starts

    class StoreFaultRuntime(FakeRuntime):
        def poll(self, replay=False):
            for name in [n for n in self.live if n in faults]:
                faults.discard(name)
                self._end(self.live[name], Outcome.FAILED, 1, {"error": f"StoreUnavailable: {full}"},
                          reason="exited with code 1")
            return super().poll()

    def gate(fresh=False):
        asked.append(fresh)
        return store[0]

    runtime, records = StoreFaultRuntime(), MemoryRecords()
    loop = make_loop(st, runtime, records, gate=gate)
    loop.step()
    store[0] = full
    loop.step()        # its segment meets the fault: held, and the gate is asked afresh
    assert loop.holds["CheckpointStore"]["message"].startswith("spec.checkpoints.uri: cannot write")
    assert True in asked and runtime.live == {} and loop.failed_trials() == 0
    for _ in range(5):
        loop.step()
    assert runtime.live == {}   # nothing starts, not even the segment's next attempt, while held
    store[0] = ""
    assert drive(loop) == SUCCEEDED
    first = trials_of(records)[0]
    assert first.state == "completed" and first.segments[-1].restarts == 1 and first.segments[-1].losses == 1
