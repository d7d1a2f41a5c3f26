"""Kubernetes Events about Studies and Trials (what `kubectl describe study|trial` shows).

Study Events (posted where the Study changes): Started, Held, Resumed, InvalidSpec, NotAllowed,
TrialFailed, StudySucceeded, StudyFailed. Trial Events, one per transition of a segment:
SegmentStarted, SegmentRestarted (its pod was lost), SegmentSucceeded, SegmentDiverged,
SegmentFailed (with the reason), SegmentStopped (with the reason).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rung.controller import metrics
from rung.kube.api import GROUP, VERSION, Kube, message_of, path
from rung.records import SegmentStatus, TrialRecord

log = logging.getLogger(__name__)


def post_event(kube: Kube, obj: dict, type_: str, reason: str, message: str) -> bool:
    """One Event about `obj`. A courtesy: a failure is logged, never raised (False)."""
    meta = obj["metadata"]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj.get("apiVersion", "rung.dev/v1alpha1"),
                           "kind": obj.get("kind", "Study"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1, "source": {"component": "rung-operator"}, "reportingComponent": "rung-operator",
    }
    try:
        kube.request("POST", path("events", meta["namespace"]), body=event)
        return True
    except Exception as e:
        log.warning("cannot post event %s for %s: %s", reason, meta["name"], message_of(e))
        return False


# ---- Trials: each persisted transition of a segment, told once ---------------------------------

@dataclass(frozen=True)
class Mark:
    """What has been told of a trial: how many segments, its current one's status and attempt."""
    segments: int
    status: SegmentStatus
    restarts: int


def mark(trial: TrialRecord) -> Mark | None:
    seg = trial.segments[-1] if trial.segments else None
    return Mark(len(trial.segments), seg.status, seg.restarts) if seg else None


@dataclass(frozen=True)
class Transition:
    type: str              # Normal or Warning
    reason: str
    message: str
    started: bool          # a segment attempt started (its pod is created next)
    outcome: str | None    # how an attempt ended (metrics.OUTCOMES), or None


def transitions(before: Mark | None, trial: TrialRecord, metric: str, sign: float) -> list[Transition]:
    """What happened to a trial between two saved versions of it. One write may carry
    several: a segment's end and, when the trial is promoted in the same step, the start
    of its next."""
    now = mark(trial)
    if now is None:
        return []
    first = now.segments - 1 if before is None else before.segments - 1
    out = []
    for i in range(first, now.segments):
        seg, new = trial.segments[i], before is None or i >= before.segments
        if new:
            resumed = "" if seg.resume_from is None else f", resuming from {seg.resume_from:g}"
            out.append(Transition("Normal", "SegmentStarted", f"segment {i}: to budget {seg.budget:g}{resumed}",
                                  True, None))
        elif i == now.segments - 1 and now.restarts > before.restarts:
            out.append(Transition("Warning", "SegmentRestarted", f"segment {i}: its pod was lost; attempt "
                                  f"{now.restarts} resumes from the last sealed checkpoint", True, "lost"))
        if seg.status != SegmentStatus.RUNNING and (new or before.status == SegmentStatus.RUNNING):
            out.append(_ended(i, seg, metric, sign))
    return out


def _ended(i: int, seg, metric: str, sign: float) -> Transition:
    if seg.status == SegmentStatus.COMPLETED and seg.loss is None:
        return Transition("Warning", "SegmentDiverged", f"segment {i}: {seg.reason}", False, "diverged")
    if seg.status == SegmentStatus.COMPLETED:
        return Transition("Normal", "SegmentSucceeded", f"segment {i}: reached {seg.reached:g}, "
                          f"{metric} {sign * seg.loss:g}", False, "succeeded")
    if seg.status == SegmentStatus.FAILED:
        return Transition("Warning", "SegmentFailed", f"segment {i}: {seg.reason}", False, "failed")
    return Transition("Normal", "SegmentStopped", f"segment {i}: {seg.reason}", False, "stopped")


class TrialEvents:
    """Tells each transition of a Study's Trials once, as the records persist it: the
    segment counters at once, an Event on the Trial by `post()` after the step (off the path
    to the next pod). The records say what is already told when they are loaded (after a
    restart, a failed write, an outside change) and what changed when one is saved."""

    MAX_UNTOLD = 1000   # Events held for the next post(); beyond, dropped (they are a courtesy)

    def __init__(self, namespace: str, study: str, metric: str, sign: float):
        self.namespace, self.study, self.metric, self.sign = namespace, study, metric, sign
        self.marks: dict[str, Mark | None] = {}
        self.untold: list[tuple[dict, Transition]] = []

    def loaded(self, trials: list[TrialRecord]) -> None:
        self.marks = {t.name: mark(t) for t in trials}

    def saved(self, trial: TrialRecord, uid: str) -> None:
        before, self.marks[trial.name] = self.marks.get(trial.name), mark(trial)
        for change in transitions(before, trial, self.metric, self.sign):
            if change.started:
                metrics.segment_started(self.namespace, self.study)
            if change.outcome:
                metrics.segment_finished(self.namespace, self.study, change.outcome)
            if len(self.untold) < self.MAX_UNTOLD:
                obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Trial",
                       "metadata": {"name": trial.name, "namespace": self.namespace, "uid": uid}}
                self.untold.append((obj, change))

    def post(self, send: Callable[[dict, str, str, str], object]) -> None:
        """Hand the Events told since the last call to `send(obj, type, reason, message)`:
        post_event bound to a client, or an EventPoster's put (the operator's)."""
        untold, self.untold = self.untold, []
        for obj, change in untold:
            send(obj, change.type, change.reason, change.message)


class EventPoster:
    """Posts Trial Events from one thread of its own, so no Study step waits for them, at
    most `rate` a second whatever the number of trials; beyond `capacity` waiting, new
    ones are dropped (and counted in the log): they are a courtesy, the Trial's status
    holds the same facts."""

    def __init__(self, kube: Kube, rate: float = 10.0, capacity: int = 1000, sleep=time.sleep):
        self.kube, self.interval, self.sleep = kube, 1.0 / rate, sleep
        self.queue: queue.Queue = queue.Queue(capacity)
        self.dropped = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="events", daemon=True)
        self.thread.start()

    def put(self, obj: dict, type_: str, reason: str, message: str) -> None:
        try:
            self.queue.put_nowait((obj, type_, reason, message))
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.info("%d Trial Events dropped so far: more than the API should get", self.dropped)

    def close(self) -> None:
        """Stop; Events still waiting are dropped."""
        self.closed.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.closed.is_set():
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            post_event(self.kube, *item)
            self.sleep(self.interval)
