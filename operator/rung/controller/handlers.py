"""kopf handlers: thin, one per event, calling plain code in rung.controller.worker.

Only event handlers are used, so kopf keeps no state on the objects (no annotations, no
finalizers): the operator writes nothing but status, Trials, pods and Events.
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


@kopf.on.event("", "v1", "pods", labels={STUDY_LABEL: kopf.PRESENT})
def pod_event(body, **_):
    WORKERS.wake(body["metadata"]["namespace"], body["metadata"]["labels"][STUDY_LABEL])


@kopf.on.cleanup()
def cleanup(**_):
    WORKERS.stop_all()
