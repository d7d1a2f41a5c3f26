"""One Study on the cluster: its spec checked, then the shared Study loop stepped with
pods as the runtime and Trial objects as the records, whenever something about the Study
changes (a pod, a Trial, the spec) or a wait runs out.

A step that fails leaves the Study's records as the API server has them; the cause is
sorted (rung.kube.api.refusal): the cluster refusing for now holds the Study with a
`Held` condition naming the cause, and the step is retried with backoff; an outside
change to a Trial is simply reloaded. Nothing of this counts against the Study's trials.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

from rung.api import Study, parse_study
from rung.controller import metrics, policy
from rung.controller.events import TrialEvents, post_event
from rung.controller.gpus import GpuPool, node_gpus
from rung.controller.policy import StudyPolicy, checkpoint_path, under
from rung.controller.storage import StudyStore
from rung.controller.trial_store import StaleRecords, TrialStore, set_condition, study_conditions
from rung.errors import InputError
from rung.kube.api import Kube, path, refusal, status_of
from rung.kube.informer import ObjectCache, version
from rung.runtime.kubernetes import KubernetesRuntime
from rung.runtime.loop import HOLD_API, StudyLoop
from rung.schedulers import make_scheduler
from rung.schedulers.base import Scheduler
from rung.storage import file_path
from rung.warm_priors import cluster_loader, priors_for

log = logging.getLogger(__name__)

TERMINAL = ("Succeeded", "Failed", "Invalid")
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class OperatorConfig:
    trial_image: str                       # for Studies that leave spec.trial.image out
    checkpoint_root: str                   # for Studies that leave spec.checkpoints.uri out
    namespaces: tuple[str, ...] = ()       # watched namespaces; () means all
    interval: float = 1.0                  # seconds between steps of a Study that waits on something,
                                           # and between status writes that only update its progress
    resync: float = 60.0                   # seconds between steps of a quiet Study (a safety net)
    workers: int = 16                      # Studies stepped at once
    checkpoint_secret: str | None = None   # the Secret (in each Study's namespace) for checkpoint_root
    gpu_resource: str = "nvidia.com/gpu"   # the extended resource a trial's GPUs are requested as
    api_concurrency: int = 1               # API calls one step makes side by side (Trial writes, pods)
    keep_finished_pods: int | None = None  # handled pods a Study keeps for their logs (None: all)
    policy: StudyPolicy = StudyPolicy()    # what Studies may ask of the cluster

    @property
    def label_concurrency(self) -> int:
        """Finished pods labelled handled or deleted side by side (of the API pool's threads),
        and Studies trimmed at once: a quarter of the API pool's calls."""
        return max(1, self.api_concurrency // 4)

    @property
    def connections(self) -> int:
        """API connections the operator's threads hold at once: its workers, its API pool,
        pod cleanup, its watches (two per namespace) and the Event poster."""
        return (self.workers + self.api_concurrency + self.label_concurrency
                + 2 * max(1, len(self.namespaces)) + 1)


def checkpoint_settings(study: Study, config: OperatorConfig) -> tuple[str, str | None]:
    """(root, Secret) of a Study's checkpoint store: its own, if the policy allows it, or the
    operator's. Raises NotAllowed."""
    root = checkpoint_path(study, config.checkpoint_root, config.policy)
    own = study.spec.checkpoints
    return root, own.secret_ref or (config.checkpoint_secret if root == config.checkpoint_root else None)


def needs_live_reports(scheduler: Scheduler) -> bool:
    """Only schedulers that decide during a segment (stop rules) read running pods' logs."""
    return scheduler.stops_early


def checkpoint_volumes(root: str, config: OperatorConfig) -> list[tuple[dict, dict]]:
    """file:// checkpoints live on the node's disk, mounted at the same path (one-node
    clusters): the operator's root, or a Study's own path where the policy allows one."""
    if not root.startswith("file://"):
        return []
    mounted = config.checkpoint_root if under(root, config.checkpoint_root) else root
    local = posixpath.normpath(file_path(mounted))
    return [({"name": "rung-checkpoints", "hostPath": {"path": local, "type": "DirectoryOrCreate"}},
             {"name": "rung-checkpoints", "mountPath": local})]


def finished(body: dict) -> bool:
    """Ended under its current spec: nothing to do until the spec changes."""
    status, meta = body.get("status") or {}, body["metadata"]
    return status.get("phase") in TERMINAL and status.get("observedGeneration") == meta.get("generation")


class TellingTrialStore(TrialStore):
    """The Trial records, telling each transition they persist (events.TrialEvents): what a
    load finds is already told; a save tells what changed since."""

    def __init__(self, kube: Kube, study: Study, study_object, pool: Executor | None = None, **kwargs):
        super().__init__(kube, study, study_object, pool, **kwargs)
        self.events = TrialEvents(self.namespace, self.name, study.objective.metric, self.sign)

    def load(self):
        trials = super().load()
        self.events.loaded(trials)
        return trials

    def save(self, trial) -> None:
        super().save(trial)
        self.events.saved(trial, self.uids[trial.name])


class StudyController:
    def __init__(self, kube: Kube, pods: ObjectCache, config: OperatorConfig, body: dict, clock=time.monotonic,
                 gpus: GpuPool | None = None, events: Callable[[dict, str, str, str], object] | None = None,
                 pool: Executor | None = None, cleanup: Executor | None = None, labeller: Executor | None = None,
                 first_trials: Callable[[], list[dict] | None] | None = None):
        """`gpus`: the operator's GPU pool, shared by its Studies (a private one if None);
        `events`: where Trial Events go (the operator's EventPoster; posted at once if None);
        `pool`: threads for API calls a step makes side by side (one by one if None);
        `cleanup`: threads that delete finished pods beyond those kept (in the step if None);
        `labeller`: threads that label recorded pods handled and delete old ones (the pool if None);
        `first_trials`: the Trial watch's first list of this Study's Trials (TrialStore's `listed`)."""
        self.kube, self.pods, self.config, self.clock, self.pool = kube, pods, config, clock, pool
        self.cleanup, self.labeller, self.first_trials = cleanup, labeller, first_trials
        self.send_event = events or functools.partial(post_event, kube)
        self.gpus = gpus or GpuPool(node_gpus(kube, config.gpu_resource))
        self._body, self._lock = body, threading.Lock()
        self.generation = None          # of the spec the loop runs
        self.loop: StudyLoop | None = None
        self.records: TellingTrialStore | None = None
        self.runtime: KubernetesRuntime | None = None
        self.store: StudyStore | None = None
        self.backoff = 0.0
        self.api_hold: dict | None = None   # while the API refuses our steps: cause, since, refusals, event out

    # ---- what the watches say ------------------------------------------------------
    def observe(self, body: dict) -> bool:
        """A newer Study object from the watch; True when it calls for a step."""
        with self._lock:
            if version(body) < version(self._body):
                return False
            old, self._body = self._body, body
        meta = body["metadata"]
        return (meta.get("generation") != old["metadata"].get("generation") or bool(meta.get("deletionTimestamp"))
                or self.generation is None)

    def study_object(self) -> dict:
        """The newest Study object: from the watch, or from our own last status write."""
        with self._lock:
            body = self._body
        written = self.records.written_study if self.records else None
        return written if written is not None and version(written) > version(body) else body

    def trial_changed(self, event: str, obj: dict) -> bool:
        """A Trial of this Study changed; True unless it is the echo of our own write."""
        return self.records is None or self.records.trial_changed(event, obj)

    # ---- stepping -------------------------------------------------------------------
    def step(self) -> float | None:
        """One step; returns the seconds until the next one is due (None: only when
        something changes). It is timed (the decision latency); then the step's Trial
        Events go out, off the path to the next pod, and the trial counts of the status it
        left are exported."""
        started = time.monotonic()
        try:
            return self._step()
        finally:
            metrics.decision(time.monotonic() - started)
            if self.records is not None:
                self.records.events.post(self.send_event)
            metrics.study_status(self.study_object())

    def _step(self) -> float | None:
        body = self.study_object()
        if body["metadata"].get("deletionTimestamp"):
            return None
        try:
            if body["metadata"].get("generation") != self.generation:
                if finished(body) or not self._configure(body):
                    return None
            held_before = bool(self.loop.holds)
            self.loop.hold(HOLD_API, "", "")
            more = self.loop.step()
        except Exception as e:
            return self._failed(e)
        self.gpus.update(self._key(), self.loop.running_trials(), self.loop.done)
        self.backoff = 0.0
        if self.api_hold is not None:   # said once the API answers again, so it is never lost
            hold, self.api_hold = self.api_hold, None
            post_event(self.kube, body, "Normal", "Resumed",
                       f"held {self.clock() - hold['since']:.0f} s by {hold['cause']} "
                       f"({hold['refused']} refused steps): {hold['message']}")
        if self.loop.holds and not held_before:
            hold = next(iter(self.loop.holds.values()))
            post_event(self.kube, body, "Warning", "Held", f"{hold['reason']}: {hold['message']}")
        if not more:
            self.runtime.settle()
            return None
        waiting = self.loop.holds or self.loop.waits   # GPUs another Study frees do not wake this one
        delay = self.config.interval if waiting or self.runtime.live_reports else self.config.resync
        return min(delay, self.records.status_due()) if self.loop.status_pending else delay

    def _configure(self, body: dict) -> bool:
        """Parse the Study's spec (a new generation): build the loop, or update it."""
        try:
            study = parse_study(body)
            scheduler = make_scheduler(study)
            root, secret = checkpoint_settings(study, self.config)
            policy.check(study, self.config.policy, self._secret_labels)
            if self.loop is None:   # the earlier Studies, once: they have finished
                told = []
                priors = priors_for(study, cluster_loader(self.kube, study.metadata.namespace),
                                    lambda name, line: told.append(f"from {name}: {line}"))
        except InputError as e:
            self._invalid(body, e)
            return False
        if self.loop is None:
            self.records = TellingTrialStore(self.kube, study, self.study_object, self.pool,
                                              status_every=self.config.interval, clock=self.clock,
                                              listed=self.first_trials)
            self.runtime = KubernetesRuntime(
                self.kube, self.pods, study.metadata.namespace, study.name,
                default_image=self.config.trial_image, owner=self.records.trial_owner,
                volumes=checkpoint_volumes(root, self.config), live_reports=needs_live_reports(scheduler),
                gpu_resource=self.config.gpu_resource, clock=self.clock, pool=self.pool,
                keep_finished=self.config.keep_finished_pods, cleanup=self.cleanup, labeller=self.labeller)
            self.store = StudyStore(self.kube, study, root, secret, clock=self.clock)
            self.loop = StudyLoop(study, self.runtime, self.records, checkpoint_root=root,
                                  gate=self.store.gate if root.startswith("s3://") else None, priors=priors)
            if (body.get("status") or {}).get("phase") not in ("Running", *TERMINAL):
                post_event(self.kube, body, "Normal", "Started",
                           f"{study.spec.algorithm.name}: up to {study.spec.limits.max_trials} trials, "
                           f"{study.spec.limits.parallelism} at a time")
                for line in told:
                    post_event(self.kube, body, "Normal", "WarmStart", line)
        else:   # only limits, the trial template and checkpoint settings may change (CRD rules)
            self.loop.update(study)
            self.records.study = self.store.study = study
            self.store.secret = secret
        self.runtime.secret_env = secret
        self.gpus.register(self._key(), study)
        sized = study.spec.trial.gpus is not None and study.spec.trial.gpus.max > 0
        self.loop.sizer = (lambda running: self.gpus.choose(self._key(), self.loop.study, running,
                                                            self.loop.take_ended())) if sized else None
        self.generation = body["metadata"].get("generation")
        return True

    def _key(self) -> tuple[str, str]:
        meta = self._body["metadata"]
        return meta["namespace"], meta["name"]

    def _failed(self, e: Exception) -> float:
        metrics.reconcile_error("Conflict" if isinstance(e, StaleRecords) else getattr(refusal(e), "cause", "Unexpected"))
        if isinstance(e, StaleRecords):   # someone else wrote: the next step reloads
            log.info("study %s: %s; reloading", self._name(), e)
            return 0.0
        refused = refusal(e)
        if refused is None:
            log.exception("study %s: step failed; retrying", self._name())
        else:
            log.warning("study %s: held: %s", self._name(), refused.line())
            if self.loop is not None:
                self.loop.hold(HOLD_API, refused.cause, refused.line())
                self._write_holds()
            hold = self.api_hold = self.api_hold or {"cause": refused.cause, "message": refused.line(),
                                                     "since": self.clock(), "refused": 0, "told": False}
            hold["refused"] += 1
            if not hold["told"]:   # once per hold (tried again while the API refuses the Event too)
                hold["told"] = post_event(self.kube, self.study_object(), "Warning", "Held",
                                          f"{refused.cause}: {refused.line()}")
        self.backoff = min(max(0.5, 2 * self.backoff), MAX_BACKOFF)
        return self.backoff

    def _write_holds(self) -> None:
        """Best effort, while the API misbehaves: only the conditions say why."""
        body = self.study_object()
        status = body.get("status") or {}
        try:
            self.records.patch_study_status({"conditions": study_conditions(
                status.get("conditions") or [], status.get("phase") or "Running", "", self.loop.holds)})
        except Exception as e:
            log.debug("study %s: cannot write the Held condition either: %s", self._name(), e)

    def _secret_labels(self, name: str) -> dict | None:
        try:
            secret = self.kube.request("GET", path("secrets", self._body["metadata"]["namespace"], name))
        except Exception as e:
            if status_of(e) == 404:
                return None
            raise
        return secret["metadata"].get("labels") or {}

    def _invalid(self, body: dict, e: InputError) -> None:
        status = body.get("status") or {}
        reason = "NotAllowed" if isinstance(e, policy.NotAllowed) else "InvalidSpec"
        conditions = set_condition(status.get("conditions") or [], "Invalid", reason, e.line(),
                                   others_false=("Running", "Succeeded", "Failed"))
        meta = body["metadata"]
        self.kube.request("PATCH", path("studies", meta["namespace"], meta["name"], "status"), merge_patch=True,
                          body={"status": {"phase": "Invalid", "conditions": conditions,
                                           "observedGeneration": meta.get("generation")}})
        post_event(self.kube, body, "Warning", reason, e.line())

    def _name(self) -> str:
        meta = self._body["metadata"]
        return f"{meta['namespace']}/{meta['name']}"
