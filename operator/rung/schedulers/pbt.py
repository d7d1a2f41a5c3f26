"""Population Based Training (Jaderberg et al., 2017), asynchronous, on trial segments.

A population of `population` members (the first trials, from the sampler) trains in
segments of `interval` steps. A member is judged when it finishes a segment, against the
latest result of every live member (a copy that has none yet counts with the result of
the member it replaced). Members may be an interval ahead or behind: with one worker each
they stay within about an interval of each other.

- exploit (truncation selection): in the bottom `quantile`, it is replaced by a new trial
  that starts from the checkpoint of a random member of the top `quantile` at the step
  that member last reached;
- explore: the new trial takes that member's hyperparameters, each numeric one multiplied
  by a random factor of `perturbFactors` (ints move at least one, ordinals one value), or,
  with `resampleProbability`, drawn afresh from the search space (categorical ones are
  only ever resampled).

Otherwise it continues from its own checkpoint. A member whose segment failed never
continues on its own: it is replaced by a copy of the best member when it can be, else
it retires. Exploits stop once `limits.maxTrials` trials exist; members then only
continue. The Study ends when every live member has reached the maximum budget.

The randomness of an exploit comes from the new trial's index, so a scheduler restored
from the records makes the same next decision as the one that was lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rung.errors import InputError
from rung.records import TrialRecord
from rung.schedulers.base import Decision, Scheduler
from rung.search._common import setting
from rung.space import Param

EXPLORE_STREAM = 1  # an exploit's generator stream; stream 0 is the sampler's for proposals


class PBT(Scheduler):
    SETTINGS = {"population": 8, "interval": None, "quantile": 0.25, "perturbFactors": [0.8, 1.2],
                "resampleProbability": 0.25}
    copies_checkpoints = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s = self.settings
        if s["interval"] is None:
            s["interval"] = self.budget_min
        self.population = setting(s, "population", int, 1)
        self.interval = setting(s, "interval", float, 0.0, low_open=True)
        self.quantile = setting(s, "quantile", float, 0.0, 0.5, low_open=True)
        self.factors = _factors(s["perturbFactors"])
        self.resample_probability = setting(s, "resampleProbability", float, 0.0, 1.0)
        self.latest: dict[int, tuple[float, float]] = {}  # trial -> (budget, loss) of its latest result

    # ---- decisions ----------------------------------------------------------------------
    def _next(self):
        if self.next_number() < self.population:
            decision = self._new_trial()
            if decision is not None:
                return decision
        for trial in self._ready():
            decision = self._judge(trial)
            if decision is not None:
                return decision
        return None

    def finished(self):
        return not self.running and self._next() is None

    def members(self) -> list[int]:
        """The live members: trials no exploit has replaced."""
        return [t for t in self.configs if t not in self.replaced]

    def _ready(self) -> list[int]:
        """Live members waiting for a decision, the furthest behind first."""
        waiting = [t for t in self.members() if t not in self.running and t in self.latest
                   and self.latest[t][0] < self.budget_max]
        return sorted(waiting, key=lambda t: (self.latest[t][0], t))

    def _judge(self, trial: int) -> Decision | None:
        budget, loss = self.latest[trial]
        exploit = self._exploit(trial) if self.n_trials < self.max_trials else None
        if exploit is not None or math.isinf(loss):
            return exploit
        return Decision(trial, self.configs[trial], self._next_budget(budget), budget)

    def standings(self) -> list[tuple[float, int]]:
        """(loss, member) of the live members, best first. A copy holds the result of the
        member it replaced until it has one of its own (as Ray Tune's PBT keeps a cloned
        trial's last score): otherwise each exploit would push another member into the
        bottom before the copy reports."""
        replaced_by = {new: old for old, new in self.replaced.items()}
        ranked = []
        for m in self.members():
            source = m if m in self.latest else replaced_by.get(m)
            if source in self.latest:
                ranked.append((self.latest[source][1], m))
        return sorted(ranked)

    def _exploit(self, trial: int) -> Decision | None:
        """A new trial in `trial`'s place, copied from a top member, if `trial` is in the bottom."""
        ranked = self.standings()
        k = int(len(ranked) * self.quantile)
        failed = math.isinf(self.latest[trial][1])
        if not failed and trial not in [m for _, m in ranked[len(ranked) - k:]]:
            return None
        # a donor has a checkpoint at its latest result; one at the maximum budget has
        # nothing left to train, and neither would its copy
        donors = [m for loss, m in ranked[:max(k, 1)] if m != trial and m in self.latest
                  and math.isfinite(loss) and self.latest[m][0] < self.budget_max]
        if not donors:
            return None
        index = self.next_number()
        rng = self.sampler.rng(index, EXPLORE_STREAM)
        parent = donors[int(rng.integers(len(donors)))]
        start = self.latest[parent][0]
        return Decision(index, self.explore(self.configs[parent], rng), self._next_budget(start), start,
                        parent=parent, replaces=trial)

    def explore(self, config: dict, rng: np.random.Generator) -> dict:
        """`config` with every parameter of the space resampled or perturbed (draws in space order)."""
        new = dict(config)
        for p in self.sampler.space.params:
            if rng.random() < self.resample_probability:
                new[p.name] = _resample(p, rng)
            elif not p.categorical:
                new[p.name] = _perturb(p, config[p.name], self.factors[int(rng.integers(len(self.factors)))])
        return new

    def _next_budget(self, budget: float) -> float:
        return min(budget + self.interval, self.budget_max)

    # ---- state --------------------------------------------------------------------------
    def _first_budget(self, trial):
        return self._next_budget(0.0)

    def _record(self, trial, budget, loss):
        self.latest[trial] = (budget, loss)


def _factors(value: Any) -> list[float]:
    field = "spec.algorithm.settings.perturbFactors"
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(field, f"must be a non-empty list of numbers (got {value!r})", "use e.g. [0.8, 1.2]")
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < math.inf for f in value):
        raise InputError(field, f"must hold numbers above 0 (got {value!r})", "use e.g. [0.8, 1.2]")
    return [float(f) for f in value]


