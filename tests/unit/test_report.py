"""`rung report` on hand-made records: the table's numbers, the top trials, the PNGs."""

import random

import pytest

from rung.api import parse_study
from rung.cli import main
from rung.report import Standings, summarize, top_trials
from rung.records import SegmentRecord, TrialRecord
from rung.runtime.folder import FolderRecords

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n"


def make_study(goal="minimize"):
    return parse_study({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": "t"},
        "spec": {"objective": {"metric": "val_loss" if goal == "minimize" else "acc", "goal": goal},
                 "searchSpace": {"lr": {"type": "float", "low": 0.001, "high": 1, "log": True},
                                 "act": {"type": "categorical", "choices": ["relu", "tanh"]}},
                 "algorithm": {"name": "asha", "seed": 1},
                 "budget": {"min": 1, "max": 3, "unit": "epochs"},
                 "limits": {"maxTrials": 6},
                 "trial": {"command": ["python", "-m", "rung_trainables.mlp_digits"]}}})


def seg(budget, status, loss=None, reached=None, curve=(), elapsed=None, resume_from=None):
    return SegmentRecord(budget, resume_from, status, loss, reached, [list(p) for p in curve], elapsed=elapsed)


def write_records(folder, study, sign=1.0):
    """Five trials in every state; losses are stored minimised, so a maximised metric is negated."""
    records = FolderRecords.create(folder, study)
    docs = [
        TrialRecord(0, "t-0", {"lr": 0.1, "act": "relu"}, [
            seg(1, "completed", sign * 0.5, 1, [(1, sign * 0.5)], elapsed=1.0),
            seg(3, "completed", sign * 0.3, 3, [(2, sign * 0.4), (3, sign * 0.3)], elapsed=3.0, resume_from=1)]),
        # better, but only at the lowest budget: never the incumbent once t-0 reached 3
        TrialRecord(1, "t-1", {"lr": 0.05, "act": "tanh"}, [seg(1, "completed", sign * 0.2, 1, [(1, sign * 0.2)],
                                                             elapsed=1.5)]),
        TrialRecord(2, "t-2", {"lr": 0.9, "act": "relu"}, [seg(1, "failed", elapsed=2.0)]),
        TrialRecord(3, "t-3", {"lr": 0.002, "act": "tanh"}, [seg(1, "stopped", sign * 0.6, 0.5, [(0.5, sign * 0.6)],
                                                              elapsed=2.5)]),
        TrialRecord(4, "t-4", {"lr": 0.01, "act": "relu"}, [seg(1, "running")]),
    ]
    for doc in docs:
        records.save(doc)
    records.save_status({"state": "succeeded", "reason": "", "elapsed": 75.0})
    return records


def test_summary_numbers(tmp_path):
    study = make_study()
    records = write_records(tmp_path, study)
    s = summarize(study, records.load(), records.load_status())
    assert s.best.trial.name == "t-0" and s.best.loss == 0.3 and s.best.budget == 3
    assert [(p.trial.name, p.loss) for p in s.trajectory] == [("t-0", 0.5), ("t-1", 0.2), ("t-0", 0.3)]
    assert [p.spent for p in s.trajectory] == [1.0, 2.0, 4.5]   # t-0 s1 trained 2 epochs after resuming
    assert s.spent == 4.5
    assert dict(s.counts) == {"completed": 2, "failed": 1, "stopped": 1, "running": 1}


def test_report_prints_the_table_and_writes_plots(tmp_path, capsys):
    write_records(tmp_path / "res", make_study())
    assert main(["report", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    table, top, failed, plots = out.split("\n\n")
    assert failed == "failed or diverged trials (1):\n  t-2  no reason recorded"
    assert table.splitlines() == [
        "Study t: succeeded",
        "  best val_loss       0.3  (trial t-0, epochs 3)",
        "    lr = 0.1",
        "    act = 'relu'",
        "  trials              5 of 6: 2 completed, 1 stopped, 1 failed, 1 running",
        "  budget used         4.5 epochs",
        "  wall time           1 min 15 s",
    ]
    rows = [line.split()[:6] for line in top.splitlines()]
    assert rows[0] == ["#", "trial", "state", "segments", "epochs", "val_loss"]
    assert rows[1:] == [["1", "t-0", "completed", "2", "3", "0.3"],
                        ["2", "t-1", "completed", "1", "1", "0.2"],
                        ["3", "t-3", "stopped", "1", "0.5", "0.6"]]
    assert "lr=0.1 act=relu" in top.splitlines()[1]
    for name in ("best_vs_time.png", "best_vs_budget.png", "learning_curves.png"):
        path = tmp_path / "res" / "plots" / name
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 5000
        assert str(path) in plots


def test_maximized_metrics_are_shown_as_reported(tmp_path, capsys):
    write_records(tmp_path / "res", make_study("maximize"), sign=-1.0)
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert "  best acc            0.6  (trial t-3, epochs 0.5)" not in out
    assert "  best acc            0.3  (trial t-0, epochs 3)" in out   # the best accuracy at 3 epochs
    assert len(list((tmp_path / "png").glob("*.png"))) == 3


def test_report_finds_the_results_of_a_manifest(tmp_path, capsys, monkeypatch):
    study = make_study()
    write_records(tmp_path / ".rung" / "t", study)
    manifest = tmp_path / "t.yaml"
    manifest.write_text(study.model_dump_json(by_alias=True))   # JSON is YAML
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(manifest)]) == 0
    assert "Study t: succeeded" in capsys.readouterr().out


