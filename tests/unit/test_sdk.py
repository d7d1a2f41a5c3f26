"""The trial SDK, in-process and through the built-in trainables run as real processes."""

import json
import math
import os
import subprocess
import sys

import pytest

from rung import trial
from rung.errors import InputError
from rung.storage import open_store
from rung.trial import contract as C
from rung_trainables import benchmarks as B

pytestmark = pytest.mark.unit

RUNG_VARS = [v for k, v in vars(C).items() if k.startswith("ENV_")]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean trial environment; returns a setter for RUNG_* variables."""
    for var in RUNG_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(trial.sdk, "_loaded_step", None)
    monkeypatch.setattr(trial.sdk, "_last_saved_step", None)
    monkeypatch.setattr(trial.sdk, "_last_report", {})
    monkeypatch.setattr(trial.sdk, "_curve", [])
    monkeypatch.setattr(trial.sdk, "_curve_every", 1)
    monkeypatch.setattr(trial.sdk, "_swept", set())
    monkeypatch.setattr(trial.sdk, "_hook_installed", True)  # keep pytest's excepthook as it is

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(getattr(C, "ENV_" + name.upper()), str(value))
    return set_env


# --- in-process ------------------------------------------------------------------------

def test_defaults_by_hand(env):
    assert trial.params() == {} and trial.budget() == 1.0
    assert trial.load_checkpoint() is None and trial.checkpoint_step() == 0
    trial.save_checkpoint({"a": 1}, 1)  # no URI: goes nowhere, no error
    assert trial.should_checkpoint(5) is False


@pytest.mark.parametrize("name,value", [("params", "[1, 2]"), ("params", "{oops"),
                                        ("budget", "many"), ("budget", "-1")])
def test_bad_inputs_name_the_variable(env, name, value):
    env(**{name: value})
    with pytest.raises(InputError, match=getattr(C, "ENV_" + name.upper())):
        trial.params() if name == "params" else trial.budget()


def test_a_skipped_checkpoint_is_logged_with_its_path_and_another_configurations_is_refused(env, tmp_path, capsys):
    root = tmp_path / "ns/st/st-0"
    env(checkpoint_uri=root.as_uri(), params='{"lr": 0.1}', budget=9)
    trial.save_checkpoint({"step": 3}, 3)
    trial.save_checkpoint({"step": 5}, 5)
    (root / "5" / trial.sdk.STATE_FILE).write_bytes(b"rotten")
    assert trial.load_checkpoint() == {"step": 3}
    assert capsys.readouterr().err == (f"rung: warning: skipped checkpoint {root / '5'}: "
                                       f"{trial.sdk.STATE_FILE} is missing or fails its checksum\n")
    env(params='{"lr": 0.2}')   # another trial's configuration, at the same path
    assert trial.load_checkpoint() is None and trial.checkpoint_step() == 0
    assert "written by another configuration" in capsys.readouterr().err


def test_checkpoint_round_trip_respects_budget(env, tmp_path):
    import numpy as np

    env(checkpoint_uri=(tmp_path / "ns/st/st-0").as_uri(), params='{"lr": 0.1}', budget=3)
    assert trial.params() == {"lr": 0.1}
    trial.save_checkpoint({"w": np.arange(3.0)}, 3)
    trial.save_checkpoint({"w": np.arange(9.0)}, 9)
    state = trial.load_checkpoint()
    assert state["w"].tolist() == [0.0, 1.0, 2.0] and trial.checkpoint_step() == 3
    env(budget=9)
    assert len(trial.load_checkpoint()["w"]) == 9 and trial.checkpoint_step() == 9
    assert open_store(tmp_path.as_uri()).list_steps("ns/st/st-0") == [3, 9]


def test_report_line_and_result_file(env, tmp_path, capsys):
    result = tmp_path / "result.json"
    env(result_file=result)
    trial.report(2.0, loss=0.5, acc=1)
    trial.report(2.5, loss=0.25)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(l[len(C.REPORT_PREFIX):]) for l in lines] == [
        {"step": 2, "metrics": {"loss": 0.5, "acc": 1}}, {"step": 2.5, "metrics": {"loss": 0.25}}]
    assert json.loads(result.read_text()) == {"step": 2.5, "metrics": {"loss": 0.25}}


def test_the_result_file_carries_a_bounded_curve_of_the_objective(env, tmp_path, capsys):
    result = tmp_path / "result.json"
    env(result_file=result, objective="loss")
    for step in range(1, 1001):
        trial.report(step, loss=1 / step, accuracy=1 - 1 / step)
    body = json.loads(result.read_text())
    steps = [p[0] for p in body["curve"]]
    assert 32 <= len(steps) <= trial.sdk.CURVE_POINTS and steps[0] == 1 and steps[-1] == 1000
    assert steps == sorted(steps) and max(b - a for a, b in zip(steps, steps[1:])) <= 64   # spread over the run
    assert all(v == 1 / s for s, v in body["curve"])
    assert body["metrics"] == {"loss": 0.001, "accuracy": 0.999} and len(result.read_bytes()) <= 4096


@pytest.mark.parametrize("steps,problem", [((1, math.nan), "step nan is not a finite number"),
                                           ((1, math.inf), "step inf is not a finite number"),
                                           ((3, 3), "step 3 does not come after the previous step 3"),
                                           ((5, 2), "step 2 does not come after the previous step 5")])
def test_steps_must_be_finite_and_increase(env, steps, problem, capsys):
    trial.report(steps[0], loss=1.0)
    with pytest.raises(InputError) as e:
        trial.report(steps[1], loss=0.5)
    assert problem in e.value.line()


def test_result_file_stays_under_4k(env, tmp_path, capsys):
    result = tmp_path / "result.json"
    env(result_file=result)
    trial.report(1, loss=0.1, **{f"metric_with_a_long_name_{i}": 1 / 3 for i in range(200)})
    body = json.loads(result.read_text())
    assert len(result.read_bytes()) <= 4096 and body["truncated"] is True
    assert body["metrics"]["loss"] == 0.1  # the first metric survives
    assert len(json.loads(capsys.readouterr().out[len(C.REPORT_PREFIX):])["metrics"]) == 201


def test_should_checkpoint_every_steps_and_seconds(env, tmp_path, monkeypatch):
    env(checkpoint_uri=(tmp_path / "t").as_uri(), checkpoint_every_steps=2)
    assert [s for s in range(1, 7) if trial.should_checkpoint(s)] == [2, 3, 4, 5, 6]  # none saved yet
    trial.save_checkpoint({}, 2)
    assert [s for s in range(3, 7) if trial.should_checkpoint(s)] == [4, 5, 6]
    env(checkpoint_every_steps=0, checkpoint_every_seconds=60)
    assert not trial.should_checkpoint(3)
    monkeypatch.setattr(trial.sdk, "_last_saved_time", trial.sdk._last_saved_time - 61)
    assert trial.should_checkpoint(3)


def manifest(tmp_path, step, trial_name="st-0"):
    return json.loads((tmp_path / "ns/st" / trial_name / str(step) / "MANIFEST.json").read_text())


def test_manifest_keeps_the_metrics_reported_at_that_step(env, tmp_path, capsys):
    env(checkpoint_uri=(tmp_path / "ns/st/st-0").as_uri())
    trial.report(3, val_loss=0.3, acc=0.9)
    trial.save_checkpoint({}, 3.0)
    trial.save_checkpoint({}, 4)                         # nothing reported at 4
    assert manifest(tmp_path, 3)["metrics"] == {"val_loss": 0.3, "acc": 0.9}
    assert "metrics" not in manifest(tmp_path, 4)


@pytest.mark.parametrize("goal,kept", [("", [2, 5]), ("minimize", [2, 5]), ("maximize", [4, 5])])
def test_retention_keeps_the_latest_and_the_best(env, tmp_path, capsys, goal, kept):
    env(checkpoint_uri=(tmp_path / "ns/st/st-0").as_uri(), keep_best=1, objective="loss",
        objective_goal=goal)
    for step, loss in ((1, 0.5), (2, 0.1), (3, 0.4), (4, 0.9), (5, 0.3)):
        trial.report(step, loss=loss)
        trial.save_checkpoint({"step": step}, step)
    assert open_store(tmp_path.as_uri()).list_steps("ns/st/st-0") == kept
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("keep_best,goal,words", [("many", "minimize", "RUNG_KEEP_BEST: 'many'"),
                                                  ("-1", "minimize", "RUNG_KEEP_BEST: '-1'"),
                                                  ("1", "upwards", "goal: 'upwards'")])
def test_a_failed_retention_warns_and_the_trial_goes_on(env, tmp_path, capsys, keep_best, goal, words):
    env(checkpoint_uri=(tmp_path / "ns/st/st-0").as_uri(), keep_best=keep_best, objective="loss",
        objective_goal=goal, budget=2)
    trial.save_checkpoint({"a": 1}, 1)
    trial.save_checkpoint({"a": 2}, 2)
    assert trial.load_checkpoint() == {"a": 2}
    assert open_store(tmp_path.as_uri()).list_steps("ns/st/st-0") == [1, 2]
    lines = capsys.readouterr().err.splitlines()   # one line per failed prune
    assert len(lines) == 2 and all(l.startswith("rung: warning: checkpoint retention failed") for l in lines)
    assert words in lines[0]


def test_a_store_fault_in_housekeeping_does_not_fail_the_save(env, tmp_path, capsys, monkeypatch):
    from rung.storage import FileStore

    def broken(*args, **kwargs):
        raise OSError("disk on fire\nsecond line")
    monkeypatch.setattr(FileStore, "prune", broken)
    monkeypatch.setattr(FileStore, "abort_incomplete", broken)
    env(checkpoint_uri=(tmp_path / "ns/st/st-0").as_uri(), keep_best=0)
    trial.save_checkpoint({"a": 1}, 1)
    assert trial.load_checkpoint() == {"a": 1}
    assert capsys.readouterr().err.splitlines() == [
        "rung: warning: aborting cut-off uploads failed, going on: OSError: disk on fire second line",
        "rung: warning: checkpoint retention failed, going on: OSError: disk on fire second line"]


def test_cut_off_writes_are_removed_before_the_first_save_only(env, tmp_path):
    env(checkpoint_uri=(tmp_path / "ns/st/st-0").as_uri())
    leftover = tmp_path / "ns/st/st-0/7/.state.pkl.0123abcd.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"a killed predecessor's write")
    trial.save_checkpoint({}, 1)
    assert not leftover.exists()
    leftover.write_bytes(b"once per process: a later save leaves it")
    trial.save_checkpoint({}, 2)
    assert leftover.exists()


# --- trainables as processes -------------------------------------------------------------

def run(tmp_path, module, params=None, budget=None, trial_name="st-0", ckpt=True, extra=None):
    """Run `python -m rung_trainables.<module>` like a runtime would; (rc, reports, result, stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in RUNG_VARS}
    result = tmp_path / f"result-{trial_name}.json"
    result.unlink(missing_ok=True)
    if params is not None:
        env[C.ENV_PARAMS] = json.dumps(params)
    if budget is not None:
        env[C.ENV_BUDGET] = str(budget)
    if ckpt:
        env[C.ENV_CHECKPOINT_URI] = (tmp_path / "ckpt/ns/st" / trial_name).as_uri()
    env[C.ENV_TRIAL] = trial_name
    env[C.ENV_RESULT_FILE] = str(result)
    env.update(extra or {})
    proc = subprocess.run([sys.executable, "-m", f"rung_trainables.{module}"], env=env,
                          capture_output=True, text=True, timeout=60)
    reports = [json.loads(l[len(C.REPORT_PREFIX):]) for l in proc.stdout.splitlines()
               if l.startswith(C.REPORT_PREFIX)]
    final = json.loads(result.read_text()) if result.exists() else None
    return proc.returncode, reports, final, proc.stderr


