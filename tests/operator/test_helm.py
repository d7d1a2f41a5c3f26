"""The chart helm/rung, installed by the real helm into the real cluster: the operator runs
from its image under ServiceAccount rung-operator with the least privilege for its scope."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = str(ROOT / "helm/rung")
sys.path.insert(0, str(ROOT / "tests/cluster/lib"))
from audit import count_requests  # noqa: E402

from conftest import STATE  # noqa: E402

RELEASE = "rung"
CRDS = ("studies.rung.dev", "trials.rung.dev", "architecturesearches.rung.dev")
NAMESPACED_VALUES = ["--set", "checkpoints.root=s3://rung/helm", "--set", "checkpoints.secretName=rung-s3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_cluster_values(ns: str, metrics_port: int | None = None) -> list[str]:
    """This cluster has no kube-proxy: the operator uses the node's network and the API
    server's loopback address (its serving cert names 127.0.0.1)."""
    return ["--set", f"watch.namespaces={{{ns}}}", "--set", "replicas=1", "--set", "hostNetwork=true",
            "--set", "image.pullPolicy=Never", "--set", f"metrics.port={metrics_port or free_port()}",
            "--set", "extraEnv[0].name=KUBERNETES_SERVICE_HOST", "--set", "extraEnv[0].value=127.0.0.1",
            "--set", "extraEnv[1].name=KUBERNETES_SERVICE_PORT",
            "--set-string", "extraEnv[1].value=16443", *NAMESPACED_VALUES]


def copy_secret(kubectl, ns: str) -> None:
    """The MinIO credentials `up` wrote, labelled so Studies (and --checkpoint-secret) may use them."""
    data = kubectl.json("get", "secret", "rung-s3", "-n", "default")["data"]
    kubectl.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "data": data, "metadata": {
        "name": "rung-s3", "namespace": ns, "labels": {"rung.dev/credentials": "true"}}}))


def small_study(ns: str, name: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "objective": {"metric": "loss"},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
            "algorithm": {"name": "asha", "seed": 3, "settings": {"reductionFactor": 3}},
            "budget": {"min": 1, "max": 3},
            "limits": {"maxTrials": 4, "parallelism": 2, "maxFailedTrials": 0},
            "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                      "resources": {"cpu": "50m", "memory": "128Mi"}},
        }})


def deployment(kubectl, ns: str) -> dict:
    return kubectl.json("get", "deployment", RELEASE, "-n", ns)


def operator_ready(kubectl, ns: str):
    def ready():
        d = kubectl("get", "deployment", RELEASE, "-n", ns, "-o", "json", check=False)
        if d.returncode:
            return False
        st = json.loads(d.stdout)["status"]
        return st.get("updatedReplicas") == st.get("readyReplicas") == st.get("replicas") == 1
    return ready


def wait_ready(kubectl, ns: str, what: str, extra=lambda: True) -> None:
    """Wait for the operator Deployment; on a timeout, say why (its pods' states and log)."""
    try:
        kubectl.wait_for(lambda: operator_ready(kubectl, ns)() and extra(), 180, what)
    except AssertionError as e:
        pods = kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
        log = kubectl("logs", f"deployment/{RELEASE}", "-n", ns, "--tail=20", check=False)
        raise AssertionError(f"{e}\n{pods}\n{log.stdout}{log.stderr}") from None


@pytest.fixture
def release(helm, namespace):
    yield RELEASE
    helm("uninstall", RELEASE, "-n", namespace, "--wait", check=False)


