"""Multi-objective ASHA ("mo-asha"): ASHA's asynchronous promotions, with a rung ordered by
Pareto dominance instead of by one loss.

Rule (Schmucker et al. 2021, MO-ASHA with NSGA-II selection): a rung's results are ranked
by non-dominated sorting; inside a front, by crowding distance (largest first), then by
trial number, so the order is a pure function of the rung's results. A worker that asks
gets the first not-yet-promoted trial within the top floor(n/eta) of the highest rung that
has one, else a new configuration on the bottom rung. Rung budgets, `reductionFactor`,
resuming from checkpoints and finished() are ASHA's.

Losses come from tell(..., losses): a result without them is a single-objective loss (so
with one objective the decisions are ASHA's); a failure, or any infinite or NaN loss, ranks
last and is never promoted.
"""

from __future__ import annotations

import math

from rung.pareto import loss_matrix, rank_order
from rung.schedulers.asha import ASHA

Losses = tuple[float, ...]


class _ParetoRung:
    """One rung's results (trial -> losses; None: failed) and the trials promoted from it."""

    __slots__ = ("budget", "losses", "promoted", "_order")

    def __init__(self, budget: float):
        self.budget = budget
        self.losses: dict[int, Losses | None] = {}
        self.promoted: set[int] = set()
        self._order: list[int] | None = None   # best first; rebuilt after a new result

    def add(self, trial: int, losses: Losses | None) -> None:
        self.losses[trial] = losses
        self._order = None

    def promote(self, trial: int) -> None:
        self.promoted.add(trial)

    def candidate(self, eta: float) -> int | None:
        """The best trial not yet promoted if it ranks within the top floor(n/eta)."""
        top = int(len(self.losses) // eta)
        if top == 0:
            return None
        for trial in self.order(top)[:top]:
            if trial not in self.promoted:
                return trial if self.losses[trial] is not None else None  # failures come last
        return None

    def order(self, top: int) -> list[int]:
        if self._order is None:
            trials = sorted(self.losses)
            points = loss_matrix([self.losses[t] for t in trials])
            self._order = [trials[i] for i in rank_order(points, limit=top)]
        return self._order


class MOASHA(ASHA):
    SETTINGS = {"reductionFactor": 3}   # ASHA's other ranking options do not apply to fronts

    def __init__(self, sampler, budget_min, budget_max, max_trials, **settings):
        super().__init__(sampler, budget_min, budget_max, max_trials, **settings, promotion="loss")
        self.rungs = [_ParetoRung(r.budget) for r in self.rungs]

    def _record(self, trial, budget, loss):
        last = self.observations[-1] if self.observations else None
        told = last is not None and last.trial == trial and last.budget == budget  # else: a lost trial
        losses = last.losses if told else None
        if losses is None and told and math.isfinite(loss):
            losses = (loss,)
        if losses is not None and not all(math.isfinite(x) for x in losses):
            losses = None
        self.rungs[self.rung_of(budget)].add(trial, losses)
