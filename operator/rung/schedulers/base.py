"""The scheduler interface (ask/tell).

A scheduler decides which trial runs next and to which budget. It is pure: no I/O, no
clock. Its whole state follows from the trial records (rung.records) plus the seed, so
after an operator restart `restore(records)` gives a scheduler that makes the same next
decisions as the one that was lost. Trials are numbered 0, 1, 2, ... in the order they
are decided, and a number whose trial was recorded is never given again, even when its
record was deleted. A number decided but never recorded (its create failed while higher
ones of the same step went through) is free: it is given again, before any new one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

from rung.records import TrialRecord
from rung.search.base import Observation, Sampler

FAILED_LOSS = math.inf  # the loss of a segment that gave no result: never promoted, always last


@dataclass(frozen=True)
class Decision:
    """Run trial `trial` (config `config`) until it reaches `budget`.

    `resume_from` is the budget whose checkpoint the segment starts from (None: from scratch).
    `parent` (PBT's exploit) is another trial whose checkpoint at `resume_from` a new trial
    starts from; None: the trial's own checkpoint. `replaces` is the trial it takes the
    place of (PBT: the member that was exploited; it never runs again).
    """

    trial: int
    config: dict
    budget: float
    resume_from: float | None = None
    parent: int | None = None
    replaces: int | None = None


class Scheduler(ABC):
    """Base class: keeps observations and the in-flight set; subclasses decide."""

    #: settings a subclass accepts, with defaults (camelCase, as written in a manifest)
    SETTINGS: dict[str, Any] = {}
    #: a new trial may start from another's checkpoint at any step it reached (Decision.parent):
    #: every checkpoint is kept, whatever spec.checkpoints.keepBest says
    copies_checkpoints = False

    def __init__(self, sampler: Sampler, budget_min: float, budget_max: float, max_trials: int,
                 **settings: Any):
        self.sampler = sampler
        self.budget_min = float(budget_min)
        self.budget_max = float(budget_max)
        self.max_trials = int(max_trials)
        self.settings = {**self.SETTINGS, **settings}
        self.configs: dict[int, dict] = {}
        self.parents: dict[int, int] = {}     # trial -> the trial whose checkpoint it started from (PBT)
        self.replaced: dict[int, int] = {}    # trial -> the trial that took its place (PBT)
        self.observations: list[Observation] = []
        self.running: dict[int, float] = {}   # trial -> budget its current segment must reach
        self.free: set[int] = set()           # numbers below the top never recorded: given again first
        self._top = 0                         # one above the highest number given

    # ---- the interface the study loop uses -------------------------------------------
    def ask(self) -> Decision | None:
        """The next segment to start, or None when nothing can start now (or ever)."""
        decision = self._next()
        if decision is not None:
            if decision.trial not in self.configs:
                self._register(decision.trial, decision.config, decision.parent, decision.replaces)
            self._start(decision.trial, decision.budget)
        return decision

    def tell(self, trial: int, budget: float, loss: float, losses: Sequence[float] | None = None) -> None:
        """Trial `trial` finished its segment, having reached `budget` with `loss` (and, in a
        multi-objective Study, `losses`: one per objective, all minimised; a failure has none)."""
        self.running.pop(trial, None)
        loss = _clean(loss)
        if losses is not None:
            losses = tuple(_clean(x) for x in losses)
            loss = losses[0]
        self.observations.append(Observation(trial, self.configs[trial], float(budget), loss, losses))
        self._record(trial, float(budget), loss)

    def tell_failed(self, trial: int, budget: float) -> None:
        """The trial's own code failed in its segment: it is never promoted."""
        self.tell(trial, budget, FAILED_LOSS)

    def report(self, trial: int, step: float, loss: float) -> bool:
        """A live intermediate result. Returns False when the trial should stop now."""
        return True

    @property
    def stops_early(self) -> bool:
        """Can report() stop a running segment? Then the runtime must deliver live reports;
        otherwise a segment's curve arrives with its result (a subclass that only reads
        curves says False)."""
        return type(self).report is not Scheduler.report

    @abstractmethod
    def finished(self) -> bool:
        """True when no segment is running and none will ever be asked for."""

    def restore(self, records: Sequence[TrialRecord], next_index: int = 0) -> "Scheduler":
        """Rebuild state from trial records (the durable truth), in trial order.

        Every number below `next_index` had its trial recorded: one without a record now
        was deleted with it, stays taken, and counts as a trial that gave no result. A
        number at or above it without a record, below a recorded one, was never created
        (its create failed while higher ones went through): it is free. A record without
        segments is a trial whose first segment was decided but never recorded: it is
        running again, towards its first budget."""
        by_index = {rec.index: rec for rec in records}
        for index in range(max(next_index, max(by_index, default=-1) + 1)):
            rec = by_index.get(index)
            if rec is None and index >= next_index:
                self.free.add(index)
                continue
            if rec is None:
                self._register(index, {})
                self._record(index, self._first_budget(index), FAILED_LOSS)
                continue
            self._register(index, rec.config, rec.parent, rec.replaces)
            if not rec.segments:
                self._start(index, self._first_budget(index))
            for seg in rec.segments:
                self._start(index, seg.budget)
                for step, loss in seg.curve:
                    self.report(index, step, loss)
                result = seg.result()
                if result is not None:
                    self.tell(index, *result, seg.objectives)
        return self

    # ---- helpers for subclasses -----------------------------------------------------
    @property
    def n_trials(self) -> int:
        return len(self.configs)

    def next_number(self) -> int:
        """The number of the next new trial: the lowest free one, else one above the top.
        Once every decision so far is recorded, every number below it has (or had) its trial."""
        return min(self.free, default=self._top)

    def _new_trial(self) -> Decision | None:
        """A fresh configuration from the sampler, if the trial limit allows one."""
        if self.n_trials >= self.max_trials:
            return None
        index = self.next_number()
        config = self.sampler.propose(index, self.observations)
        if config is None:  # the sampler is exhausted (a finished grid)
            self.max_trials = index
            return None
        return Decision(index, config, self._first_budget(index))

    def _first_budget(self, trial: int) -> float:
        """The budget a new trial's first segment trains to."""
        return self.budget_max

    def _register(self, trial: int, config: dict, parent: int | None = None, replaces: int | None = None) -> None:
        self.configs[trial] = config
        self.free.discard(trial)
        self._top = max(self._top, trial + 1)
        if parent is not None:
            self.parents[trial] = parent
        if replaces is not None:
            self.replaced[replaces] = trial

    def _start(self, trial: int, budget: float) -> None:
        self.running[trial] = budget

    @abstractmethod
    def _next(self) -> Decision | None:
        """Decide the next segment without changing state."""

    def _record(self, trial: int, budget: float, loss: float) -> None:
        """Subclass hook: a result arrived."""


def _clean(loss: float | None) -> float:
    return FAILED_LOSS if loss is None or math.isnan(loss) else float(loss)


def rung_budgets(budget_min: float, budget_max: float, eta: float) -> list[float]:
    """Budgets of the rungs: max, max/eta, max/eta^2, ... down to no less than min.

    Integral min and max give integral budgets (epochs are whole), without repeats.
    """
    if budget_max <= budget_min:
        return [float(budget_max)]
    k = int(math.floor(math.log(budget_max / budget_min) / math.log(eta) + 1e-9))
    budgets = [budget_max / eta ** (k - i) for i in range(k + 1)]
    if float(budget_min).is_integer() and float(budget_max).is_integer():
        budgets = sorted({float(max(budget_min, round(b))) for b in budgets})
    return budgets
