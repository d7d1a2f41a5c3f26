"""Trial objects as a Study loop's records, and the Study's status (the operator's RecordStore).

A Trial is created once per trial (spec: study, index, params; never changed again) and
its status holds the segments. Every status write carries the resourceVersion this store
last read or wrote, so a write over someone else's change fails (409) instead of erasing
it; the loop then reloads. `load()` is a real LIST, not the watch cache, so a reload sees
every write that succeeded (a first load may take the Trial watch's own first LIST
instead, while no Trial has changed since). The Study's status holds counts, the best
trial, a bounded top-k and the next trial number: nothing that grows with the number of
trials.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
from concurrent.futures import Executor
from typing import Callable

import kopf

from rung.api import Study
from rung.api.study import PARETO_IN_STATUS
from rung.controller.events import post_event
from rung.kube.api import GROUP, VERSION, Kube, path, status_of
from rung.kube.informer import STUDY_LABEL, version
from rung.kube.records import owned_by, segment_to_status, study_status, trial_from_object
from rung.records import RecordStore, SegmentStatus, TrialRecord
from rung.report import Standings, objective_values, pareto_front_of
from rung.runtime.loop import HOLD_STORE, NO_RESULT, StudyState

log = logging.getLogger(__name__)

TRIAL_PHASES = {SegmentStatus.RUNNING: "Running", SegmentStatus.COMPLETED: "Succeeded",
                SegmentStatus.FAILED: "Failed", SegmentStatus.STOPPED: "Stopped"}
STUDY_PHASES = {StudyState.RUNNING: "Running", StudyState.INTERRUPTED: "Running",
                StudyState.SUCCEEDED: "Succeeded", StudyState.FAILED: "Failed"}
TOP_K = 10


class StaleRecords(Exception):
    """Someone else wrote a Trial this store meant to write: reload and decide again."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class TrialStore(RecordStore):
    def __init__(self, kube: Kube, study: Study, study_object: Callable[[], dict], pool: Executor | None = None,
                 status_every: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 listed: Callable[[], list[dict] | None] | None = None):
        """`study_object()` is the newest Study object known (from the watch, or from this
        store's own status writes); `pool` writes several Trials at once (None: one by one);
        `listed()` gives the Study's Trials as already listed, if still current (None: list);
        a status write that changes only the Study's progress (counts, best, top, elapsed)
        waits until `status_every` seconds have passed since the last one."""
        self.kube, self.study, self.study_object, self.pool = kube, study, study_object, pool
        self.status_every, self.clock, self.listed = status_every, clock, listed
        self._status_written_at: float | None = None
        self.namespace, self.name = study.metadata.namespace, study.name
        self.sign = 1.0 if study.minimize else -1.0
        self.trials: dict[int, TrialRecord] = {}
        self.standings = Standings()             # the status's counts, best and top k
        self.uids: dict[str, str] = {}           # trial name -> uid (owner of its pods)
        self.versions: dict[str, int] = {}       # trial name -> resourceVersion last read or written
        self._phase: dict[str, str] = {}         # trial name -> phase last written
        self.outside: collections.deque[tuple[str, str, int]] = collections.deque()   # (event, name, version)
        self.written_study: dict | None = None   # the Study object our last status write returned

    # ---- trials -----------------------------------------------------------------------
    def load(self) -> list[TrialRecord]:
        self.outside.clear()   # before the LIST: a change after it is seen by changed()
        items = self.listed() if self.listed else None
        if items is None:
            items, _ = self.kube.list_all(path("trials", self.namespace),
                                          {"labelSelector": f"{STUDY_LABEL}={self.name}"})
        study = self.study_object()
        self.trials, self.uids, self.versions, self._phase = {}, {}, {}, {}
        for obj in items:
            if not owned_by(obj, study):
                continue   # left by an earlier Study of the same name, on its way out
            trial = trial_from_object(obj)
            self.trials[trial.index] = trial
            self.uids[trial.name], self.versions[trial.name] = obj["metadata"]["uid"], version(obj)
            self._phase[trial.name] = (obj.get("status") or {}).get("phase", "")
        self.standings = Standings(self.trials.values())
        return sorted(self.trials.values(), key=lambda t: t.index)

    def save(self, trial: TrialRecord) -> None:
        if trial.name not in self.uids:
            self._create(trial)
        phase = TRIAL_PHASES[trial.state]
        seg = trial.current
        value = None if seg.loss is None or seg.running else self.sign * seg.loss
        body = {"metadata": {"resourceVersion": str(self.versions[trial.name])},
                "status": {"phase": phase, "budget": seg.budget, "reached": seg.reached, "value": value,
                           "segments": [segment_to_status(s) for s in trial.segments]}}
        try:
            written = self.kube.request("PATCH", path("trials", self.namespace, trial.name, "status"),
                                        body=body, merge_patch=True)
        except Exception as e:
            if status_of(e) in (404, 409):
                raise StaleRecords(f"trial {trial.name} was changed or deleted by someone else") from e
            raise
        self.versions[trial.name] = version(written)
        self.trials[trial.index] = trial
        self.standings.set(trial)
        if phase == "Failed" and self._phase.get(trial.name) != "Failed":
            post_event(self.kube, self.study_object(), "Warning", "TrialFailed", f"{trial.name}: {seg.reason}")
        self._phase[trial.name] = phase

    def save_all(self, trials: list[TrialRecord]) -> None:
        """Each Trial is its own object: they are created and their statuses written side
        by side, so the step waits for the slowest write instead of their sum; the first
        failure is raised once all are done. A new Trial whose create fails leaves its
        number free while higher ones go through (the scheduler gives it again)."""
        if self.pool is None or len(trials) < 2:
            return super().save_all(trials)
        futures = [self.pool.submit(self.save, t) for t in trials]
        failures = [e for e in (f.exception() for f in futures) if e]
        if failures:
            raise failures[0]

    def _create(self, trial: TrialRecord) -> None:
        study = self.study_object()
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Trial",
            "metadata": {"name": trial.name, "namespace": self.namespace, "labels": {STUDY_LABEL: self.name},
                         "ownerReferences": [kopf.build_owner_reference(study)]},
            "spec": {"study": self.name, "index": trial.index, "params": trial.config,
                     **{k: v for k, v in (("parent", trial.parent), ("replaces", trial.replaces)) if v is not None}},
        }
        try:
            created = self.kube.request("POST", path("trials", self.namespace), body=body)
        except Exception as e:
            if status_of(e) != 409:
                raise
            # It exists: ours if an answer was lost, else another writer's (never overwritten).
            created = self.kube.request("GET", path("trials", self.namespace, trial.name))
            spec = created["spec"]
            if not owned_by(created, study) or spec.get("index") != trial.index or spec.get("params") != trial.config:
                raise StaleRecords(f"trial {trial.name} exists with other parameters") from e
        self.uids[trial.name], self.versions[trial.name] = created["metadata"]["uid"], version(created)

    def changed(self) -> bool:
        """Did anyone else change this Study's Trials since the last load or write?"""
        outside = False
        while self.outside:
            event, name, rv = self.outside.popleft()
            known = self.versions.get(name)
            if event == "DELETED" or known is None or rv > known:
                outside = True
        return outside

    def trial_changed(self, event: str, obj: dict) -> bool:
        """From the Trial watch (any thread): remember it for changed(). False when it is
        the echo of this store's own write (nothing to step for)."""
        name, rv = obj["metadata"]["name"], version(obj)
        self.outside.append((event, name, rv))
        known = self.versions.get(name)
        return event == "DELETED" or known is None or rv > known

    def trial_owner(self, trial_name: str) -> dict | None:
        """The ownerReference a trial's pods carry (its Trial), once the Trial exists."""
        uid = self.uids.get(trial_name)
        return kopf.build_owner_reference({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Trial",
                                           "metadata": {"name": trial_name, "uid": uid}}) if uid else None

    # ---- the Study's status -----------------------------------------------------------
    def load_status(self) -> dict:
        return study_status(self.study_object())

    def save_status(self, status: dict) -> bool:
        """Write the Study's status; False when only its progress changed and the write waits
        (status_due() says how long)."""
        phase = STUDY_PHASES[status["state"]]
        before = self.study_object()
        old = before.get("status") or {}
        patch = {
            "phase": phase, "observedGeneration": self.study.metadata.model_extra.get("generation"),
            "conditions": study_conditions(old.get("conditions") or [], phase, status.get("reason", ""),
                                           status.get("holds") or {}, status.get("waits", "")),
        }
        if settled(patch) == settled(old) and self.status_due() > 0:
            return False   # decided first: the progress below (top k, a Pareto front) costs a pass over trials
        standings = self.standings
        top = standings.top(TOP_K)
        best = top[0] if top else None
        patch.update({
            "trials": {"total": len(standings), **{str(s): standings.counts[s] for s in SegmentStatus}},
            "elapsed": round(status.get("elapsed", 0.0), 3), "nextIndex": status.get("next_index", 0),
            "best": None if best is None else {
                "trial": best[0].name, "value": self.sign * best[2], "budget": best[1], "params": best[0].config},
            "top": [{"trial": t.name, "value": self.sign * loss, "budget": budget} for t, budget, loss in top],
            "paretoFront": self._pareto_front() if self.study.multi_objective else None,
        })
        self.patch_study_status(patch)
        self._status_written_at = self.clock()
        if phase != old.get("phase"):
            if phase == "Failed":
                post_event(self.kube, before, "Warning", "StudyFailed", status.get("reason", ""))
            elif phase == "Succeeded" and best is not None:
                post_event(self.kube, before, "Normal", "StudySucceeded",
                           f"best {self.study.objective.metric} {self.sign * best[2]:g} ({best[0].name})")
        return True

    def status_due(self) -> float:
        """Seconds until a status write that changes only the progress may go (0: now)."""
        if self._status_written_at is None:
            return 0.0
        return max(0.0, self._status_written_at + self.status_every - self.clock())

    def _pareto_front(self) -> list[dict]:
        """A pass over every trial (multi-objective Studies only)."""
        return [{"trial": t.name, "budget": budget,
                 "values": {o.metric: v for o, v in zip(self.study.objectives, objective_values(self.study, losses))}}
                for t, budget, losses in pareto_front_of(sorted(self.trials.values(), key=lambda t: t.index),
                                                          PARETO_IN_STATUS)]

    def patch_study_status(self, patch: dict) -> None:
        self.written_study = self.kube.request("PATCH", path("studies", self.namespace, self.name, "status"),
                                               body={"status": patch}, merge_patch=True)


