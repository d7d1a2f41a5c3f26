"""The cluster tier: a real Kubernetes (tests/cluster/up, or $KUBECONFIG with
RUNG_USE_EXISTING_CLUSTER=1), the CRDs, and `rung operator` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("RUNG_CLUSTER_DIR", "/tmp/rung-cluster"))


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/operator/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report shows its namespace as the cluster has it (while it still exists)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    args = getattr(item, "funcargs", {})
    if "namespace" in args and "kubectl" in args:
        try:
            report.sections.append(("the cluster when the test failed",
                                    what_the_cluster_says(args["kubectl"], args["namespace"])))
        except Exception as e:   # the report matters more than this part of it
            report.sections.append(("the cluster when the test failed", f"cannot read it: {e}"))
    if isinstance(args.get("operator"), Operator):
        log = args["operator"].log
        report.sections.append((f"the end of {log}", "\n".join(log.read_text().splitlines()[-40:])))


def what_the_cluster_says(kubectl: "Kubectl", namespace: str) -> str:
    """A failed test's namespace as the API server has it: each Study's phase and conditions,
    each Trial's last segment and why it ended, each pod's state, and the newest Events."""
    lines = []
    for kind in ("studies", "architecturesearches", "trials", "pods"):
        done = kubectl("get", kind, "-n", namespace, "-o", "json", check=False)
        items = json.loads(done.stdout)["items"] if done.returncode == 0 else []
        for obj in items:
            name, status = obj["metadata"]["name"], obj.get("status") or {}
            if kind == "trials":
                seg = (status.get("segments") or [{}])[-1]
                lines.append(f"trial {name}: {status.get('phase')}, segment {len(status.get('segments') or [])}: "
                             f"{seg.get('status')} {seg.get('reason', '')}")
            elif kind == "pods":
                states = [c.get("state") for c in status.get("containerStatuses") or []]
                lines.append(f"pod {name}: {status.get('phase')} {json.dumps(states)[:300]}")
            else:
                conditions = [(c["type"], c["status"], c.get("reason"), c.get("message", "")[:200])
                              for c in status.get("conditions") or []]
                lines.append(f"{kind[:-1]} {name}: {status.get('phase')} {conditions}")
    events = kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    return "\n".join(lines + events.splitlines()[-30:])


@pytest.fixture(scope="session")
def kubeconfig():
    """The cluster $KUBECONFIG points at (kind, a cloud cluster: nothing is built), or else
    the one tests/cluster/up builds and starts; that one is stopped again afterwards unless
    it was already up (RUNG_KEEP_CLUSTER=1 keeps it for the next run)."""
    env = dict(os.environ)
    if env.get("KUBECONFIG") and env.get("RUNG_USE_EXISTING_CLUSTER") != "0":
        env["RUNG_USE_EXISTING_CLUSTER"] = "1"
    was_up = (STATE / "admin.kubeconfig").exists() or env.get("RUNG_USE_EXISTING_CLUSTER") == "1"
    up = subprocess.run([str(ROOT / "tests/cluster/up")], capture_output=True, text=True, timeout=3600, env=env)
    assert up.returncode == 0, f"tests/cluster/up failed:\n{up.stderr[-4000:]}"
    path = up.stdout.strip().splitlines()[-1]
    os.environ["KUBECONFIG"] = path
    yield path
    if not was_up and os.environ.get("RUNG_KEEP_CLUSTER") != "1":
        subprocess.run([str(ROOT / "tests/cluster/down")], capture_output=True, timeout=600)


class Kubectl:
    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self.binary = _kubectl()

    def __call__(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60):
        done = subprocess.run([self.binary, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def json(self, *args: str):
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, manifest: str, check: bool = True):
        return self("apply", "-f", "-", input=manifest, check=check)

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 1.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _kubectl() -> str:
    for candidate in sorted(Path(os.path.expanduser(os.environ.get("RUNG_CACHE", "~/.cache/rung"))).glob(
            "k8s/*/bin/kubectl")):
        return str(candidate)
    return "kubectl"


@pytest.fixture(scope="session")
def kubectl(kubeconfig) -> Kubectl:
    k = Kubectl(kubeconfig)
    k("apply", "-f", str(ROOT / "crds"))
    for name in ("studies.rung.dev", "trials.rung.dev", "architecturesearches.rung.dev"):
        k("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return k


def operator_identity(namespace: str, server: str | None = None, name: str = "rung-operator") -> str:
    """A kubeconfig for the ServiceAccount `name` of `namespace`, bound to the operator's
    ClusterRole (tests/cluster/lib/operator-rbac.yaml): the tests run the operator with
    the least privilege it needs, never as an admin."""
    args = [str(ROOT / "tests/cluster/operator-identity"), namespace, "--name", name] + (
        ["--server", server] if server else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


class Operator:
    """`rung operator` as a real process under its own identity: start, SIGKILL, start again."""

    def __init__(self, kubeconfig: str, log: Path, checkpoints: str, namespace: str, identity: str = "op-a"):
        self.kubeconfig, self.log, self.checkpoints, self.namespace = kubeconfig, log, checkpoints, namespace
        self.identity = identity
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        args = ["--lease-namespace", self.namespace, "--identity", self.identity]
        source = os.environ.get("RUNG_OPERATOR_SOURCE")   # another checkout's operator (before/after checks)
        if source:
            env["PYTHONPATH"] = f"{source}/operator:{source}/trial_image"
            args = []   # it may predate leader election
        out = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rung.cli", "operator", "--checkpoint-root", self.checkpoints,
             "--interval", "0.5", "--namespace", self.namespace, *args], env=env, stdout=out,
            stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, grace: float = 30) -> int | None:
        """SIGTERM, as the kubelet stops a pod; SIGKILL after the grace period (None then)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode if self.proc else None


@pytest.fixture
def operator(kubectl, namespace, tmp_path_factory):
    """An operator watching only the test's namespace: runs of the suite never share Studies."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = Operator(operator_identity(namespace), log, f"file://{STATE}/checkpoints", namespace)
    op.start()
    yield op
    op.stop()
    print(f"operator log: {log}")


@pytest.fixture
def namespace(kubectl, request):
    """A namespace of the test's own, deleted afterwards (Studies, Trials, pods with it)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower().removeprefix("test_"))[:40]
    name = f"{base.strip('-')}-{uuid.uuid4().hex[:6]}"   # unique: an earlier run's may still be terminating
    kubectl("create", "namespace", name)
    kubectl.wait_for(lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
                     60, "the default ServiceAccount")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    kubectl("delete", "clusterrolebinding", f"rung-operator:{name}:rung-operator", "--ignore-not-found", check=False)


def _helm() -> str:
    """The helm tests/cluster/up links into $RUNG_CACHE/bin (built from the Go module proxy)."""
    cache = Path(os.path.expanduser(os.environ.get("RUNG_CACHE", "~/.cache/rung")))
    for candidate in [cache / "bin/helm", *sorted(cache.glob("helm/*/bin/helm"))]:
        if candidate.exists():
            return str(candidate)
    return "helm"


class Helm:
    def __init__(self, kubeconfig: str):
        self.kubeconfig, self.binary = kubeconfig, _helm()

    def __call__(self, *args: str, check: bool = True, timeout: float = 300):
        done = subprocess.run([self.binary, "--kubeconfig", self.kubeconfig, *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {done.stderr}")
        return done


@pytest.fixture(scope="session")
def helm(kubectl) -> Helm:
    return Helm(kubectl.kubeconfig)
