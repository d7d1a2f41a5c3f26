"""The operator under faults made by the real components: API Priority and Fairness 429s,
ResourceQuota 403s, Pod Security admission, a TCP fault proxy, an API server restart,
deleted Trials, a SIGKILLed operator and a second replica taking over. Each Study ends
Succeeded (held with a named condition while the fault lasts), every segment's result is
recorded exactly once, no trial is left Running without a pod, no trial number is used
twice, and no failure is charged to a trial (tests/operator/faultlib.py)."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import time
import urllib.request

import yaml

from conftest import ROOT, STATE, Operator, operator_identity
from faultlib import Monitor, check, condition, fault_study

sys.path.insert(0, str(ROOT / "tests/cluster/lib"))
from api_hammer import hammer  # noqa: E402
from audit import count_requests  # noqa: E402

AUDIT = STATE / "logs" / "audit.log"


def sh(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([str(ROOT / "tests/cluster" / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(ns: str, code: int, since: float) -> int:
    """Requests of the operator (its ServiceAccount) the API server answered with `code`."""
    return sum(count_requests(AUDIT, f"system:serviceaccount:{ns}:rung-operator", since=since, code=code).values())


def run_study(kubectl, namespace: str, fault, trials: int = 12, parallelism: int = 3, timeout: float = 600) -> dict:
    """Apply a Study, run `fault(monitor)` beside it, wait for its end, check the invariants."""
    with Monitor(kubectl.kubeconfig, namespace, "faulty") as monitor:
        kubectl.apply(fault_study(namespace, "faulty", trials, parallelism))
        injected = fault(monitor)
        monitor.wait_until(lambda: monitor.phase in ("Succeeded", "Failed"), timeout, "the Study to end")
    report = check(kubectl, monitor, trials)
    report["faults"] = injected
    print(f"faults: {json.dumps(report)}")
    return report


def started(monitor: Monitor, completed: int = 1):
    """Once `completed` segments have ended (the Study is well under way)."""
    return lambda: sum(s["status"] != "running" for t in monitor.trials()
                       for s in (t.get("status") or {}).get("segments") or []) >= completed


def test_api_priority_and_fairness_429s(kubectl, operator, namespace):
    """(a) Mid-Study, the operator's own identity gets almost no concurrency and a second
    identity in the same priority level keeps it busy: the real API server answers the
    operator 429 until the throttle is lifted."""
    noise = operator_identity(namespace, name="noise")
    flow = {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": f"rung-noise-{namespace}"},
            "spec": {"matchingPrecedence": 91, "distinguisherMethod": {"type": "ByUser"},
                     "priorityLevelConfiguration": {"name": f"rung-throttle-{namespace}-rung-operator"},
                     "rules": [{"subjects": [{"kind": "ServiceAccount",
                                              "serviceAccount": {"namespace": namespace, "name": "noise"}}],
                                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                   "namespaces": ["*"], "clusterScope": True}]}]}}

    def fault(monitor):
        monitor.wait_until(started(monitor, 2), 300, "the Study to be under way")
        t0 = time.time()
        sh("apf-throttle", namespace, "rung-operator", "on")
        kubectl.apply(yaml.safe_dump(flow))   # the noise shares the throttled priority level
        kubectl.wait_for(lambda: (condition(kubectl.json("get", "flowschema", flow["metadata"]["name"]), "Dangling")
                                  or {}).get("status") == "False", 60, "the API server to take the FlowSchema in")
        start = time.monotonic()   # 20 s at least, and until a step of the Study itself was refused
        while (time.monotonic() - start < 20 or not study_refused(t0)) and time.monotonic() - start < 120 \
                and monitor.phase != "Succeeded":
            hammer(noise, threads=20, calls=20, path=f"/api/v1/namespaces/{namespace}/pods")
        sh("apf-throttle", namespace, "rung-operator", "off")
        return {"429": refused(namespace, 429, t0)}

    def study_refused(t0: float) -> bool:
        counts = count_requests(AUDIT, f"system:serviceaccount:{namespace}:rung-operator", since=t0, code=429)
        return any(resource in ("trials", "studies", "pods") for _, resource, _ in counts)

    try:
        report = run_study(kubectl, namespace, fault, trials=16)
    finally:
        sh("apf-throttle", namespace, "rung-operator", "off")
        kubectl("delete", "flowschema", f"rung-noise-{namespace}", "--ignore-not-found", check=False)
        kubectl("delete", "clusterrolebinding", f"rung-operator:{namespace}:noise", "--ignore-not-found", check=False)
    assert report["faults"]["429"] > 0 and report["held_events"].get("Throttled")


def test_resource_quota_403s(kubectl, operator, namespace):
    """(b) A quota allows 2 pods; the Study runs 4 at a time: the real API server refuses
    the rest (403) until pods end. The Study holds (QuotaExceeded) and goes on."""
    t0 = time.time()
    kubectl.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ResourceQuota",
                                  "metadata": {"name": "two-pods", "namespace": namespace},
                                  "spec": {"hard": {"pods": "2"}}}))
    report = run_study(kubectl, namespace, lambda monitor: {}, parallelism=4)
    report["faults"]["403"] = refused(namespace, 403, t0)
    assert report["faults"]["403"] > 0 and report["held"].get("QuotaExceeded")


def test_pod_security_admission_refuses_trial_pods_for_a_while(kubectl, operator, namespace):
    """(c) `enforce: restricted` on the namespace turns trial pods away (they run as root
    today); the Study holds with AdmissionDenied, and goes on when the label is removed."""
    t0 = time.time()
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")

    def fault(monitor):
        monitor.wait_until(lambda: monitor.held.get("AdmissionDenied"), 120, "the Study to hold")
        time.sleep(10)
        kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce-")
        return {"403": refused(namespace, 403, t0)}

    report = run_study(kubectl, namespace, fault)
    assert report["faults"]["403"] > 0


def test_tcp_fault_proxy_cuts_and_slows_the_operators_connections(kubectl, namespace, tmp_path):
    """(d) The operator reaches the API server only through toxiproxy, which resets its
    connections, black-holes them and adds latency at random for a minute."""
    env = dict(line.removeprefix("export ").split("=", 1) for line in sh("toxiproxy-up").splitlines()
               if line.startswith("export "))
    api = env["RUNG_TOXIPROXY_URL"]

    def toxic(method: str, url: str, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        urllib.request.urlopen(urllib.request.Request(f"{api}{url}", data=data, method=method), timeout=5).read()

    op = Operator(operator_identity(namespace, server=env["RUNG_APISERVER_PROXY"]), tmp_path / "operator.log",
                  f"file://{STATE}/checkpoints", namespace)
    op.start()
    rnd = random.Random(7)

    def fault(monitor):
        monitor.wait_until(started(monitor, 2), 300, "the Study to be under way")
        kinds = {"reset_peer": {"timeout": 0}, "timeout": {"timeout": 3000},
                 "latency": {"latency": 1500, "jitter": 500}}
        injected = {k: 0 for k in kinds}
        deadline = time.monotonic() + 60
        for kind in itertools.cycle(sorted(kinds)):
            if time.monotonic() > deadline or monitor.phase == "Succeeded":
                break
            toxic("POST", "/proxies/apiserver/toxics",
                  {"name": "chaos", "type": kind, "stream": "downstream", "attributes": kinds[kind]})
            injected[kind] += 1
            time.sleep(rnd.uniform(2, 8))
            toxic("DELETE", "/proxies/apiserver/toxics/chaos")
            time.sleep(rnd.uniform(1, 4))
        return injected

    try:
        report = run_study(kubectl, namespace, fault, trials=16)
    finally:
        toxic("POST", "/reset")
        op.stop()
    assert sum(report["faults"].values()) >= 5


def test_api_server_restarted_mid_study(kubectl, operator, namespace):
    """(e) kube-apiserver goes down for 5 s and comes back, mid-Study."""
    def fault(monitor):
        monitor.wait_until(started(monitor, 3), 300, "the Study to be under way")
        sh("restart-apiserver", "--down-seconds", "5", timeout=300)
        return {"restarts": 1, "down_s": 5}

    run_study(kubectl, namespace, fault)


def test_deleting_a_running_and_a_finished_trial(kubectl, operator, namespace):
    """(f) `kubectl delete trial` of a running and of a finished trial mid-Study: their
    numbers are never given again, and the Study still ends."""
    def fault(monitor):
        def pick():
            trials = monitor.trials()
            phases = {t["metadata"]["name"]: (t.get("status") or {}).get("phase") for t in trials}
            running = [n for n, p in phases.items() if p == "Running"]
            done = [n for n, p in phases.items() if p in ("Succeeded", "Stopped")]
            return (running[0], done[0]) if running and done else None

        running, finished = monitor.wait_until(pick, 300, "a running and a finished trial")
        kubectl("delete", "trial", running, finished, "-n", namespace)
        return {"deleted": [running, finished]}

    report = run_study(kubectl, namespace, fault)
    assert report["created"] == 12 and report["trials"] == 10   # 12 numbers given, each once; 2 deleted


def test_operator_sigkilled_and_a_second_replica_takes_over(kubectl, operator, namespace, tmp_path):
    """(g) The operator is SIGKILLed and restarted; then a second replica stands by and the
    active one is killed: the standby takes the Lease over and finishes the Study."""
    standby = Operator(operator.kubeconfig, tmp_path / "standby.log", operator.checkpoints, namespace,
                       identity="op-b")

    def holder() -> str:
        return kubectl.json("get", "lease", "rung-operator", "-n", namespace)["spec"]["holderIdentity"]

    def fault(monitor):
        monitor.wait_until(started(monitor, 2), 300, "the Study to be under way")
        operator.kill()
        time.sleep(1)
        operator.start()                     # the same identity takes its Lease back at once
        monitor.wait_until(started(monitor, 6), 300, "more segments")
        standby.start()
        time.sleep(3)
        assert holder() == "op-a"            # one active replica, one standing by
        t_kill = time.monotonic()
        operator.kill()
        monitor.wait_until(lambda: holder() == "op-b", 120, "the standby to take the Lease")
        return {"sigkills": 2, "takeover_s": round(time.monotonic() - t_kill, 1)}

    try:
        report = run_study(kubectl, namespace, fault)
    finally:
        standby.stop()
    assert report["faults"]["takeover_s"] < 60


def test_sigterm_stops_the_leader_and_hands_the_lease_over(kubectl, operator, namespace, tmp_path):
    """A rolling update or drain: SIGTERM ends the leader within the kubelet's grace period
    (30 s), and it gives its Lease up, so the standby takes over before the Lease (15 s)
    would have run out."""
    standby = Operator(operator.kubeconfig, tmp_path / "standby.log", operator.checkpoints, namespace,
                       identity="op-b")
    def holder():
        lease = kubectl("get", "lease", "rung-operator", "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}",
                            check=False)
        return lease.stdout.strip()

    deadline = time.monotonic() + 60
    while holder() != "op-a" and time.monotonic() < deadline:
        time.sleep(0.5)
    standby.start()
    try:
        assert operator.stop() == 0, "the leader did not exit within the grace period"
        stopped = time.monotonic()
        while holder() != "op-b" and time.monotonic() - stopped < 10:
            time.sleep(0.2)
        assert holder() == "op-b", "the Lease was not released: the standby waited it out"
    finally:
        standby.stop()


def test_one_trial_create_refused_while_the_others_of_its_step_go_through(kubectl, operator, namespace):
    """(h) An admission policy refuses the create of trial 1 while trials 0 and 2 of the
    same step are created: 2 does not wait for 1, and once the policy is gone, number 1
    is given again (it never was a trial) and every number runs once."""
    name = f"refuse-faulty-1-{namespace}"
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": ["rung.dev"], "apiVersions": ["*"],
                                                               "operations": ["CREATE"], "resources": ["trials"]}]},
                       "validations": [{"expression": "object.metadata.name != 'faulty-1'",
                                        "message": "trial faulty-1 is refused (test)", "reason": "Forbidden"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name},
               "spec": {"policyName": name, "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": namespace}}}}}
    probe = yaml.safe_dump({"apiVersion": "rung.dev/v1alpha1", "kind": "Trial",
                            "metadata": {"name": "faulty-1", "namespace": namespace},
                            "spec": {"study": "faulty", "index": 1, "params": {"x": 0.5}}})

    def in_force():
        done = kubectl("create", "--dry-run=server", "-f", "-", input=probe, check=False)
        return done.returncode != 0 and "refused (test)" in done.stderr

    def fault(monitor):
        monitor.wait_until(lambda: "faulty-2" in monitor.uids and "faulty-1" not in monitor.uids, 120,
                           "trial 2 created while trial 1 is refused")
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name)
        return {"refused": ["faulty-1"]}

    kubectl.apply(yaml.safe_dump_all([policy, binding]))
    try:
        kubectl.wait_for(in_force, 60, "the admission policy to be in force")
        report = run_study(kubectl, namespace, fault)
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found",
                check=False)
    assert report["created"] == 12 and report["trials"] == 12   # number 1 given again, once
