"""What every fault test on the real cluster checks: a Study of count_steps trials, a
monitor that watches it from outside (as an admin, not through any fault), and the
invariants once it has ended."""

from __future__ import annotations

import collections
import threading
import time

import yaml
from kubernetes import client, config as kube_config

from rung_trainables.count_steps import loss

PODLESS_LIMIT = 30.0   # seconds a Running trial may go without its pod while nothing holds the Study


def fault_study(ns: str, name: str, trials: int = 12, parallelism: int = 3, sleep: float = 0.4) -> str:
    return yaml.safe_dump({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "objective": {"metric": "loss"},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
            "algorithm": {"name": "asha", "seed": 11, "settings": {"reductionFactor": 3}},
            "budget": {"min": 1, "max": 9},
            "limits": {"maxTrials": trials, "parallelism": parallelism, "maxFailedTrials": 0,
                       "maxPreemptions": 20},
            "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                      "env": {"COUNT_STEPS_SLEEP": str(sleep)},
                      "resources": {"cpu": "50m", "memory": "128Mi"}},
        }})


def run_name(trial: dict) -> str:
    """The pod name of a Trial's current attempt."""
    segments = trial["status"]["segments"]
    restarts = segments[-1].get("restarts", 0)
    return f"{trial['metadata']['name']}-s{len(segments) - 1}" + (f"-r{restarts}" if restarts else "")


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


class Monitor:
    """Samples the Study, its Trials and pods every second, from outside the faults."""

    def __init__(self, kubeconfig: str, ns: str, study: str):
        api = kube_config.new_client_from_config(kubeconfig)
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.ns, self.study = ns, study
        self.uids: dict[str, set[str]] = collections.defaultdict(set)   # Trial name -> uids seen
        self.held: collections.Counter = collections.Counter()         # Held reason -> samples
        self.podless: dict[str, float] = {}                             # attempt -> seconds without a pod
        self.phase = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_until(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def trials(self) -> list[dict]:
        """The Study's Trials now; every name and uid a list shows is recorded, so that a Trial a
        fault deletes less than a sample after it was created still counts as created."""
        trials = self.custom.list_namespaced_custom_object(
            "rung.dev", "v1alpha1", self.ns, "trials", label_selector=f"rung.dev/study={self.study}")["items"]
        for t in trials:
            self.uids[t["metadata"]["name"]].add(t["metadata"]["uid"])
        return trials

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0):
            try:
                study = self.custom.get_namespaced_custom_object("rung.dev", "v1alpha1", self.ns, "studies", self.study)
                trials = self.trials()
                pods = {p.metadata.name for p in self.core.list_namespaced_pod(
                    self.ns, label_selector=f"rung.dev/study={self.study}").items}
            except Exception:   # the API server is down (a fault under test): sample later
                continue
            dt, last = time.monotonic() - last, time.monotonic()
            self.phase = (study.get("status") or {}).get("phase")
            held = condition(study, "Held")
            holding = held is not None and held["status"] == "True"
            if holding:
                self.held[held["reason"]] += 1
            for t in trials:
                if (t.get("status") or {}).get("phase") == "Running" and not holding:
                    run = run_name(t)
                    self.podless[run] = 0.0 if run in pods else self.podless.get(run, 0.0) + dt


def check(kubectl, monitor: Monitor, max_trials: int) -> dict:
    """The invariants once the Study has ended; returns what happened, for the report."""
    ns, name = monitor.ns, monitor.study
    study = kubectl.json("get", "study", name, "-n", ns)
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"]["failed"] == 0 and status["trials"]["running"] == 0, status["trials"]
    trials = kubectl.json("get", "trials", "-n", ns, "-l", f"rung.dev/study={name}")["items"]
    pods = kubectl.json("get", "pods", "-n", ns, "-l", f"rung.dev/study={name}")["items"]
    succeeded = collections.Counter((p["metadata"]["labels"]["rung.dev/trial"], p["metadata"]["labels"]["rung.dev/segment"])
                                    for p in pods if p["status"]["phase"] == "Succeeded")
    segments = restarts = losses = 0
    for t in trials:
        for i, seg in enumerate(t["status"]["segments"]):
            segments += 1
            restarts, losses = restarts + seg.get("restarts", 0), losses + seg.get("losses", 0)
            assert seg["status"] in ("completed", "stopped"), (t["metadata"]["name"], seg)
            assert seg["loss"] == loss(t["spec"]["params"], int(seg["budget"]))        # its own result
            assert succeeded[(t["metadata"]["name"], str(i))] == 1, (t["metadata"]["name"], i)   # once
    assert not [p for p in pods if p["status"]["phase"] in ("Pending", "Running")]
    reused = {n: u for n, u in monitor.uids.items() if len(u) > 1}
    assert not reused, f"trial names used twice: {reused}"
    assert set(monitor.uids) <= {f"{name}-{i}" for i in range(max_trials)}
    stuck = {run: s for run, s in monitor.podless.items() if s > PODLESS_LIMIT}
    assert not stuck, f"Running without a pod: {stuck}"
    events = kubectl.json("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    held_events = collections.Counter(e["message"].split(":", 1)[0] for e in events if e["reason"] == "Held")
    held_events.update(e["message"].split(" by ", 1)[1].split(" ", 1)[0] for e in events if e["reason"] == "Resumed")
    report = {"trials": len(trials), "created": len(monitor.uids), "segments": segments, "restarts": restarts,
              "losses": losses, "held": dict(monitor.held), "held_events": dict(held_events), "lost": 0,
              "duplicated": 0, "stuck": 0, "failed": status["trials"]["failed"]}
    print(f"study {name}: {report}")
    return report
