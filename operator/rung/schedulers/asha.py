"""Asynchronous successive halving (ASHA), promotion-based.

Rule (Li et al., MLSys 2020): a worker that asks gets a promotion from the highest rung
that has a configuration in its top 1/eta not yet promoted; otherwise a new configuration
on the bottom rung. A promoted trial resumes from the checkpoint of the rung it left.

`promotion: curve` ranks a rung's results by the loss their reported curves (up to the
rung's budget) extrapolate to at the full budget (rung.curves) instead of by the rung's
loss, so a trial still improving fast can overtake one that has levelled off. A result
whose curve has too few points keeps its rung loss. The score is fixed when the result
is recorded (the rung's sorted lists stay valid).
"""

from __future__ import annotations

import bisect
import math

from rung.curves import Curve
from rung.errors import InputError
from rung.schedulers.base import Decision, Scheduler, rung_budgets

PROMOTIONS = ("loss", "curve")


class _Rung:
    """Results of one rung, split into promoted and not-yet-promoted, each sorted by (loss, trial);
    `loss` is the score a result is ranked by."""

    __slots__ = ("budget", "waiting", "promoted", "loss")

    def __init__(self, budget: float):
        self.budget = budget
        self.waiting: list[tuple[float, int]] = []
        self.promoted: list[tuple[float, int]] = []
        self.loss: dict[int, float] = {}

    def add(self, trial: int, loss: float) -> None:
        self.loss[trial] = loss
        bisect.insort(self.waiting, (loss, trial))

    def promote(self, trial: int) -> None:
        entry = (self.loss[trial], trial)
        del self.waiting[bisect.bisect_left(self.waiting, entry)]
        bisect.insort(self.promoted, entry)

    def candidate(self, eta: float) -> int | None:
        """The best waiting trial if it ranks within the top floor(n/eta) of the rung."""
        if not self.waiting:
            return None
        loss, trial = self.waiting[0]
        if math.isinf(loss):
            return None
        rank = bisect.bisect_left(self.promoted, (loss, trial))  # better ones were all promoted
        return trial if rank < int(len(self.loss) // eta) else None


class ASHA(Scheduler):
    SETTINGS = {"reductionFactor": 3, "promotion": "loss"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eta = float(self.settings["reductionFactor"])
        self.promotion = self.settings["promotion"]
        if self.promotion not in PROMOTIONS:
            raise InputError("spec.algorithm.settings.promotion",
                             f"must be one of {', '.join(PROMOTIONS)} (got {self.promotion!r})",
                             "use loss (rank by the rung's loss) or curve (by the extrapolated final loss)")
        self.rungs = [_Rung(b) for b in rung_budgets(self.budget_min, self.budget_max, self.eta)]
        self._rung_index = {r.budget: k for k, r in enumerate(self.rungs)}
        self.curves: dict[int, Curve] = {}   # promotion: curve only

    def rung_of(self, budget: float) -> int:
        k = self._rung_index.get(budget)
        if k is None:  # tolerate float round-off in budgets read back from records
            k = min(range(len(self.rungs)), key=lambda i: abs(self.rungs[i].budget - budget))
        return k

    def _promotion(self) -> Decision | None:
        for k in range(len(self.rungs) - 2, -1, -1):
            trial = self.rungs[k].candidate(self.eta)
            if trial is not None:
                return Decision(trial, self.configs[trial], self.rungs[k + 1].budget, self.rungs[k].budget)
        return None

    def _next(self):
        return self._promotion() or self._new_trial()

    def _first_budget(self, trial):
        return self.rungs[0].budget

    def _start(self, trial, budget):
        super()._start(trial, budget)
        k = self.rung_of(budget)
        if k > 0:
            self.rungs[k - 1].promote(trial)

    def report(self, trial, step, loss):
        if self.promotion == "curve":
            self.curves.setdefault(trial, Curve()).add(step, loss)
        return True

    @property
    def stops_early(self) -> bool:
        return False   # report() only reads curves: they may arrive with the result

    def _record(self, trial, budget, loss):
        k = self.rung_of(budget)
        self.rungs[k].add(trial, self._score(trial, k, loss))

    def _score(self, trial: int, k: int, loss: float) -> float:
        """What rung k ranks the trial's result by: its loss, or with promotion: curve the
        mean its curve up to the rung extrapolates to at the full budget."""
        if self.promotion != "curve" or k == len(self.rungs) - 1 or math.isinf(loss) or trial not in self.curves:
            return loss   # the top rung promotes nothing; a failure stays last
        fit = self.curves[trial].fit(up_to=self.rungs[k].budget)
        return loss if fit is None else fit.mean(self.budget_max)

    def finished(self):
        return not self.running and self.n_trials >= self.max_trials and self._promotion() is None
