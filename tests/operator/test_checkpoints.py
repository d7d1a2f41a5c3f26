"""Checkpoints in the real S3 server from real pods; preempted pods restart from them."""

from __future__ import annotations

import base64
import time
from collections import Counter

import boto3
import pytest
import yaml

from conftest import STATE
from rung_trainables.count_steps import loss


def s3_study(ns: str, name: str, secret: str = "rung-s3", trials: int = 9, sleep: float = 0.4,
             keep_best: int = 1, seed: int = 4, retain: bool = False) -> str:
    return yaml.safe_dump({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "objective": {"metric": "loss"},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
            "algorithm": {"name": "asha", "seed": seed, "settings": {"reductionFactor": 3}},
            "budget": {"min": 1, "max": 9},
            "limits": {"maxTrials": trials, "parallelism": 3, "maxFailedTrials": 0},
            "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                      "env": {"COUNT_STEPS_SLEEP": str(sleep), "RUNG_CHECKPOINT_EVERY_STEPS": "1"},
                      "resources": {"cpu": "50m", "memory": "128Mi"}},
            "checkpoints": {"uri": f"s3://rung/{ns}", "secretRef": secret, "keepBest": keep_best, "retain": retain},
        }})


STUDY_SECRET = {"rung.dev/credentials": "true"}   # the label a Secret needs before Studies may use it


def copy_secret(kubectl, ns: str, name: str = "rung-s3") -> None:
    secret = kubectl.json("get", "secret", "rung-s3", "-n", "default")
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns, "labels": STUDY_SECRET},
            "data": secret["data"]}
    kubectl.apply(yaml.safe_dump(body))


def s3_client():
    env = dict(line.removeprefix("export ").split("=", 1)
               for line in (STATE / "s3.env").read_text().splitlines() if line.startswith("export "))
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def bucket_keys(prefix: str) -> list[str]:
    return [o["Key"] for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket="rung", Prefix=prefix)
            for o in page.get("Contents", [])]


def get(kubectl, ns, kind, name):
    return kubectl.json("get", kind, name, "-n", ns)


def condition(obj, type_):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def test_s3_checkpoints_and_a_preempted_pod_resumes(kubectl, operator, namespace):
    copy_secret(kubectl, namespace)
    kubectl.apply(s3_study(namespace, "ckpt", sleep=1.0))
    # preempt: delete running pods (1 s grace) until a segment has been lost and restarted
    def losses():
        return sum(seg.get("losses", 0) for t in kubectl.json("get", "trials", "-n", namespace)["items"]
                   for seg in (t.get("status") or {}).get("segments") or [])

    for _ in range(8):
        victim = kubectl.wait_for(lambda: next((p["metadata"]["name"] for p in kubectl.json(
            "get", "pods", "-n", namespace, "-l", "rung.dev/study=ckpt")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")), None),
            120, "a running trial pod", interval=0.2)
        time.sleep(0.5)                                   # mid-segment: each step takes 1 s
        kubectl("delete", "pod", victim, "-n", namespace, "--wait=true", "--grace-period=1", check=False)
        time.sleep(1.5)
        if losses():
            break
    kubectl.wait_for(lambda: (get(kubectl, namespace, "study", "ckpt").get("status") or {}).get("phase")
                     in ("Succeeded", "Failed"), 600, "the Study to end")
    study = get(kubectl, namespace, "study", "ckpt")
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert study["status"]["trials"]["failed"] == 0
    trials = kubectl.json("get", "trials", "-n", namespace, "-l", "rung.dev/study=ckpt")["items"]
    preempted = [s for t in trials for s in t["status"]["segments"] if s.get("losses")]
    assert preempted and all(s["restarts"] >= 1 and s["status"] == "completed" for s in preempted)
    # every result equals the deterministic trainable's value: nothing lost or retrained wrongly
    for t in trials:
        for seg in t["status"]["segments"]:
            assert seg["loss"] == loss(t["spec"]["params"], int(seg["budget"]))
    # the checkpoints are sealed objects in the bucket; retention keeps each trial's latest
    # (which is also its best: count_steps improves every step) and removes the rest
    prefix = f"{namespace}/{namespace}/ckpt/{study['metadata']['uid']}/"
    expected = {f"{prefix}{t['metadata']['name']}/{max(int(s['budget']) for s in t['status']['segments'])}/MANIFEST.json"
                for t in trials}
    kubectl.wait_for(lambda: {k for k in bucket_keys(prefix) if k.endswith("MANIFEST.json")} == expected,
                     60, "retention to leave one sealed checkpoint per trial")
    # deleting the Study removes its checkpoints (retain is false), then the Study goes
    kubectl("delete", "study", "ckpt", "-n", namespace, "--timeout=120s")
    assert bucket_keys(prefix) == []


def secret_with(kubectl, ns: str, name: str, **changes) -> None:
    """A copy of rung-s3 with some keys changed."""
    data = dict(kubectl.json("get", "secret", "rung-s3", "-n", "default")["data"])
    data.update({k: base64.b64encode(v.encode()).decode() for k, v in changes.items()})
    kubectl.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret",
                                  "metadata": {"name": name, "namespace": ns, "labels": STUDY_SECRET}, "data": data}))


