"""Search spaces: float/int (linear or log), categorical and ordinal parameters.

Samplers work in an encoded space: every numeric or ordinal parameter maps to [0, 1]
(log-aware), every categorical one to its choice index. `encode`/`decode` convert.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from rung.api import study as api


@dataclass(frozen=True)
class Param:
    name: str
    kind: str                      # float | int | categorical | ordinal
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    choices: tuple = ()            # categorical choices or ordinal values

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    @property
    def cardinality(self) -> int:
        """Number of distinct values for categorical/ordinal; 0 for numeric."""
        return len(self.choices)

    # Numeric and ordinal values live on an interval; ints and ordinals own a cell each.
    def _interval(self) -> tuple[float, float]:
        if self.kind == "float":
            return self.low, self.high
        if self.kind == "int":
            return self.low - 0.5, self.high + 0.5
        return -0.5, len(self.choices) - 0.5  # ordinal index

    def encode(self, value: Any) -> float:
        if self.kind == "categorical":
            return float(self.choices.index(value))
        x = float(self.choices.index(value)) if self.kind == "ordinal" else float(value)
        lo, hi = self._interval()
        if hi == lo:
            return 0.5
        if self.log:
            return (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (x - lo) / (hi - lo)

    def decode(self, u: float) -> Any:
        if self.kind == "categorical":
            return self.choices[int(min(max(round(u), 0), len(self.choices) - 1))]
        u = min(max(float(u), 0.0), 1.0)
        lo, hi = self._interval()
        x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if self.log else lo + u * (hi - lo)
        if self.kind == "float":
            return min(max(x, self.low), self.high)
        if self.kind == "int":
            return int(min(max(round(x), self.low), self.high))
        return self.choices[int(min(max(round(x), 0), len(self.choices) - 1))]

    def grid(self, points: int) -> list:
        """Up to `points` evenly spaced values (all values for categorical/ordinal)."""
        if self.kind in ("categorical", "ordinal"):
            return list(self.choices)
        if self.kind == "float":
            if points == 1 or self.low == self.high:
                return [self.decode(0.5)]
            lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
            values = [float(math.exp(x)) if self.log else float(x) for x in np.linspace(lo, hi, points)]
            values[0], values[-1] = float(self.low), float(self.high)  # exact ends, no round-off
            return values
        n = int(self.high - self.low + 1)
        if n <= points:
            return list(range(int(self.low), int(self.high) + 1))
        us = (np.arange(points) + 0.5) / points
        return sorted({self.decode(u) for u in us})


class SearchSpace:
    """An ordered set of parameters."""

    def __init__(self, params: Sequence[Param]):
        self.params = list(params)
        self.names = [p.name for p in self.params]
        self.categorical = np.array([p.categorical for p in self.params], dtype=bool)
        self.cardinality = np.array([p.cardinality for p in self.params], dtype=int)

    @classmethod
    def from_spec(cls, spec: Mapping[str, api.FloatParam | api.IntParam | api.CategoricalParam | api.OrdinalParam]):
        params = []
        for name, p in spec.items():
            if p.type in ("float", "int"):
                params.append(Param(name, p.type, p.low, p.high, p.log))
            elif p.type == "categorical":
                params.append(Param(name, "categorical", choices=tuple(p.choices)))
            else:
                params.append(Param(name, "ordinal", choices=tuple(p.values)))
        return cls(params)

    def __len__(self) -> int:
        return len(self.params)

    def sample(self, rng: np.random.Generator) -> dict:
        """A uniform random configuration (uniform in log space for log parameters)."""
        return self.decode(self.sample_encoded(rng, 1)[0])

    def sample_encoded(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random((n, len(self.params)))
        for j, p in enumerate(self.params):
            if p.categorical:
                u[:, j] = np.floor(u[:, j] * p.cardinality)
        return u

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        return np.array([p.encode(config[p.name]) for p in self.params], dtype=float)

    def decode(self, vector: Sequence[float]) -> dict:
        return {p.name: _plain(p.decode(u)) for p, u in zip(self.params, vector)}

    def grid(self, points: int) -> Iterator[dict]:
        """The full grid, `points` values per numeric parameter, in a fixed order."""
        axes = [p.grid(points) for p in self.params]
        for values in itertools.product(*axes):
            yield {n: _plain(v) for n, v in zip(self.names, values)}

    def grid_size(self, points: int) -> int:
        return math.prod(len(p.grid(points)) for p in self.params)


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars, so configs serialise as JSON."""
    return v.item() if isinstance(v, np.generic) else v
