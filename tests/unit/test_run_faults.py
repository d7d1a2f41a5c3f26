"""`rung run` against what goes wrong in practice: trial code that misbehaves, checkpoint
stores and results folders that are full, read-only or unreachable, records broken by
hand, signals, and the ways on after a failure (--retry-failed, a raised maxTrials).

Every case asserts the exit code, the one-line message, and that nothing already
recorded was lost. Full and read-only disks are real: small tmpfs mounts (root only).
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from rung.cli import main

pytestmark = pytest.mark.unit

RUNG = [sys.executable, "-m", "rung.cli"]


def manifest(folder: Path, code: str | None = None, name="rf", max_trials=3, budget=3, **spec) -> Path:
    """A random-search Study of `max_trials` trials, each running `code` (train.py) or
    count_steps, with budget `budget`; `spec` entries replace the spec's top-level keys."""
    folder.mkdir(parents=True, exist_ok=True)
    command = ["python", "-m", "rung_trainables.count_steps"]
    if code is not None:
        (folder / "train.py").write_text("from rung import trial\n" + code)
        command = ["python", "train.py"]
    doc = {"apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name},
           "spec": {"objective": {"metric": "loss"},
                    "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
                    "algorithm": {"name": "random", "seed": 3},
                    "budget": {"min": budget, "max": budget},
                    "limits": {"maxTrials": max_trials, "parallelism": 3, "maxFailedTrials": 10},
                    "trial": {"command": command}, **spec}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def rung(capsys, *args) -> tuple[int, str, str]:
    rc = main([*map(str, args), "--quiet"] if args[0] == "run" else list(map(str, args)))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def one_line_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err


def records(results: Path) -> dict:
    """Every trial record as parsed JSON: a half-written one would not parse."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "trials").glob("*.json"))}


def completed(results: Path) -> dict:
    return {n: t for n, t in records(results).items() if t["state"] == "completed"}


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs folder of that size; remount(path, options)."""
    if os.geteuid() != 0:
        pytest.skip("mounts a tmpfs: needs root (the CI and the cluster tier run as root)")
    mounted = []

    def mount(size: str) -> Path:
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def fill(path: Path) -> None:
    with open(path / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


# ---- trial code that misbehaves: the Study says what happened, per trial -------------------

BEHAVIOURS = {   # name: (train.py, extra spec, exit code, the reason each trial shows)
    "crash": ("trial.report(1, loss=0.5)\nraise RuntimeError('boom at step 1')\n", {}, 1,
              "RuntimeError: boom at step 1"),
    "no-objective": ("trial.report(3, accuracy=0.5)\n", {}, 1, "exited 0 without reporting the objective metric"),
    "hangs": ("import time\ntime.sleep(120)\n", {"trial": {"command": ["python", "train.py"], "timeoutSeconds": 1}},
              1, "timed out after 1 s (spec.trial.timeoutSeconds)"),
    "diverges": ("trial.report(3, loss=float('nan'))\n", {}, 1, "diverged: the objective loss was nan"),
    "steps-go-back": ("trial.report(2, loss=0.5)\ntrial.report(1, loss=0.4)\n", {}, 1,
                      "step 1 does not come after the previous step 2"),
    "step-not-finite": ("trial.report(float('inf'), loss=0.5)\n", {}, 1, "step inf is not a finite number"),
    "metric-not-a-number": ("trial.report(3, loss='low')\n", {}, 1, "metrics must be numbers"),
    "kills-itself": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", {}, 1, "killed by SIGKILL"),
    "stops-short": ("trial.report(1, loss=0.5)\n", {}, 0, "ended at step 1, short of its budget 3"),
}


@pytest.mark.parametrize("case", list(BEHAVIOURS), ids=list(BEHAVIOURS))
def test_a_misbehaving_trial_is_recorded_with_its_reason(tmp_path, capsys, case):
    code, spec, exit_code, reason = BEHAVIOURS[case]
    results = tmp_path / "res"
    rc, out, err = rung(capsys, "run", manifest(tmp_path, code, **spec), "--results", results)
    assert rc == exit_code, out + err
    trials = records(results)
    assert len(trials) == 3   # every trial recorded, each with the reason of its end
    assert all(reason in t["segments"][-1]["reason"] for t in trials.values()), trials
    if exit_code:
        assert "Study rf: failed (no trial produced a finite loss (" in out
        assert out.count(reason) >= 3   # the failed or diverged trials, listed with their reasons
        assert err.count("\n") == 1 and "--retry-failed" in err


# ---- checkpoint stores: checked before the first trial, never charged to a trial -------------

def _store_stop(capsys, study: Path, results: Path, *words: str) -> str:
    rc, out, err = rung(capsys, "run", study, "--results", results)
    assert rc == 1, out + err
    assert err.count("\n") == 1 and err.startswith("stopped: spec.checkpoints.uri: "), err
    for word in words:
        assert word in err, err
    assert "secretRef" not in err
    assert not any(t["state"] == "failed" for t in records(results).values())   # no trial charged
    return err


def test_a_read_only_store_stops_before_the_first_trial(tmp_path, capsys, tmpfs):
    store = tmpfs("1m")
    remount(store, "ro")
    _store_stop(capsys, manifest(tmp_path, checkpoints={"uri": store.as_uri()}), tmp_path / "res",
                "cannot write", "Read-only file system")
    assert records(tmp_path / "res") == {}


def test_a_full_store_stops_before_the_first_trial(tmp_path, capsys, tmpfs):
    store = tmpfs("256k")
    fill(store)
    _store_stop(capsys, manifest(tmp_path, checkpoints={"uri": store.as_uri()}), tmp_path / "res",
                "No space left on device")
    assert records(tmp_path / "res") == {}


def test_a_store_that_is_a_file_stops_before_the_first_trial(tmp_path, capsys):
    (tmp_path / "store").write_text("not a folder")
    _store_stop(capsys, manifest(tmp_path, checkpoints={"uri": (tmp_path / "store").as_uri()}), tmp_path / "res",
                "Not a directory")


def test_s3_without_credentials_says_which_variables_to_set(tmp_path, capsys, monkeypatch):
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("RUNG_S3_ENDPOINT", "http://127.0.0.1:9")
    rc, out, err = rung(capsys, "run", manifest(tmp_path, checkpoints={"uri": "s3://bucket/ckpt"}),
                        "--results", tmp_path / "res")
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith("stopped: AWS_ACCESS_KEY_ID: no complete S3 credentials")
    assert "in the environment" in err and "secretRef" not in err
    assert records(tmp_path / "res") == {}


def test_an_unreachable_s3_endpoint_stops_before_the_first_trial(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("RUNG_S3_ENDPOINT", "http://127.0.0.1:9")   # discard port: nothing listens
    monkeypatch.setenv("RUNG_S3_MAX_ATTEMPTS", "1")
    err = _store_stop(capsys, manifest(tmp_path, checkpoints={"uri": "s3://bucket/ckpt"}), tmp_path / "res",
                      "cannot reach S3 endpoint http://127.0.0.1:9")
    assert records(tmp_path / "res") == {}


def test_a_store_that_turns_read_only_mid_run_stops_cleanly_and_resumes(tmp_path, capsys, tmpfs):
    store = tmpfs("4m")
    study = manifest(tmp_path, max_trials=12, budget=9, checkpoints={"uri": store.as_uri()},
                     trial={"command": ["python", "-m", "rung_trainables.count_steps"],
                            "env": {"COUNT_STEPS_SLEEP": "0.1", "RUNG_CHECKPOINT_EVERY_STEPS": "1"}})
    results = tmp_path / "res"
    proc = subprocess.Popen([*RUNG, "run", str(study), "--results", str(results), "--quiet"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(completed(results) if (results / "trials").exists() else {}) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    remount(store, "ro")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert err.count("\n") == 1 and err.startswith("stopped: spec.checkpoints.uri: "), err
    assert "Read-only file system" in err and "run the same command again" in err
    done = completed(results)
    assert len(done) >= 2 and not any(t["state"] == "failed" for t in records(results).values())
    remount(store, "rw")
    rc, out, err = rung(capsys, "run", study, "--results", results)
    assert rc == 0, out + err
    final = records(results)
    assert len(final) == 12 and all(t["state"] == "completed" for t in final.values())
    assert all(final[name] == t for name, t in done.items())   # finished trials kept as they were


# ---- the results folder --------------------------------------------------------------------

def test_a_read_only_results_folder_is_one_line(tmp_path, capsys, tmpfs):
    disk = tmpfs("1m")
    remount(disk, "ro")
    rc, _, err = rung(capsys, "run", manifest(tmp_path), "--results", disk / "res")
    assert rc == 2
    one_line_error(err, "--results: cannot write", "Read-only file system")


def test_a_results_path_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "res").write_text("x")
    rc, _, err = rung(capsys, "run", manifest(tmp_path), "--results", tmp_path / "res")
    assert rc == 2
    one_line_error(err, "is not a folder")
    assert (tmp_path / "res").read_text() == "x"


def test_a_results_disk_that_fills_mid_run_is_one_line_and_resumes(tmp_path, capsys, tmpfs):
    disk = tmpfs("160k")   # room for the first trials' records and logs, not for all of them
    study = manifest(tmp_path, max_trials=40, checkpoints={"uri": (tmp_path / "ckpt").as_uri()})
    rc, _, err = rung(capsys, "run", study, "--results", disk / "res")
    assert rc == 2
    one_line_error(err, "cannot be written", "No space left on device", "run the same command again")
    before = completed(disk / "res")   # every record that was written still parses
    assert before
    remount(disk, "size=8m")
    rc, out, err = rung(capsys, "run", study, "--results", disk / "res")
    assert rc == 0, out + err
    final = records(disk / "res")
    assert len(final) == 40
    assert all(t["state"] == "completed" for t in final.values()), [
        t["segments"][-1]["reason"] for t in final.values() if t["state"] != "completed"]
    assert all(final[name] == t for name, t in before.items())


# ---- records broken by hand: one line, nothing touched ------------------------------------

BROKEN = {   # file in the results folder: (new contents, words of the message)
    "trial-record": ("trials/rf-0.json", "{not json", "is not a readable trial record"),
    "status-record": ("status.json", "[1, 2", "is not a readable status record"),
    "study-record": ("study.json", "garbage", "cannot be read"),
    "run-id": ("run-id", "../../elsewhere\n", "is not a run id"),
}


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_hand_broken_record_is_one_line_and_touches_nothing(tmp_path, capsys, case):
    study, results = manifest(tmp_path), tmp_path / "res"
    assert rung(capsys, "run", study, "--results", results)[0] == 0
    name, text, words = BROKEN[case]
    (results / name).write_text(text)
    before = snapshot(results)
    rc, _, err = rung(capsys, "run", study, "--results", results)
    assert rc == 2
    one_line_error(err, name.split("/")[-1], words)
    assert snapshot(results) == before


# ---- signals -------------------------------------------------------------------------------

def test_sigterm_stops_cleanly_and_the_same_command_resumes(tmp_path, capsys):
    study = manifest(tmp_path, max_trials=8, budget=9,
                     trial={"command": ["python", "-m", "rung_trainables.count_steps"],
                            "env": {"COUNT_STEPS_SLEEP": "0.1"}})
    results = tmp_path / "res"
    proc = subprocess.Popen([*RUNG, "run", str(study), "--results", str(results), "--quiet"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(completed(results) if (results / "trials").exists() else {}) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert err.count("\n") == 1 and err.startswith("interrupted: run the same command again to resume"), err
    done = completed(results)
    assert not list(results.glob("segments/*.pid"))   # its trials were stopped
    rc, out, err = rung(capsys, "run", study, "--results", results)
    assert rc == 0, out + err
    final = records(results)
    assert len(final) == 8 and all(final[name] == t for name, t in done.items())


# ---- the ways on after a failure ---------------------------------------------------------------

def test_a_replayed_failure_says_how_on_and_retry_failed_keeps_the_finished_trials(tmp_path, capsys):
    code = ("import os\nodd = int(os.environ['RUNG_TRIAL'].split('-')[1]) % 2\n"
            "if odd and not os.path.exists('fixed'): raise RuntimeError('bug in odd trials')\n"
            "trial.report(3, loss=trial.params()['x'])\n")
    study = manifest(tmp_path, code, max_trials=8, limits={"maxTrials": 8, "parallelism": 1, "maxFailedTrials": 2})
    results = tmp_path / "res"
    rc, out, err = rung(capsys, "run", study, "--results", results)
    assert rc == 1 and "Study rf: failed (3 trials failed, more than limits.maxFailedTrials (2)" in out
    failed = {n for n, t in records(results).items() if t["state"] == "failed"}
    done = completed(results)
    assert failed and done
    rc, out, err = rung(capsys, "run", study, "--results", results)   # the same command: a replay
    assert rc == 1 and err == f"failed; to run the failed trials again and keep the finished ones: " \
                              f"rung run {study} --retry-failed --results {results}\n"
    (tmp_path / "fixed").write_text("")
    rc, out, err = rung(capsys, "run", study, "--results", results, "--retry-failed")
    assert rc == 0, out + err
    assert err == f"retrying {len(failed)} failed trials\n"
    final = records(results)
    assert all(final[n]["state"] == "completed" for n in failed)
    assert all(final[n] == t for n, t in done.items())


def test_raising_max_trials_extends_a_finished_study(tmp_path, capsys):
    results = tmp_path / "res"
    assert rung(capsys, "run", manifest(tmp_path, max_trials=3), "--results", results)[0] == 0
    done = records(results)
    rc, out, err = rung(capsys, "run", manifest(tmp_path, max_trials=5), "--results", results)
    assert rc == 0, out + err
    final = records(results)
    assert len(final) == 5 and all(final[n] == t for n, t in done.items())


def test_keep_best_applies_to_rung_run(tmp_path, capsys):
    study = manifest(tmp_path, max_trials=2, budget=9,
                     trial={"command": ["python", "-m", "rung_trainables.count_steps"],
                            "env": {"RUNG_CHECKPOINT_EVERY_STEPS": "1"}},
                     checkpoints={"uri": (tmp_path / "ckpt").as_uri(), "keepBest": 0})
    assert rung(capsys, "run", study, "--results", tmp_path / "res")[0] == 0
    run = (tmp_path / "res" / "run-id").read_text().strip()
    for trial in ("rf-0", "rf-1"):
        steps = sorted(p.name for p in (tmp_path / "ckpt" / "default" / "rf" / run / trial).iterdir())
        assert steps == ["9"], steps   # nine were saved; only the latest is kept
