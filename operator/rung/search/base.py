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


_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Observation:
    """One finished segment: a configuration evaluated at a budget.

    `loss` is always minimised (a maximised metric is negated before it gets here);
    a failed evaluation has loss = +inf. A multi-objective Study also gives `losses`, one
    minimised value per objective in spec order (`loss` is then the first of them).
    """

    trial: int
    config: dict
    budget: float
    loss: float
    losses: tuple[float, ...] | None = None


class Sampler(ABC):
    #: settings a subclass accepts, with defaults (camelCase, as written in a manifest)
    SETTINGS: dict[str, Any] = {}

    def __init__(self, space: SearchSpace, seed: int = 0, **settings: Any):
        self.space = space
        self.seed = seed
        self.settings = {**self.SETTINGS, **settings}

    def rng(self, index: int, stream: int = 0) -> np.random.Generator:
        """The generator for trial `index` (independent streams by `stream`).

        A counter-based Philox keyed by (seed, index) and started at counter `stream`:
        re-keying one generator costs ~3 us where building a new one costs ~18 us, which
        matters at 100,000 asks. The generator returned is reset by the next call.
        """
        if not hasattr(self, "_philox"):
            self._philox = np.random.Philox(key=[0, 0])
            self._generator = np.random.Generator(self._philox)
            self._state = self._philox.state
        state = self._state
        state["state"]["key"][:] = [self.seed & _MASK64, index & _MASK64]
        state["state"]["counter"][:] = [0, 0, 0, stream & _MASK64]
        state["buffer_pos"], state["has_uint32"] = 4, 0
        self._philox.state = state
        return self._generator

    @abstractmethod
    def propose(self, index: int, observations: Sequence[Observation]) -> dict | None:
        """Configuration for trial `index`, or None when the sampler has nothing left (grid)."""
