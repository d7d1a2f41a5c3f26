"""What a Study may ask of the cluster, on the real cluster: trial pods pass Pod Security
`restricted` (a namespace that enforces it runs a Study to Succeeded), and a Study asking
for a privileged container, the node's network, a node path or an unlabelled Secret is
refused with a condition and starts no pod."""

import time

import pytest
import yaml

from test_checkpoints import condition, copy_secret, get, s3_study

pytestmark = pytest.mark.cluster


def test_trial_pods_are_restricted_and_a_restricted_namespace_runs_a_study(kubectl, operator, namespace):
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    copy_secret(kubectl, namespace)
    study = yaml.safe_load(s3_study(namespace, "safe", trials=3, sleep=0.2))
    study["spec"]["limits"]["maxFailedTrials"] = 1   # one container the loaded node fails to create is not the point
    kubectl.apply(yaml.safe_dump(study))
    pods = kubectl.wait_for(lambda: kubectl.json("get", "pods", "-n", namespace, "-l", "rung.dev/study=safe")["items"],
                            120, "a trial pod")
    spec = pods[0]["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False and not spec.get("hostNetwork")
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any("hostPath" in v for v in spec["volumes"])   # s3 checkpoints: no node path at all
    kubectl.wait_for(lambda: get(kubectl, namespace, "study", "safe").get("status", {}).get("phase")
                     in ("Succeeded", "Failed"), 300, "the Study to end")
    status = get(kubectl, namespace, "study", "safe")["status"]
    assert status["phase"] == "Succeeded", [c["message"] for c in status["conditions"]]


REFUSED = {   # what the Study asks -> the field its NotAllowed condition names
    "privileged": ("spec.trial.privileged", lambda m: m["spec"]["trial"].update(privileged=True)),
    "host-network": ("spec.trial.hostNetwork", lambda m: m["spec"]["trial"].update(hostNetwork=True)),
    "host-path": ("spec.checkpoints.uri", lambda m: m["spec"].update(checkpoints={"uri": "file:///etc/kubernetes"})),
    "unlabelled-secret": ("spec.checkpoints.secretRef",
                          lambda m: m["spec"]["checkpoints"].update(secretRef="not-for-studies")),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_study_asking_for_more_is_refused_and_starts_no_pod(kubectl, operator, namespace, case):
    field, change = REFUSED[case]
    kubectl("create", "secret", "generic", "not-for-studies", "-n", namespace, "--from-literal=AWS_ACCESS_KEY_ID=x")
    manifest = yaml.safe_load(s3_study(namespace, "greedy", trials=2))
    change(manifest)
    kubectl.apply(yaml.safe_dump(manifest))
    cond = kubectl.wait_for(lambda: condition(get(kubectl, namespace, "study", "greedy"), "Invalid"),
                            60, "the Invalid condition")
    assert cond["reason"] == "NotAllowed" and cond["message"].startswith(field + ": "), cond
    time.sleep(3)   # a few more operator steps: still nothing started
    assert kubectl.json("get", "pods", "-n", namespace)["items"] == []
    assert kubectl.json("get", "trials", "-n", namespace)["items"] == []
