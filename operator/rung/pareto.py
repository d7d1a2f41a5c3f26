"""Pareto fronts of minimised loss vectors: non-dominated sorting, crowding distance,
hypervolume, and the subsets a bounded status or a sampler keeps.

A point is one trial's losses (every objective minimised). A point with an infinite or NaN
coordinate (a failed or diverged trial) is never non-dominated: it belongs to no front and
ranks after every finite point. Indices returned always refer to the input's rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Points = Sequence[Sequence[float]] | np.ndarray


def as_points(points: Points) -> np.ndarray:
    """An (n, d) float array (n may be 0)."""
    array = np.asarray(points, dtype=float)
    if array.ndim == 2:
        return array
    return array.reshape(len(array), -1) if array.size else array.reshape(0, 0)


def loss_matrix(rows: Sequence[Sequence[float] | None]) -> np.ndarray:
    """(n, m) losses, m the longest row's length (1 when every row failed); a row that is
    None (a failure) or of another length counts as failed: +inf in every objective."""
    width = max((len(v) for v in rows if v is not None), default=1)
    failed = (np.inf,) * width
    return as_points([v if v is not None and len(v) == width else failed for v in rows])


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when `a` is no worse than `b` everywhere and better somewhere (both finite)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a <= b) and np.any(a < b))


def non_dominated_sort(points: Points, limit: int | None = None) -> list[np.ndarray]:
    """The fronts of the finite points, best first, each an ascending array of indices.

    Front 0 holds the points nothing dominates; front k those dominated only by points of
    earlier fronts. Non-finite points are in no front. With `limit`, sorting stops once
    the fronts returned hold at least `limit` points. O(n^2 d) time and O(n^2) memory.
    """
    P = as_points(points)
    finite = np.flatnonzero(np.all(np.isfinite(P), axis=1))
    F = P[finite]
    m = len(F)
    no_worse = np.ones((m, m), dtype=bool)
    better = np.zeros((m, m), dtype=bool)
    for column in F.T:
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    dominated_by = no_worse & better                  # [i, j]: i dominates j
    count = dominated_by.sum(axis=0)                  # how many points dominate j
    fronts, placed = [], 0
    current = np.flatnonzero(count == 0)
    while current.size and (limit is None or placed < limit):
        fronts.append(finite[current])
        placed += current.size
        count -= dominated_by[current].sum(axis=0)
        count[current] = -1                           # placed: never a front again
        current = np.flatnonzero(count == 0)
    return fronts


def pareto_ranks(points: Points) -> np.ndarray:
    """Each point's front number; non-finite points get the number after the last front."""
    P = as_points(points)
    fronts = non_dominated_sort(P)
    ranks = np.full(len(P), len(fronts), dtype=int)
    for k, front in enumerate(fronts):
        ranks[front] = k
    return ranks


def pareto_front(points: Points) -> np.ndarray:
    """Indices of the non-dominated finite points (ascending; empty when none is finite)."""
    fronts = non_dominated_sort(points, limit=1)
    return fronts[0] if fronts else np.zeros(0, dtype=int)


def crowding_distance(points: Points) -> np.ndarray:
    """NSGA-II crowding distance of each point within `points` (one front).

    Per objective, the extremes get +inf and an interior point the gap between its two
    neighbours divided by the objective's range; the distance is the sum. An objective on
    which all points are equal separates nothing, so it adds nothing (not even the inf of
    the extremes): a front of identical points is then ordered by its tie-breaker alone.
    Ties in an objective are ordered by index.
    """
    P = as_points(points)
    n = len(P)
    distance = np.zeros(n)
    for column in P.T:
        order = np.argsort(column, kind="stable")
        values = column[order]
        span = values[-1] - values[0] if n else 0.0
        if not span > 0 or not np.isfinite(span):
            continue
        distance[order[[0, -1]]] = np.inf
        distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance


