"""kopf handlers: thin, one per event, calling rung.controller.manager.

The Controller lives in kopf's memo (set up at startup, stopped at cleanup). Event
handlers keep no state on the objects; the one exception is deletion: a Study whose
checkpoints are not retained gets kopf's finalizer, so its pods are stopped and then its
checkpoints removed before it goes. After a few failed tries the finalizer is released
anyway: deletion is never blocked for good while the operator runs.
"""

from __future__ import annotations

import kopf

from rung.controller import archsearch, metrics
from rung.controller.manager import Controller, PodsRemain
from rung.kube.api import Kube, api_client


class NoDiffBase(kopf.DiffBaseStorage):
    """No handler here reacts to a diff (the controller reads the whole spec each
    generation), so kopf keeps no last-handled copy: the operator writes only status
    (and the deletion finalizer), and a GitOps tool's apply finds nothing changed."""

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence):
        pass


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_):
    settings.posting.enabled = False          # our own Events say what happened
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    memo.controller = Controller(Kube(api_client(memo.config.connections), on_request=metrics.api_request),
                                 memo.config)
    memo.controller.start()


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_):
    memo.controller.stop()
    memo.stop_flag.set()   # kopf waits on its stop flag in a thread; the process exits only once it is set


@kopf.on.event("rung.dev", "v1alpha1", "studies")
def study_event(event, body, memo: kopf.Memo, **_):
    if event.get("type") == "DELETED":
        memo.controller.forget((body["metadata"]["namespace"], body["metadata"]["name"]))
    else:
        memo.controller.observe(dict(body))


def _checkpoints_to_delete(spec, **_) -> bool:
    return not (spec.get("checkpoints") or {}).get("retain", False)


@kopf.on.delete("rung.dev", "v1alpha1", "studies", when=_checkpoints_to_delete, retries=40, backoff=3)
def delete_checkpoints(body, memo: kopf.Memo, **_):
    try:
        memo.controller.delete_study(dict(body))
    except PodsRemain as e:
        raise kopf.TemporaryError(str(e), delay=2)


# ---- ArchitectureSearch: a one-trial Study it owns, mirrored into its status -------------

ARCHSEARCH_INTERVAL = 2.0   # seconds between mirrors of a running search's progress


@kopf.on.event("rung.dev", "v1alpha1", "architecturesearches")
def archsearch_event(event, body, memo: kopf.Memo, **_):
    if event.get("type") != "DELETED":   # the garbage collector deletes its Study
        archsearch.reconcile(memo.controller.kube, memo.config, dict(body))


@kopf.timer("rung.dev", "v1alpha1", "architecturesearches", interval=ARCHSEARCH_INTERVAL,
            when=lambda body, **_: not archsearch.finished(body))
def archsearch_progress(body, memo: kopf.Memo, **_):
    archsearch.reconcile(memo.controller.kube, memo.config, dict(body))
