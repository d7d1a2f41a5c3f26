"""Scrambled Sobol' sequence: trial k gets the k-th point, so trials fill the space evenly."""

from __future__ import annotations

import numpy as np

from rung.search.base import Sampler


class SobolSampler(Sampler):
    SETTINGS: dict = {}

    def __init__(self, space, seed=0, **settings):
        super().__init__(space, seed, **settings)
        from scipy.stats import qmc  # imported here: scipy.stats costs ~0.7 s at start-up

        self._engine = qmc.Sobol(d=max(len(space), 1), scramble=True, rng=np.random.default_rng(seed))
        self._position = 0  # index of the next point the engine would emit

    def propose(self, index, observations):
        # One engine is kept and moved forward; going back resets it (same scrambling).
        if index < self._position:
            self._engine.reset()
            self._position = 0
        if index > self._position:  # scipy's fast_forward(0) overflows
            self._engine.fast_forward(index - self._position)
        u = self._engine.random(1)[0, : len(self.space)]
        self._position = index + 1
        card = self.space.cardinality
        cat = self.space.categorical
        # Categorical dims encode as a choice index: split [0, 1) into equal cells.
        u[cat] = np.minimum(np.floor(u[cat] * card[cat]), card[cat] - 1)
        return self.space.decode(u)
