"""GPUs per segment and fair share across Studies, through the operator's Study controllers
against the in-memory API (the real kube-scheduler's part is in the cluster tier)."""

import random

import pytest

from fake_kube import FakeKube
from rung.controller.gpus import GpuPool
from rung.controller.study import OperatorConfig, StudyController
from rung.kube.api import path
from rung.kube.informer import ObjectCache
from rung.runtime.kubernetes import POD_SELECTOR
from test_operator_faults import NS, study_body

pytestmark = pytest.mark.unit

GPU = "nvidia.com/gpu"
# E(4) = 0.73 >= 0.7 > E(5) = 0.67 (rung.sizing's tests)
SCALING = {"stepSeconds": 0.8, "gradientBytes": 5.0e8, "bandwidthGBps": 10, "latencySeconds": 5.0e-5}


def gpu_study(kube, name, gpus, parallelism, trials, weight=1.0):
    body = study_body(name, "random", trials, parallelism)
    body["spec"]["budget"] = {"min": 3, "max": 3}
    body["spec"]["trial"]["gpus"] = gpus
    body["spec"]["fairShare"] = {"weight": weight}
    kube.request("POST", path("studies", NS), body=body)


def controller(kube, pods, pool, name):
    return StudyController(kube, pods, OperatorConfig("img:1", "file:///ckpt", (NS,)), kube.get("studies", NS, name),
                           gpus=pool)


def gpus_running(kube, study):
    return sum(int(p["spec"]["containers"][0]["resources"]["limits"].get(GPU, 0)) for p in kube.pods(study)
               if p["status"].get("phase") not in ("Succeeded", "Failed") and not p["metadata"].get("deletionTimestamp"))


def test_a_segment_gets_the_largest_gpu_count_that_reaches_the_target_efficiency():
    kube, pods = FakeKube(random.Random(1)), ObjectCache()
    kube.subscribe("pods", POD_SELECTOR, pods)
    gpu_study(kube, "g", {"min": 1, "max": 8, "targetEfficiency": 0.7, "scaling": SCALING,
                          "perGpu": {"cpu": "500m"}}, parallelism=1, trials=2)
    controller(kube, pods, GpuPool(lambda: 8), "g").step()
    (pod,) = kube.pods("g")
    c = pod["spec"]["containers"][0]
    assert c["resources"]["requests"][GPU] == c["resources"]["limits"][GPU] == "4"
    assert c["resources"]["requests"]["cpu"] == "2"   # 4 x 500m
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["RUNG_GPUS"] == env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "4"
    seg = kube.get("trials", NS, "g-0")["status"]["segments"][0]
    assert seg["gpus"] == 4 and seg["efficiency"] == pytest.approx(0.7265, abs=1e-3)
    assert seg["sizing"] == "4 GPUs: E(5) = 0.67 < 0.70"


def test_a_study_without_a_curve_probes_a_second_gpu_count_once_it_measured_one():
    kube, pods = FakeKube(random.Random(1)), ObjectCache()
    kube.subscribe("pods", POD_SELECTOR, pods)
    gpu_study(kube, "g", {"min": 1, "max": 4}, parallelism=1, trials=3)
    study = controller(kube, pods, GpuPool(lambda: 8), "g")
    study.step()
    for _ in range(500):
        if study.loop.done:
            break
        kube.tick()
        kube.deliver()
        study.step()
    segments = [kube.get("trials", NS, f"g-{i}")["status"]["segments"][0] for i in range(3)]
    # 1 GPU (its minimum, no curve); then 2, to measure a second count; then the fit of
    # the fake trainable's linear throughput (100 per GPU) calls for all 4.
    assert [s["gpus"] for s in segments] == [1, 2, 4]
    assert "(probe)" in segments[1]["sizing"] and "(probe)" not in segments[2]["sizing"]


def test_no_free_gpu_starts_nothing_until_one_is_free():
    kube, pods = FakeKube(random.Random(1)), ObjectCache()
    kube.subscribe("pods", POD_SELECTOR, pods)
    gpu_study(kube, "g", {"min": 2, "max": 2}, parallelism=2, trials=2)
    total = [1]
    study = controller(kube, pods, GpuPool(lambda: total[0], refresh=0), "g")
    study.step()
    assert kube.pods("g") == [] and study.loop.waits.startswith("waits")
    gpus = next(c for c in kube.get("studies", NS, "g")["status"]["conditions"] if c["type"] == "GpusAvailable")
    assert (gpus["status"], gpus["reason"]) == ("False", "WaitingForGpus")
    assert gpus["message"].startswith("waits: 1 of 1 GPUs free, needs 2")
    total[0] = 4
    study.observe(kube.get("studies", NS, "g"))   # as the Study watch delivers its status write
    study.step()
    assert gpus_running(kube, "g") == 4
    gpus = next(c for c in kube.get("studies", NS, "g")["status"]["conditions"] if c["type"] == "GpusAvailable")
    assert (gpus["status"], gpus["reason"]) == ("True", "GpusAvailable")


