"""Simulated GPU nodes (KWOK) and the stand-in that finishes their trial pods.

KWOK (sigs.k8s.io/kwok, built by `tests/cluster/build kwok`) keeps Node objects that carry
its annotation alive (leases, Ready) and moves pods the real kube-scheduler bound to them
to Running. It never ends a trial pod: `Finisher` does, after the pod's simulated
duration, by writing the pod's status as the kubelet would for a real trial, with the
result JSON the SDK writes in the termination message. The operator cannot tell these
pods from real ones.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import os
import subprocess
import threading
import time
import zlib
from pathlib import Path

from rung.kube.api import Kube, path
from rung.kube.informer import STUDY_LABEL, Informer, ObjectCache
from rung.runtime.kubernetes import SEGMENT_LABEL, TRIAL_LABEL
from rung_trainables import benchmarks

ANNOTATION = "kwok.x-k8s.io/node"
NODE_PREFIX = "kwok-gpu-"
GPUS_PER_NODE = 8


def kwok_binary() -> Path:
    cache = Path(os.environ.get("RUNG_CACHE", Path.home() / ".cache/rung"))
    return cache / "kwok" / os.environ.get("RUNG_KWOK_VERSION", "v0.7.0") / "bin" / "kwok"


def node(i: int, gpu_resource: str) -> dict:
    resources = {"cpu": "256", "memory": "2Ti", "pods": "250", gpu_resource: str(GPUS_PER_NODE)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"{NODE_PREFIX}{i}", "annotations": {ANNOTATION: "fake"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": f"{NODE_PREFIX}{i}"}},
            "status": {"allocatable": resources, "capacity": resources,
                       "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux"}}}


def create_nodes(kube: Kube, gpus: int, gpu_resource: str = "nvidia.com/gpu") -> list[str]:
    """Enough 8-GPU nodes for `gpus` GPUs (replacing any left by an earlier run)."""
    delete_nodes(kube)
    names = []
    for i in range((gpus + GPUS_PER_NODE - 1) // GPUS_PER_NODE):
        body = node(i, gpu_resource)
        kube.request("POST", path("nodes"), body=body)
        names.append(body["metadata"]["name"])
    return names


def delete_nodes(kube: Kube) -> None:
    for n in kube.request("GET", path("nodes"))["items"]:
        if n["metadata"]["name"].startswith(NODE_PREFIX):
            kube.request("DELETE", path("nodes", name=n["metadata"]["name"]))


def start_kwok(kubeconfig: str, log: Path) -> subprocess.Popen:
    """KWOK for the annotated nodes only (the real node stays the kubelet's).

    It stands for 125 kubelets in one process that watches every scheduled pod, finished
    ones included (a kubelet watches its own node's). When the API server closes that watch
    as unresponsive (a burst of events on a busy machine), KWOK takes in all the pods again:
    with 10,000 finished pods kept, that costs it more time than the API server allows, so
    it falls behind for good, at 0.6-0.75 cores against 0.15, and pods reach Running late.
    The 50-Study run therefore keeps fewer finished pods per Study (`--keep-finished-pods`).
    """
    return subprocess.Popen(
        [str(kwok_binary()), "--kubeconfig", kubeconfig, "--manage-all-nodes=false",
         f"--manage-nodes-with-annotation-selector={ANNOTATION}=fake", "--cidr=10.240.0.1/12",
         "--node-ip=10.239.0.1", "--node-lease-duration-seconds=40"],
        stdout=log.open("w"), stderr=subprocess.STDOUT)


def set_schedulable(kube: Kube, schedulable: bool) -> list[str]:
    """Cordon (or uncordon) the real nodes, so trial pods go to the simulated ones only."""
    names = []
    for n in kube.request("GET", path("nodes"))["items"]:
        if ANNOTATION in (n["metadata"].get("annotations") or {}):
            continue
        kube.request("PATCH", path("nodes", name=n["metadata"]["name"]),
                     body={"spec": {"unschedulable": not schedulable}}, merge_patch=True)
        names.append(n["metadata"]["name"])
    return names


def hartmann_loss(params: dict, budget: float, budget_max: float, seed: int) -> float:
    """Multi-fidelity Hartmann-6 ("moderate"), budgets mapped onto its fidelities 1..100."""
    fidelity = max(1, round(100 * budget / budget_max))
    return benchmarks.hartmann([float(params[f"x{i}"]) for i in range(6)], fidelity, preset="moderate",
                               seed=seed)


def stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Finisher:
    """Ends every Running trial pod on a simulated node after `unit_seconds` per budget
    unit it adds, as a trial that reached its budget: Succeeded, exit code 0, the result
    (step, metrics, curve) in the termination message."""

    def __init__(self, kube: Kube, unit_seconds: float, budget_max: float, stop: threading.Event,
                 namespace: str | None = None, jitter: float = 0.0):
        """Each pod's duration is `unit_seconds` per budget unit times a factor drawn
        uniformly from [1 - jitter, 1 + jitter] (seeded by the pod's name): trials of one
        Study do not all run equally long."""
        self.kube, self.unit, self.budget_max, self.stop = kube, unit_seconds, budget_max, stop
        self.jitter = jitter
        self.lock = threading.Lock()
        self.due: list[tuple[float, str, str, dict]] = []       # (when, namespace, name, result)
        self.scheduled: set[tuple[str, str]] = set()
        self.reached: dict[str, float] = {}                     # trial -> budget its last segment reached
        # Completions and creations as the pod watch shows them, (time, study key, pod): one
        # stream, in the API server's order, so a successor never shows before the end it
        # follows (our PATCH's reply can come after the operator has already acted on it).
        self.completed: list[tuple[float, tuple[str, str], str]] = []
        self.created: list[tuple[float, tuple[str, str], str]] = []
        self.finishing: dict[str, tuple[str, float]] = {}        # pod -> (trial, budget) it ends at
        self.seen: set[str] = set()
        self.running: dict[str, int] = {}                       # pod -> GPUs, while it runs
        self.segments_started: dict[tuple[str, int], int] = {}  # (trial, segment) -> pods that ran it
        self.errors = 0
        self.cache = ObjectCache(keep=lambda obj: {"metadata": obj["metadata"]}, on_change=self._on_change)
        self.informer = Informer(kube, path("pods", namespace), STUDY_LABEL, self.cache, namespace, stop)
        self.thread = threading.Thread(target=self._run, name="finisher", daemon=True)

    def start(self) -> None:
        self.informer.start()
        self.thread.start()

    def _on_change(self, key, kind, pod) -> None:
        meta, status, spec = pod["metadata"], pod.get("status") or {}, pod.get("spec") or {}
        name, now = meta["name"], time.time()
        with self.lock:
            if kind != "DELETED" and name not in self.seen:   # a relist shows new pods as MODIFIED
                self.seen.add(name)
                self.created.append((now, key, name))
            if status.get("phase") == "Succeeded" and name in self.finishing:
                trial, budget = self.finishing.pop(name)
                self.reached[trial] = budget
                self.completed.append((now, key, name))
            if kind == "DELETED" or status.get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
                self.running.pop(name, None)
                return
            if status.get("phase") != "Running" or not str(spec.get("nodeName", "")).startswith(NODE_PREFIX):
                return
            if (meta["namespace"], name) in self.scheduled:
                return
            labels = meta["labels"]
            trial, segment = labels[TRIAL_LABEL], int(labels[SEGMENT_LABEL])
            self.segments_started[(trial, segment)] = self.segments_started.get((trial, segment), 0) + 1
            container = spec["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            budget, params = float(env["RUNG_BUDGET"]), json.loads(env["RUNG_PARAMS"])
            start = self.reached.get(trial, 0.0)
            loss = hartmann_loss(params, budget, self.budget_max, seed=zlib.crc32(f"{trial}/{segment}".encode()))
            result = {"step": budget, "metrics": {"loss": loss}, "curve": [[budget, loss]]}
            limits = (container.get("resources") or {}).get("limits") or {}
            self.running[name] = sum(int(v) for k, v in limits.items() if k.endswith("gpu"))
            self.scheduled.add((meta["namespace"], name))
            factor = 1 + self.jitter * (2 * (zlib.crc32(name.encode()) / 2**32) - 1)
            heapq.heappush(self.due, (now + factor * self.unit * max(budget - start, 0.0), meta["namespace"], name,
                                      {"result": result, "trial": trial, "budget": budget,
                                       "image": container["image"], "key": key}))

    def _run(self) -> None:
        while not self.stop.is_set():
            self.finish_due()
            self.stop.wait(0.05)

    def finish_due(self) -> None:
        with self.lock:
            ready = []
            while self.due and self.due[0][0] <= time.time():
                ready.append(heapq.heappop(self.due))
        for when, ns, name, info in ready:
            self._finish(ns, name, info)

    def _finish(self, ns: str, name: str, info: dict) -> None:
        now = time.time()
        status = {"phase": "Succeeded", "containerStatuses": [{
            "name": "trial", "image": info["image"], "imageID": "", "ready": False, "restartCount": 0,
            "started": False, "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "message": json.dumps(info["result"]),
                "startedAt": stamp(now - 1), "finishedAt": stamp(now)}}}]}
        with self.lock:
            self.finishing[name] = (info["trial"], info["budget"])
        try:
            self.kube.request("PATCH", path("pods", ns, name, "status"), body={"status": status}, merge_patch=True)
        except Exception:
            self.errors += 1   # deleted meanwhile (a stopped trial): nothing to finish
            with self.lock:
                self.finishing.pop(name, None)
            return
        with self.lock:
            self.running.pop(name, None)
