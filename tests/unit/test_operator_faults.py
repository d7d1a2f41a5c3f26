"""The operator's Study controller against an API that fails a seeded fraction of calls at
every point (before or after they take effect), delivers watch events late, loses pods,
has Trials deleted under it, and restarts it: for thousands of steps, every segment's
result is recorded exactly once, no trial is stuck or numbered twice, and no failure is
charged to a trial.

With `zombies`, a killed operator sometimes goes on stepping beside its successor (a
leader whose lease ran out without it noticing, which the Lease's timings rule out):
records stay right, since every write carries the resourceVersion it read, but the two
may each start an attempt of the same segment, so a segment may be trained twice."""

import copy
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from fake_kube import FakeKube
from rung.controller.study import OperatorConfig, StudyController
from rung.kube.api import path
from rung.kube.informer import STUDY_LABEL, FirstList, ObjectCache, metadata_only
from rung.runtime.kubernetes import POD_SELECTOR
from test_loop import quality

pytestmark = pytest.mark.unit

NS = "ns"


def study_body(name, algorithm, max_trials, parallelism):
    return {"apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name, "namespace": NS},
            "spec": {"objective": {"metric": "loss"},
                     "searchSpace": {"x": {"type": "float", "low": 0, "high": 1},
                                     "y": {"type": "float", "low": 0, "high": 1}},
                     "algorithm": {"name": algorithm, "seed": 3},
                     "budget": {"min": 1, "max": 27},
                     "limits": {"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": 0,
                                "maxPreemptions": 50},
                     "trial": {"command": ["train"]}}}


class Operator:
    """One life of the operator: its watches (fed by the fake) and the Study's controller,
    whose first load takes the Trial watch's first list (while the watch has heard of no
    change since)."""

    def __init__(self, kube: FakeKube, name: str, pool=None):
        self.pods = ObjectCache()
        self.trials = ObjectCache(keep=metadata_only, on_change=lambda key, kind, obj: self.study.trial_changed(kind, obj))
        first = FirstList(self.trials)
        config = OperatorConfig("img:1", "file:///ckpt", (NS,))
        self.study = StudyController(kube, self.pods, config, kube.get("studies", NS, name),
                                     clock=lambda: kube.ticks, pool=pool,   # a tick is a second
                                     first_trials=lambda: first.take((NS, name)))
        kube.subscribe("pods", POD_SELECTOR, self.pods)
        kube.subscribe("trials", STUDY_LABEL, self.trials)
        first.keep([copy.deepcopy(o) for (kind, _, _), o in kube.objects.items() if kind == "trials"])

    def end(self, kube: FakeKube) -> None:
        kube.watchers = [w for w in kube.watchers if w[2] not in (self.pods, self.trials)]


@pytest.mark.parametrize("algorithm,seed,zombies,pool", [
    ("asha", 1, False, False), ("asha", 2, False, False), ("hyperband", 3, False, False), ("random", 4, False, False),
    ("asha-stop", 5, False, False), ("asha", 6, True, False), ("hyperband", 7, True, False),
    # Trial writes, pod creations and labels side by side (the operator's --api-concurrency)
    ("asha", 8, False, True), ("asha-stop", 9, False, True)])
def test_faults_everywhere_lose_duplicate_and_strand_nothing(algorithm, seed, zombies, pool):
    pool = ThreadPoolExecutor(4) if pool else None
    rng = random.Random(seed)
    kube = FakeKube(rng, fail=0.0, delay=0.5, pace=0.3)
    kube.request("POST", path("studies", NS), body=study_body("s", algorithm, 150, 4))
    kube.fail = 0.15
    op, lives, deleted, lost, zombie = Operator(kube, "s", pool), 1, set(), 0, None
    running_since: dict[tuple[str, int, int], int] = {}   # attempt -> first step seen running
    for steps in range(1, 30_000):
        kube.tick()
        kube.deliver()
        if rng.random() < 0.01:   # SIGKILL: a new operator; the old one may go on a while (a lease overlap)
            if zombie is not None:
                zombie.end(kube)
            zombie = op if zombies and rng.random() < 0.5 else op.end(kube)
            op, lives = Operator(kube, "s", pool), lives + 1
        if zombie is not None:
            zombie.study.step()
            if rng.random() < 0.05:
                zombie = zombie.end(kube)
        trials = [o for (k, _, _), o in kube.objects.items() if k == "trials"]
        if steps in (300, 700):                                   # kubectl delete trial: one running, one done
            for phase in ("Running", "Succeeded"):
                victim = next((t["metadata"]["name"] for t in trials
                               if (t.get("status") or {}).get("phase") == phase), None)
                if victim:
                    deleted.add(victim)
                    kube.delete("trials", NS, victim)
        for t in trials:                                          # no trial stays Running for long
            segments = (t.get("status") or {}).get("segments") or []
            if segments and segments[-1]["status"] == "running":
                attempt = (t["metadata"]["name"], len(segments), segments[-1].get("restarts", 0))
                since = running_since.setdefault(attempt, steps)
                assert steps - since < 600, f"{attempt} is stuck running"
        running = [p for p in kube.pods("s") if p["status"]["phase"] == "Running"]
        if running and lost < 25 and rng.random() < 0.03:         # a pod is preempted
            kube._delete_pod(rng.choice(running)["metadata"]["name"], NS)
            lost += 1
        op.study.observe(kube.get("studies", NS, "s"))           # the Study watch
        op.study.step()
        if (kube.get("studies", NS, "s").get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            break
    status = kube.get("studies", NS, "s")["status"]
    assert status["phase"] == "Succeeded", status
    assert steps > 1000 and lives > 5 and lost > 3 and len(deleted) >= 3, (steps, lives, lost, deleted)
    names = Counter(name for kind, name in kube.created_names if kind == "trials")
    assert max(names.values()) == 1                               # no trial number given twice
    assert len(names) == 150 and set(names) == {f"s-{i}" for i in range(150)}
    successes = Counter((p["metadata"]["labels"]["rung.dev/trial"], p["metadata"]["labels"]["rung.dev/segment"])
                        for p in kube.pods("s") if p["status"]["phase"] == "Succeeded")
    for (k, _, name), trial in kube.objects.items():
        if k != "trials":
            continue
        segments = trial["status"]["segments"]
        budgets = [s["budget"] for s in segments]
        assert budgets == sorted(set(budgets)), name              # no segment recorded twice
        for i, seg in enumerate(segments):
            assert seg["status"] in ("completed", "stopped"), (name, seg)   # none stuck, none failed
            if seg["status"] == "completed":
                assert seg["loss"] == pytest.approx(quality(trial["spec"]["params"], seg["budget"]))
                trained = successes[(name, str(i))]
                assert trained == 1 or (zombies and trained > 1), (name, i)   # trained to its end once
    recorded = {(name, str(i)) for (k, _, name), t in kube.objects.items() if k == "trials"
                for i, seg in enumerate(t["status"]["segments"]) if seg["status"] == "completed"}
    trials_left = {name for (k, _, name) in kube.objects if k == "trials"}
    lost_results = {key for key in successes if key[0] in trials_left} - recorded
    assert not lost_results, lost_results                         # every result that came back is recorded
    assert status["trials"]["failed"] == 0 and status["trials"]["running"] == 0
    assert not [p for p in kube.pods("s") if p["status"]["phase"] in ("Pending", "Running")]