def test_studies_share_gpus_by_weight_at_segment_boundaries_and_one_takes_all_when_the_other_ends():
    kube, pods = FakeKube(random.Random(2), pace=0.5), ObjectCache()
    kube.subscribe("pods", POD_SELECTOR, pods)
    pool = GpuPool(lambda: 8)
    gpu_study(kube, "light", {"min": 1, "max": 1}, parallelism=8, trials=200, weight=1)
    light = controller(kube, pods, pool, "light")
    light.step()
    assert gpus_running(kube, "light") == 8   # alone, it takes every GPU
    gpu_study(kube, "heavy", {"min": 1, "max": 1}, parallelism=8, trials=60, weight=3)
    heavy = controller(kube, pods, pool, "heavy")
    seen, after = set(), []
    for _ in range(3000):
        kube.tick()
        kube.deliver()
        light.step()
        heavy.step()
        held = (gpus_running(kube, "light"), gpus_running(kube, "heavy"))
        assert sum(held) <= 8
        if heavy.loop.done:
            after.append(held[0])
            if len(after) > 40:
                break
        else:
            seen.add(held)
    assert (2, 6) in seen   # 1:3 once both run (reached as the light Study's segments end)
    assert max(h for _, h in seen) == 6 and heavy.loop.state == "succeeded"
    assert after[-1] == 8   # the heavy Study ended: the light one takes all 8


def test_measured_throughputs_count_each_ended_segment_once_and_fit_as_a_scan_of_all_would():
    from rung.controller.gpus import Throughputs
    from rung.records import SegmentRecord, TrialRecord
    from rung.sizing import Measured

    def trial(index, *segments):
        return TrialRecord(index, f"t-{index}", {}, segments=[
            SegmentRecord(3, status=status, gpus=n, metrics={"throughput": rate}) for n, rate, status in segments])

    done, running = "completed", "running"
    a = trial(0, (1, 100.0, done), (2, 180.0, done))
    b = trial(1, (4, 300.0, running))                  # still running: not measured yet
    measured = Throughputs()
    measured.add([a, b])
    assert measured.points == {(0, 0): (1, 100.0), (0, 1): (2, 180.0)} and measured.measured == {1, 2}
    fit = measured.model
    measured.add([a])                                  # told again (a restore): nothing new, the same fit
    assert measured.model is fit
    b.segments[0].status = done
    measured.add([b])
    assert measured.measured == {1, 2, 4}
    assert measured.model == Measured.fit([(1, 100.0), (2, 180.0), (4, 300.0)])


def test_workers_choosing_at_once_read_the_nodes_once_and_none_waits_on_a_later_read():
    import threading
    clock, reads, gate, reading = [0.0], [], threading.Event(), threading.Event()

    def total():
        reads.append(1)
        reading.set()
        gate.wait(5)
        return 8

    pool = GpuPool(total, refresh=30, clock=lambda: clock[0])
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(pool.total())) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert seen == [8] * 8 and len(reads) == 1   # the first read: one thread reads, the others wait for it
    gate.clear()
    reading.clear()
    clock[0] = 31.0                              # due again: one thread reads, the others go on with 8
    reader = threading.Thread(target=pool.total)
    reader.start()
    reading.wait(5)
    assert pool.total() == 8 and len(reads) == 2
    gate.set()
    reader.join(5)


def test_shares_are_computed_again_only_when_the_studies_change(monkeypatch):
    import rung.controller.gpus as gpus
    computed = []
    monkeypatch.setattr(gpus, "shares", lambda total, demands: computed.append(dict(demands)) or
                        {k: total // len(demands) for k in demands})
    kube, pods = FakeKube(random.Random(2), pace=0.5), ObjectCache()
    kube.subscribe("pods", POD_SELECTOR, pods)
    pool = GpuPool(lambda: 8)
    gpu_study(kube, "a", {"min": 1, "max": 1}, parallelism=8, trials=50)
    controller(kube, pods, pool, "a").step()
    assert gpus_running(kube, "a") == 8 and len(computed) == 1   # 8 choices, one computation
    gpu_study(kube, "b", {"min": 1, "max": 1}, parallelism=8, trials=50)
    controller(kube, pods, pool, "b").step()
    assert len(computed) == 2 and set(computed[-1]) == {(NS, "a"), (NS, "b")}
