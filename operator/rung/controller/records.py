"""Trial and Study objects as the loop's durable record (the operator's RecordStore).

A Trial object is created once per trial (spec: study, index, params; never changed
again) and its status holds the segments; the Study's status holds only counts, the
best trial and a bounded top-k. Nothing lives only in memory: after a restart `load()`
returns every trial the Study ever had.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import asdict, fields

from kubernetes.client import ApiException, CustomObjectsApi
from pydantic.alias_generators import to_camel

from rung.api import Study
from rung.controller.events import post_event
from rung.report import summarize, top_trials
from rung.runtime.records import COMPLETED, FAILED_STATE, RUNNING, STOPPED, RecordStore, SegmentDoc, TrialDoc
from rung.runtime.kubernetes import STUDY_LABEL

log = logging.getLogger(__name__)

GROUP, VERSION = "rung.dev", "v1alpha1"
TRIAL_PHASES = {RUNNING: "Running", COMPLETED: "Succeeded", FAILED_STATE: "Failed", STOPPED: "Stopped"}
STUDY_PHASES = {"running": "Running", "interrupted": "Running", "succeeded": "Succeeded", "failed": "Failed"}
MAX_CURVE = 1000   # points kept per segment in a Trial's status (etcd objects stay small)
TOP_K = 10

_SEGMENT_KEYS = {f.name: to_camel(f.name) for f in fields(SegmentDoc)}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_reference(kind: str, body: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "name": body["metadata"]["name"],
            "uid": body["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def segment_to_status(seg: SegmentDoc) -> dict:
    doc = {_SEGMENT_KEYS[k]: v for k, v in asdict(seg).items() if v is not None}
    # JSON has no inf/nan (a diverged metric): the API server would refuse the whole status
    doc["metrics"] = {k: v for k, v in seg.metrics.items() if not isinstance(v, float) or math.isfinite(v)}
    if len(seg.curve) > MAX_CURVE:   # keep the start and the most recent points
        doc["curve"] = seg.curve[: MAX_CURVE // 2] + seg.curve[-MAX_CURVE // 2:]
    return doc


def segment_from_status(doc: dict) -> SegmentDoc:
    back = {v: k for k, v in _SEGMENT_KEYS.items()}
    return SegmentDoc(**{back[k]: v for k, v in doc.items() if k in back})


class TrialRecords(RecordStore):
    def __init__(self, api: CustomObjectsApi, study: Study, study_body: dict):
        self.api, self.study, self.body = api, study, study_body
        self.namespace, self.name = study.metadata.namespace, study.name
        self.sign = 1.0 if study.minimize else -1.0
        self.docs: dict[int, TrialDoc] = {}
        self.uids: dict[str, str] = {}           # trial name -> uid (owner of its pods)
        self._last_phase: dict[str, str] = {}    # trial name -> phase last written

    # ---- trials -----------------------------------------------------------------------
    def load(self) -> list[TrialDoc]:
        items = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "trials", label_selector=f"{STUDY_LABEL}={self.name}")["items"]
        docs = []
        for obj in items:
            spec, status = obj.get("spec", {}), obj.get("status") or {}
            doc = TrialDoc(int(spec["index"]), obj["metadata"]["name"], dict(spec.get("params") or {}),
                           [segment_from_status(s) for s in status.get("segments") or []])
            if not doc.segments:
                continue   # created, then the operator died before its first segment was written
            docs.append(doc)
            self.uids[doc.name] = obj["metadata"]["uid"]
            self._last_phase[doc.name] = status.get("phase", "")
        self.docs = {d.index: d for d in docs}
        return sorted(docs, key=lambda d: d.index)

    def save(self, trial: TrialDoc) -> None:
        if trial.name not in self.uids:
            self._create(trial)
        phase = TRIAL_PHASES[trial.state]
        seg = trial.current
        value = None if seg.loss is None or trial.state == RUNNING else self.sign * seg.loss
        status = {"phase": phase, "budget": seg.budget, "reached": seg.reached, "value": value,
                  "segments": [segment_to_status(s) for s in trial.segments]}
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, "trials", trial.name, {"status": status})
        self.docs[trial.index] = trial
        if phase == "Failed" and self._last_phase.get(trial.name) != "Failed":
            post_event(self.api.api_client, self.body, "Warning", "TrialFailed", f"{trial.name}: {seg.reason}")
        self._last_phase[trial.name] = phase

    def _create(self, trial: TrialDoc) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Trial",
            "metadata": {"name": trial.name, "namespace": self.namespace, "labels": {STUDY_LABEL: self.name},
                         "ownerReferences": [owner_reference("Study", self.body)]},
            "spec": {"study": self.name, "index": trial.index, "params": trial.config},
        }
        try:
            created = self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "trials", body)
        except ApiException as e:
            if e.status != 409:   # 409: created before a crash; names are deterministic
                raise
            created = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "trials", trial.name)
            if created["spec"].get("params") != trial.config:
                # It died before its first segment was recorded (load() skipped it) and the
                # sampler, having seen more results since, chose anew: no pod ever ran it.
                created = self.api.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "trials", trial.name, {"spec": {"params": trial.config}})
        self.uids[trial.name] = created["metadata"]["uid"]

    def trial_owner(self, trial_name: str) -> dict | None:
        uid = self.uids.get(trial_name)
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Trial", "name": trial_name, "uid": uid,
                "controller": True, "blockOwnerDeletion": True} if uid else None

    # ---- the Study's status -----------------------------------------------------------
    def load_status(self) -> dict:
        status = self.body.get("status") or {}
        phase = status.get("phase")
        state = {"Succeeded": "succeeded", "Failed": "failed"}.get(phase, "running")
        reason = next((c.get("message", "") for c in status.get("conditions") or []
                       if c.get("type") == "Failed" and c.get("status") == "True"), "")
        return {"state": state, "reason": reason, "elapsed": float(status.get("elapsed") or 0.0)}

    def save_status(self, status: dict) -> None:
        docs = sorted(self.docs.values(), key=lambda d: d.index)
        summary = summarize(self.study, docs, status)
        phase = STUDY_PHASES[status["state"]]
        counts = {"total": len(docs), "running": summary.counts[RUNNING], "completed": summary.counts[COMPLETED],
                  "failed": summary.counts[FAILED_STATE], "stopped": summary.counts[STOPPED]}
        best = summary.best
        patch = {
            "phase": phase, "trials": counts, "elapsed": round(status.get("elapsed", 0.0), 3),
            "observedGeneration": self.body["metadata"].get("generation"),
            "best": None if best is None else {
                "trial": best.trial.name, "value": summary.metric(best.loss), "budget": best.budget,
                "params": best.trial.config},
            "top": [{"trial": t.name, "value": summary.metric(loss), "budget": budget}
                    for t, budget, loss in top_trials(summary, TOP_K)],
            "conditions": self._conditions(phase, status.get("reason", ""), status.get("held", "")),
        }
        self.patch_study_status(patch)
        if phase != (self.body.get("status") or {}).get("phase"):
            if phase == "Failed":
                post_event(self.api.api_client, self.body, "Warning", "StudyFailed", status.get("reason", ""))
            elif phase == "Succeeded" and best is not None:
                post_event(self.api.api_client, self.body, "Normal", "StudySucceeded",
                           f"best {self.study.spec.objective.metric} {summary.metric(best.loss):g} "
                           f"({best.trial.name})")
        self.body.setdefault("status", {}).update(patch)

    def _conditions(self, phase: str, reason: str, held: str) -> list[dict]:
        wanted = {
            "Running": ("Running", "TrialsRunning", "trials are running"),
            "Succeeded": ("Succeeded", "AllTrialsDone", "every trial the algorithm asked for is done"),
            "Failed": ("Failed", "TooManyFailedTrials", reason),
        }[phase]
        conditions = set_condition((self.body.get("status") or {}).get("conditions") or [], *wanted,
                                   others_false=("Running", "Succeeded", "Failed", "Invalid"))
        if held or any(c["type"] == "CheckpointStoreReady" for c in conditions):
            conditions = upsert_condition(conditions, "CheckpointStoreReady", "False" if held else "True",
                                          "StoreUnavailable" if held else "StoreReachable",
                                          held or "the checkpoint store answers")
        return conditions

    def patch_study_status(self, patch: dict) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, "studies", self.name, {"status": patch})


def upsert_condition(conditions: list[dict], type_: str, status: str, reason: str, message: str) -> list[dict]:
    """`conditions` with `type_` set; its transition time moves only when its status changes."""
    prev = next((c for c in conditions if c["type"] == type_), None)
    changed = prev is None or prev.get("status") != status
    new = {"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": now() if changed else prev.get("lastTransitionTime", now())}
    return [c for c in conditions if c["type"] != type_] + [new]


def set_condition(conditions: list[dict], type_: str, reason: str, message: str,
                  others_false: tuple[str, ...] = ()) -> list[dict]:
    """`type_` True, and those of `others_false` that are present False."""
    for t in others_false:
        prev = next((c for c in conditions if c["type"] == t), None)
        if t != type_ and prev is not None:
            conditions = upsert_condition(conditions, t, "False", prev.get("reason", ""), prev.get("message", ""))
    return upsert_condition(conditions, type_, "True", reason, message)