@pytest.mark.parametrize("fault,needle", [
    ("missing secret", "Secret 'store' does not exist"),
    ("wrong credentials", "spec.checkpoints.secretRef"),
    ("unreachable endpoint", "spec.checkpoints.uri"),
    ("missing bucket", "spec.checkpoints.uri"),
])
def test_a_broken_store_holds_the_study_until_it_is_fixed(kubectl, operator, namespace, fault, needle):
    bucket = f"late-{namespace[-6:]}" if fault == "missing bucket" else "rung"
    if fault == "wrong credentials":
        secret_with(kubectl, namespace, "store", AWS_SECRET_ACCESS_KEY="not-the-key")
    elif fault == "unreachable endpoint":
        secret_with(kubectl, namespace, "store", AWS_ENDPOINT_URL="http://127.0.0.1:1")
    elif fault == "missing bucket":
        copy_secret(kubectl, namespace, "store")
    manifest = yaml.safe_load(s3_study(namespace, "held", secret="store", trials=3, sleep=0))
    manifest["spec"]["checkpoints"]["uri"] = f"s3://{bucket}/{namespace}"
    kubectl.apply(yaml.safe_dump(manifest))
    cond = kubectl.wait_for(lambda: condition(get(kubectl, namespace, "study", "held"), "CheckpointStoreReady"),
                            120, "the CheckpointStoreReady condition")
    assert cond["status"] == "False" and needle in cond["message"], cond
    assert not kubectl.json("get", "pods", "-n", namespace)["items"]     # nothing started
    if fault == "missing bucket":
        s3_client().create_bucket(Bucket=bucket)
    else:
        copy_secret(kubectl, namespace, "store")                            # the fix
    kubectl.wait_for(lambda: (get(kubectl, namespace, "study", "held").get("status") or {}).get("phase")
                     == "Succeeded", 300, "the Study to go on by itself and succeed")
    assert condition(get(kubectl, namespace, "study", "held"), "CheckpointStoreReady")["status"] == "True"


