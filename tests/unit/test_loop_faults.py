"""The Study loop under faults at every point: record writes that fail (before or after
they take effect), reads that fail, starts the runtime refuses, lost attempts and crashes
of the loop itself. Over thousands of steps, nothing is lost, duplicated or stuck."""

import random
from collections import Counter

import pytest

from rung.records import MemoryRecords
from rung.runtime.base import Outcome, Refused
from rung.runtime.loop import StudyLoop, StudyState
from test_loop import FakeRuntime, quality, study

pytestmark = pytest.mark.unit


class Fault(Exception):
    """An injected failure (an API error, a timeout)."""


class FlakyRecords(MemoryRecords):
    """Fails a fraction of calls; some writes take effect and then fail (a lost response)."""

    def __init__(self, rng: random.Random, p: float):
        super().__init__()
        self.rng, self.p = rng, p

    def _maybe(self, write=None):
        if self.rng.random() < self.p:
            if write is not None and self.rng.random() < 0.5:
                write()
            raise Fault("injected")
        if write is not None:
            write()

    def load(self):
        self._maybe()
        return super().load()

    def load_status(self):
        self._maybe()
        return super().load_status()

    def save(self, trial):
        self._maybe(lambda: MemoryRecords.save(self, trial))

    def save_status(self, status):
        self._maybe(lambda: MemoryRecords.save_status(self, status))


class SideBySideFlakyRecords(FlakyRecords):
    """Writes a step's records side by side, as the operator's store does: a failed one
    does not stop the others (a higher trial number may be created over a lower one)."""

    def save_all(self, trials):
        failures = []
        for trial in trials:
            try:
                self.save(trial)
            except Fault as e:
                failures.append(e)
        if failures:
            raise failures[0]


class FlakyRuntime(FakeRuntime):
    """Refuses a fraction of starts (quota, throttling) and loses a fraction of attempts."""

    def __init__(self, rng: random.Random, p: float):
        super().__init__(ending=lambda spec: Outcome.LOST if rng.random() < p / 4 else None)
        self.rng, self.p = rng, p
        self.completions = Counter()

    def poll(self, replay=False):
        """Segments move on at random speeds: most sit out each poll."""
        resting = {name: spec for name, spec in self.live.items() if self.rng.random() < 0.9}
        for name in resting:
            del self.live[name]
        try:
            return super().poll()
        finally:
            self.live.update(resting)

    def start(self, spec):
        if self.rng.random() < self.p:
            raise Refused("Throttled", "429 Too Many Requests")
        super().start(spec)

    def _end(self, spec, outcome, code=0, result=None, reason=""):
        if outcome == Outcome.SUCCEEDED:
            self.completions[(spec.trial, spec.segment)] += 1
        return super()._end(spec, outcome, code, result, reason)


@pytest.mark.parametrize("algorithm,seed,store", [
    ("asha", 1, FlakyRecords), ("asha", 2, FlakyRecords), ("hyperband", 3, FlakyRecords), ("random", 4, FlakyRecords),
    ("asha-stop", 5, FlakyRecords), ("bohb", 6, FlakyRecords),
    ("asha", 7, SideBySideFlakyRecords), ("hyperband", 8, SideBySideFlakyRecords)])
def test_faults_at_every_point_lose_duplicate_and_strand_nothing(algorithm, seed, store):
    rng = random.Random(seed)
    st = study(algorithm, max_trials=200, parallelism=4, max_failed=0)
    st.spec.limits.max_preemptions = 100
    records, runtime = store(rng, 0.2), FlakyRuntime(rng, 0.2)
    loop, faults, crashes = StudyLoop(st, runtime, records), 0, 0
    for steps in range(1, 50_000):
        if rng.random() < 0.01:   # the operator dies; its pods live on
            loop, crashes = StudyLoop(st, runtime, records), crashes + 1
        try:
            if not loop.step():
                break
        except Fault:
            faults += 1
            continue
        # The step's incremental views agree with a scan of every trial.
        assert {t.index for t in loop.running_trials()} == {i for i, t in loop.trials.items() if t.state == "running"}
        assert loop.failed_trials() == sum(t.state == "failed" for t in loop.trials.values())
    assert loop.state == StudyState.SUCCEEDED, loop.reason
    print(f"{steps} steps, {faults} faults, {crashes} crashes")
    assert steps > 1000 and faults > 200 and crashes > 10
    trials = {t.index: t for t in MemoryRecords.load(records)}
    assert sorted(trials) == list(range(200))                       # none lost, no number twice
    for t in trials.values():
        budgets = [s.budget for s in t.segments]
        assert budgets == sorted(set(budgets))                     # no segment recorded twice
        for i, seg in enumerate(t.segments):
            assert seg.status in ("completed", "stopped")          # none stuck, none failed
            if seg.status == "completed":
                assert seg.loss == pytest.approx(quality(t.config, seg.budget))
                assert runtime.completions[(t.name, i)] == 1       # trained to its end once
    assert runtime.live == {} and not runtime.ended               # every attempt released
