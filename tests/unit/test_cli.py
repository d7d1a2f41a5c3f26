"""`rung run` as users run it: real subprocesses, real trainables, Ctrl-C and kill -9
mid-run then resume; and every bad input refused with one line, touching nothing."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from rung.cli import main

pytestmark = pytest.mark.unit

RUNG = [sys.executable, "-m", "rung.cli"]


def write_study(folder: Path, name="cs", algorithm="asha", max_trials=9, parallelism=2, sleep=0.0,
                log=None, **changes) -> Path:
    doc = {
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1},
                            "y": {"type": "float", "low": 0, "high": 1}},
            "algorithm": {"name": algorithm, "seed": 11,
                          "settings": {"reductionFactor": 3} if algorithm == "asha" else {}},
            "budget": {"min": 1, "max": 9, "unit": "steps"},
            "limits": {"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": 1},
            "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                      "env": {"COUNT_STEPS_SLEEP": str(sleep), **({"COUNT_STEPS_LOG": str(log)} if log else {})}},
        }}
    for path, value in changes.items():   # e.g. spec__budget__min=3
        node = doc
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trials(results: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (results / "trials").glob("*.json")}


def configs(results: Path) -> dict:
    return {name: t["config"] for name, t in trials(results).items()}


def completed_segments(results: Path) -> dict:
    return {(name, i): seg for name, t in trials(results).items()
            for i, seg in enumerate(t["segments"]) if seg["status"] == "completed"}


def snapshot(folder: Path) -> dict:
    """Every file's bytes and every entry's mtime: 'byte-for-byte unchanged' made checkable."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: the trials every interrupted run must end with."""
    folder = tmp_path_factory.mktemp("reference")
    manifest = write_study(folder, sleep=0.02)
    done = subprocess.run([*RUNG, "run", str(manifest)], cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder, done


def test_run_to_completion(reference):
    folder, done = reference
    results = folder / ".rung" / "cs"   # the default results folder, under the cwd
    assert "Study cs: succeeded" in done.stdout and "9 of 9" in done.stdout
    records = trials(results)
    assert sorted(records) == sorted(f"cs-{i}" for i in range(9))
    assert all(t["state"] == "completed" for t in records.values())
    assert json.loads((results / "status.json").read_text())["state"] == "succeeded"
    promoted = [t for t in records.values() if len(t["segments"]) > 1]
    assert promoted, "ASHA promoted nobody"
    for t in promoted:    # promoted segments resumed from the checkpoint: no step trained twice
        steps = [c[0] for s in t["segments"] for c in s["curve"]]
        assert steps == sorted(set(steps))
    run = (results / "run-id").read_text().strip()
    assert (results / "checkpoints" / "default" / "cs" / run / "cs-0" / "1" / "MANIFEST.json").exists()
    assert (results / "segments" / "cs-0-s0.log").exists()
    assert not list((results / "segments").glob("*.pid"))
    # stderr is not a terminal here: plain progress lines, no carriage returns or escapes
    assert done.stderr.startswith("cs: 0/9 trials done, 2 running, 0 failed, incumbent loss -")
    assert "\r" not in done.stderr and "\x1b" not in done.stderr


def test_a_fresh_run_never_loads_checkpoints_an_earlier_run_left_in_the_same_store(tmp_path, capsys):
    """Two runs of one Study name, each with its own results folder, share checkpoints.uri:
    the second trains every trial from step 1, as if the store were empty."""
    store = (tmp_path / "store").as_uri()
    log = tmp_path / "steps.log"
    for run in ("first", "second"):
        manifest = write_study(tmp_path / run, log=log, spec__checkpoints={"uri": store})
        assert main(["run", str(manifest), "--results", str(tmp_path / run / "res"), "--quiet"]) == 0
        trained = [line.split() for line in log.read_text().splitlines()]
        assert {name for name, step in trained if step == "1"} == {f"cs-{i}" for i in range(9)}, run
        log.unlink()
    capsys.readouterr()


def test_rerun_of_a_finished_study_runs_nothing(reference, monkeypatch, capsys):
    folder, _ = reference
    results = folder / ".rung" / "cs"
    before = {k: v for k, v in snapshot(results).items() if not k.startswith(("status.json", ".lock"))}
    monkeypatch.chdir(folder)
    assert main(["run", str(folder / "cs.yaml"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "Study cs: succeeded" in out and err == ""
    after = {k: v for k, v in snapshot(results).items() if not k.startswith(("status.json", ".lock"))}
    assert after == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_run_resumes_to_the_same_trials(tmp_path, reference, capsys, sig):
    log = tmp_path / "steps.log"
    manifest = write_study(tmp_path, sleep=0.1, log=log)
    results = tmp_path / "out"
    cmd = [*RUNG, "run", str(manifest), "--results", str(results)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(completed_segments(results) if (results / "trials").exists() else {}) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "run the same command again to resume" in err
        assert json.loads((results / "status.json").read_text())["state"] == "interrupted"
        assert not list((results / "segments").glob("*.pid"))   # children were stopped
    else:
        assert proc.returncode == -signal.SIGKILL
    done_before = completed_segments(results)
    running_before = [n for n, t in trials(results).items() if t["state"] == "running"]
    orphans = [pid for p in (results / "segments").glob("*.pid") if len(pid := p.read_text().split()) == 2]

    assert main([*cmd[len(RUNG):], "--quiet"]) == 0   # the rerun in-process: same code, no start-up cost
    assert capsys.readouterr().err == ""
    assert configs(results) == configs(reference[0] / ".rung" / "cs")
    final = trials(results)
    assert all(t["state"] == "completed" for t in final.values())
    # finished segments were kept as they were, and none of their steps was trained again
    trained = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    for (name, i), seg in done_before.items():
        assert final[name]["segments"][i] == seg
        for step in range(int(seg["resume_from"] or 0) + 1, int(seg["budget"]) + 1):
            assert trained[(name, str(step))] == 1, (name, step)
    for name in running_before:   # restarted under the same deterministic name
        assert final[name]["segments"][-1]["restarts"] >= 1 or len(final[name]["segments"]) > 1
    assert not any(_alive(*pid) for pid in orphans)


def test_trials_die_with_a_killed_rung_run(tmp_path):
    (tmp_path / "quiet.py").write_text("import time\ntime.sleep(120)\n")   # never writes to its stdout
    manifest = write_study(tmp_path, algorithm="random", max_trials=2, spec__trial__command=["python", "quiet.py"])
    results = tmp_path / "out"
    proc = subprocess.Popen([*RUNG, "run", str(manifest), "--results", str(results)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(pids := [p.read_text().split() for p in results.glob("segments/*.pid")]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while any(_alive(*pid) for pid in pids):   # no rerun needed to reap them
        assert time.monotonic() < deadline, f"orphan trial processes: {pids}"
        time.sleep(0.05)


def _alive(pid: str, started: str) -> bool:
    """The process still runs (not a zombie, not a reused pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    except OSError:
        return False
    return fields[0] != "Z" and fields[19] == started


def test_failed_study_exits_1_with_the_reason(tmp_path, capsys):
    manifest = write_study(tmp_path, algorithm="random", max_trials=4, parallelism=1, spec__budget__max=1,
                           spec__trial__env={"COUNT_STEPS_FAIL_AT": "1"})
    assert main(["run", str(manifest), "--quiet", "--results", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "Study cs: failed (2 trials failed, more than limits.maxFailedTrials (1)" in out
    assert "failing before step 1 as asked" in out   # the trial's own last words
    failed = out[out.index("failed or diverged trials (2):\n"):].splitlines()[1:3]
    assert [line.split()[0] for line in failed] == ["cs-1", "cs-0"]
    assert all("RuntimeError: count_steps: failing before step 1 as asked" in line for line in failed)


# ---- bad input: one line, exit 2, nothing touched ------------------------------------------

BAD = {
    "malformed-yaml": (None, "bad.yaml:"),
    "unknown-kind": ({"kind": "Experiment"}, "kind"),
    "unknown-algorithm": ({"spec.algorithm.name": "simplex"}, "spec.algorithm.name"),
    "unknown-setting": ({"spec.algorithm.settings": {"eta": 3}}, "spec.algorithm.settings.eta"),
    "empty-search-space": ({"spec.searchSpace": {}}, "spec.searchSpace"),
    "low-above-high": ({"spec.searchSpace.x": {"type": "float", "low": 2, "high": 1}}, "spec.searchSpace.x"),
    "log-low-not-positive": ({"spec.searchSpace.x": {"type": "float", "low": 0, "high": 1, "log": True}},
                             "spec.searchSpace.x"),
    "empty-choices": ({"spec.searchSpace.c": {"type": "categorical", "choices": []}},
                      "spec.searchSpace.c.choices"),
    "budget-min-above-max": ({"spec.budget": {"min": 9, "max": 3}}, "spec.budget"),
    "budget-max-infinite": ({"spec.budget.max": float("inf")}, "spec.budget.max"),
    "missing-command": ({"spec.trial.command": ["no-such-trainer-xyz", "--fast"]}, "spec.trial.command"),
    "missing-module": ({"spec.trial.command": ["python", "-m", "no_such_module_xyz.train"]}, "spec.trial.command"),
    "missing-script": ({"spec.trial.command": ["python", "train_nowhere.py"]}, "spec.trial.command"),
    "parallel-zero": ("--parallel 0", "--parallel"),
    "other-spec-same-folder": ({"spec.budget.max": 10}, "spec.budget.max"),
    "unknown-top-level-field": ({"spce": {}}, "spce: is not a known field; did you mean spec?"),
    "misspelt-field": ({"spec.limits.maxTrails": 3}, "did you mean spec.limits.maxTrials?"),
    "duplicate-key": (b"apiVersion: rung.dev/v1alpha1\nkind: Study\nkind: Study\n", "'kind' appears twice"),
    "not-utf8": (b"apiVersion: rung.dev/v1alpha1\n# \xff\xfe\n", "is not UTF-8 text"),
    "file-uri-not-absolute": ({"spec.checkpoints": {"uri": "file://relative/ckpt"}}, "spec.checkpoints.uri"),
    "s3-uri-without-bucket": ({"spec.checkpoints": {"uri": "s3://"}}, "spec.checkpoints.uri"),
    "namespace-not-a-name": ({"metadata.namespace": "../x"}, "metadata.namespace"),
}


def _bad_manifest(folder: Path, case) -> Path:
    manifest = write_study(folder, name="cs")   # same name as the reference: same default folder
    if case is None:
        bad = folder / "bad.yaml"
        bad.write_text("apiVersion: rung.dev/v1alpha1\nkind: Study\nspec: [unclosed\n")
        return bad
    if isinstance(case, str):
        return manifest
    if isinstance(case, bytes):
        bad = folder / "bad.yaml"
        bad.write_bytes(case)
        return bad
    doc = yaml.safe_load(manifest.read_text())
    for dotted, value in case.items():
        node = doc
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    manifest.write_text(yaml.safe_dump(doc))
    return manifest


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_refused_with_one_line_and_touches_nothing(tmp_path, reference, capsys, monkeypatch, case):
    change, field = BAD[case]
    existing = reference[0] / ".rung" / "cs"
    before = snapshot(existing)
    manifest = _bad_manifest(tmp_path, change)
    extra = change.split() if isinstance(change, str) else []
    runs = [["run", str(manifest), "--results", str(existing), *extra], ["run", str(manifest), *extra]]
    if case == "other-spec-same-folder":
        runs = runs[:1]   # elsewhere that spec is fine
    elif not extra:
        runs.append(["validate", str(manifest)])   # validate refuses what run refuses
    for args in runs:
        monkeypatch.chdir(tmp_path)    # the default results folder would be tmp_path/.rung/cs
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert field in err and "Traceback" not in err
        assert snapshot(existing) == before
        assert not (tmp_path / ".rung").exists()


def test_bad_input_through_the_installed_command(tmp_path):
    manifest = _bad_manifest(tmp_path, {"spec.budget": {"min": 9, "max": 3}})
    done = subprocess.run([*RUNG, "run", str(manifest)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: spec.budget: min (9) is above max (3); make min <= max\n"
    assert not (tmp_path / ".rung").exists()


def test_a_folder_in_use_is_refused(tmp_path, capsys):
    manifest = write_study(tmp_path)
    results = tmp_path / "busy"
    results.mkdir()
    fd = os.open(results / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert main(["run", str(manifest), "--results", str(results)]) == 2
    finally:
        os.close(fd)
    assert "in use by another `rung run`" in capsys.readouterr().err
    assert [p.name for p in results.iterdir()] == [".lock"]


def test_a_foreign_folder_is_refused(tmp_path, capsys):
    manifest = write_study(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    assert main(["run", str(manifest), "--results", str(tmp_path / "mine")]) == 2
    assert "holds no Rung results" in capsys.readouterr().err


def test_validate(tmp_path, capsys):
    good = write_study(tmp_path)
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {good}: Study cs, algorithm asha")
    bad = _bad_manifest(tmp_path, {"spec.algorithm.name": "simplex"})
    assert main(["validate", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: spec.algorithm.name: unknown algorithm 'simplex'")


def test_examples_parse_and_build_their_schedulers():
    from rung.api import load_study
    from rung.schedulers import make_scheduler

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert {p.name for p in examples} >= {"asha-mlp-digits.yaml", "random-branin.yaml"}
    for path in examples:
        if yaml.safe_load(path.read_text()).get("kind") == "Study":
            make_scheduler(load_study(path))


# ---- the local runtime on its own ----------------------------------------------------------

def _segment(tmp_path, code, segment=0):
    from rung.runtime.base import SegmentSpec

    return SegmentSpec(study="s", namespace="default", trial="s-0", index=0, segment=segment, params={"a": 1},
                       budget=3, resume_from=None, checkpoint_uri=(tmp_path / "ck").as_uri() + "/default/s/s-0",
                       command=["python", "-c", code], env={"EXTRA": "yes"})


def _until_finished(runtime, timeout=20):
    """Events until a segment ends; its end is then released, as the loop does once recorded."""
    from rung.runtime.base import Ended

    events, deadline = [], time.monotonic() + timeout
    while not any(isinstance(e, Ended) for e in events):
        assert time.monotonic() < deadline, events
        events += runtime.poll()
        time.sleep(0.02)
    assert runtime.poll()[-1] == events[-1]   # an end comes back until it is released
    runtime.release(events[-1].run_name)
    return events


def test_local_runtime_reports_logs_and_outcomes(tmp_path):
    from rung.runtime.base import Ended, Outcome, Report
    from rung.runtime.local import LocalRuntime

    runtime = LocalRuntime(tmp_path / "res", tmp_path, grace=0.3)
    code = ("import json, os, sys; p = json.loads(os.environ['RUNG_PARAMS']);"
            "print('hello'); print('@rung ' + json.dumps({'step': 1, 'metrics': {'loss': p['a'] / 2}}));"
            "print('@rung not json'); sys.stderr.write(os.environ['EXTRA'] + ' ' + os.environ['RUNG_BUDGET'] + '\\n');"
            "open(os.environ['RUNG_RESULT_FILE'], 'w').write(json.dumps({'step': 3, 'metrics': {'loss': 0.25}}))")
    runtime.start(_segment(tmp_path, code))
    assert runtime.running() == {"s-0-s0"}
    events = _until_finished(runtime)
    assert events[0] == Report("s-0", 0, 1.0, {"loss": 0.5})
    assert events[-1] == Ended("s-0", 0, Outcome.SUCCEEDED, 0, {"step": 3, "metrics": {"loss": 0.25}})
    log = (tmp_path / "res" / "segments" / "s-0-s0.log").read_text()
    assert "hello\n" in log and "@rung not json" in log and "yes 3.0\n" in log
    assert runtime.running() == set()

    runtime.start(_segment(tmp_path, "import sys; print('bad input here', file=sys.stderr); sys.exit(3)", 1))
    failed = _until_finished(runtime)[-1]
    assert failed.outcome == Outcome.FAILED and failed.exit_code == 3
    assert failed.reason.startswith("exited with code 3: bad input here (log: ")

    # a trial that ignores SIGTERM is killed after the grace period
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                "print('@rung {\"step\": 1, \"metrics\": {}}', flush=True); time.sleep(60)")
    runtime.start(_segment(tmp_path, stubborn, 2))
    while not runtime.poll():
        time.sleep(0.02)
    runtime.stop("s-0-s2")
    stopped = _until_finished(runtime)[-1]
    assert stopped.outcome == Outcome.STOPPED and stopped.exit_code == -signal.SIGKILL
    assert not list((tmp_path / "res" / "segments").glob("*.pid"))


def test_local_runtime_fails_a_segment_past_its_timeout(tmp_path):
    from dataclasses import replace

    from rung.runtime.base import Outcome
    from rung.runtime.local import LocalRuntime

    runtime = LocalRuntime(tmp_path / "res", tmp_path, grace=0.3)
    runtime.start(replace(_segment(tmp_path, "import time; time.sleep(60)"), timeout=1))
    ended = _until_finished(runtime)[-1]
    assert ended.outcome == Outcome.FAILED
    assert ended.reason == "timed out after 1 s (spec.trial.timeoutSeconds)"