def steps(tmp_path, trial_name="st-0"):
    return open_store((tmp_path / "ckpt").as_uri()).list_steps(f"ns/st/{trial_name}")


def test_count_steps_resume_trains_only_missing_steps(tmp_path):
    log = tmp_path / "steps.log"
    extra = {"COUNT_STEPS_LOG": str(log)}
    rc, reports, final, _ = run(tmp_path, "count_steps", {"x": 0.5}, 3, extra=extra)
    assert rc == 0 and [r["step"] for r in reports] == [1, 2, 3]
    assert final == {"step": 3, "metrics": {"loss": pytest.approx(0.04 + 1 / 4)}}
    rc, reports, final, _ = run(tmp_path, "count_steps", {"x": 0.5}, 9, extra=extra)
    assert rc == 0 and [r["step"] for r in reports] == [4, 5, 6, 7, 8, 9]
    assert final["step"] == 9 and steps(tmp_path) == [3, 9]
    assert log.read_text().split("\n")[:-1] == [f"st-0 {s}" for s in range(1, 10)]
    # Rerun at a budget already reached (a restart after the checkpoint): nothing retrained.
    rc, reports, final, _ = run(tmp_path, "count_steps", {"x": 0.5}, 9, extra=extra)
    assert rc == 0 and [r["step"] for r in reports] == [9] and final["step"] == 9
    assert len(log.read_text().splitlines()) == 9


