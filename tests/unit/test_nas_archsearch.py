"""ArchitectureSearch as a one-trial Study: the spec's translation and its errors, a tiny
search through `rung run`'s own code path, and a search whose trial is killed mid-way
resuming from its checkpoint to the genotype an uninterrupted run finds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rung import cli
from rung.api import parse_archsearch
from rung.archsearch import OBJECTIVE, search_params, to_study
from rung.errors import InputError

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "apiVersion": "rung.dev/v1alpha1", "kind": "ArchitectureSearch", "metadata": {"name": "tiny"},
    "spec": {"method": "darts", "dataset": "digits", "epochs": 3, "seed": 1, "cells": 2, "nodes": 2, "channels": 4,
             "ops": ["sep_conv_3x3", "max_pool_3x3", "skip_connect", "zero"],
             "settings": {"batch_size": 128, "order": 1},
             "evaluation": {"epochs": 1, "cells": 2, "channels": 4, "batchSize": 128}},
}


def manifest(**spec) -> dict:
    doc = json.loads(json.dumps(TINY))
    doc["spec"].update(spec)
    return doc


def test_translation_is_a_one_trial_study_of_the_search():
    search = parse_archsearch(manifest(trial={"image": "rung-trial-torch:0.1.0", "gpus": {"min": 1, "max": 2}}))
    study = to_study(search)
    assert study.name == "tiny" and study.spec.algorithm.name == "random"
    assert study.spec.limits.max_trials == 1 and study.spec.limits.max_failed_trials == 0
    assert study.spec.budget.min == study.spec.budget.max == 3
    assert (study.spec.objective.metric, study.spec.objective.goal) == (OBJECTIVE, "maximize")
    assert study.spec.trial.command == ["python", "-m", "rung_trainables.nas_search"]
    assert study.spec.trial.image == "rung-trial-torch:0.1.0" and study.spec.trial.gpus.max == 2
    params = search_params(search)
    assert {k: [v] for k, v in params.items()} == {k: p.choices for k, p in study.spec.search_space.items()}
    settings = json.loads(params["settings"])
    assert (params["method"], params["seed"], settings["order"], settings["nodes"]) == ("darts", 1, 1, 2)
    assert "epochs" not in settings   # the trial's budget
    assert json.loads(params["evaluation"])["batch_size"] == 128


@pytest.mark.parametrize("spec, field", [
    ({"method": "enas"}, "spec.method"),
    ({"epochs": 0}, "spec.epochs"),
    ({"cells": 1}, "spec.cells"),
    ({"ops": ["conv_7x7"]}, "spec.ops.0"),
    ({"ops": ["zero"]}, "spec.ops"),
    ({"settings": {"epochs": 4}}, "spec.settings.epochs"),
    ({"settings": {"bogus": 1}}, "spec.settings.bogus"),
    ({"settings": {"order": 3}}, "spec.settings.order"),
    ({"method": "asap", "settings": {"beta": 2.0}}, "spec.settings"),
    ({"evaluation": {"epochs": -1}}, "spec.evaluation.epochs"),
    ({"epoch": 3}, "spec.epoch"),
])
def test_bad_fields_are_one_line_naming_the_field(spec, field):
    with pytest.raises(InputError) as e:
        parse_archsearch(manifest(**spec))
    assert e.value.field == field, e.value.line()


def test_validate_names_the_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest(settings={"bogus": 1})))
    assert cli.main(["validate", str(path)]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: spec.settings.bogus: is not a darts setting") and "\n" not in err


def test_local_search_writes_its_genotype_and_plots(tmp_path, capsys):
    pytest.importorskip("torch")
    from rung.nas import check_genotype

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(manifest()))
    results = tmp_path / "results"
    assert cli.main(["run", str(path), "--results", str(results), "--quiet"]) == cli.EXIT_OK
    genotype = json.loads((results / "genotype.json").read_text())
    check_genotype(genotype)
    assert len(genotype["normal"]) == 2 and all(len(node) == 2 for node in genotype["normal"])
    summary = json.loads((results / "search.json").read_text())
    assert summary["epochs"] == 3 and summary["wall_seconds"] > summary["search_seconds"] > 0
    assert 0 <= summary["test_accuracy"] <= 1 and 0 <= summary["random_test_accuracy"] <= 1
    assert [h["epoch"] for h in json.loads((results / "history.json").read_text())] == [1, 2, 3]
    assert "search: darts, 3 epochs" in capsys.readouterr().out

    assert cli.main(["report", str(results)]) == cli.EXIT_OK
    for name in ("genotype.png", "history.png"):
        assert (results / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def _rung(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "trial_image")])}
    return subprocess.Popen([sys.executable, "-m", "rung.cli", "run", *args, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_a_search_killed_mid_way_resumes_to_the_uninterrupted_genotype(tmp_path):
    torch = pytest.importorskip("torch")
    from rung.nas import Search

    epochs, kill_after = 6, 2
    doc = manifest(epochs=epochs, evaluation={"epochs": 0})
    path, results = tmp_path / "tiny.yaml", tmp_path / "results"
    path.write_text(yaml.safe_dump(doc))
    run = _rung(str(path), "--results", str(results))
    deadline = time.monotonic() + 60
    sealed = []
    while not sealed and time.monotonic() < deadline:
        sealed = list((results / "checkpoints").glob(f"default/tiny/*/tiny-0/{kill_after}/MANIFEST.json"))
        time.sleep(0.02)
    assert sealed, "no checkpoint at epoch 2 within a minute"
    (pid_file,) = (results / "segments").glob("*.pid")
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)   # the trial, mid-search
    out, _ = run.communicate(timeout=60)
    assert run.returncode == cli.EXIT_FAILED and "--retry-failed" in out, out
    assert not (results / "genotype.json").exists()

    again = _rung(str(path), "--results", str(results), "--retry-failed")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == cli.EXIT_OK, out
    log = "".join(p.read_text() for p in (results / "segments").glob("*.log"))
    resumed = [int(line.rsplit(" ", 1)[1]) for line in log.splitlines() if "resumed from epoch" in line]
    assert resumed and kill_after <= resumed[0] < epochs, log
    history = json.loads((results / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the trial runs on CPU
    try:
        spec = parse_archsearch(doc).spec
        reference = Search("darts", spec.search_settings(), seed=spec.seed)
        reference.run()
    finally:
        torch.set_num_threads(threads)
    assert json.loads((results / "genotype.json").read_text()) == reference.genotype()
    assert [h["alphas"] for h in history] == [h["alphas"] for h in reference.history()]


# ---- the operator's side, against the in-memory API (tests/unit/fake_kube.py) ------------

def test_the_operator_creates_the_owned_study_and_mirrors_it(tmp_path):
    from fake_kube import FakeKube
    from rung.controller import archsearch
    from rung.controller.study import OperatorConfig
    from rung.storage import FileStore, study_prefix

    kube = FakeKube()
    config = OperatorConfig("rung-trial:0.1.0", (tmp_path / "ckpt").as_uri())
    body = kube.request("POST", "/apis/rung.dev/v1alpha1/namespaces/default/architecturesearches",
                        body=manifest())
    archsearch.reconcile(kube, config, body)
    study = kube.get("studies", "default", "tiny")
    (owner,) = study["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ArchitectureSearch", body["metadata"]["uid"], True)
    assert study["spec"]["budget"] == {"min": 3.0, "max": 3.0, "unit": "epochs"}
    archsearch.reconcile(kube, config, kube.get("architecturesearches", "default", "tiny"))   # idempotent

    # the trial's latest checkpoint and the Study's end show in the search's status
    prefix = f"{study_prefix('default', 'tiny', study['metadata']['uid'])}/tiny-0"
    progress = {"epoch": 3, "val_accuracy": 0.5, "genotype": {"normal": []}, "ops_left": {"normal": [4]},
                "search_seconds": 2.0, "resumed_from": 1}
    FileStore(tmp_path / "ckpt").save(prefix, 3, {"state.pkl": b"x", "progress.json": json.dumps(progress).encode(),
                                                  "genotype.json": b'{"normal": [[["skip_connect", 0]]]}',
                                                  "evaluation.json": b'{"test_accuracy": 0.9}'})
    kube.request("PATCH", "/apis/rung.dev/v1alpha1/namespaces/default/studies/tiny/status", merge_patch=True,
                 body={"status": {"phase": "Succeeded"}})
    archsearch.reconcile(kube, config, kube.get("architecturesearches", "default", "tiny"))
    status = kube.get("architecturesearches", "default", "tiny")["status"]
    assert (status["phase"], status["epoch"], status["resumedFrom"], status["opsLeft"]) == (
        "Succeeded", 3, 1, {"normal": [4]})
    assert status["genotype"] == {"normal": [[["skip_connect", 0]]]} and status["evaluation"]["testAccuracy"] == 0.9
    assert archsearch.finished(kube.get("architecturesearches", "default", "tiny"))


def test_the_operator_marks_a_bad_search_invalid(tmp_path):
    from fake_kube import FakeKube
    from rung.controller import archsearch
    from rung.controller.study import OperatorConfig

    kube = FakeKube()
    body = kube.request("POST", "/apis/rung.dev/v1alpha1/namespaces/default/architecturesearches",
                        body=manifest(settings={"bogus": 1}))
    archsearch.reconcile(kube, OperatorConfig("img", (tmp_path / "c").as_uri()), body)
    status = kube.get("architecturesearches", "default", "tiny")["status"]
    assert status["phase"] == "Invalid" and status["message"].startswith("spec.settings.bogus:")
    assert kube.request("GET", "/apis/rung.dev/v1alpha1/namespaces/default/studies")["items"] == []
