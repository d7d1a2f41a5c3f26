"""Warm start's earlier Studies, wherever they are kept: their records become the Priors
(rung.warmstart) that seed this Study's sampler. `rung run` reads results folders; the
operator reads Study and Trial objects of the same namespace. Both are read when the
Study's loop starts: warm-start from Studies that have finished."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rung.api import Study
from rung.errors import InputError
from rung.records import TrialRecord
from rung.search.base import Observation
from rung.space import SearchSpace

# (the name the spec gives, the earlier Study, its trial records)
Earlier = tuple[str, Study, list[TrialRecord]]


def observations_of(trials: list[TrialRecord]) -> list[Observation]:
    """Every ended segment's result (a failure's loss is +inf), as a scheduler saw them."""
    out = []
    for trial in trials:
        for seg in trial.segments:
            result = seg.result()
            if result is not None:
                budget, loss = result
                out.append(Observation(trial.index, trial.config, budget, float("inf") if loss is None else loss))
    return out


def priors_for(study: Study, load: Callable[[str], tuple[Study, list[TrialRecord]]],
               tell: Callable[[str, str], None] = lambda name, line: None) -> list:
    """The Priors of spec.warmStart.studies, each weighted by spec.warmStart.weight times the
    similarity of the two tasks' meta-features; `load(name)` reads one earlier Study (an
    InputError when it is not there). Earlier Studies that give nothing (no shared
    parameter, too few results) are left out. `tell(name, line)` hears what each gave."""
    from rung.warmstart import prior_from, similarity

    warm = study.spec.warm_start
    if warm is None:
        return []
    space = SearchSpace.from_spec(study.spec.search_space)
    priors = []
    for i, name in enumerate(warm.studies):
        field = f"spec.warmStart.studies[{i}]"
        other, trials = load(name)
        mine, theirs = study.objective, other.objective
        if (mine.metric, mine.goal) != (theirs.metric, theirs.goal):
            raise InputError(field, f"{name} optimises {theirs.metric} ({theirs.goal}), this Study "
                                    f"{mine.metric} ({mine.goal})", "warm-start from a Study with the same objective")
        weight = warm.weight * similarity(study.spec.task.meta_features, other.spec.task.meta_features)
        prior = prior_from(space, SearchSpace.from_spec(other.spec.search_space), observations_of(trials), weight)
        if prior is not None:
            priors.append(prior)
        tell(name, prior.note() if prior is not None else
             f"nothing used (weight {weight:.3g}; no shared parameter, or too few results on any budget)")
    return priors


def folder_loader(base: Path) -> Callable[[str], tuple[Study, list[TrialRecord]]]:
    """`rung run`: an earlier Study is its results folder (relative to `base`, the cwd)."""
    from rung.runtime.folder import FolderRecords

    def load(name: str) -> tuple[Study, list[TrialRecord]]:
        folder = base / name
        try:
            records = FolderRecords(folder)
            return records.study(), records.load()
        except (OSError, InputError) as e:
            raise InputError("spec.warmStart.studies", f"{name}: no results there ({e})",
                             "give the results folder of an earlier `rung run`") from None
    return load


def cluster_loader(kube, namespace: str) -> Callable[[str], tuple[Study, list[TrialRecord]]]:
    """The operator: an earlier Study is a Study (and its Trials) in the same namespace. Only
    its absence is the spec's fault; any other failed call is retried like a step's."""
    from rung.kube.api import status_of
    from rung.kube.records import fetch_study

    def load(name: str) -> tuple[Study, list[TrialRecord]]:
        try:
            study, trials, _ = fetch_study(kube, namespace, name)
        except Exception as e:
            if status_of(e) == 404:
                raise InputError("spec.warmStart.studies", f"no Study {name} in namespace {namespace}",
                                 "name an earlier Study of this namespace") from None
            raise
        return study, trials
    return load
