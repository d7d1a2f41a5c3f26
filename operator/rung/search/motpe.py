"""MOTPE ("motpe" in manifests): BOHB's KDE model with a multi-objective good/bad split.

Ozaki et al. 2020 (GECCO; JAIR 2022): on the model budget, the good set takes whole
non-dominated fronts, best first, while they fit in n_good; the front that does not fit
gives its remaining places by greedy hypervolume subset selection, against a reference
point 10% beyond that front's worst value w in each objective (max(1.1 w, 0.9 w), 0
replaced by a tiny positive number, as in the authors' implementation). The rest is bad.
Everything else is kde.py's: the model budget, the split sizes (topPercent, minPoints),
the random fraction and the l/g maximisation over numSamples candidates.

Differences from the paper:
- l's kernels are equally weighted (the paper weights them by hypervolume contribution);
- while the two sets must overlap (kde.py's minPoints rule), bad is the tail of the
  ranking below, as kde.py's bad is the tail of its loss order.

Observations carry their losses in `Observation.losses`. One without them on a budget where
others have them is a failure (+inf in every objective); on a budget where none has them
the scalar loss is the only objective, and the split is exactly kde.py's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rung.pareto import greedy_hypervolume_subset, loss_matrix, non_dominated_sort
from rung.search.base import Observation
from rung.search.kde import KDESampler

_TINY = 1e-12   # a reference coordinate that would be 0 (no volume at all) becomes this


class MOTPESampler(KDESampler):
    # ---- losses kept beside kde.py's per-budget cache, in the same order -----------
    def _reset(self) -> None:
        super()._reset()
        self._losses: dict[float, list[tuple[float, ...] | None]] = {}
        self._losses_seen = 0

    def _sync(self, observations: Sequence[Observation]) -> None:
        super()._sync(observations)  # may _reset(): then everything is appended again
        for o in observations[self._losses_seen:self._seen]:
            self._losses.setdefault(o.budget, []).append(o.losses)
        self._losses_seen = self._seen

    def objectives(self, budget: float) -> np.ndarray:
        """(n, m) minimised losses of the observations on `budget`, in cache order."""
        losses = self._losses[budget]
        if all(v is None for v in losses):   # a single-objective history
            store = self._stores[budget]
            return store.loss[:store.n, None].copy()
        return loss_matrix(losses)

    # ---- the split ------------------------------------------------------------------
    def ranking(self, budget: float) -> np.ndarray:
        """Cache rows, the first n_good being MOTPE's good set: fronts best first, each in
        trial order except the one the good set cuts, which starts with its greedy
        hypervolume choice; failures last. Trial order makes ties independent of the order
        observations came in."""
        store = self._stores[budget]
        by_trial = np.argsort(store.trial[:store.n], kind="stable")
        Y = self.objectives(budget)[by_trial]
        n_good = self.split_sizes(len(Y))[0]
        order: list[int] = []
        for front in non_dominated_sort(Y):
            need = n_good - len(order)
            if 0 < need < len(front):   # the front the good set cuts
                front = _hypervolume_first(Y[front], front, need)
            order.extend(front.tolist())
        order.extend(np.flatnonzero(~np.all(np.isfinite(Y), axis=1)).tolist())   # failures
        return by_trial[order]

    def _fit(self, budget):
        store = self._stores[budget]
        key = (self._generation, budget, store.n)
        if key != self._model_key:  # several asks between tells reuse one fit
            order = self.ranking(budget)
            n = store.n
            n_good, n_bad = self.split_sizes(n)
            X, d = store.X[:n], len(self.space)
            self._model = (self._kde(X[order[:n_good]], d), self._kde(X[order[n - n_bad:]], d))
            self._model_key = key
        return self._model


def _hypervolume_first(values: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """`rows` (one front, with these losses), the greedy hypervolume choice of k first."""
    worst = values.max(axis=0)
    reference = np.maximum(1.1 * worst, 0.9 * worst)
    reference[reference == 0] = _TINY
    chosen = greedy_hypervolume_subset(values, k, reference)
    rest = np.setdiff1d(np.arange(len(rows)), chosen)     # ascending: trial order
    return rows[np.concatenate([chosen, rest]).astype(int)]
