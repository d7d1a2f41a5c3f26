"""Stop-based ASHA for trial code that cannot checkpoint.

Every trial is started once, towards the maximum budget. When its live reports pass a
rung's budget, its loss there joins that rung; it goes on only while it ranks within the
top 1/eta of the rung so far, and is stopped otherwise. Nothing is ever resumed.
"""

from __future__ import annotations

import bisect
import math

from rung.schedulers.base import Scheduler, rung_budgets


class StopASHA(Scheduler):
    SETTINGS = {"reductionFactor": 3}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eta = float(self.settings["reductionFactor"])
        self.milestones = rung_budgets(self.budget_min, self.budget_max, self.eta)[:-1]
        self.rungs: list[list[tuple[float, int]]] = [[] for _ in self.milestones]
        self.passed: dict[int, int] = {}  # trial -> number of milestones it has passed

    def _next(self):
        return self._new_trial()

    def report(self, trial, step, loss):
        k = self.passed.get(trial, 0)
        keep = True
        while k < len(self.milestones) and step >= self.milestones[k]:
            rung = self.rungs[k]
            entry = (loss if math.isfinite(loss) else math.inf, trial)
            bisect.insort(rung, entry)
            rank = bisect.bisect_left(rung, entry)
            keep = keep and rank < math.ceil(len(rung) / self.eta)
            k += 1
        self.passed[trial] = k
        return keep

    def finished(self):
        return not self.running and self.n_trials >= self.max_trials
