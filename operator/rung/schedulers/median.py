"""Median stopping rule (Golovin et al., 2017), on top of any sampler.

A trial is stopped at step s when its best loss so far is worse than the median of the
running averages, up to s, of the other trials that have reached s.
"""

from __future__ import annotations

import bisect

import numpy as np

from rung.schedulers.base import Scheduler


class _Curve:
    """Reported (step, loss) pairs of one trial with prefix sums for running averages."""

    __slots__ = ("steps", "sums")

    def __init__(self):
        self.steps: list[float] = []
        self.sums: list[float] = []

    def add(self, step: float, loss: float) -> None:
        self.steps.append(step)
        self.sums.append((self.sums[-1] if self.sums else 0.0) + loss)

    def running_average(self, step: float) -> float:
        n = bisect.bisect_right(self.steps, step)
        return self.sums[n - 1] / n


class MedianStop(Scheduler):
    SETTINGS = {"graceSteps": None, "minTrials": 3}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        grace = self.settings["graceSteps"]
        self.grace = self.budget_min if grace is None else float(grace)
        self.min_trials = int(self.settings["minTrials"])
        self.curves: dict[int, _Curve] = {}
        self.best: dict[int, float] = {}

    def _next(self):
        return self._new_trial()

    def report(self, trial, step, loss):
        curve = self.curves.setdefault(trial, _Curve())
        if curve.steps and step <= curve.steps[-1]:
            return True  # a repeated report (e.g. after a restart) carries no news
        curve.add(step, loss)
        self.best[trial] = min(self.best.get(trial, loss), loss)
        if step < self.grace:
            return True
        others = [c.running_average(step) for t, c in self.curves.items()
                  if t != trial and c.steps[-1] >= step]
        if len(others) < self.min_trials:
            return True
        return self.best[trial] <= float(np.median(others))

    def finished(self):
        return not self.running and self.n_trials >= self.max_trials
