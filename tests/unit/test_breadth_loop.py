"""The Study loop and its edges with the newer algorithms: each objective's loss recorded
and restored, the Pareto front of the records, a PBT child started from its parent's
checkpoint (spec, environment and the SDK's load), warm-start priors read from earlier
results folders, and the refusals that guard them."""

import json

import pytest

from rung import trial
from rung.api import parse_study
from rung.errors import InputError
from rung.records import MemoryRecords, SegmentRecord, TrialRecord
from rung.report import summarize
from rung.runtime.base import contract_env
from rung.runtime.folder import FolderRecords
from rung.runtime.loop import StudyLoop, StudyState
from rung.schedulers import make_scheduler
from rung.trial import contract as C
from rung.warm_priors import folder_loader, priors_for
from test_loop import FakeRuntime, drive
from test_sdk import env  # noqa: F401  (the fixture)

pytestmark = pytest.mark.unit


def spec(algorithm="random", max_trials=8, name="s", **more):
    body = {
        "objective": {"metric": "loss"},
        "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}, "y": {"type": "float", "low": 0, "high": 1}},
        "algorithm": {"name": algorithm, "seed": 5, "settings": more.pop("settings", {})},
        "budget": {"min": 1, "max": 9},
        "limits": {"maxTrials": max_trials, "parallelism": 2},
        "trial": {"command": ["train"]},
        "checkpoints": {"uri": "file:///ckpt"},
    }
    body.update(more)
    return parse_study({"apiVersion": "rung.dev/v1alpha1", "kind": "Study",
                        "metadata": {"name": name, "uid": "u1"}, "spec": body})


class TwoMetrics(FakeRuntime):
    """Reports `loss` (minimised) and `accuracy` (maximised) that trade off along x."""

    def poll(self, replay=False):
        events = super().poll(replay)
        for e in events:
            metrics = e.metrics if hasattr(e, "metrics") else (e.result or {}).get("metrics")
            if metrics is not None and "loss" in metrics:
                spec = next(s for s in self.started if s.trial == e.trial and s.segment == e.segment)
                metrics["accuracy"] = 1.0 - spec.params["x"] ** 2   # best at x = 0, where loss is worst
                metrics["loss"] = 1.0 - spec.params["x"] + spec.params["y"]
        return events


def test_each_objective_is_recorded_with_its_sign_and_the_front_is_non_dominated():
    st = spec("mo-asha", max_trials=12, objective=None,
              objectives=[{"metric": "loss"}, {"metric": "accuracy", "goal": "maximize"}])
    records = MemoryRecords()
    assert drive(StudyLoop(st, TwoMetrics(), records)) == StudyState.SUCCEEDED
    trials = records.load()
    ended = [(t, s) for t in trials for s in t.segments if s.objectives]
    assert ended
    for t, seg in ended:
        x, y = t.config["x"], t.config["y"]
        assert seg.objectives == pytest.approx([1.0 - x + y, -(1.0 - x ** 2)])   # accuracy negated
        assert seg.loss == seg.objectives[0]
    front = summarize(st, trials).front()
    top = max(s.reached for _, s in ended)
    points = {t.index: s.objectives for t, s in ended if s.reached == top}
    on_front = {t.index for t, _, _ in front}
    for i, p in points.items():   # on the front iff nothing at that budget dominates it
        dominated = any(all(a <= b for a, b in zip(q, p)) and q != p for q in points.values())
        assert (i in on_front) == (not dominated)
    # A rebuilt scheduler sees the same losses per objective.
    rebuilt = make_scheduler(st).restore(trials)
    assert sorted((o.trial, o.losses) for o in rebuilt.observations if o.losses) == \
        sorted((t.index, tuple(s.objectives)) for t, s in ended)


def test_a_study_names_one_objective_form_and_an_algorithm_that_ranks_by_several():
    with pytest.raises(InputError, match="objectives"):
        spec("asha", objective=None, objectives=[{"metric": "loss"}, {"metric": "size"}])
    with pytest.raises(InputError, match="not both"):
        spec("random", objectives=[{"metric": "loss"}, {"metric": "size"}])
    st = spec("mo-asha", objective=None, objectives=[{"metric": "loss"}, {"metric": "size"}],
              settings={"sampler": "tpe"})
    with pytest.raises(InputError, match="spec.algorithm.settings.sampler: tpe ranks by one objective"):
        make_scheduler(st)