def rank_order(points: Points, limit: int | None = None) -> list[int]:
    """Indices from best to worst: front by front, inside a front by crowding distance
    (largest first, so the front's extremes and sparse regions lead), then by index;
    non-finite points last, by index. With `limit`, at least the first `limit` are given."""
    P = as_points(points)
    order: list[int] = []
    for front in non_dominated_sort(P, limit):
        distance = crowding_distance(P[front])
        order.extend(front[np.lexsort((front, -distance))].tolist())
    if limit is None or len(order) < limit:
        order.extend(np.flatnonzero(~np.all(np.isfinite(P), axis=1)).tolist())
    return order


def hypervolume(points: Points, reference: Sequence[float]) -> float:
    """Volume dominated by the points and bounded by `reference` (exact).

    Only finite points strictly better than the reference in every objective add volume.
    Two objectives: one sweep, O(n log n). More: slices along the last objective, each a
    hypervolume in one dimension fewer (O(n^(d-1) log n): meant for small sets).
    """
    r = np.asarray(reference, dtype=float)
    P = as_points(points)
    if len(P) == 0:
        return 0.0
    if P.shape[1] != len(r):
        raise ValueError(f"points have {P.shape[1]} objectives, the reference {len(r)}")
    P = P[np.all(np.isfinite(P), axis=1) & np.all(P < r, axis=1)]
    return _volume(P, r)


def _volume(P: np.ndarray, r: np.ndarray) -> float:
    if len(P) == 0:
        return 0.0
    if P.shape[1] == 1:
        return float(r[0] - P[:, 0].min())
    if P.shape[1] == 2:
        P = P[np.lexsort((P[:, 1], P[:, 0]))]                 # by the first objective
        widths = np.diff(np.append(P[:, 0], r[0]))
        heights = r[1] - np.minimum.accumulate(P[:, 1])      # best second objective so far
        return float(widths @ heights)
    P = P[np.argsort(P[:, -1], kind="stable")]
    cuts = np.append(P[:, -1], r[-1])
    total = 0.0
    for i in range(len(P)):
        thickness = cuts[i + 1] - cuts[i]
        if thickness > 0:                                    # the slab where points 0..i count
            total += thickness * _volume(P[: i + 1, :-1], r[:-1])
    return total


def greedy_hypervolume_subset(points: Points, k: int, reference: Sequence[float]) -> list[int]:
    """k indices chosen one at a time, each adding the most hypervolume to those before it
    (greedy hypervolume subset selection; ties go to the lower index). In choice order.

    The gain of p over the chosen set S is HV({p}) - HV({max(p, s) : s in S}): the part of
    p's box that no box of S already covers.
    """
    P = as_points(points)
    r = np.asarray(reference, dtype=float)
    alone = np.array([hypervolume(p[None], r) for p in P])
    gain = alone.copy()
    chosen: list[int] = []
    free = np.ones(len(P), dtype=bool)
    for _ in range(min(k, len(P))):
        best_gain = gain[free].max()
        tolerance = 1e-12 * max(abs(best_gain), 1.0)    # equal gains computed along different paths
        best = int(np.flatnonzero(free & (gain >= best_gain - tolerance))[0])
        chosen.append(best)
        free[best] = False
        for i in np.flatnonzero(free):
            gain[i] = alone[i] - hypervolume(np.maximum(P[i], P[chosen]), r)
    return chosen


def front_subset(points: Points, k: int) -> np.ndarray:
    """At most k indices of the first front, spread out (ascending).

    While the front is too large, the point with the smallest crowding distance (recomputed
    after each removal; ties: the highest index) is dropped, so the extremes of every
    objective stay as long as k allows and the rest thin out evenly.
    """
    if k < 0:
        raise ValueError(f"k must be at least 0 (got {k})")
    P = as_points(points)
    keep = pareto_front(P).tolist()
    while len(keep) > k:
        distance = crowding_distance(P[keep])
        drop = min(range(len(keep)), key=lambda i: (distance[i], -keep[i]))
        del keep[drop]
    return np.array(keep, dtype=int)
