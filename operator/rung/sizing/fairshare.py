"""Weighted max-min fair shares of a cluster's GPUs among Studies, in whole GPUs."""

from __future__ import annotations

from fractions import Fraction
from typing import Hashable, Mapping


def _water_fill(budget: int, demands: dict) -> dict:
    """Exact weighted water-filling: {key: Fraction} for {key: (weight > 0, wanted > 0)}."""
    given, active = {}, dict(demands)
    left = Fraction(budget)
    while active:
        level = left / sum(w for w, _ in active.values())  # GPUs per unit of weight
        sated = {k: wanted for k, (w, wanted) in active.items() if wanted <= w * level}
        if not sated:  # everyone left wants more than the level: split what is left
            given.update({k: w * level for k, (w, _) in active.items()})
            break
        for k, wanted in sated.items():  # they take what they want, the rest refills
            given[k] = Fraction(wanted)
            left -= wanted
            del active[k]
    return given


def shares(total: int, demands: Mapping[Hashable, tuple[float, int]]) -> dict:
    """{key: GPUs} for demands {key: (weight, wanted GPUs)}, keys best sortable
    (e.g. "namespace/name").

    Each Study gets at most what it wants; GPUs it does not need go to the others in
    proportion to their weights (max-min fairness). Fractions are rounded down and the
    GPUs that frees go one each to the largest remainders (ties: key order), so the sum
    is min(total, sum wanted): never above total and no GPU idle while a Study wants
    one. Weight 0 Studies get only what the weighted ones leave, split equally.
    Computed in exact fractions, so the result is the same on every run and machine.
    """
    for key, (weight, wanted) in demands.items():
        if weight < 0 or wanted < 0:
            raise ValueError(f"{key}: weight and wanted GPUs must be >= 0, got {weight}, {wanted}")
    result = {key: 0 for key in demands}
    budget = max(int(total), 0)
    try:
        keys = sorted(demands)
    except TypeError:  # unorderable keys: their insertion order decides ties
        keys = list(demands)
    wanting = {k: (Fraction(demands[k][0]), int(demands[k][1])) for k in keys if demands[k][1] > 0}
    weighted = {k: d for k, d in wanting.items() if d[0] > 0}
    fair = _water_fill(budget, weighted) if weighted else {}
    left = budget - sum(fair.values())
    if left > 0:  # weighted Studies are all sated: weight 0 ones share the rest equally
        fair.update(_water_fill(left, {k: (Fraction(1), d[1]) for k, d in wanting.items() if d[0] == 0}))

    for key, amount in fair.items():
        result[key] = int(amount)  # floor: amounts are >= 0
    spare = min(budget, sum(d[1] for d in wanting.values())) - sum(result.values())
    # Largest remainder first; sorted() is stable, so equal remainders keep key order.
    order = sorted((k for k in keys if k in fair), key=lambda k: -(fair[k] - result[k]))
    for key in order[:spare]:
        result[key] += 1
    return result
