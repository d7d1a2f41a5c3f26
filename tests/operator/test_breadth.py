"""Multi-objective, curve-stop, PBT and warm start through `kubectl apply` on the real
cluster: the same Studies `rung run` takes, run by the operator in trial pods."""

from __future__ import annotations

import yaml

from rung.controller.trial_store import trial_from_object
from rung_trainables.shifting_lr import ShiftingLR

TRIAL = {"resources": {"cpu": "100m", "memory": "256Mi"}}


def apply(kubectl, ns: str, name: str, **spec) -> None:
    spec["trial"] = {**TRIAL, **spec["trial"]}
    kubectl.apply(yaml.safe_dump({"apiVersion": "rung.dev/v1alpha1", "kind": "Study",
                                  "metadata": {"name": name, "namespace": ns}, "spec": spec}))


def ended(kubectl, ns: str, name: str, timeout: float = 600) -> dict:
    def done():
        s = kubectl.json("get", "study", name, "-n", ns)
        return s if (s.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Invalid") else None
    return kubectl.wait_for(done, timeout, f"Study {name} to end", interval=1.0)


def trials(kubectl, ns: str, name: str) -> dict[int, dict]:
    items = kubectl.json("get", "trials", "-n", ns, "-l", f"rung.dev/study={name}")["items"]
    return {t["spec"]["index"]: t for t in items}


def test_a_multi_objective_study_reports_its_pareto_front(kubectl, operator, namespace):
    apply(kubectl, namespace, "mo", objectives=[{"metric": "val_loss"}, {"metric": "parameters"}],
          searchSpace={"lr": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
                       "hidden": {"type": "int", "low": 4, "high": 128, "log": True}},
          algorithm={"name": "mo-asha", "seed": 2}, budget={"min": 1, "max": 3},
          limits={"maxTrials": 9, "parallelism": 3}, trial={"command": ["python", "-m", "rung_trainables.mlp_digits"]})
    s = ended(kubectl, namespace, "mo")
    assert s["status"]["phase"] == "Succeeded", s["status"]
    front = s["status"]["paretoFront"]
    assert front and all(set(p["values"]) == {"val_loss", "parameters"} for p in front)
    records = [trial_from_object(t) for t in trials(kubectl, namespace, "mo").values()]
    top = max(p["budget"] for p in front)
    points = {r.name: seg.objectives for r in records for seg in r.segments if seg.objectives and seg.reached == top}
    assert all(len(v) == 2 for v in points.values())
    dominated = {n for n, p in points.items() if any(q != p and all(a <= b for a, b in zip(q, p))
                                                     for q in points.values())}
    assert {p["trial"] for p in front} == set(points) - dominated


def test_curve_stop_stops_trials_that_cannot_beat_the_incumbent(kubectl, operator, namespace):
    apply(kubectl, namespace, "curves", objective={"metric": "loss"},
          searchSpace={"x": {"type": "float", "low": 0, "high": 1}},
          algorithm={"name": "curve-stop", "seed": 4, "settings": {"threshold": 0.05}}, budget={"min": 3, "max": 12},
          limits={"maxTrials": 6, "parallelism": 2},
          trial={"command": ["python", "-m", "rung_trainables.count_steps"], "env": {"COUNT_STEPS_SLEEP": "1"}})
    s = ended(kubectl, namespace, "curves")
    assert s["status"]["phase"] == "Succeeded", s["status"]
    records = [trial_from_object(t) for t in trials(kubectl, namespace, "curves").values()]
    stopped = [r for r in records if r.state == "stopped"]
    done = [r for r in records if r.state == "completed"]
    assert stopped and done, [(r.name, r.state) for r in records]
    best = min(abs(r.config["x"] - 0.3) for r in done)
    for r in stopped:   # count_steps' curves never cross: only worse configurations stop, early
        assert abs(r.config["x"] - 0.3) > best and r.current.reached < 12, r


def test_pbt_children_start_from_their_parents_checkpoints(kubectl, operator, namespace):
    apply(kubectl, namespace, "pbt", objective={"metric": "loss"},
          searchSpace={"lr": {"type": "float", "low": 0.005, "high": 0.5, "log": True}},
          algorithm={"name": "pbt", "seed": 1, "settings": {"population": 4, "interval": 3}},
          budget={"min": 3, "max": 12}, limits={"maxTrials": 10, "parallelism": 4},
          trial={"command": ["python", "-m", "rung_trainables.shifting_lr"]})
    s = ended(kubectl, namespace, "pbt")
    assert s["status"]["phase"] == "Succeeded", s["status"]
    by_index = trials(kubectl, namespace, "pbt")
    children = [t for t in by_index.values() if t["spec"].get("parent") is not None]
    assert children, "no member was exploited"
    problem = ShiftingLR()
    for child in children:
        record = trial_from_object(child)
        first = record.segments[0]
        assert record.replaces is not None and first.resume_from > 0
        assert first.curve[0][0] == first.resume_from + 1   # it went on from the parent's step
        # ... with the parent's weights: far better than one step from scratch at its rate
        scratch = problem.loss(problem.train(problem.start(0), record.config["lr"], 1))
        assert first.curve[0][1] < scratch / 2, (first.curve[0], scratch)


def test_warm_start_seeds_a_study_from_an_earlier_one(kubectl, operator, namespace):
    space = {"x": {"type": "float", "low": 0, "high": 1}, "y": {"type": "float", "low": 0, "high": 1}}
    common = dict(objective={"metric": "loss"}, searchSpace=space, budget={"min": 1, "max": 3},
                  trial={"command": ["python", "-m", "rung_trainables.count_steps"]})
    apply(kubectl, namespace, "earlier", algorithm={"name": "tpe", "seed": 1}, limits={"maxTrials": 8, "parallelism": 4},
          task={"metaFeatures": {"rows": 1797.0, "classes": 10.0}}, **common)
    assert ended(kubectl, namespace, "earlier")["status"]["phase"] == "Succeeded"
    apply(kubectl, namespace, "later", algorithm={"name": "tpe", "seed": 2}, limits={"maxTrials": 4, "parallelism": 4},
          task={"metaFeatures": {"rows": 1797.0, "classes": 10.0}},
          warmStart={"studies": ["earlier"], "weight": 0.8}, **common)
    apply(kubectl, namespace, "orphan", algorithm={"name": "tpe"}, limits={"maxTrials": 2},
          warmStart={"studies": ["nowhere"]}, **common)
    assert ended(kubectl, namespace, "later")["status"]["phase"] == "Succeeded"
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector",
                          "involvedObject.name=later,reason=WarmStart")["items"]
    (event,) = events
    assert event["message"].startswith("from earlier: 8 observations at budget 3, weight 0.8;"), event["message"]
    orphan = ended(kubectl, namespace, "orphan")["status"]
    assert orphan["phase"] == "Invalid"
    (invalid,) = [c for c in orphan["conditions"] if c["type"] == "Invalid"]
    assert "spec.warmStart.studies: no Study nowhere in namespace" in invalid["message"]