def test_count_steps_failure_keeps_periodic_checkpoints(tmp_path):
    log = tmp_path / "steps.log"
    extra = {"COUNT_STEPS_LOG": str(log), C.ENV_CHECKPOINT_EVERY_STEPS: "2"}
    rc, reports, final, err = run(tmp_path, "count_steps", {"x": 0.1}, 9, extra={**extra, "COUNT_STEPS_FAIL_AT": "6"})
    assert rc == 1 and "failing before step 6" in err
    # The error reaches the result file (a pod's termination message) beside the last report.
    assert final["error"] == "RuntimeError: count_steps: failing before step 6 as asked"
    assert final["step"] == 5 and final["metrics"] == reports[-1]["metrics"]
    assert [r["step"] for r in reports] == [1, 2, 3, 4, 5] and steps(tmp_path) == [2, 4]
    rc, reports, _, _ = run(tmp_path, "count_steps", {"x": 0.1}, 9, extra=extra)
    assert rc == 0 and [r["step"] for r in reports] == [5, 6, 7, 8, 9]
    assert [int(l.split()[1]) for l in log.read_text().splitlines()] == [1, 2, 3, 4, 5] + [5, 6, 7, 8, 9]
    rc, _, _, _ = run(tmp_path, "count_steps", {"x": 0.1}, 2, "st-1", extra={"COUNT_STEPS_FAIL_AT": "1"})
    assert rc == 1


