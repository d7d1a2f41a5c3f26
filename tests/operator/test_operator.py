"""The operator on a real cluster: Studies run as Trials and pods on a real kubelet."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from rung.api import parse_study
from rung.controller.trial_store import trial_from_object
from rung.schedulers import make_scheduler

ROOT = Path(__file__).resolve().parents[2]


def manifest(namespace: str, name: str, **spec_changes) -> str:
    doc = yaml.safe_load((ROOT / "examples/asha-cluster.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    for path, value in spec_changes.items():   # e.g. limits__maxTrials=9
        node = doc["spec"]
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return yaml.safe_dump(doc)


def study(kubectl, ns, name):
    return kubectl.json("get", "study", name, "-n", ns)


def phase_is(kubectl, ns, name, *phases):
    return lambda: (study(kubectl, ns, name).get("status") or {}).get("phase") in phases


def trials(kubectl, ns, name):
    return kubectl.json("get", "trials", "-n", ns, "-l", f"rung.dev/study={name}")["items"]


def pods(kubectl, ns, name):
    return kubectl.json("get", "pods", "-n", ns, "-l", f"rung.dev/study={name}")["items"]


def condition(obj, type_):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def test_asha_study_runs_to_success_and_is_garbage_collected(kubectl, operator, namespace):
    kubectl.apply(manifest(namespace, "digits"))
    kubectl.wait_for(phase_is(kubectl, namespace, "digits", "Succeeded", "Failed"), 900, "the Study to end")
    s = study(kubectl, namespace, "digits")
    status = s["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"]["completed"] == status["trials"]["total"] == 20
    assert status["best"]["trial"].startswith("digits-") and 0 < status["best"]["value"] < 3
    assert set(status["best"]["params"]) == {"lr", "hidden", "activation"}
    assert condition(s, "Succeeded")["status"] == "True"
    # the printer columns
    table = kubectl("get", "studies", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "BEST", "COMPLETED", "RUNNING", "AGE"]
    assert table[1].split()[:2] == ["digits", "Succeeded"] and table[1].split()[3] == "20"
    # real containers on the real kubelet, on the operator's default image (the spec has none)
    ps = pods(kubectl, namespace, "digits")
    assert len(ps) >= 20 + 6
    for p in ps:
        assert p["status"]["phase"] == "Succeeded"
        cs = p["status"]["containerStatuses"][0]
        assert cs["state"]["terminated"]["exitCode"] == 0 and cs["containerID"].startswith("containerd://")
        assert p["spec"]["containers"][0]["image"].endswith("rung-trial:0.1.0")
    ts = trials(kubectl, namespace, "digits")
    assert len(ts) == 20
    promoted = [t for t in ts if len(t["status"]["segments"]) > 1]
    assert promoted and all(s["resumeFrom"] is not None for t in promoted for s in t["status"]["segments"][1:])
    # the epochs each pod really trained (its @rung lines): every trial trained 1..top once,
    # so the total is the promotion plan and no promoted trial retrained from epoch 0
    trained = Counter()
    for p in ps:
        for line in kubectl("logs", p["metadata"]["name"], "-n", namespace).stdout.splitlines():
            if line.startswith("@rung "):
                trained[(p["metadata"]["labels"]["rung.dev/trial"], json.loads(line[6:])["step"])] += 1
    assert set(trained.values()) == {1}
    for t in ts:
        top = max(int(seg["budget"]) for seg in t["status"]["segments"])
        assert {step for (name, step) in trained if name == t["metadata"]["name"]} == set(range(1, top + 1))
    # owner references: Study -> Trial -> Pod, so deleting the Study removes everything
    assert all(t["metadata"]["ownerReferences"][0]["kind"] == "Study" for t in ts)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "Trial" for p in ps)
    kubectl("delete", "study", "digits", "-n", namespace)
    kubectl.wait_for(lambda: not trials(kubectl, namespace, "digits") and not pods(kubectl, namespace, "digits"),
                     120, "garbage collection of Trials and pods")


def test_operator_killed_three_times_loses_and_duplicates_nothing(kubectl, operator, namespace):
    kubectl.apply(manifest(namespace, "chaos"))
    rnd = random.Random(5)
    for _ in range(3):
        time.sleep(rnd.uniform(2, 6))
        assert (study(kubectl, namespace, "chaos").get("status") or {}).get("phase") in (None, "Running")
        operator.kill()
        time.sleep(rnd.uniform(0, 2))
        operator.start()
    kubectl.wait_for(phase_is(kubectl, namespace, "chaos", "Succeeded", "Failed"), 900, "the Study to end")
    s = study(kubectl, namespace, "chaos")
    assert s["status"]["phase"] == "Succeeded", s["status"]
    ts = trials(kubectl, namespace, "chaos")
    assert sorted(t["spec"]["index"] for t in ts) == list(range(20))        # none lost, none twice
    ps = pods(kubectl, namespace, "chaos")
    succeeded = Counter((p["metadata"]["labels"]["rung.dev/trial"], p["metadata"]["labels"]["rung.dev/segment"])
                        for p in ps if p["status"]["phase"] == "Succeeded")
    assert succeeded and max(succeeded.values()) == 1                        # no segment ran twice
    for t in ts:
        segments = t["status"]["segments"]
        assert all(seg["status"] == "completed" for seg in segments)
        assert len(succeeded) and all(succeeded[(t["metadata"]["name"], str(i))] == 1 for i in range(len(segments)))
    # exactly the trials the decisions called for: the scheduler rebuilt from the Trials is done
    scheduler = make_scheduler(parse_study(s))
    scheduler.restore([trial_from_object(t) for t in ts])
    assert scheduler.finished() and scheduler.ask() is None


@pytest.mark.parametrize("field,value,needle", [
    ("searchSpace__lr__low", "abc", "spec.searchSpace.lr.low"),
    ("limits__maxTrials", "many", "spec.limits.maxTrials"),
    ("checkpoints__secretRef", "kube-system/admin-token", "spec.checkpoints.secretRef"),   # another namespace's
    ("checkpoints__uri", "file://etc/kubernetes", "spec.checkpoints.uri"),                # not an absolute path
])
def test_wrong_types_are_refused_by_the_api_server(kubectl, namespace, field, value, needle):
    done = kubectl.apply(manifest(namespace, "typo", **{field: value}), check=False)
    assert done.returncode != 0 and needle in done.stderr
    assert kubectl("get", "study", "typo", "-n", namespace, check=False).returncode != 0


@pytest.mark.parametrize("changes,needle", [
    ({"searchSpace__lr__low": 0.5, "searchSpace__lr__high": 0.1}, "spec.searchSpace.lr: low (0.5) is above high"),
    ({"algorithm__name": "asah"}, "spec.algorithm.name: unknown algorithm 'asah'"),
])
def test_semantic_errors_set_invalid_and_start_nothing(kubectl, operator, namespace, changes, needle):
    kubectl.apply(manifest(namespace, "bad", **changes))
    kubectl.wait_for(phase_is(kubectl, namespace, "bad", "Invalid"), 120, "phase Invalid")
    cond = condition(study(kubectl, namespace, "bad"), "Invalid")
    assert cond["status"] == "True" and needle in cond["message"]
    time.sleep(3)
    assert not trials(kubectl, namespace, "bad") and not pods(kubectl, namespace, "bad")


@pytest.mark.parametrize("changes,reason", [
    ({"trial__image": "rung-missing-image:0.0"}, "ErrImage"),
    ({"trial__command": ["python", "-c", "import sys; sys.exit(3)"]}, "exited with code 3"),
    ({"trial__command": ["python", "-c", "import time; time.sleep(300)"], "trial__timeoutSeconds": 3},
     "timed out after 3 s"),
])
def test_failing_trials_fail_the_study_at_the_limit(kubectl, operator, namespace, changes, reason):
    kubectl.apply(manifest(namespace, "failing", limits__maxFailedTrials=1, limits__parallelism=2, **changes))
    kubectl.wait_for(phase_is(kubectl, namespace, "failing", "Failed", "Succeeded"), 300, "the Study to end")
    s = study(kubectl, namespace, "failing")
    assert s["status"]["phase"] == "Failed"
    cond = condition(s, "Failed")
    assert cond["status"] == "True" and cond["reason"] == "TooManyFailedTrials" and "maxFailedTrials" in cond["message"]
    failed = [t for t in trials(kubectl, namespace, "failing") if t["status"]["phase"] == "Failed"]
    assert len(failed) >= 2
    assert all(reason in t["status"]["segments"][-1]["reason"] for t in failed)
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=failing")
    assert {"TrialFailed", "StudyFailed"} <= {e["reason"] for e in events["items"]}


def test_a_study_where_no_trial_produces_the_objective_fails_with_the_reason(kubectl, operator, namespace):
    kubectl.apply(manifest(namespace, "noresult", limits__maxTrials=3, limits__parallelism=3,
                           limits__maxFailedTrials=10, trial__command=["python", "-c", "pass"]))
    kubectl.wait_for(phase_is(kubectl, namespace, "noresult", "Failed", "Succeeded"), 300, "the Study to end")
    cond = condition(study(kubectl, namespace, "noresult"), "Failed")
    assert cond["status"] == "True" and cond["reason"] == "NoResult"
    assert cond["message"].startswith("no trial produced a finite val_loss (3 of 3 failed or diverged; ")


def test_limits_can_be_edited_and_take_effect_while_the_rest_of_the_spec_cannot(kubectl, operator, namespace):
    kubectl.apply(manifest(namespace, "grow", limits__maxTrials=6, limits__parallelism=1,
                           algorithm__name="random", algorithm__settings={}, budget__max=1))
    kubectl.wait_for(lambda: len(trials(kubectl, namespace, "grow")) >= 2, 300, "two trials")
    refused = kubectl("patch", "study", "grow", "-n", namespace, "--type=merge",
                      "-p", '{"spec": {"searchSpace": {"lr": {"type": "float", "low": 0.01, "high": 0.2}}}}',
                      check=False)
    assert refused.returncode != 0 and "spec.searchSpace cannot change once the Study exists" in refused.stderr
    kubectl("patch", "study", "grow", "-n", namespace, "--type=merge",
            "-p", '{"spec": {"limits": {"maxTrials": 9, "parallelism": 3}}}')
    most = 0
    while not phase_is(kubectl, namespace, "grow", "Succeeded", "Failed")():
        running = [p for p in pods(kubectl, namespace, "grow") if p["status"].get("phase") in ("Pending", "Running")]
        most = max(most, len(running))
        time.sleep(0.5)
    s = study(kubectl, namespace, "grow")
    assert s["status"]["phase"] == "Succeeded" and s["status"]["trials"]["completed"] == 9
    assert s["status"]["observedGeneration"] == s["metadata"]["generation"]
    assert most >= 2   # the new parallelism took effect


# Trains 1..budget from its checkpoint, reporting the objective and two more metrics each step.
# With QUIET set its log holds no `@rung` lines, as when a pod's log cannot be read (gone with
# its node, or the API server cannot reach the kubelet): the result file must carry them.
METRICS_TRIAL = """
import os, sys
from rung import trial
if os.environ.get("QUIET"):
    sys.stdout = open(os.devnull, "w")
