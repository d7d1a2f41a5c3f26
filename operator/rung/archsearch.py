"""An ArchitectureSearch runs as a one-trial Study: the same loop, runtime, records,
checkpoints, GPU sizing, timeouts and restart-from-checkpoint as any Study's trial.

    study = to_study(search)     # `rung run` runs it locally; the operator creates it, owned
                                 # by the ArchitectureSearch, and mirrors its progress back

The Study has one parameter per search input, each a single choice: the trial gets them
as its params (the trainable rung_trainables.nas_search reads them), and its checkpoints
are bound to them (a changed search never resumes another's). Its budget is the search's
epochs; its objective the search's validation accuracy.

The trainable leaves its artefacts in each checkpoint beside its state (ARTEFACTS): what a
results folder (`rung run`) and the ArchitectureSearch's status (the operator) show is read
from the latest sealed checkpoint, never from the trial's pickled state.
"""

from __future__ import annotations

import json

from rung.api import ArchitectureSearch, Study
from rung.api.study import Algorithm, Budget, Limits, Objective, StudySpec
from rung.runtime.base import trial_name

OBJECTIVE = "val_accuracy"
PROGRESS, GENOTYPE, HISTORY = "progress.json", "genotype.json", "history.json"   # every epoch
WEIGHTS, EVALUATION = "weights.pt", "evaluation.json"                            # once done
ARTEFACTS = (PROGRESS, GENOTYPE, HISTORY, WEIGHTS, EVALUATION)


def search_params(search: ArchitectureSearch) -> dict:
    """The trial's params: method, seed, and the resolved settings and evaluation as JSON
    text (a Study parameter is a scalar). Keys sorted: the same search gives the same text."""
    spec = search.spec
    settings = spec.search_settings()
    settings.pop("epochs")   # the trial's budget says how many
    evaluation = spec.evaluation.model_dump(mode="json")
    return {"method": spec.method, "seed": spec.seed,
            "settings": json.dumps(settings, sort_keys=True, separators=(",", ":")),
            "evaluation": json.dumps(evaluation, sort_keys=True, separators=(",", ":"))}


def to_study(search: ArchitectureSearch, name: str | None = None) -> Study:
    """The one-trial Study that runs `search` (named as it is unless `name` is given)."""
    spec = search.spec
    space = {key: {"type": "categorical", "choices": [value]} for key, value in search_params(search).items()}
    metadata = {"name": name or search.metadata.name, "namespace": search.metadata.namespace}
    study_spec = StudySpec(
        objective=Objective(metric=OBJECTIVE, goal="maximize"),
        search_space=space,
        algorithm=Algorithm(name="random", seed=spec.seed),
        budget=Budget(min=spec.epochs, max=spec.epochs, unit="epochs"),
        # One trial; its own error fails the search (a second trial would start over from
        # nothing), while a lost pod restarts it from its checkpoint (limits.maxPreemptions).
        limits=Limits(max_trials=1, parallelism=1, max_failed_trials=0),
        trial=spec.trial.model_dump(by_alias=True),
        checkpoints=spec.checkpoints,
        fair_share=spec.fair_share)
    return Study(metadata=metadata, spec=study_spec)


def trial_of(study: Study) -> str:
    """The name of the Study's one trial."""
    return trial_name(study.name, 0)
