"""One thread per Study: it validates the spec, then steps the shared Study loop with the
Kubernetes runtime and Trial-object records until the Study ends.

Pod events wake a Study's thread at once (completion -> next pod without waiting for the
poll interval); otherwise it polls every `interval` seconds. A thread that dies is
started again by the next Study event; all it knew is in the Trial objects.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from kubernetes import client, config as kube_config

from rung.api import parse_study
from rung.controller.events import post_event
from rung.controller.records import TrialRecords, set_condition
from rung.controller.storage import StudyStore
from rung.errors import InputError
from rung.runtime.kubernetes import KubernetesRuntime
from rung.runtime.loop import StudyLoop
from rung.schedulers import make_scheduler
from rung.schedulers.base import Scheduler

log = logging.getLogger(__name__)

TERMINAL = ("Succeeded", "Failed", "Invalid")


@dataclass(frozen=True)
class OperatorConfig:
    trial_image: str                       # for Studies that leave spec.trial.image out
    checkpoint_root: str                   # for Studies that leave spec.checkpoints.uri out
    interval: float = 1.0                  # seconds between polls when nothing wakes the loop


def api_client() -> client.ApiClient:
    """A client of its own for each thread (from KUBECONFIG, or the in-cluster account)."""
    try:
        kube_config.load_incluster_config()
        return client.ApiClient()
    except kube_config.ConfigException:
        return kube_config.new_client_from_config()


def needs_live_reports(scheduler: Scheduler) -> bool:
    """Only schedulers that decide during a segment (stop rules) read running pods' logs."""
    return type(scheduler).report is not Scheduler.report


def checkpoint_volumes(root: str) -> list[tuple[dict, dict]]:
    """file:// checkpoints live on the node's disk, mounted at the same path (one-node clusters)."""
    if not root.startswith("file://"):
        return []
    path = root[len("file://"):]
    return [({"name": "rung-checkpoints", "hostPath": {"path": path, "type": "DirectoryOrCreate"}},
             {"name": "rung-checkpoints", "mountPath": path})]


class StudyWorker:
    def __init__(self, body: dict, config: OperatorConfig):
        self.body, self.config = body, config
        self.key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.generation = body["metadata"].get("generation")
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"study-{self.key[0]}-{self.key[1]}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        api = api_client()
        custom = client.CustomObjectsApi(api)
        try:
            study = parse_study(self.body)
            scheduler = make_scheduler(study)
        except InputError as e:
            self._invalid(custom, e)
            return
        records = TrialRecords(custom, study, self.body)
        root = study.spec.checkpoints.uri or self.config.checkpoint_root
        runtime = KubernetesRuntime(
            client.CoreV1Api(api), study.metadata.namespace, study.name,
            image=study.spec.trial.image or self.config.trial_image, owner=records.trial_owner,
            resources=study.spec.trial.resources, volumes=checkpoint_volumes(root),
            secret_env=study.spec.checkpoints.secret_ref,
            live_reports=needs_live_reports(scheduler))
        store = StudyStore(client.CoreV1Api(api), study, root)
        gate = store.gate if root.startswith("s3://") else None
        loop = StudyLoop(study, scheduler, runtime, records, checkpoint_root=root, gate=gate,
                         on_segment_end=store.retain)
        if (self.body.get("status") or {}).get("phase") not in ("Running", *TERMINAL):
            post_event(api, self.body, "Normal", "Started",
                       f"{study.spec.algorithm.name}: up to {study.spec.limits.max_trials} trials, "
                       f"{study.spec.limits.parallelism} at a time")
        while not self.stopping.is_set():
            try:
                more = loop.step()
            except Exception:   # the API server hiccuped: the records are the truth, go on
                log.exception("study %s/%s: step failed; retrying", *self.key)
                more = True
            if not more:
                break
            self.wake.wait(self.config.interval)
            self.wake.clear()
        store.close()

    def _invalid(self, custom: client.CustomObjectsApi, e: InputError) -> None:
        status = self.body.get("status") or {}
        conditions = set_condition(status.get("conditions") or [], "Invalid", "InvalidSpec", e.line(),
                                   others_false=("Running", "Succeeded", "Failed"))
        custom.patch_namespaced_custom_object_status(
            "rung.dev", "v1alpha1", self.key[0], "studies", self.key[1],
            {"status": {"phase": "Invalid", "conditions": conditions,
                        "observedGeneration": self.generation}})
        post_event(custom.api_client, self.body, "Warning", "InvalidSpec", e.line())


class Workers:
    """The running StudyWorkers, by (namespace, name)."""

    def __init__(self, config: OperatorConfig):
        self.config = config
        self.workers: dict[tuple[str, str], StudyWorker] = {}
        self.lock = threading.Lock()

    def ensure(self, body: dict) -> None:
        """A Study was seen (listed, added or modified): make sure its loop runs, once."""
        meta, status = body["metadata"], body.get("status") or {}
        key = (meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp"):
            return self.forget(key)
        finished = status.get("phase") in TERMINAL and status.get("observedGeneration") == meta.get("generation")
        with self.lock:
            worker = self.workers.get(key)
            if worker and worker.alive and worker.generation == meta.get("generation"):
                return
            if worker:
                worker.stop()   # a new generation of the spec: its loop starts again from the records
                worker.thread.join(timeout=30)
            if finished:
                self.workers.pop(key, None)
                return
            worker = StudyWorker(body, self.config)
            self.workers[key] = worker
            worker.start()

    def wake(self, namespace: str, name: str) -> None:
        worker = self.workers.get((namespace, name))
        if worker:
            worker.wake.set()

    def forget(self, key: tuple[str, str]) -> None:
        with self.lock:
            worker = self.workers.pop(key, None)
        if worker:
            worker.stop()

    def delete_checkpoints(self, body: dict) -> None:
        """The Study is being deleted: stop its loop and remove its checkpoints."""
        meta = body["metadata"]
        self.forget((meta["namespace"], meta["name"]))
        try:
            study = parse_study(body)
        except InputError:
            return   # an invalid Study never ran, so it has no checkpoints
        root = study.spec.checkpoints.uri or self.config.checkpoint_root
        with api_client() as api:
            StudyStore(client.CoreV1Api(api), study, root).delete_all()
        log.info("study %s/%s: checkpoints under %s removed", meta["namespace"], meta["name"], root)

    def stop_all(self) -> None:
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for w in workers:
            w.stop()
        for w in workers:
            w.thread.join(timeout=10)