def test_helm_lint_passes_with_default_and_namespaced_values(helm):
    for extra in ([], ["--set", "watch.namespaces={team-a,team-b}", *NAMESPACED_VALUES]):
        done = helm("lint", CHART, "--strict", *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
    refused = helm("lint", CHART, "--set", "logLevel=loud", check=False)
    assert refused.returncode != 0 and "logLevel" in refused.stdout + refused.stderr


def test_the_operator_pod_passes_pod_security_restricted(kubectl, helm, namespace):
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    def warnings(*values: str) -> str:
        rendered = helm("template", RELEASE, CHART, "-n", namespace, "--show-only", "templates/deployment.yaml",
                        *values).stdout
        return kubectl("apply", "--dry-run=server", "-f", "-", input=rendered).stderr
    assert "would violate PodSecurity" not in warnings(*NAMESPACED_VALUES)
    # the check sees a violation: a file:// root is a hostPath (documented in values.yaml)
    assert "hostPath" in warnings("--set", "checkpoints.root=file:///var/lib/rung/checkpoints")


def test_helm_install_runs_a_study_then_upgrade_and_uninstall_keep_crds_and_studies(kubectl, helm, namespace,
                                                                                       release):
    copy_secret(kubectl, namespace)
    t0 = time.time()
    port = free_port()
    helm("install", release, CHART, "-n", namespace, *in_cluster_values(namespace, port))
    wait_ready(kubectl, namespace, "the operator Deployment to be ready")
    before = scrape(port)
    assert before["rung_leader"] == 1.0   # the one replica took the Lease
    pod = kubectl.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"][0]
    assert pod["spec"]["serviceAccountName"] == "rung-operator"
    assert pod["spec"]["containers"][0]["image"] == "rung-operator:0.1.0"
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")

    kubectl.apply(small_study(namespace, "via-helm"))
    def phase():
        return (kubectl.json("get", "study", "via-helm", "-n", namespace).get("status") or {}).get("phase")
    kubectl.wait_for(lambda: phase() in ("Succeeded", "Failed"), 300, "the Study to end")
    study = kubectl.json("get", "study", "via-helm", "-n", namespace)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert study["status"]["trials"]["completed"] == 4
    after = scrape(port)   # the counters moved with the run
    key = f'{{namespace="{namespace}",study="via-helm"}}'
    assert before.get("rung_segments_started_total" + key, 0.0) == 0.0
    assert after["rung_segments_started_total" + key] >= 4
    assert after[f'rung_trials{{namespace="{namespace}",state="completed",study="via-helm"}}'] == 4
    assert after["rung_decision_seconds_count"] > before.get("rung_decision_seconds_count", 0.0)
    assert after['rung_api_requests_total{method="POST"}'] > before.get('rung_api_requests_total{method="POST"}', 0.0)
    lease = kubectl.json("get", "lease", release, "-n", namespace)
    assert lease["spec"]["holderIdentity"] == pod["metadata"]["name"]
    # everything it did was allowed: not one 403 for its ServiceAccount
    user = f"system:serviceaccount:{namespace}:rung-operator"
    assert sum(count_requests(STATE / "logs/audit.log", user, since=t0).values()) > 0
    assert not count_requests(STATE / "logs/audit.log", user, since=t0, code=403)

    helm("upgrade", release, CHART, "-n", namespace, "--reuse-values",
         "--set", "logLevel=debug", "--set", "trialImage=rung-trial:0.1.0-next")
    args = deployment(kubectl, namespace)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--log-level=debug" in args and "--trial-image=rung-trial:0.1.0-next" in args
    wait_ready(kubectl, namespace, "the upgraded operator", lambda: [
        p for p in kubectl.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
        if "--log-level=debug" in p["spec"]["containers"][0]["args"]])

    helm("uninstall", release, "-n", namespace, "--wait")
    assert kubectl("get", "deployment", release, "-n", namespace, check=False).returncode != 0
    assert kubectl("get", "serviceaccount", "rung-operator", "-n", namespace, check=False).returncode != 0
    assert kubectl("get", "clusterrole", f"rung-operator:{namespace}:{release}", check=False).returncode != 0
    for crd in CRDS:
        kubectl("get", "crd", crd)
    assert kubectl.json("get", "study", "via-helm", "-n", namespace)["status"]["phase"] == "Succeeded"


def scrape(port: int) -> dict[str, float]:
    """The operator's /metrics, as {'name{labels}': value} (labels in name order, as served)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def can_i(kubectl, ns: str, verb: str, resource: str, where: str | None, name: str | None = None) -> bool:
    scope = ["-n", where] if where else []
    done = kubectl("auth", "can-i", verb, resource + (f"/{name}" if name else ""), *scope,
                   f"--as=system:serviceaccount:{ns}:rung-operator", check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


NEEDED = [("create", "pods"), ("delete", "pods"), ("get", "pods/log"), ("watch", "pods"), ("get", "secrets"),
          ("create", "trials.rung.dev"), ("patch", "studies.rung.dev/status"), ("watch", "studies.rung.dev"),
          ("create", "events"), ("create", "events.events.k8s.io")]
CLUSTER_WRITES = [("create", "namespaces"), ("delete", "namespaces"), ("patch", "nodes"),
                  ("create", "customresourcedefinitions.apiextensions.k8s.io"),
                  ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
                  ("create", "clusterroles.rbac.authorization.k8s.io"),
                  ("create", "clusterrolebindings.rbac.authorization.k8s.io"), ("create", "persistentvolumes")]
RBAC_WRITES = [("create", "roles.rbac.authorization.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
               ("escalate", "roles.rbac.authorization.k8s.io"), ("bind", "clusterroles.rbac.authorization.k8s.io")]


def test_namespaced_install_grants_only_the_watched_namespaces(kubectl, helm, namespace, release):
    helm("install", release, CHART, "-n", namespace, "--set", "replicas=0",
         "--set", f"watch.namespaces={{{namespace}}}", *NAMESPACED_VALUES)
    ns, other = namespace, "default"
    for verb, resource in NEEDED:
        assert can_i(kubectl, ns, verb, resource, ns), (verb, resource)
        assert not can_i(kubectl, ns, verb, resource, other), (verb, resource, other)
    assert can_i(kubectl, ns, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert can_i(kubectl, ns, "watch", "namespaces", None)
    assert can_i(kubectl, ns, "create", "leases.coordination.k8s.io", ns)
    assert can_i(kubectl, ns, "update", "leases.coordination.k8s.io", ns, release)
    assert not can_i(kubectl, ns, "update", "leases.coordination.k8s.io", ns, "kube-scheduler")
    assert not can_i(kubectl, ns, "list", "secrets", ns)           # one named Secret at a time
    assert not can_i(kubectl, ns, "update", "trials.rung.dev", other)
    for verb, resource in RBAC_WRITES:
        assert not can_i(kubectl, ns, verb, resource, ns), (verb, resource)
    for verb, resource in CLUSTER_WRITES:
        assert not can_i(kubectl, ns, verb, resource, None), (verb, resource)


def test_cluster_wide_install_grants_every_namespace_but_no_rbac_or_cluster_writes(kubectl, helm, namespace,
                                                                                   release):
    helm("install", release, CHART, "-n", namespace, "--set", "replicas=0", *NAMESPACED_VALUES)
    ns = namespace
    for verb, resource in NEEDED:
        assert can_i(kubectl, ns, verb, resource, "default"), (verb, resource)
    assert not can_i(kubectl, ns, "list", "secrets", "default")
    assert not can_i(kubectl, ns, "create", "leases.coordination.k8s.io", "default")   # its Lease is in ns only
    for verb, resource in RBAC_WRITES:
        assert not can_i(kubectl, ns, verb, resource, "default"), (verb, resource)
    for verb, resource in CLUSTER_WRITES:
        assert not can_i(kubectl, ns, verb, resource, None), (verb, resource)