def test_chaos_evictions_deletions_and_operator_kills(kubectl, operator, namespace):
    """30 ASHA trials while pods are evicted or deleted every few seconds and the operator
    is killed twice: the Study completes and every result is what an undisturbed run gets."""
    import random

    from kubernetes import client, config

    config.load_kube_config(kubectl.kubeconfig)
    core = client.CoreV1Api()
    copy_secret(kubectl, namespace)
    kubectl.apply(s3_study(namespace, "chaos", trials=30, sleep=0.5))
    rnd, disruptions, kills = random.Random(11), [], 0

    def phase():
        return (get(kubectl, namespace, "study", "chaos").get("status") or {}).get("phase")

    deadline = time.monotonic() + 900
    while phase() not in ("Succeeded", "Failed") and time.monotonic() < deadline:
        time.sleep(rnd.uniform(4, 8))
        running = [p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector="rung.dev/study=chaos").items
                   if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if running:
            victim = rnd.choice(running)
            how = rnd.choice(["evict", "delete"])
            try:
                if how == "evict":
                    core.create_namespaced_pod_eviction(victim, namespace, client.V1Eviction(
                        metadata=client.V1ObjectMeta(name=victim, namespace=namespace),
                        delete_options=client.V1DeleteOptions(grace_period_seconds=1)))
                else:
                    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=1)
                disruptions.append((how, victim))
            except client.ApiException as e:
                assert e.status in (404, 409, 429), e     # it ended meanwhile
        if kills < 2 and len(disruptions) in (2, 5):
            operator.kill()
            operator.start()
            kills += 1
    study = get(kubectl, namespace, "study", "chaos")
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert kills == 2 and len(disruptions) >= 4
    trials = kubectl.json("get", "trials", "-n", namespace, "-l", "rung.dev/study=chaos")["items"]
    assert sorted(t["spec"]["index"] for t in trials) == list(range(30))
    assert study["status"]["trials"]["failed"] == 0
    segments = [s for t in trials for s in t["status"]["segments"]]
    for t in trials:
        for seg in t["status"]["segments"]:
            assert seg["status"] == "completed"
            assert seg["loss"] == loss(t["spec"]["params"], int(seg["budget"]))   # as if undisturbed
    preemptions = sum(s.get("losses", 0) for s in segments)
    restarts = sum(s.get("restarts", 0) for s in segments)
    assert preemptions >= 1 and restarts >= preemptions
    # each trial's newest sealed checkpoint is its top step: what a further promotion resumes
    prefix = f"{namespace}/{namespace}/chaos/{get(kubectl, namespace, 'study', 'chaos')['metadata']['uid']}/"
    keys = set(bucket_keys(prefix))
    for t in trials:
        top = max(int(s["budget"]) for s in t["status"]["segments"])
        assert f"{prefix}{t['metadata']['name']}/{top}/MANIFEST.json" in keys
    print(f"chaos: {len(disruptions)} disruptions ({sum(h == 'evict' for h, _ in disruptions)} evictions), "
          f"2 operator kills, {preemptions} preemptions counted, {restarts} restarts, "
          f"{len(segments)} segments")


def test_lost_work_per_preemption_is_at_most_one_checkpoint_interval(kubectl, operator, namespace):
    """count_steps logs every step it trains to a file on the node (the file:// checkpoint
    hostPath); pods are deleted or evicted mid-segment; a step trained twice is lost work."""
    from kubernetes import client, config

    config.load_kube_config(kubectl.kubeconfig)
    core = client.CoreV1Api()
    root = STATE / "checkpoints" / f"ck-{namespace}"   # under the operator's root: Studies may use no other node path
    root.mkdir(parents=True)
    root.chmod(0o777)   # the non-root trials write their step log there, beside their checkpoints
    # disrupted with a 1 s grace period: the trial (PID 1, deaf to SIGTERM) cannot finish first
    manifest = yaml.safe_load(s3_study(namespace, "lost", trials=6, sleep=1.0))
    manifest["spec"]["checkpoints"] = {"uri": f"file://{root}"}
    manifest["spec"]["trial"]["env"]["COUNT_STEPS_LOG"] = str(root / "steps.log")
    kubectl.apply(yaml.safe_dump(manifest))
    disruptions = 0
    deadline = time.monotonic() + 600
    while (get(kubectl, namespace, "study", "lost").get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline
        time.sleep(3.5)
        running = [p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector="rung.dev/study=lost").items
                   if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if running and disruptions < 6:
            victim = running[0]
            try:
                if disruptions % 2:
                    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=1)
                else:
                    core.create_namespaced_pod_eviction(victim, namespace, client.V1Eviction(
                        metadata=client.V1ObjectMeta(name=victim, namespace=namespace),
                        delete_options=client.V1DeleteOptions(grace_period_seconds=1)))
                disruptions += 1
            except client.ApiException as e:
                assert e.status in (404, 409, 429), e
    study = get(kubectl, namespace, "study", "lost")
    assert study["status"]["phase"] == "Succeeded", study["status"]
    trials = kubectl.json("get", "trials", "-n", namespace, "-l", "rung.dev/study=lost")["items"]
    preemptions = sum(s.get("losses", 0) for t in trials for s in t["status"]["segments"])
    lines = (root / "steps.log").read_text().split("\n")
    trained = Counter(line for line in lines if line)
    lost = sum(n - 1 for n in trained.values())
    for t in trials:                                   # every step of every trial was trained
        top = max(int(s["budget"]) for s in t["status"]["segments"])
        assert all(trained[f"{t['metadata']['name']} {step}"] >= 1 for step in range(1, top + 1))
    assert preemptions >= 1
    assert lost <= preemptions                         # at most one step (the interval) per preemption
    print(f"lost work: {disruptions} disruptions, {preemptions} preemptions, {lost} steps trained twice "
          f"of {sum(trained.values())} trained (checkpoint every step)")