def _resample(p: Param, rng: np.random.Generator) -> Any:
    """A value from the space's prior (uniform, log-uniform for log parameters)."""
    u = rng.random()
    return p.decode(math.floor(u * p.cardinality) if p.categorical else u)


def _perturb(p: Param, value: Any, factor: float) -> Any:
    if p.kind == "ordinal":  # its values are ordered, not scaled: move to a neighbour
        i = p.choices.index(value) + (factor > 1) - (factor < 1)
        return p.choices[min(max(i, 0), len(p.choices) - 1)]
    x = float(value) * factor
    if p.kind == "int":  # a small int times 1.2 would round back to itself forever
        x = round(x)
        if x == value and factor != 1:
            x = value + (1 if factor > 1 else -1)
        return int(min(max(x, p.low), p.high))
    return min(max(x, p.low), p.high)


# ---- lineage ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    """One trial in the history of a member's weights."""

    trial: int
    config: dict
    start: float               # the step its weights were at when it took them
    end: float                 # the step it trained them to (an ancestor: where the next link copied them)
    copied_from: int | None    # the trial whose checkpoint it started from (None: from scratch)


def lineage(records: Sequence[TrialRecord]) -> dict[int, list[Link]]:
    """For each live member (a trial that no other replaced), the trials that trained its
    weights, oldest first: what `rung report` shows of a PBT Study."""
    by_index = {rec.index: rec for rec in records}
    replaced = {rec.replaces for rec in records if rec.replaces is not None}
    chains = {}
    for member in sorted(by_index.keys() - replaced):
        chain, rec, end = [], by_index[member], _trained_to(by_index[member])
        while rec is not None:
            start = _started_at(rec)
            chain.append(Link(rec.index, rec.config, start, end, rec.parent))
            # a parent is always an older trial: a record that says otherwise ends the chain
            older = rec.parent is not None and rec.parent < rec.index
            rec, end = by_index.get(rec.parent) if older else None, start
        chains[member] = chain[::-1]
    return chains


def _started_at(rec: TrialRecord) -> float:
    return (rec.segments[0].resume_from or 0.0) if rec.segments else 0.0


def _trained_to(rec: TrialRecord) -> float:
    """The furthest step its segments reached (a running one: its latest report)."""
    reached = [_started_at(rec)]
    for seg in rec.segments:
        result = seg.result()
        reached.append(result[0] if result is not None else (seg.last_step or 0.0))
    return max(reached)
