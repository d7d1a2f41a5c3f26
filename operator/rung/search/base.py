"""The sampler interface: propose the configuration of a new trial from what was observed.

A sampler is a pure function of (space, seed, settings, observations, trial index): the
random generator for trial `index` is derived from (seed, index), so a rebuilt sampler
proposes exactly what the original one would have. Samplers never see the clock or I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rung.space import SearchSpace


@dataclass(frozen=True)
class Observation:
    """One finished segment: a configuration evaluated at a budget.

    `loss` is always minimised (a maximised metric is negated before it gets here);
    a failed evaluation has loss = +inf.
    """

    trial: int
    config: dict
    budget: float
    loss: float


class Sampler(ABC):
    #: settings a subclass accepts, with defaults (camelCase, as written in a manifest)
    SETTINGS: dict[str, Any] = {}

    def __init__(self, space: SearchSpace, seed: int = 0, **settings: Any):
        self.space = space
        self.seed = seed
        self.settings = {**self.SETTINGS, **settings}

    def rng(self, index: int, stream: int = 0) -> np.random.Generator:
        """The generator for trial `index` (independent streams by `stream`)."""
        return np.random.default_rng([self.seed, index, stream])

    @abstractmethod
    def propose(self, index: int, observations: Sequence[Observation]) -> dict | None:
        """Configuration for trial `index`, or None when the sampler has nothing left (grid)."""
