"""Schedulers (ask/tell) and the factory that builds one from a Study."""

from __future__ import annotations

from typing import Any

from rung.api.study import ALGORITHMS, Study
from rung.errors import InputError
from rung.schedulers.base import FAILED, Decision, Scheduler, SegmentRecord, TrialRecord
from rung.search.base import Sampler
from rung.space import SearchSpace

__all__ = ["FAILED", "Decision", "Scheduler", "SegmentRecord", "TrialRecord", "make_scheduler"]


def _plans() -> dict[str, tuple[type[Scheduler], type[Sampler]]]:
    """algorithm name -> (scheduler class, sampler class for new configurations)."""
    from rung.schedulers.full import FullBudget
    from rung.search.random import RandomSampler

    plans: dict[str, tuple[type[Scheduler], type[Sampler]]] = {"random": (FullBudget, RandomSampler)}
    return plans


def make_scheduler(study: Study) -> Scheduler:
    """The scheduler (with its sampler) that a Study's `algorithm` names."""
    algo = study.spec.algorithm
    plans = _plans()
    if algo.name not in plans:
        raise InputError("spec.algorithm.name", f"{algo.name!r} is not available",
                         f"use one of: {', '.join(n for n in ALGORITHMS if n in plans)}")
    scheduler_cls, sampler_cls = plans[algo.name]
    known = {**scheduler_cls.SETTINGS, **sampler_cls.SETTINGS}
    for key in algo.settings:
        if key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise InputError(f"spec.algorithm.settings.{key}", f"is not a setting of {algo.name}",
                             f"use one of: {allowed}")
    space = SearchSpace.from_spec(study.spec.search_space)
    sampler = sampler_cls(space, algo.seed, **_pick(algo.settings, sampler_cls.SETTINGS))
    budget, limits = study.spec.budget, study.spec.limits
    return scheduler_cls(sampler, budget.min, budget.max, limits.max_trials,
                         **_pick(algo.settings, scheduler_cls.SETTINGS))


def _pick(settings: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k in known}