p = trial.params()
state = trial.load_checkpoint()
top = int(trial.budget())
for step in range(int(state["step"]) + 1 if state else 1, top + 1):
    loss = (p["lr"] - 0.05) ** 2 + 1.0 / step
    trial.report(step, val_loss=loss, accuracy=1.0 - loss / 2, images=100 * step)
trial.save_checkpoint({"step": top}, top)
"""


@pytest.mark.parametrize("quiet", ["", "1"], ids=["with-logs", "without-logs"])
def test_every_segment_keeps_its_metrics_and_curve_and_rung_report_reads_the_cluster(kubectl, operator, namespace,
                                                                                      tmp_path, quiet):
    kubectl.apply(manifest(namespace, "metrics", limits__maxTrials=6, limits__parallelism=3,
                           trial__command=["python", "-c", METRICS_TRIAL], trial__env={"QUIET": quiet}))
    kubectl.wait_for(phase_is(kubectl, namespace, "metrics", "Succeeded", "Failed"), 600, "the Study to end")
    status = study(kubectl, namespace, "metrics")["status"]
    assert status["phase"] == "Succeeded", status
    ts = trials(kubectl, namespace, "metrics")
    assert len(ts) == 6 and any(len(t["status"]["segments"]) > 1 for t in ts)   # promoted trials resumed
    if quiet:
        assert not any("@rung" in kubectl("logs", p["metadata"]["name"], "-n", namespace).stdout
                       for p in pods(kubectl, namespace, "metrics"))
    for t in ts:
        for seg in t["status"]["segments"]:
            assert seg["status"] == "completed", (t["metadata"]["name"], seg)
            top = int(seg["budget"])
            # the final metrics of the segment, every one of them
            assert seg["metrics"]["images"] == 100 * top, (t["metadata"]["name"], seg)
            assert seg["metrics"]["val_loss"] == pytest.approx(seg["loss"])
            assert seg["metrics"]["accuracy"] == pytest.approx(1.0 - seg["loss"] / 2)
            # its learning curve: the steps it trained, in order, bounded
            steps = [p[0] for p in seg["curve"]]
            assert steps and steps[-1] == top and steps == sorted(set(steps)) and len(steps) <= 65, seg
            assert steps[0] > (seg.get("resumeFrom") or 0)
            assert seg["curve"][-1][1] == pytest.approx(seg["loss"])

    env = {**os.environ, "KUBECONFIG": kubectl.kubeconfig}
    done = subprocess.run([sys.executable, "-m", "rung.cli", "report", "study/metrics", "-n", namespace],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    best = status["best"]
    assert done.stdout.startswith("Study metrics: succeeded\n")
    assert f"  best val_loss       {best['value']:.6g}  (trial {best['trial']}, epochs {best['budget']:g})" \
           in done.stdout
    assert "  trials              6 of 6: 6 completed, 0 stopped, 0 failed, 0 running" in done.stdout
    plots = sorted(p.name for p in (tmp_path / "metrics-plots").iterdir())
    assert plots == ["best_vs_budget.png", "best_vs_time.png", "learning_curves.png"]
    missing = subprocess.run([sys.executable, "-m", "rung.cli", "report", "study/nope", "-n", namespace],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr == f"error: study/nope: no Study nope in namespace {namespace}; " \
                             "check the name and --namespace (kubectl get studies -A)\n"
