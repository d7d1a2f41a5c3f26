"""Synthetic objectives for the simulator: a search space, a noisy loss per budget, and
the noise-free regret of a configuration (what "time to a target regret" measures)."""

from __future__ import annotations

from rung.space import Param, SearchSpace
from rung_trainables import benchmarks as B


class CountingOnes:
    """Counting ones (BOHB paper): budgets 9..729 Bernoulli draws; a promoted trial
    continues its draws from its checkpoint (resumable)."""

    name = "counting ones"
    budget_min, budget_max, resumable = 9, 729, True

    def __init__(self, n_cat: int = 8, n_cont: int = 8):
        self.n_cat, self.n_cont = n_cat, n_cont

    def space(self) -> SearchSpace:
        return SearchSpace([Param(f"cat{i}", "categorical", choices=(0, 1)) for i in range(self.n_cat)]
                           + [Param(f"x{i}", "float", 0.0, 1.0) for i in range(self.n_cont)])

    def _split(self, c):
        return [c[f"cat{i}"] for i in range(self.n_cat)], [c[f"x{i}"] for i in range(self.n_cont)]

    def loss(self, config: dict, budget: float, seed: int) -> float:
        cat, cont = self._split(config)
        return B.counting_ones(cat, cont, round(budget), seed=seed)

    def regret(self, config: dict) -> float:
        cat, cont = self._split(config)
        return B.counting_ones_regret(B.counting_ones_true(cat, cont), self.n_cat + self.n_cont)


class Hartmann6:
    """Multi-fidelity Hartmann-6 (mf-prior-bench "moderate"), fidelity 1..100; every
    fidelity is a fresh evaluation, so a promoted segment pays its whole budget."""

    name = "Hartmann-6"
    budget_min, budget_max, resumable = 1, 100, False

    def space(self) -> SearchSpace:
        return SearchSpace([Param(f"x{i}", "float", 0.0, 1.0) for i in range(6)])

    def loss(self, config: dict, budget: float, seed: int) -> float:
        return B.hartmann([config[f"x{i}"] for i in range(6)], budget, preset="moderate", seed=seed)

    def regret(self, config: dict) -> float:
        return B.hartmann_regret([config[f"x{i}"] for i in range(6)])