def test_report_of_an_empty_study_and_of_a_wrong_folder(tmp_path, capsys):
    FolderRecords.create(tmp_path / "empty", make_study())
    assert main(["report", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "best val_loss       none yet" in out and "no trial has a result yet" in out
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a Rung results folder" in err


def test_report_of_a_study_without_results_lists_the_failures_instead_of_plots(tmp_path, capsys):
    records = FolderRecords.create(tmp_path, make_study())
    for i in range(12):
        failed = SegmentRecord(1, status="failed", reason=f"exited with code 1: bad lr {i}", ended=100.0 + i)
        records.save(TrialRecord(i, f"t-{i}", {"lr": 0.1, "act": "relu"}, [failed]))
    records.save_status({"state": "failed", "reason": "no trial produced a finite val_loss (12 of 12 failed; "
                         "last: t-11: exited with code 1: bad lr 11)", "elapsed": 5.0})
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("failed or diverged trials (12):\n  t-11  exited with code 1: bad lr 11\n"
            "  t-10  exited with code 1: bad lr 10\n") in out
    assert "  ... and 2 more\n" in out
    assert "no plots: no trial produced a finite val_loss" in out
    assert not (tmp_path / "plots").exists()


def test_the_progress_line_names_the_incumbent_and_its_budget(tmp_path):
    from rung.progress import progress_line
    study = make_study()
    records = write_records(tmp_path, study)
    line = progress_line(summarize(study, records.load(), records.load_status()))
    # 0.3 at 3 epochs is worse than t-1's 0.2 at 1 epoch: the budget says why it is the incumbent
    assert "incumbent val_loss 0.3 at 3 epochs" in line


def test_diverged_trials_are_listed_with_the_failed_ones(tmp_path, capsys):
    study = make_study()
    records = write_records(tmp_path / "res", study)
    diverged = seg(1, "completed", None, 1, elapsed=4.0)
    diverged.reason, diverged.ended = "diverged: the objective val_loss was nan", 9.0
    records.save(TrialRecord(5, "t-5", {"lr": 1.0, "act": "relu"}, [diverged]))
    assert main(["report", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "failed or diverged trials (2):\n  t-5  diverged: the objective val_loss was nan\n  t-2" in out


def test_standings_kept_trial_by_trial_agree_with_a_summary_of_every_trial():
    rng = random.Random(4)
    st = make_study()
    trials, standings = {}, Standings()
    for _ in range(600):
        i = rng.randrange(60)
        trial = trials.setdefault(i, TrialRecord(i, f"s-{i}", {"x": i}))
        if trial.segments and trial.current.running:   # it ends: a result, a failure or a stop
            seg = trial.current
            seg.status = rng.choice(["completed", "completed", "failed", "stopped"])
            seg.reached = seg.budget if seg.status != "failed" else None
            seg.loss = None if seg.status == "failed" else rng.choice([0.5, 0.25, rng.random()])  # ties too
        else:
            trial.segments.append(SegmentRecord(rng.choice([1, 3, 9])))
        standings.set(trial)
        everything = summarize(st, sorted(trials.values(), key=lambda t: t.index))
        assert standings.top(100) == top_trials(everything, 100)   # the whole ranking
        assert standings.counts == everything.counts and len(standings) == len(trials)
        if everything.best is not None:   # the incumbent: same result (on a tie, maybe another trial)
            best = standings.top(1)[0]
            assert (best[1], best[2]) == (everything.best.budget, everything.best.loss)