def test_count_steps_prunes_its_own_checkpoints(tmp_path):
    extra = {C.ENV_CHECKPOINT_EVERY_STEPS: "2", C.ENV_KEEP_BEST: "1", C.ENV_OBJECTIVE: "loss"}
    rc, _, _, err = run(tmp_path, "count_steps", {"x": 0.5}, 3, extra=extra)
    assert rc == 0 and err == "" and steps(tmp_path) == [3]   # loss falls with steps: 3 is both
    rc, _, _, err = run(tmp_path, "count_steps", {"x": 0.5}, 9, extra=extra)
    assert rc == 0 and err == "" and steps(tmp_path) == [9]


def test_by_hand_without_any_variables(tmp_path):
    rc, reports, _, _ = run(tmp_path, "count_steps", ckpt=False)
    assert rc == 0 and reports == [{"step": 1, "metrics": {"loss": 0.5}}]
    rc, _, final, err = run(tmp_path, "hartmann6", ckpt=False)
    assert rc == 1 and "x0..x5" in err
    assert final == {"error": "InputError: params: has 0 of x0..x5; give x0..x5 (or x0..x2 for Hartmann-3)"}


def test_counting_ones_resume_draws_like_one_run(tmp_path):
    p = {**{f"cat{i}": i % 2 for i in range(4)}, **{f"x{j}": 0.1 * (j + 2) for j in range(4)}, "seed": 5}
    cat, cont = [p[f"cat{i}"] for i in range(4)], [p[f"x{j}"] for j in range(4)]
    rc, [r9], _, _ = run(tmp_path, "counting_ones", p, 9)
    rc2, [r27], final, _ = run(tmp_path, "counting_ones", p, 27)
    assert rc == rc2 == 0 and steps(tmp_path) == [9, 27]
    assert r9["metrics"]["loss"] == B.counting_ones(cat, cont, 9, seed=5)
    assert r27["metrics"]["loss"] == B.counting_ones(cat, cont, 27, seed=5)
    assert final["metrics"]["loss_true"] == B.counting_ones_true(cat, cont)
    assert final["metrics"]["regret"] == pytest.approx(B.counting_ones_true(cat, cont) / 8 + 1)


def test_hartmann_and_branin_report_the_benchmark(tmp_path):
    x = {f"x{i}": v for i, v in enumerate(B.HARTMANN6_ARGMIN)}
    rc, [r], final, _ = run(tmp_path, "hartmann6", {**x, "preset": "bad", "seed": 2}, 10, ckpt=False)
    assert rc == 0 and r == final and r["step"] == 10
    assert r["metrics"]["loss"] == B.hartmann(B.HARTMANN6_ARGMIN, 10, preset="bad", seed=2)
    assert r["metrics"]["regret"] == pytest.approx(0, abs=1e-5)
    rc, [r], _, _ = run(tmp_path, "branin", {"x0": 3.0, "x1": 4.0}, 100, ckpt=False)
    assert rc == 0 and r["metrics"]["loss"] == B.branin(3.0, 4.0)
    assert r["metrics"]["cost"] == pytest.approx(1.0)
    rc, _, _, err = run(tmp_path, "branin", {"x0": 3.0, "x1": 4.0}, 101, ckpt=False)
    assert rc == 1 and "fidelity range" in err


def test_mlp_digits_resumed_equals_uninterrupted(tmp_path):
    p = {"lr": 0.05, "hidden": 32, "activation": "tanh", "batch_size": 64, "weight_decay": 1e-4}
    rc, straight, _, _ = run(tmp_path, "mlp_digits", p, 6, "straight")
    assert rc == 0 and [r["step"] for r in straight] == [1, 2, 3, 4, 5, 6]
    rc1, first, _, _ = run(tmp_path, "mlp_digits", p, 3, "resumed")
    rc2, second, final, _ = run(tmp_path, "mlp_digits", p, 6, "resumed")
    assert rc1 == rc2 == 0 and [r["step"] for r in second] == [4, 5, 6]
    assert first + second == straight  # bitwise: same floats in the JSON
    assert final == straight[-1] and straight[-1]["metrics"]["val_accuracy"] > 0.8
    assert steps(tmp_path, "resumed") == [3, 6]
