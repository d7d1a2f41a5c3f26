"""The pod runtime's decisions, against a fake CoreV1Api (the real API is in tests/operator)."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest
from kubernetes.client import ApiException

from rung.runtime.base import Finished, Outcome, Report, SegmentSpec
from rung.runtime.kubernetes import HANDLED_LABEL, KubernetesRuntime

pytestmark = pytest.mark.unit


class FakeCore:
    def __init__(self):
        self.pods: dict[str, dict] = {}     # name -> {"body": manifest, "status": NS, "deleting": bool}
        self.logs: dict[str, str] = {}
        self.deleted: list[str] = []
        self.fail_create: int | None = None

    def create_namespaced_pod(self, namespace, body):
        if self.fail_create:
            raise ApiException(status=self.fail_create, reason="nope")
        name = body["metadata"]["name"]
        if name in self.pods:
            raise ApiException(status=409, reason="AlreadyExists")
        self.pods[name] = {"body": body, "status": status("Pending"), "deleting": False}

    def list_namespaced_pod(self, namespace, label_selector):
        study = label_selector.split(",")[0].split("=")[1]
        out = []
        for name, p in self.pods.items():
            labels = p["body"]["metadata"]["labels"]
            if labels["rung.dev/study"] == study and HANDLED_LABEL not in labels:
                out.append(NS(metadata=NS(name=name, labels=labels,
                                          deletion_timestamp="now" if p["deleting"] else None),
                              status=p["status"]))
        return NS(items=out)

    def patch_namespaced_pod(self, name, namespace, body):
        self.pods[name]["body"]["metadata"]["labels"].update(body["metadata"]["labels"])

    def delete_namespaced_pod(self, name, namespace, grace_period_seconds=None):
        self.deleted.append(name)
        self.pods[name]["deleting"] = True

    def read_namespaced_pod_log(self, name, namespace, container=None):
        return self.logs.get(name, "")


def status(phase, terminated=None, waiting=None, reason=None, conditions=()):
    state = NS(terminated=terminated, waiting=waiting)
    return NS(phase=phase, reason=reason, message=None, conditions=list(conditions),
              container_statuses=[NS(state=state, image="img")])


def term(code, message="", reason=None):
    return NS(exit_code=code, message=message, reason=reason or ("Completed" if code == 0 else "Error"))


def spec(trial="s-0", segment=0, attempt=0):
    return SegmentSpec(study="s", namespace="ns", trial=trial, index=0, segment=segment, params={"x": 1.5},
                       budget=3.0, resume_from=None, checkpoint_uri="file:///ck/ns/s/s-0",
                       command=["python", "-m", "t"], env={"A": "b"}, attempt=attempt)


@pytest.fixture
def rt():
    core = FakeCore()
    owner = {"apiVersion": "rung.dev/v1alpha1", "kind": "Trial", "name": "s-0", "uid": "u1"}
    runtime = KubernetesRuntime(core, "ns", "s", image="img:1", owner=lambda t: owner,
                                resources={"cpu": "100m", "memory": "64Mi"},
                                volumes=[({"name": "v", "hostPath": {"path": "/ck"}}, {"name": "v", "mountPath": "/ck"})])
    return core, runtime


def test_pod_manifest(rt):
    core, runtime = rt
    runtime.start(spec(attempt=2))
    pod = core.pods["s-0-s0-r2"]["body"]
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert pod["metadata"]["labels"] == {"rung.dev/study": "s", "rung.dev/trial": "s-0",
                                         "rung.dev/segment": "0", "rung.dev/attempt": "2"}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert pod["spec"]["restartPolicy"] == "Never" and c["image"] == "img:1"
    assert json.loads(env["RUNG_PARAMS"]) == {"x": 1.5} and env["RUNG_BUDGET"] == "3.0" and env["A"] == "b"
    assert env["RUNG_RESULT_FILE"] == c["terminationMessagePath"] == "/dev/termination-log"
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}
    assert c["volumeMounts"] == [{"name": "v", "mountPath": "/ck"}]
    assert runtime.running() == {"s-0-s0-r2"}


def test_success_reads_the_termination_message_and_the_curve(rt):
    core, runtime = rt
    runtime.start(spec())
    assert runtime.poll() == []
    core.logs["s-0-s0"] = 'hello\n@rung {"step": 1, "metrics": {"loss": 0.5}}\n@rung {"step": 3, "metrics": {"loss": 0.2}}\n'
    core.pods["s-0-s0"]["status"] = status("Succeeded", term(0, json.dumps({"step": 3, "metrics": {"loss": 0.2}})))
    events = runtime.poll()
    assert events[:2] == [Report("s-0", 0, 1.0, {"loss": 0.5}), Report("s-0", 0, 3.0, {"loss": 0.2})]
    assert events[2] == Finished("s-0", 0, Outcome.SUCCEEDED, 0, {"step": 3, "metrics": {"loss": 0.2}})
    assert runtime.poll() == []                                   # reported once, then labelled
    assert core.pods["s-0-s0"]["body"]["metadata"]["labels"][HANDLED_LABEL] == "true"
    assert runtime.running() == set()


@pytest.mark.parametrize("pod_status,outcome,reason", [
    (status("Failed", term(3)), Outcome.FAILED, "exited with code 3"),
    (status("Failed", term(1, json.dumps({"step": 2, "error": "ValueError: lr"}))), Outcome.FAILED, "ValueError: lr"),
    (status("Failed", term(137, reason="OOMKilled")), Outcome.FAILED, "OOMKilled"),
    (status("Pending", waiting=NS(reason="ErrImagePull", message="no such image")), Outcome.FAILED, "ErrImagePull"),
    (status("Failed", term(143), reason="Evicted"), Outcome.LOST, "Evicted"),
    (status("Failed", term(143), conditions=[NS(type="DisruptionTarget", status="True")]), Outcome.LOST,
     "DisruptionTarget"),
])
def test_endings_are_classified(rt, pod_status, outcome, reason):
    core, runtime = rt
    runtime.start(spec())
    core.pods["s-0-s0"]["status"] = pod_status
    (event,) = runtime.poll()
    assert event.outcome == outcome and reason in event.reason
    if "ErrImagePull" in reason:
        assert core.deleted == ["s-0-s0"]     # never left pulling forever


def test_a_deleted_pod_is_a_loss_and_a_stopped_one_is_stopped(rt):
    core, runtime = rt
    runtime.start(spec(trial="s-0"))
    runtime.start(spec(trial="s-1"))
    runtime.poll()
    del core.pods["s-0-s0"]                  # someone deleted it (or its node went away)
    runtime.stop("s-1-s0")
    assert core.deleted == ["s-1-s0"]
    del core.pods["s-1-s0"]
    events = {e.trial: e for e in runtime.poll()}
    assert events["s-0"].outcome == Outcome.LOST and "deleted" in events["s-0"].reason
    assert events["s-1"].outcome == Outcome.STOPPED


def test_a_pod_being_deleted_by_someone_else_is_a_loss_once_it_has_stopped(rt):
    core, runtime = rt
    runtime.start(spec())
    core.pods["s-0-s0"]["deleting"] = True
    core.pods["s-0-s0"]["status"] = status("Running", conditions=[NS(type="DisruptionTarget", status="True")])
    assert runtime.poll() == []            # still training: a restart now would run beside it
    core.pods["s-0-s0"]["status"] = status("Running", term(143))
    (event,) = runtime.poll()
    assert event.outcome == Outcome.LOST


def test_a_pod_that_vanishes_after_a_restart_is_a_loss(rt):
    core, runtime = rt
    runtime.start(spec())
    fresh = KubernetesRuntime(core, "ns", "s", image="img:1", owner=lambda t: None)   # the operator restarted
    assert fresh.running() == {"s-0-s0"}
    del core.pods["s-0-s0"]                # gone before the restarted operator's first poll
    (event,) = fresh.poll()
    assert (event.trial, event.segment, event.outcome) == ("s-0", 0, Outcome.LOST)


def test_creates_are_idempotent_and_failures_are_reported(rt):
    core, runtime = rt
    runtime.start(spec())
    runtime.start(spec())                    # an earlier life created it: 409, not a failure
    assert runtime.poll() == []
    core.fail_create = 403
    runtime.start(spec(trial="s-1"))
    (event,) = runtime.poll()
    assert event.outcome == Outcome.FAILED and "cannot create pod s-1-s0" in event.reason


def test_a_restarted_runtime_finds_unreported_pods(rt):
    core, runtime = rt
    runtime.start(spec())
    fresh = KubernetesRuntime(core, "ns", "s", image="img:1", owner=lambda t: None)
    assert fresh.running() == {"s-0-s0"}
    core.pods["s-0-s0"]["status"] = status("Succeeded", term(0, "{}"))
    assert [e.outcome for e in fresh.poll()] == [Outcome.SUCCEEDED]


def test_a_pod_whose_node_is_lost_is_a_loss(rt):
    core, runtime = rt
    runtime.start(spec())
    core.pods["s-0-s0"]["status"] = status("Unknown", reason="NodeLost")
    (event,) = runtime.poll()
    assert event.outcome == Outcome.LOST and "NodeLost" in event.reason
