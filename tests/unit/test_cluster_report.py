"""`rung report study/NAME`: a Study's records read from the API server (fake_kube's
in-memory one) give the same report as its results folder; bad kubeconfigs, missing
Studies and unreachable servers give one line and exit code 2."""

from __future__ import annotations

import math
import re

import pytest

from fake_kube import FakeKube, api_error
from rung.cli import main
from rung.controller.trial_store import TrialStore
from rung.kube import records as cluster
from rung.kube.api import path
from rung.records import SegmentRecord
from test_report import PNG, make_study, write_records

pytestmark = pytest.mark.unit

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u%s}}]
current-context: x
"""


def use_kubeconfig(monkeypatch, file) -> None:
    # `rung` reads $KUBECONFIG when it makes its client: the cluster tier's own must not leak in
    monkeypatch.setenv("KUBECONFIG", str(file))


def to_cluster(kube: FakeKube, folder_records, namespace: str = "ns") -> None:
    """The folder's Study, trials and status, written as the operator writes them."""
    study = folder_records.study()
    body = study.model_dump(by_alias=True, exclude_none=True)
    body["metadata"] = {"name": study.name, "namespace": namespace}
    kube.request("POST", path("studies", namespace), body=body)
    store = TrialStore(kube, study.model_copy(update={"metadata": study.metadata.model_copy(
        update={"namespace": namespace})}), lambda: kube.get("studies", namespace, study.name))
    store.load()
    for trial in folder_records.load():
        store.save(trial)
    store.save_status(folder_records.load_status())


@pytest.fixture
def kube(monkeypatch):
    kube = FakeKube()
    monkeypatch.setattr(cluster, "connect", lambda: kube)
    return kube


def test_a_cluster_study_reports_as_its_results_folder_does(tmp_path, monkeypatch, capsys, kube):
    records = write_records(tmp_path / "res", make_study())
    to_cluster(kube, records)
    # a Trial of an earlier Study of the same name, on its way out, is not this Study's
    stale = {**kube.get("trials", "ns", "t-0"), "metadata": {"name": "t-9", "labels": {"rung.dev/study": "t"},
                                                               "ownerReferences": [{"uid": "gone"}]}}
    kube.request("POST", path("trials", "ns"), body=stale)
    assert main(["report", str(tmp_path / "res")]) == 0
    from_folder = capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["report", "study/t", "--namespace", "ns"]) == 0
    from_cluster = capsys.readouterr().out
    assert from_cluster.rpartition("plots: ")[0] == from_folder.rpartition("plots: ")[0]
    assert "best val_loss       0.3  (trial t-0, epochs 3)" in from_cluster and not re.search(r"\bt-9\b", from_cluster)
    plots = sorted((tmp_path / "t-plots").iterdir())   # the default --out of a cluster Study
    assert [p.name for p in plots] == ["best_vs_budget.png", "best_vs_time.png", "learning_curves.png"]
    assert all(p.read_bytes().startswith(PNG) for p in plots)


def test_the_namespace_comes_from_the_kubeconfig_context(tmp_path, monkeypatch):
    config = tmp_path / "config"
    use_kubeconfig(monkeypatch, config)
    config.write_text(KUBECONFIG % ", namespace: team")
    assert cluster.current_namespace() == "team"
    config.write_text(KUBECONFIG % "")
    assert cluster.current_namespace() == "default"
    use_kubeconfig(monkeypatch, tmp_path / "missing")
    assert cluster.current_namespace() == "default"


def report_error(capsys, *args) -> str:
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err.strip()


def test_a_missing_study_or_a_refusal_is_one_line(capsys, kube):
    assert report_error(capsys, "study/nope", "-n", "ns") == (
        "error: study/nope: no Study nope in namespace ns; check the name and --namespace (kubectl get studies -A)")

    def forbidden(*args, **kwargs):
        raise api_error(403, 'studies.rung.dev "nope" is forbidden: User "u" cannot get resource "studies"')

    kube.request = forbidden
    assert report_error(capsys, "study/nope", "-n", "ns").startswith(
        "error: study/nope: the API server refused to show it (studies.rung.dev \"nope\" is forbidden")
    assert report_error(capsys, "study/", "-n", "ns") == (
        "error: study/: is not a Study's name; write study/NAME (kubectl get studies)")
    assert report_error(capsys, "-n", "ns", ".") == (
        "error: --namespace: applies only to study/NAME; leave it out for a local Study")


def test_no_kubeconfig_or_no_api_server_is_one_line(tmp_path, monkeypatch, capsys):
    use_kubeconfig(monkeypatch, tmp_path / "missing")
    monkeypatch.chdir(tmp_path)
    assert report_error(capsys, "study/s").startswith("error: kubeconfig: cannot load it (")
    (tmp_path / "config").write_text(KUBECONFIG % "")   # a server nothing listens on
    use_kubeconfig(monkeypatch, tmp_path / "config")
    assert report_error(capsys, "study/s") == (
        "error: study/s: the API server at https://127.0.0.1:1 did not answer ([Errno 111] Connection refused); "
        "check that the cluster is up and KUBECONFIG points at it")


def test_a_segment_keeps_its_metrics_and_a_bounded_finite_curve_in_the_trial_status():
    curve = [[float(step), 1.0 / step] for step in range(1, 5001)]
    curve[10][1], curve[20][1] = math.nan, math.inf   # a diverged report: JSON cannot carry it
    seg = SegmentRecord(5000, status="completed", loss=2e-4, reached=5000, curve=curve,
                        metrics={"val_loss": 2e-4, "accuracy": 0.97, "images": 12000, "lr": math.inf})
    doc = cluster.segment_to_status(seg)
    back = cluster.segment_from_status(doc)
    assert back.metrics == {"val_loss": 2e-4, "accuracy": 0.97, "images": 12000}
    steps = [p[0] for p in back.curve]
    assert len(steps) == cluster.MAX_CURVE and steps[0] == 1 and steps[-1] == 5000
    assert all(math.isfinite(v) for p in back.curve for v in p)
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert min(gaps) >= 4 and max(gaps) <= 6   # evenly spread over the whole segment, not head and tail
    short = SegmentRecord(3, curve=[[1.0, 0.5], [2.0, 0.4], [3.0, 0.3]])
    assert cluster.segment_to_status(short)["curve"] == short.curve
