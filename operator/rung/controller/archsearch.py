"""An ArchitectureSearch on the cluster: the operator creates its one-trial Study
(rung.archsearch.to_study), owned by it, and mirrors that Study's progress into the
search's status. Everything that runs the search is a Study's: its pod, checkpoints, GPU
sizing, timeouts, and the restart from the last checkpoint of a pod that was lost; the
garbage collector deletes the Study (and through it the Trial and pods) with the search.

`reconcile` is level-based and idempotent: it reads the search, the Study, its Trial and
the artefacts of the trial's latest sealed checkpoint (rung.archsearch.ARTEFACTS, never
its pickled state), and writes the status when it changed. The Study keeps the search's
name (a Study of that name that the search does not own is a conflict, said in the status).
"""

from __future__ import annotations

import json
import logging
import time

from rung.api import ArchitectureSearch, parse_archsearch, parse_study
from rung.archsearch import EVALUATION, GENOTYPE, PROGRESS, to_study, trial_of
from rung.controller.events import post_event
from rung.controller.storage import open_study_store, secret_env
from rung.controller.study import OperatorConfig, checkpoint_settings
from rung.controller.trial_store import set_condition
from rung.errors import InputError
from rung.kube.api import Kube, path, status_of
from rung.storage import study_prefix

log = logging.getLogger(__name__)

TERMINAL = ("Succeeded", "Failed", "Invalid")
PHASE_CONDITIONS = ("Running", "Succeeded", "Failed", "Invalid")
SEARCH_LABEL = "rung.dev/architecture-search"


def finished(body: dict) -> bool:
    status, meta = body.get("status") or {}, body["metadata"]
    return status.get("phase") in TERMINAL and status.get("observedGeneration") == meta.get("generation")


def reconcile(kube: Kube, config: OperatorConfig, body: dict, wall=time.time) -> None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp") or finished(body):
        return
    try:
        search = parse_archsearch(body)
    except InputError as e:
        return _write(kube, body, {"phase": "Invalid", "message": e.line()}, "Invalid", "InvalidSpec", e.line())
    study = _study_object(kube, search, body)
    if study is None:
        message = (f"a Study named {search.name!r} exists and is not this search's; delete it or rename the "
                   "search")
        return _write(kube, body, {"phase": "Failed", "message": message}, "Failed", "StudyConflict", message)
    status = {"study": search.name, **mirror(kube, config, study, wall)}
    phase = status["phase"]
    reason = {"Running": "Searching", "Succeeded": "Found", "Failed": "StudyFailed",
              "Invalid": "StudyInvalid"}.get(phase, "Pending")
    _write(kube, body, status, phase if phase != "Pending" else None, reason, status.get("message", ""))


def _study_object(kube: Kube, search: ArchitectureSearch, body: dict) -> dict | None:
    """The search's Study, created if missing; None when a Study of its name is another's."""
    ns, name, uid = search.metadata.namespace, search.name, body["metadata"]["uid"]
    try:
        study = kube.request("GET", path("studies", ns, name))
    except Exception as e:
        if status_of(e) != 404:
            raise
        study = _create_study(kube, search, body)
    owners = study["metadata"].get("ownerReferences") or []
    return study if any(o.get("uid") == uid for o in owners) else None


