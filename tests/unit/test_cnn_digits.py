"""The torch CNN trainable, run as a real process like a runtime runs it."""

import importlib.util
import os

import pytest

from test_sdk import run, steps

pytestmark = pytest.mark.unit

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (pip install 'rung[torch]')")
P = {"lr": 0.05, "channels": 8, "hidden": 32, "seed": 3}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two epochs on one worker, uninterrupted: what the other runs must reproduce."""
    rc, reports, final, err = run(tmp_path_factory.mktemp("straight"), "cnn_digits", P, 2)
    assert rc == 0, err
    assert final == reports[-1]
    return reports


def metrics(reports):
    return [{k: v for k, v in r["metrics"].items() if k != "throughput"} for r in reports]


@needs_torch
def test_one_worker_reports_throughput_and_resumes_bit_for_bit(tmp_path, straight):
    assert [r["step"] for r in straight] == [1, 2]
    for r in straight:
        assert set(r["metrics"]) == {"val_loss", "val_accuracy", "throughput"}
        assert r["metrics"]["throughput"] > 0 and r["gpus"] == 0
    assert straight[1]["metrics"]["val_loss"] < straight[0]["metrics"]["val_loss"]
    rc1, first, _, _ = run(tmp_path, "cnn_digits", P, 1)
    rc2, second, _, _ = run(tmp_path, "cnn_digits", P, 2)
    assert rc1 == rc2 == 0 and [r["step"] for r in first + second] == [1, 2]
    assert steps(tmp_path) == [1, 2]
    # Bit-for-bit: the same floats in the JSON (throughput is a timing, so not compared).
    assert metrics(first + second) == metrics(straight)


@needs_torch
def test_two_cpu_workers_train_data_parallel_and_one_resumes_their_checkpoint(tmp_path, straight):
    rc, [two], final, err = run(tmp_path, "cnn_digits", P, 1, extra={"RUNG_WORKERS": "2"})
    assert rc == 0, err
    assert final == two and two["metrics"]["throughput"] > 0 and two["gpus"] == 0
    assert steps(tmp_path) == [1]   # rank 0 alone checkpoints
    rc, [one], _, err = run(tmp_path, "cnn_digits", P, 2)
    assert rc == 0, err
    # Each worker takes its share of every global batch: the same training at any worker
    # count, up to the order of the sums.
    for got, want in zip(metrics([two, one]), metrics(straight)):
        assert got == pytest.approx(want, rel=1e-4)


def test_without_torch_the_error_names_the_fix(tmp_path):
    shadow = tmp_path / "no-torch"
    (shadow / "torch").mkdir(parents=True)
    (shadow / "torch/__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    path = os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])
    rc, reports, final, err = run(tmp_path, "cnn_digits", P, 1, extra={"PYTHONPATH": path})
    message = "rung_trainables.cnn_digits: needs torch, which is not installed; pip install 'rung[torch]'"
    assert rc == 1 and reports == [] and err.strip() == f"rung.errors.InputError: {message}"
    assert final == {"error": f"InputError: {message}"}
