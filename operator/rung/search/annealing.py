"""Simulated annealing, replayed from the observations.

The chain is a pure function of the history: trials are visited in trial order, each
accepted or rejected with a uniform drawn from (seed, trial), so a rebuilt sampler holds
the same current state. Temperature cools geometrically with every step of the chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rung.search._common import final_results, loss_of, setting
from rung.search.base import Observation, Sampler
from rung.search.evolution import _can_change, mutate_one
from rung.space import _plain


@dataclass(frozen=True)
class ChainState:
    current: Observation   # the state the next proposal is a neighbour of
    steps: int             # transitions replayed so far
    temperature: float
    accepted: tuple[int, ...]  # trials accepted as the current state, in chain order


class AnnealingSampler(Sampler):
    SETTINGS = {"initialTemperature": 1.0, "coolingRate": 0.95, "stepSize": 0.2}

    def __init__(self, space, seed=0, **settings):
        super().__init__(space, seed, **settings)
        s = self.settings
        self.t0 = setting(s, "initialTemperature", float, 0.0, low_open=True)
        self.cooling = setting(s, "coolingRate", float, 0.0, 1.0, low_open=True)
        self.step_size = setting(s, "stepSize", float, 0.0)

    def chain(self, observations) -> ChainState | None:
        """Replay the chain over the trials (each at its largest budget); None if empty."""
        trials = final_results(observations)
        if not trials:
            return None
        losses = np.array([loss_of(o) for o in trials])
        scale = _robust_scale(losses[np.isfinite(losses)])
        current, accepted = trials[0], [trials[0].trial]
        for k, cand in enumerate(trials[1:], start=1):
            temp = self.t0 * self.cooling ** k
            new, cur = loss_of(cand), loss_of(current)
            if new < cur:
                take = True
            elif not math.isfinite(new):
                take = False  # a failure never replaces anything
            else:
                # Worse (or equal) move: Metropolis rule on the loss increase in units of `scale`.
                take = self.rng(cand.trial, stream=1).random() < math.exp(-(new - cur) / scale / temp)
            if take:
                current = cand
                accepted.append(cand.trial)
        steps = len(trials) - 1
        return ChainState(current, steps, self.t0 * self.cooling ** steps, tuple(accepted))

    def propose(self, index, observations):
        state = self.chain(observations)
        rng = self.rng(index)  # after the replay: Sampler.rng re-keys one shared generator
        if state is None:
            return self.space.sample(rng)
        base = state.current.config
        # Step shrinks with sqrt of the relative temperature: stepSize is the first step.
        sd = self.step_size * math.sqrt(state.temperature / self.t0)
        flip = 1.0 / max(len(self.space), 1)
        child = {}
        for p in self.space.params:
            value = base[p.name]
            if p.categorical:
                if p.cardinality > 1 and rng.random() < flip:
                    others = [c for c in p.choices if c != value]
                    value = others[int(rng.integers(len(others)))]
            else:
                value = p.decode(min(max(p.encode(value) + sd * rng.standard_normal(), 0.0), 1.0))
            child[p.name] = _plain(value)
        if all(child[p.name] == base[p.name] for p in self.space.params if _can_change(p)):
            child = mutate_one(self.space, base, rng)  # a neighbour must differ somewhere
        return child


def _robust_scale(losses: np.ndarray) -> float:
    """Spread of the observed losses: IQR, else std, else 1 (never zero)."""
    if len(losses) >= 2:
        q1, q3 = np.percentile(losses, [25, 75])
        if q3 > q1:
            return float(q3 - q1)
        std = float(losses.std())
        if std > 0:
            return std
    return 1.0