def test_a_pbt_child_starts_from_its_parents_checkpoint():
    st = spec("pbt", max_trials=12, settings={"population": 4, "interval": 3})
    runtime, records = FakeRuntime(), MemoryRecords()
    assert drive(StudyLoop(st, runtime, records)) == StudyState.SUCCEEDED
    trials = {t.index: t for t in records.load()}
    children = [t for t in trials.values() if t.parent is not None]
    assert children, "no member was exploited"
    for child in children:
        parent = trials[child.parent]
        first = next(s for s in runtime.started if s.trial == child.name and s.segment == 0)
        assert first.parent_uri == f"file:///ckpt/default/s/u1/{parent.name}"
        assert first.parent_params == parent.config and first.resume_from is not None
        assert first.keep_best is None   # no retention: the parent's checkpoint at resume_from stays
        env = contract_env(first, "/dev/null")
        assert json.loads(env[C.ENV_PARENT_PARAMS]) == parent.config
        assert float(env[C.ENV_PARENT_STEP]) == first.resume_from
        assert child.replaces is not None and trials[child.replaces].state != "running"
        later = [s for s in runtime.started if s.trial == child.name and s.segment > 0]
        assert all(s.parent_uri is None for s in later)   # from then on, its own checkpoints
    # The lineage survives a reload from the records.
    again = {t.index: t for t in MemoryRecords.load(records)}
    assert {(t.index, t.parent, t.replaces) for t in again.values()} == \
        {(t.index, t.parent, t.replaces) for t in trials.values()}


def test_the_sdk_loads_the_parents_checkpoint_until_the_trial_has_its_own(env, tmp_path):  # noqa: F811
    parent = (tmp_path / "ns/s/run/s-0").as_uri()
    env(checkpoint_uri=parent, params='{"lr": 0.1}', budget=9)
    trial.save_checkpoint({"w": "parent@3"}, 3)
    trial.save_checkpoint({"w": "parent@6"}, 6)
    env(checkpoint_uri=(tmp_path / "ns/s/run/s-5").as_uri(), params='{"lr": 0.2}', budget=9,
        parent_checkpoint_uri=parent, parent_params='{"lr": 0.1}', parent_step=3)
    assert trial.load_checkpoint() == {"w": "parent@3"} and trial.checkpoint_step() == 3
    trial.save_checkpoint({"w": "child@5"}, 5)
    assert trial.load_checkpoint() == {"w": "child@5"}   # its own wins once it has one
    env(checkpoint_uri=(tmp_path / "ns/s/run/s-6").as_uri(), parent_params='{"lr": 0.3}')
    assert trial.load_checkpoint() is None   # bound to the parent's configuration: refused


def earlier_run(folder, shift=0.0, metric="loss", meta=None):
    st = spec("bohb", max_trials=30, name="old", objective={"metric": metric},
              task={"metaFeatures": meta or {"rows": 100.0}})
    records = FolderRecords.create(folder, st)
    for i in range(30):
        x = i / 29
        records.save(TrialRecord(i, f"old-{i}", {"x": x, "y": 0.5}, [
            SegmentRecord(9, status="completed", loss=(x - 0.2 - shift) ** 2, reached=9)]))
    return st


def test_warm_start_reads_earlier_results_folders_weighted_by_task_similarity(tmp_path):
    earlier_run(tmp_path / "near", meta={"rows": 100.0})
    earlier_run(tmp_path / "far", meta={"rows": 1000.0})
    st = spec("bohb", warmStart={"studies": ["near", "far"], "weight": 0.5}, task={"metaFeatures": {"rows": 100.0}})
    near, far = priors_for(st, folder_loader(tmp_path))
    assert near.weight == pytest.approx(0.5) and far.weight < 0.01   # identical task: the spec's weight
    assert near.budget == 9 and len(near.loss) == 30 and near.used == ("x", "y")
    # No own result yet: the earlier Study's good region (x near 0.2) already shapes the proposals.
    warm, cold = make_scheduler(st, [near]), make_scheduler(st)
    gap = {name: sorted(abs(s.ask().config["x"] - 0.2) for _ in range(8)) for name, s in (("warm", warm), ("cold", cold))}
    assert gap["warm"][4] < 0.05 < gap["cold"][4]   # medians


def test_warm_start_refuses_what_it_cannot_use(tmp_path):
    earlier_run(tmp_path / "acc", metric="accuracy")
    with pytest.raises(InputError, match=r"spec.warmStart.studies\[0\]: acc optimises accuracy"):
        priors_for(spec("bohb", warmStart={"studies": ["acc"]}), folder_loader(tmp_path))
    with pytest.raises(InputError, match="spec.warmStart.studies: missing: no results there"):
        priors_for(spec("bohb", warmStart={"studies": ["missing"]}), folder_loader(tmp_path))
    with pytest.raises(InputError, match="spec.warmStart: asha draws configurations from random"):
        make_scheduler(spec("asha", warmStart={"studies": ["x"]}))
