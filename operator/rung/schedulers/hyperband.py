"""Synchronous successive halving (SHA) and Hyperband.

Hyperband (Li et al., 2018) runs brackets s = s_max, ..., 0 in turn; bracket s starts
n = ceil((s_max+1)/(s+1) * eta^s) configurations at budget R*eta^-s and keeps the best
floor(n eta^-i) of them for rung i. Rung i is filled only once rung i-1 has all its
members and all have finished, whatever the number of workers. Trials join brackets in
index order, so the bracket of a trial follows from its index alone (a number given
again joins the bracket it was first given in). When every open
bracket waits for running trials, the next bracket starts, so workers never idle while
trials remain.
"""

from __future__ import annotations

import math

from rung.schedulers.base import Decision, Scheduler, rung_budgets


class _Bracket:
    def __init__(self, first: int, size: int, budgets: list[float], eta: float):
        self.first, self.size, self.budgets, self.eta = first, size, budgets, eta
        self.members: list[list[int]] = [[] for _ in budgets]   # trials in each rung
        self.results: list[dict[int, float]] = [{} for _ in budgets]

    def keep(self, i: int) -> int:
        """n_i = floor(n eta^-i): how many configurations rung i runs (Li et al., Algorithm 1)."""
        return max(1, int(len(self.members[0]) // self.eta ** i))

    def _complete(self, i: int, closed: bool) -> bool:
        """Rung i has all the members it will ever get, and every one has a result."""
        if i == 0:
            full = closed or len(self.members[0]) >= self.size
        else:
            full = self._complete(i - 1, closed) and len(self.members[i]) == self._promoted(i)
        return full and len(self.results[i]) == len(self.members[i])

    def _promoted(self, i: int) -> int:
        """How many go up to rung i: the top n_i of rung i-1, of those with a finite result."""
        return min(self.keep(i), sum(math.isfinite(v) for v in self.results[i - 1].values()))

    def runnable(self, started: set[tuple[int, int]], closed: bool) -> tuple[int, int] | None:
        """(trial, rung) of a promotion that can start now, highest rung first. Rung i is
        filled only once rung i-1 is complete, so the ranking is over all its members.

        `closed`: no more trials will join this bracket (it is full or the trial limit is hit).
        """
        for i in range(len(self.budgets) - 1, 0, -1):
            if not self._complete(i - 1, closed):
                continue
            ranked = sorted((loss, t) for t, loss in self.results[i - 1].items() if math.isfinite(loss))
            for _, trial in ranked[: self.keep(i)]:
                if (trial, i) not in started:
                    return trial, i
        return None


class Hyperband(Scheduler):
    SETTINGS = {"reductionFactor": 3}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eta = float(self.settings["reductionFactor"])
        self.budgets = rung_budgets(self.budget_min, self.budget_max, self.eta)
        self.s_max = len(self.budgets) - 1
        self.brackets: list[_Bracket] = []
        self.started: set[tuple[int, int]] = set()   # (trial, rung within its bracket)
        self.bracket_of: dict[int, _Bracket] = {}

    def bracket_plan(self, b: int) -> tuple[int, int]:
        """(s, n) of the b-th bracket: its number of halvings and of starting configurations."""
        s = self.s_max - b % (self.s_max + 1)
        return s, math.ceil((self.s_max + 1) / (s + 1) * self.eta ** s)

    def _open_bracket(self) -> _Bracket:
        s, n = self.bracket_plan(len(self.brackets))
        first = self.brackets[-1].first + self.brackets[-1].size if self.brackets else 0
        bracket = _Bracket(first, n, self.budgets[self.s_max - s:], self.eta)
        self.brackets.append(bracket)
        return bracket

    def _bracket_for_new(self, trial: int) -> _Bracket:
        """The bracket whose range of numbers holds `trial` (a free number lies in an older one)."""
        while not self.brackets or trial >= self.brackets[-1].first + self.brackets[-1].size:
            self._open_bracket()
        return next(b for b in reversed(self.brackets) if b.first <= trial)

    def _promotion(self) -> Decision | None:
        closed = self.n_trials >= self.max_trials
        for bracket in self.brackets:
            found = bracket.runnable(self.started, closed)
            if found:
                trial, i = found
                return Decision(trial, self.configs[trial], bracket.budgets[i], bracket.budgets[i - 1])
        return None

    def _next(self):
        promotion = self._promotion()
        if promotion:
            return promotion
        # No promotion can start: grow the newest bracket, or open the next one.
        return self._new_trial()

    def _first_budget(self, trial):
        bracket = self.bracket_of.get(trial) or self._bracket_for_new(trial)
        return bracket.budgets[0]

    def _register(self, trial, config, parent=None, replaces=None):
        super()._register(trial, config, parent, replaces)
        bracket = self._bracket_for_new(trial)
        bracket.members[0].append(trial)
        self.bracket_of[trial] = bracket

    def _rung(self, bracket: _Bracket, budget: float) -> int:
        return min(range(len(bracket.budgets)), key=lambda i: abs(bracket.budgets[i] - budget))

    def _start(self, trial, budget):
        super()._start(trial, budget)
        bracket = self.bracket_of[trial]
        i = self._rung(bracket, budget)
        self.started.add((trial, i))
        if i > 0:
            bracket.members[i].append(trial)

    def _record(self, trial, budget, loss):
        bracket = self.bracket_of[trial]
        bracket.results[self._rung(bracket, budget)][trial] = loss

    def finished(self):
        return not self.running and self.n_trials >= self.max_trials and self._promotion() is None


class SHA(Hyperband):
    """Successive halving: one bracket of maxTrials configurations from the bottom rung."""

    def bracket_plan(self, b):
        return self.s_max, self.max_trials
