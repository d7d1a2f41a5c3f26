"""kopf handlers: thin, one per event, calling plain code in rung.controller.worker.

Event handlers keep no state on the objects. The one exception is deletion: a Study whose
checkpoints are not retained gets kopf's finalizer, so its checkpoints are removed before
it goes; after a few failed tries the finalizer is released anyway (deletion is never
blocked for good while the operator runs).
"""

from __future__ import annotations

import kopf

from rung.controller.worker import OperatorConfig, Workers
from rung.runtime.kubernetes import STUDY_LABEL

WORKERS: Workers | None = None


def configure(config: OperatorConfig) -> None:
    global WORKERS
    WORKERS = Workers(config)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_):
    settings.posting.enabled = False          # our own Events say what happened
    settings.watching.server_timeout = 300


@kopf.on.event("rung.dev", "v1alpha1", "studies")
def study_event(event, body, **_):
    if event.get("type") == "DELETED":
        WORKERS.forget((body["metadata"]["namespace"], body["metadata"]["name"]))
    else:
        WORKERS.ensure(dict(body))


def _checkpoints_to_delete(spec, **_) -> bool:
    return not (spec.get("checkpoints") or {}).get("retain", False)


@kopf.on.delete("rung.dev", "v1alpha1", "studies", when=_checkpoints_to_delete, retries=5, backoff=3)
def delete_checkpoints(body, **_):
    WORKERS.delete_checkpoints(dict(body))


@kopf.on.event("", "v1", "pods", labels={STUDY_LABEL: kopf.PRESENT})
def pod_event(body, **_):
    WORKERS.wake(body["metadata"]["namespace"], body["metadata"]["labels"][STUDY_LABEL])


@kopf.on.cleanup()
def cleanup(**_):
    WORKERS.stop_all()
