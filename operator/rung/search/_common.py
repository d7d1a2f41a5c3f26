"""Small helpers shared by the samplers (not part of the public interface)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from rung.errors import InputError
from rung.search.base import Observation


def setting(settings: dict, key: str, cast: type, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Any:
    """settings[key] as `cast`, rejected with a field-naming error when outside [low, high]."""
    value = settings[key]
    field = f"spec.algorithm.settings.{key}"
    try:
        if isinstance(value, bool) or (cast is int and float(value) != int(value)):
            raise ValueError
        value = cast(value)
    except (TypeError, ValueError):
        raise InputError(field, f"must be a {cast.__name__} (got {value!r})") from None
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(field, f"must be {'above' if low_open else 'at least'} {low} (got {value!r})")
    if high is not None and value > high:
        raise InputError(field, f"must be at most {high} (got {value!r})")
    return value


def final_results(observations: Sequence[Observation]) -> list[Observation]:
    """One observation per trial, at the largest budget it reached, sorted by trial.

    Ties at the same budget keep the lowest loss, so the result does not depend on the
    order of `observations`. NaN counts as a failure (+inf).
    """
    best: dict[int, Observation] = {}
    for o in observations:
        cur = best.get(o.trial)
        if cur is None or (o.budget, -_loss(o)) > (cur.budget, -_loss(cur)):
            best[o.trial] = o
    return [best[t] for t in sorted(best)]


def _loss(o: Observation) -> float:
    return math.inf if math.isnan(o.loss) else o.loss


loss_of = _loss
