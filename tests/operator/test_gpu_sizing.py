"""GPUs on the real cluster: the node advertises 8 nvidia.com/gpu (tests/cluster/up), the
operator sizes each segment from the Study's efficiency curve and its fair share, and the
real kube-scheduler places the GPU-requesting trial pods."""

import time

import pytest
import yaml

pytestmark = pytest.mark.cluster

GPU = "nvidia.com/gpu"
# E(4) = 0.73 >= 0.7 > E(5) = 0.67
SCALING = {"stepSeconds": 0.8, "gradientBytes": 5.0e8, "bandwidthGBps": 10, "latencySeconds": 5.0e-5}


def gpu_study(ns, name, gpus, parallelism, trials, weight=1, sleep=0.3):
    return yaml.safe_dump({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name, "namespace": ns},
        "spec": {"objective": {"metric": "loss"},
                 "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
                 "algorithm": {"name": "random", "seed": 5},
                 "budget": {"min": 3, "max": 3},
                 "limits": {"maxTrials": trials, "parallelism": parallelism, "maxFailedTrials": 0},
                 "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                           "env": {"COUNT_STEPS_SLEEP": str(sleep)},
                           "resources": {"cpu": "10m", "memory": "64Mi"}, "gpus": gpus},
                 "fairShare": {"weight": weight}}})


def held_gpus(kubectl, ns, studies):
    """GPUs each Study's live pods hold, from one list so that the counts are of one moment."""
    held = dict.fromkeys(studies, 0)
    for p in kubectl.json("get", "pods", "-n", ns)["items"]:
        study = p["metadata"].get("labels", {}).get("rung.dev/study")
        if study in held and p["status"].get("phase") in ("Pending", "Running") \
                and not p["metadata"].get("deletionTimestamp"):
            held[study] += int(p["spec"]["containers"][0]["resources"]["limits"].get(GPU, 0))
    return tuple(held.values())


def running_gpus(kubectl, ns, study):
    return held_gpus(kubectl, ns, [study])[0]


def phase(kubectl, ns, name):
    return (kubectl.json("get", "study", name, "-n", ns).get("status") or {}).get("phase")


def test_a_study_gets_the_gpu_count_its_efficiency_curve_calls_for(kubectl, operator, namespace):
    kubectl.apply(gpu_study(namespace, "sized", {"min": 1, "max": 8, "targetEfficiency": 0.7, "scaling": SCALING},
                            parallelism=2, trials=2, sleep=1.0))
    pods = kubectl.wait_for(lambda: [p for p in kubectl.json("get", "pods", "-n", namespace)["items"]
                                     if p["status"].get("phase") == "Running"], 120, "a running GPU trial pod")
    limits = pods[0]["spec"]["containers"][0]["resources"]["limits"]
    assert limits[GPU] == "4"   # E(4) >= 0.7 > E(5): placed by the real scheduler on the 8-GPU node
    kubectl.wait_for(lambda: phase(kubectl, namespace, "sized") in ("Succeeded", "Failed"), 300, "the Study to end")
    assert phase(kubectl, namespace, "sized") == "Succeeded"
    segments = [t["status"]["segments"][0] for t in kubectl.json("get", "trials", "-n", namespace)["items"]]
    assert [s["gpus"] for s in segments] == [4, 4] and all(abs(s["efficiency"] - 0.7265) < 1e-3 for s in segments)
    assert "4 GPUs: E(5) = 0.67 < 0.70" in [s["sizing"] for s in segments]   # the second may say "4 of 8 free"


def test_two_studies_share_the_gpus_by_weight_and_one_takes_all_when_the_other_ends(kubectl, operator, namespace):
    one_gpu = {"min": 1, "max": 1}
    kubectl.apply(gpu_study(namespace, "light", one_gpu, parallelism=8, trials=200, weight=1))
    kubectl.wait_for(lambda: running_gpus(kubectl, namespace, "light") == 8, 120, "the light Study on all 8 GPUs")
    kubectl.apply(gpu_study(namespace, "heavy", one_gpu, parallelism=8, trials=40, weight=3))
    seen = set()
    deadline = time.monotonic() + 400
    while phase(kubectl, namespace, "heavy") not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, seen
        held = held_gpus(kubectl, namespace, ["light", "heavy"])
        assert sum(held) <= 8, held
        seen.add(held)
        time.sleep(0.5)
    assert phase(kubectl, namespace, "heavy") == "Succeeded"
    assert (2, 6) in seen, seen   # 1:3 once both run
    kubectl.wait_for(lambda: running_gpus(kubectl, namespace, "light") == 8, 120,
                     "the light Study taking all 8 GPUs again")
    kubectl("delete", "study", "light", "-n", namespace, "--wait=false")