def settled(status: dict) -> tuple:
    """What of a Study's status is written at once when it changes: its phase, the
    generation it observed and its conditions (their times aside)."""
    return (status.get("phase"), status.get("observedGeneration"),
            [(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in status.get("conditions") or []])


def study_conditions(conditions: list[dict], phase: str, reason: str, holds: dict[str, dict],
                     waits: str = "") -> list[dict]:
    """The Study's conditions: its phase, whether it is held (and why), its store, and
    whether its next segment waits for GPUs (`waits`: why)."""
    wanted = {
        "Running": ("Running", "TrialsRunning", "trials are running"),
        "Succeeded": ("Succeeded", "AllTrialsDone", "every trial the algorithm asked for is done"),
        "Failed": ("Failed", failure_code(reason), reason),
    }[phase]
    conditions = set_condition(conditions, *wanted, others_false=("Running", "Succeeded", "Failed", "Invalid"))
    if holds:
        hold = holds[sorted(holds)[0]]
        conditions = upsert_condition(conditions, "Held", "True", hold["reason"], hold["message"])
    elif any(c["type"] == "Held" for c in conditions):
        conditions = upsert_condition(conditions, "Held", "False", "Resumed", "nothing holds the Study back")
    store = (holds.get(HOLD_STORE) or {}).get("message", "")
    if store or any(c["type"] == "CheckpointStoreReady" for c in conditions):
        conditions = upsert_condition(conditions, "CheckpointStoreReady", "False" if store else "True",
                                      "StoreUnavailable" if store else "StoreReachable",
                                      store or "the checkpoint store answers")
    if waits or any(c["type"] == "GpusAvailable" for c in conditions):
        conditions = upsert_condition(conditions, "GpusAvailable", "False" if waits else "True",
                                      "WaitingForGpus" if waits else "GpusAvailable",
                                      waits or "its next segments get GPUs")
    return conditions


def failure_code(reason: str) -> str:
    if reason.startswith(NO_RESULT):
        return "NoResult"
    return "TooManyFailedTrials" if "maxFailedTrials" in reason else "AlgorithmStuck"


def upsert_condition(conditions: list[dict], type_: str, status: str, reason: str, message: str) -> list[dict]:
    """`conditions` with `type_` set; its transition time moves only when its status changes."""
    prev = next((c for c in conditions if c["type"] == type_), None)
    changed = prev is None or prev.get("status") != status
    new = {"type": type_, "status": status, "reason": reason, "message": message[:1024],
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