def test_deleting_a_running_study_removes_its_checkpoints_after_its_pods(kubectl, operator, namespace):
    """Pods that save a checkpoint every step are running when the Study is deleted: its
    checkpoints go only once its pods have stopped, so no late save brings any back."""
    copy_secret(kubectl, namespace)
    kubectl.apply(s3_study(namespace, "busy", trials=6, sleep=0.5))
    prefix = f"{namespace}/{namespace}/busy/"
    kubectl.wait_for(lambda: len([p for p in kubectl.json("get", "pods", "-n", namespace)["items"]
                                  if p["status"].get("phase") == "Running"]) >= 2 and bucket_keys(prefix),
                     300, "running pods with checkpoints")
    kubectl("delete", "study", "busy", "-n", namespace, "--timeout=120s")
    assert not [p for p in kubectl.json("get", "pods", "-n", namespace, "-l", "rung.dev/study=busy")["items"]
                if p["status"].get("phase") in ("Pending", "Running")]
    assert bucket_keys(prefix) == []
    time.sleep(5)
    assert bucket_keys(prefix) == []   # nothing saved late


def test_a_study_created_again_under_its_name_never_loads_the_old_ones_checkpoints(kubectl, operator, namespace):
    """The first Study retains its checkpoints; the second, same name and trial names but
    another seed (so other params), must train each trial from its own start: every loss is
    its own params' loss, never one resumed from the first Study's checkpoint."""
    copy_secret(kubectl, namespace)
    uids = []
    for seed in (4, 5):
        kubectl.apply(s3_study(namespace, "again", trials=4, sleep=0.05, seed=seed, retain=True))
        kubectl.wait_for(lambda: (get(kubectl, namespace, "study", "again").get("status") or {}).get("phase")
                         in ("Succeeded", "Failed"), 300, "the Study to end")
        study = get(kubectl, namespace, "study", "again")
        assert study["status"]["phase"] == "Succeeded", study["status"]
        uids.append(study["metadata"]["uid"])
        trials = kubectl.json("get", "trials", "-n", namespace, "-l", "rung.dev/study=again")["items"]
        for t in trials:
            for seg in t["status"]["segments"]:
                assert seg["loss"] == loss(t["spec"]["params"], int(seg["budget"])), (seed, t["metadata"]["name"])
        kubectl("delete", "study", "again", "-n", namespace, "--timeout=120s")
    for uid in uids:   # both runs' checkpoints are retained, each under its own uid
        assert bucket_keys(f"{namespace}/{namespace}/again/{uid}/")
