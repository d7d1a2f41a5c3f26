"""Regularised (aging) evolution, Real et al. 2019.

The population is the populationSize most recent trials (by trial index), so old
members age out whatever their loss. A child is a tournament winner with exactly one
parameter mutated.
"""

from __future__ import annotations

import numpy as np

from rung.search._common import final_results, loss_of, setting
from rung.search.base import Sampler
from rung.space import Param, _plain

STEP_SD = 0.2  # numeric mutation: gaussian step in encoded [0, 1] space


class EvolutionSampler(Sampler):
    SETTINGS = {"populationSize": 20, "sampleSize": 5}

    def __init__(self, space, seed=0, **settings):
        super().__init__(space, seed, **settings)
        self.population_size = setting(self.settings, "populationSize", int, 1)
        self.sample_size = setting(self.settings, "sampleSize", int, 1)

    def population(self, observations):
        """The most recent populationSize trials, each at the largest budget it reached."""
        return final_results(observations)[-self.population_size:]

    def propose(self, index, observations):
        rng = self.rng(index)
        pop = self.population(observations)
        if len(pop) < self.population_size:
            return self.space.sample(rng)
        picked = rng.choice(len(pop), size=min(self.sample_size, len(pop)), replace=False)
        parent = min((pop[i] for i in picked), key=lambda o: (loss_of(o), o.trial))
        return mutate_one(self.space, parent.config, rng)


def mutate_one(space, config: dict, rng: np.random.Generator) -> dict:
    """`config` with exactly one parameter changed (one that can change), if any can."""
    child = {p.name: config[p.name] for p in space.params}
    movable = [p for p in space.params if _can_change(p)]
    if not movable:
        return child
    p = movable[int(rng.integers(len(movable)))]
    child[p.name] = _mutate_value(p, config[p.name], rng)
    return child


def _can_change(p: Param) -> bool:
    if p.kind in ("categorical", "ordinal"):
        return p.cardinality > 1
    return p.high > p.low


def _mutate_value(p: Param, value, rng: np.random.Generator):
    if p.kind in ("categorical", "ordinal"):
        others = [c for c in p.choices if c != value]
        return _plain(others[int(rng.integers(len(others)))])
    u = p.encode(value)
    # A small step can land on the same int, or be clipped back onto a bound: redraw.
    for _ in range(32):
        new = p.decode(min(max(u + STEP_SD * rng.standard_normal(), 0.0), 1.0))
        if new != value:
            return _plain(new)
    # Practically unreachable (e.g. a huge int range at a bound): move to a neighbour.
    if p.kind == "int":
        return int(value + 1 if value < p.high else value - 1)
    return _plain(p.decode(0.0 if u > 0.5 else 1.0))
