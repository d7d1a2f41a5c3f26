"""Learning-curve extrapolation stopping (Domhan et al., IJCAI 2015), on top of any sampler.

New trials run at the full budget. Each report extends the trial's curve; once the curve
has minPoints points and has passed graceSteps, the ensemble of rung.curves extrapolates
it to the full budget, and the trial is stopped when the probability that its loss there
beats the incumbent (the best loss a trial reached at the full budget) is below
threshold. Until some trial has reached the full budget nothing is stopped.
"""

from __future__ import annotations

import math

from rung.curves import MIN_POINTS, Curve
from rung.schedulers.base import Scheduler
from rung.search._common import setting


class CurveStop(Scheduler):
    SETTINGS = {"threshold": 0.05, "minPoints": MIN_POINTS, "graceSteps": None}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s = self.settings
        self.threshold = setting(s, "threshold", float, 0.0, 1.0)
        self.min_points = setting(s, "minPoints", int, MIN_POINTS)
        self.grace = self.budget_min if s["graceSteps"] is None else setting(s, "graceSteps", float, 0.0)
        self.curves: dict[int, Curve] = {}
        self.incumbent = math.inf
        self._replaying = False

    def _next(self):
        return self._new_trial()

    def report(self, trial, step, loss):
        curve = self.curves.setdefault(trial, Curve())
        if not curve.add(step, loss) or self._replaying:
            return True   # no news; or a replayed report, whose answer nobody reads
        if (math.isinf(self.incumbent) or step < self.grace or len(curve) < self.min_points
                or step >= self.budget_max):
            return True
        fit = curve.fit()
        return fit is None or fit.prob_below(self.incumbent, self.budget_max) >= self.threshold

    def restore(self, records, next_index=0):
        # The state is the curves and the incumbent; replaying skips the fits (their
        # answers are already recorded), so a restart costs no curve fitting.
        self._replaying = True
        try:
            return super().restore(records, next_index)
        finally:
            self._replaying = False

    def _record(self, trial, budget, loss):
        self.curves.pop(trial, None)   # its only segment is over
        if budget >= self.budget_max:
            self.incumbent = min(self.incumbent, loss)

    def finished(self):
        return not self.running and self.n_trials >= self.max_trials
