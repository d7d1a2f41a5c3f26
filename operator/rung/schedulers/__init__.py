"""Schedulers (ask/tell) and the factory that builds one from a Study."""

from __future__ import annotations

from typing import Any, Sequence

from rung.api.study import Study
from rung.errors import InputError
from rung.schedulers.base import FAILED_LOSS, Decision, Scheduler
from rung.space import SearchSpace

__all__ = ["FAILED_LOSS", "Decision", "Scheduler", "make_scheduler"]


# algorithm name -> (scheduler, default sampler of new configurations)
PLANS: dict[str, tuple[str, str]] = {
    "random": ("full", "random"),
    "grid": ("full", "grid"),
    "sobol": ("full", "sobol"),
    "tpe": ("full", "tpe"),
    "evolution": ("full", "evolution"),
    "annealing": ("full", "annealing"),
    "sha": ("sha", "random"),
    "hyperband": ("hyperband", "random"),
    "asha": ("asha", "random"),
    "asha-stop": ("asha-stop", "random"),
    "bohb": ("hyperband", "tpe"),
    "async-bohb": ("asha", "tpe"),
    "median-stop": ("median-stop", "random"),
    "curve-stop": ("curve-stop", "random"),
    "pbt": ("pbt", "random"),
    "mo-asha": ("mo-asha", "random"),
    "motpe": ("full", "motpe"),
}


def _scheduler_classes() -> dict[str, type[Scheduler]]:
    from rung.schedulers.asha import ASHA
    from rung.schedulers.asha_stop import StopASHA
    from rung.schedulers.full import FullBudget
    from rung.schedulers.hyperband import SHA, Hyperband
    from rung.schedulers.curve_stop import CurveStop
    from rung.schedulers.median import MedianStop
    from rung.schedulers.mo_asha import MOASHA
    from rung.schedulers.pbt import PBT

    return {"full": FullBudget, "sha": SHA, "hyperband": Hyperband, "asha": ASHA,
            "asha-stop": StopASHA, "median-stop": MedianStop, "curve-stop": CurveStop, "pbt": PBT,
            "mo-asha": MOASHA}


# Samplers that rank by several objectives (or ignore results), and those with a model
# warm start can seed.
MULTI_OBJECTIVE_SAMPLERS = ("motpe", "random", "sobol", "grid")
MODEL_SAMPLERS = ("tpe",)


def make_scheduler(study: Study, priors: Sequence = ()) -> Scheduler:
    """The scheduler (with its sampler) that a Study's `algorithm` names, its sampler
    seeded with `priors` (rung.warmstart.Prior: spec.warmStart's earlier Studies).

    Multi-fidelity schedulers take `settings.sampler` to change where new configurations
    come from (e.g. asha with sampler: sobol).
    """
    from rung.search import SAMPLERS

    algo = study.spec.algorithm
    scheduler_key, sampler_name = PLANS[algo.name]
    scheduler_cls = _scheduler_classes()[scheduler_key]
    settings = dict(algo.settings)
    if scheduler_key != "full" and "sampler" in settings:
        sampler_name = settings.pop("sampler")
        if sampler_name not in SAMPLERS:
            raise InputError("spec.algorithm.settings.sampler", f"{sampler_name!r} is not a sampler",
                             f"use one of: {', '.join(SAMPLERS)}")
    if study.multi_objective and sampler_name not in MULTI_OBJECTIVE_SAMPLERS:
        raise InputError("spec.algorithm.settings.sampler", f"{sampler_name} ranks by one objective",
                         f"with spec.objectives use one of: {', '.join(MULTI_OBJECTIVE_SAMPLERS)}")
    if study.spec.warm_start is not None and sampler_name not in MODEL_SAMPLERS:
        raise InputError("spec.warmStart", f"{algo.name} draws configurations from {sampler_name}, which has no "
                                           "model to seed", "use tpe, bohb or async-bohb (or settings.sampler: tpe)")
    sampler_cls = SAMPLERS[sampler_name]
    known = {**scheduler_cls.SETTINGS, **sampler_cls.SETTINGS}
    for key, value in settings.items():
        if key not in known:
            allowed = ", ".join(sorted(known) + ([] if scheduler_key == "full" else ["sampler"])) or "none"
            raise InputError(f"spec.algorithm.settings.{key}", f"is not a setting of {algo.name}",
                             f"use one of: {allowed}")
    if "reductionFactor" in settings and not (isinstance(settings["reductionFactor"], (int, float))
                                              and settings["reductionFactor"] > 1):
        raise InputError("spec.algorithm.settings.reductionFactor",
                         f"must be a number above 1 (got {settings['reductionFactor']!r})", "use e.g. 3")
    space = SearchSpace.from_spec(study.spec.search_space)
    sampler = sampler_cls(space, algo.seed, **_pick(settings, sampler_cls.SETTINGS))
    if priors:
        sampler.warm_start(priors)
    budget, limits = study.spec.budget, study.spec.limits
    return scheduler_cls(sampler, budget.min, budget.max, limits.max_trials,
                         **_pick(settings, scheduler_cls.SETTINGS))


def _pick(settings: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k in known}