def _create_study(kube: Kube, search: ArchitectureSearch, body: dict) -> dict:
    spec = to_study(search).spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    owner = {"apiVersion": body["apiVersion"], "kind": "ArchitectureSearch", "name": search.name,
             "uid": body["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    doc = {"apiVersion": body["apiVersion"], "kind": "Study",
           "metadata": {"name": search.name, "namespace": search.metadata.namespace,
                        "labels": {SEARCH_LABEL: search.name}, "ownerReferences": [owner]},
           "spec": spec}
    try:
        created = kube.request("POST", path("studies", search.metadata.namespace), body=doc)
    except Exception as e:
        if status_of(e) != 409:   # created meanwhile (a second step): read it
            raise
        return kube.request("GET", path("studies", search.metadata.namespace, search.name))
    post_event(kube, body, "Normal", "StudyCreated", f"Study {search.name} runs the {search.spec.method} search")
    return created


def mirror(kube: Kube, config: OperatorConfig, study_body: dict, wall=time.time) -> dict:
    """The search's status from its Study, its Trial and its latest checkpoint's artefacts."""
    study_status = study_body.get("status") or {}
    phase = study_status.get("phase") or "Pending"
    status: dict = {"phase": phase}
    failed = next((c for c in study_status.get("conditions") or [] if c.get("type") in ("Failed", "Invalid")
                   and c.get("status") == "True"), None)
    if failed:
        status["message"] = f"Study {study_body['metadata']['name']}: {failed.get('message', '')}"
    study = parse_study(study_body)
    trial = _trial(kube, study.metadata.namespace, trial_of(study))
    if trial is not None:
        segments = (trial.get("status") or {}).get("segments") or []
        status["gpuHours"] = round(sum(s.get("gpus", 0) * max(0.0, (s.get("ended") or wall()) - s["started"])
                                       for s in segments if s.get("started")) / 3600, 4)
        status["restarts"] = sum(s.get("restarts", 0) for s in segments)
    try:
        status.update(_artefacts(kube, config, study, done=phase == "Succeeded"))
    except InputError as e:   # the store is unreachable for now: the Study's own conditions say so
        log.info("archsearch %s/%s: cannot read its checkpoints: %s", study.metadata.namespace, study.name, e)
    return status


def _trial(kube: Kube, namespace: str, name: str) -> dict | None:
    try:
        return kube.request("GET", path("trials", namespace, name))
    except Exception as e:
        if status_of(e) == 404:
            return None
        raise


def _artefacts(kube: Kube, config: OperatorConfig, study, done: bool) -> dict:
    root, secret = checkpoint_settings(study, config)
    store = open_study_store(root, secret_env(kube, study.metadata.namespace, secret))
    prefix = f"{study_prefix(study.metadata.namespace, study.name, study.uid)}/{trial_of(study)}"
    status: dict = {}
    found = store.load_file(prefix, PROGRESS)
    if found is not None:
        p = json.loads(found[1])
        status.update(epoch=p.get("epoch"), valAccuracy=p.get("val_accuracy"), currentGenotype=p.get("genotype"),
                      opsLeft=p.get("ops_left"), searchSeconds=p.get("search_seconds"),
                      resumedFrom=p.get("resumed_from"))
    if done:
        genotype, evaluation = store.load_file(prefix, GENOTYPE), store.load_file(prefix, EVALUATION)
        if genotype is not None:
            status["genotype"] = json.loads(genotype[1])
        if evaluation is not None:
            e = json.loads(evaluation[1])
            status["evaluation"] = {"testAccuracy": e.get("test_accuracy"),
                                    "randomTestAccuracy": e.get("random_test_accuracy"),
                                    "parameters": e.get("parameters")}
    return status


def _write(kube: Kube, body: dict, status: dict, condition: str | None, reason: str, message: str) -> None:
    """Patch the status when it changed (conditions: the phase's True, the others False)."""
    meta, old = body["metadata"], body.get("status") or {}
    conditions = old.get("conditions") or []
    if condition is not None:
        conditions = set_condition(conditions, condition, reason, message, others_false=PHASE_CONDITIONS)
    new = {**status, "conditions": conditions}
    if status.get("phase") in TERMINAL:
        new["observedGeneration"] = meta.get("generation")
    if all(old.get(k) == v for k, v in new.items()):
        return
    kube.request("PATCH", path("architecturesearches", meta["namespace"], meta["name"], "status"),
                 merge_patch=True, body={"status": new})
    if new.get("phase") != old.get("phase") and new.get("phase") in TERMINAL:
        post_event(kube, body, "Warning" if new["phase"] != "Succeeded" else "Normal", reason,
                   message or "genotype in status.genotype")
