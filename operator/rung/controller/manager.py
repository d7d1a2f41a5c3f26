"""The operator's machinery, shared by every Study: one watch of Rung's pods and one of
Trials per watched namespace (label-selected on the server), a work queue of Studies, and
a few workers that step them. A change to a pod or a Trial queues its Study; a Study is
never stepped by two workers at once; quiet Studies cost nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from rung.api import parse_study
from rung.controller import metrics
from rung.controller.api_pool import ApiPool
from rung.controller.events import EventPoster
from rung.controller.gpus import GpuPool, node_gpus
from rung.controller.storage import StudyStore
from rung.controller.study import OperatorConfig, StudyController, checkpoint_settings
from rung.controller.workqueue import WorkQueue
from rung.errors import InputError
from rung.kube.api import Kube, path
from rung.kube.informer import STUDY_LABEL, FirstList, Informer, Key, ObjectCache, metadata_only
from rung.runtime.kubernetes import POD_SELECTOR

log = logging.getLogger(__name__)


class PodsRemain(Exception):
    """A deleted Study still has pods; its checkpoints wait until they are gone."""


class Controller:
    def __init__(self, kube: Kube, config: OperatorConfig):
        self.kube, self.config = kube, config
        self.gpus = GpuPool(node_gpus(kube, config.gpu_resource))
        self.events = EventPoster(kube)
        # Finished pods' labels and deletes go in the pool's background lane: after a restart
        # hundreds wait at once, and records and pods go first (api_pool).
        self.pool = ApiPool(config.api_concurrency, config.label_concurrency) if config.api_concurrency > 1 else None
        self.labeller = self.pool.background if self.pool else None
        # Deletes finished pods off the steps' path, several Studies at once (one at a time
        # fell behind 50 Studies' completions on a loaded API server).
        self.cleanup = ThreadPoolExecutor(config.label_concurrency, "rung-cleanup")
        self.pods = ObjectCache(on_change=self._pod_changed)
        self.trials = ObjectCache(keep=metadata_only, on_change=self._trial_changed)
        self.first_trials = FirstList(self.trials)
        self.queue = WorkQueue()
        self.studies: dict[Key, StudyController] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        namespaces = config.namespaces or (None,)
        # Trials change at every segment's start and end, and a step reads them itself: their
        # watch needs only names and versions (what changed, and whether the step wrote it),
        # and its first list serves each Study's first read.
        self.informers = [Informer(kube, path("pods", ns), POD_SELECTOR, self.pods, ns, self.stopping)
                          for ns in namespaces]
        self.informers += [Informer(kube, path("trials", ns), STUDY_LABEL, self.trials, ns, self.stopping,
                                    metadata_only=True, first_list=self.first_trials) for ns in namespaces]
        self.workers = [threading.Thread(target=self._work, name=f"rung-worker-{i}", daemon=True)
                        for i in range(config.workers)]

    def start(self) -> None:
        for informer in self.informers:
            informer.start()
        for worker in self.workers:
            worker.start()
        metrics.PROBES.watch(*self.workers, *(informer.thread for informer in self.informers))
        metrics.PROBES.synced = self.synced

    def synced(self) -> bool:
        """Every watch has listed what it watches (workers wait for it before deciding)."""
        return all(informer.synced.is_set() for informer in self.informers)

    def stop(self) -> None:
        metrics.PROBES.unwatch(*self.workers, *(informer.thread for informer in self.informers))
        self.stopping.set()
        for worker in self.workers:
            worker.join(timeout=30)
        self.events.close()
        for pool in (self.pool, self.cleanup):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # ---- Studies, as kopf sees them ---------------------------------------------------
    def observe(self, body: dict) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self.lock:
            study = self.studies.get(key)
            if study is None or study.study_object()["metadata"]["uid"] != body["metadata"]["uid"]:
                study = self.studies[key] = StudyController(self.kube, self.pods, self.config, body, gpus=self.gpus,
                                                               events=self.events.put, pool=self.pool,
                                                               cleanup=self.cleanup, labeller=self.labeller,
                                                               first_trials=functools.partial(self.first_trials.take, key))
                wake = True
            else:
                wake = study.observe(body)
        if wake:
            self.queue.add(key)

    def forget(self, key: Key) -> None:
        with self.lock:
            self.studies.pop(key, None)
        self.gpus.forget(key)
        metrics.forget_study(*key)

    def delete_study(self, body: dict) -> None:
        """The Study is being deleted and its checkpoints are not retained: stop its work,
        remove its pods, and once none is left (a late save would bring checkpoints
        back), its checkpoints. Raises PodsRemain until then."""
        meta = body["metadata"]
        self.forget((meta["namespace"], meta["name"]))
        selector = f"{STUDY_LABEL}={meta['name']}"
        pods = self.kube.request("GET", path("pods", meta["namespace"]), query={"labelSelector": selector})["items"]
        running = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        if running:
            self.kube.request("DELETE", path("pods", meta["namespace"]), query={"labelSelector": selector})
            raise PodsRemain(f"{len(running)} pods of Study {meta['name']} are still stopping")
        try:
            study = parse_study(body)
            root, secret = checkpoint_settings(study, self.config)
        except InputError:
            return   # an invalid or refused Study never ran, so it has no checkpoints
        StudyStore(self.kube, study, root, secret).delete_all()
        log.info("study %s/%s: checkpoints under %s removed", meta["namespace"], meta["name"], root)

    # ---- work -------------------------------------------------------------------------
    def _pod_changed(self, key: Key, kind: str, obj: dict) -> None:
        metrics.NEXT_POD.pod_changed(key, kind, obj)
        self.queue.add(key)

    def _trial_changed(self, key: Key, kind: str, obj: dict) -> None:
        study = self.studies.get(key)
        if study is not None and study.trial_changed(kind, obj):
            self.queue.add(key)

    def _work(self) -> None:
        for informer in self.informers:   # decisions need the world as it is, not half of it
            while not informer.synced.wait(1.0):
                if self.stopping.is_set():
                    return
        while not self.stopping.is_set():
            self.first_trials.expire()
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                study = self.studies.get(key)
                delay = study.step() if study is not None else None
            except Exception:   # step() sorts its own failures; this is a bug, keep the worker alive
                log.exception("study %s/%s: unexpected error", *key)
                metrics.reconcile_error("Unexpected")
                delay = self.config.resync
            finally:
                self.queue.done(key)
            if key not in self.studies:   # forgotten while it stepped: its series go (again)
                metrics.forget_study(*key)
            elif delay is None:           # over (or invalid): no next pod to wait for
                metrics.NEXT_POD.forget(key)
            else:
                self.queue.add_after(key, delay)
