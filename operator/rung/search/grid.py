"""Grid search: trial `index` gets the index-th point of the full grid (fixed order)."""

from __future__ import annotations

import math

from rung.search._common import setting
from rung.search.base import Sampler
from rung.space import _plain


class GridSampler(Sampler):
    SETTINGS = {"gridPoints": 5}

    def __init__(self, space, seed=0, **settings):
        super().__init__(space, seed, **settings)
        points = setting(self.settings, "gridPoints", int, low=1)
        # The axes are small; the product is never built: a point is decoded from its index.
        self._axes = [p.grid(points) for p in space.params]
        self.size = math.prod(len(a) for a in self._axes)

    def propose(self, index, observations):
        if index < 0 or index >= self.size:
            return None
        # Mixed-radix digits, last axis fastest, matching SearchSpace.grid's itertools.product order.
        digits = []
        for axis in reversed(self._axes):
            index, d = divmod(index, len(axis))
            digits.append(d)
        digits.reverse()
        return {p.name: _plain(axis[d]) for p, axis, d in zip(self.space.params, self._axes, digits)}
