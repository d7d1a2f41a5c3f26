"""What a Study may ask of the cluster: refused with a condition, and no pod, unless the
operator's admin allows it (rung.controller.policy)."""

import random

import pytest

from fake_kube import FakeKube
from rung.controller.policy import StudyPolicy, parse_label
from rung.controller.study import OperatorConfig, StudyController
from rung.errors import InputError
from rung.kube.api import path
from rung.kube.informer import ObjectCache
from test_operator_faults import NS, study_body

pytestmark = pytest.mark.unit

ROOT = "file:///var/lib/rung/checkpoints"

ASKS = {   # what the Study asks: (spec changes, field refused, words of the message)
    "privileged": ({"trial": {"command": ["train"], "privileged": True}}, "spec.trial.privileged",
                   "studyPolicy.allowPrivileged"),
    "host-network": ({"trial": {"command": ["train"], "hostNetwork": True}}, "spec.trial.hostNetwork",
                     "studyPolicy.allowHostNetwork"),
    "host-path": ({"checkpoints": {"uri": "file:///etc/kubernetes"}}, "spec.checkpoints.uri",
                  "node path outside the operator's checkpoint root"),
    "host-path-dotdot": ({"checkpoints": {"uri": f"{ROOT}/../../../etc"}}, "spec.checkpoints.uri", "node path"),
    "unlabelled-secret": ({"checkpoints": {"uri": "s3://bucket/x", "secretRef": "db-password"}},
                          "spec.checkpoints.secretRef", "is not labelled rung.dev/credentials=true"),
}


def run_study(spec_changes: dict, policy: StudyPolicy = StudyPolicy(), secret_labels=None):
    kube = FakeKube(random.Random(1))
    body = study_body("s", "random", 2, 2)
    body["spec"].update(spec_changes)
    kube.request("POST", path("studies", NS), body=body)
    kube.request("POST", path("secrets", NS), body={"metadata": {"name": "db-password", "namespace": NS,
                                                                 "labels": secret_labels or {}}})
    config = OperatorConfig("img:1", ROOT, (NS,), policy=policy)
    controller = StudyController(kube, ObjectCache(), config, kube.get("studies", NS, "s"))
    controller.step()
    return kube


@pytest.mark.parametrize("case", list(ASKS), ids=list(ASKS))
def test_a_study_asking_for_more_is_refused_with_a_condition_and_starts_no_pod(case):
    changes, field, words = ASKS[case]
    kube = run_study(changes)
    status = kube.get("studies", NS, "s")["status"]
    invalid = next(c for c in status["conditions"] if c["type"] == "Invalid")
    assert status["phase"] == "Invalid" and invalid["reason"] == "NotAllowed"
    assert invalid["message"].startswith(f"{field}: ") and words in invalid["message"]
    assert kube.pods() == []


@pytest.mark.parametrize("case,policy,labels", [
    ("privileged", StudyPolicy(allow_privileged=True), None),
    ("host-network", StudyPolicy(allow_host_network=True), None),
    ("host-path", StudyPolicy(allow_host_path=True), None),
    ("unlabelled-secret", StudyPolicy(), {"rung.dev/credentials": "true"}),
    ("unlabelled-secret", StudyPolicy(secret_label=None), None),
])
def test_what_the_admin_allows_runs(case, policy, labels, monkeypatch):
    monkeypatch.setenv("RUNG_S3_ENDPOINT", "http://127.0.0.1:9")   # nothing listens: the store holds the Study
    monkeypatch.setenv("RUNG_S3_MAX_ATTEMPTS", "1")
    kube = run_study(ASKS[case][0], policy, labels)
    status = kube.get("studies", NS, "s")["status"]
    assert status.get("phase") != "Invalid" and "NotAllowed" not in str(status)
    if case != "unlabelled-secret":
        assert len(kube.pods()) == 2


def test_file_checkpoints_under_the_root_mount_the_root_not_the_studys_path():
    kube = run_study({"checkpoints": {"uri": f"{ROOT}/team-a"}})
    volumes = kube.pods()[0]["spec"]["volumes"]
    assert {"name": "rung-checkpoints", "hostPath": {"path": "/var/lib/rung/checkpoints",
                                                     "type": "DirectoryOrCreate"}} in volumes


def test_secret_label_flag():
    assert parse_label("rung.dev/credentials=true") == ("rung.dev/credentials", "true")
    assert parse_label("-") is None
    with pytest.raises(InputError, match="--secret-label"):
        parse_label("no-equals-sign")
