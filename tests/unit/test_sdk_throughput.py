"""The SDK's throughput report and trial.gpus(): what a measured efficiency fit reads."""

import json

import pytest

from rung import trial
from rung.errors import InputError
from rung.trial import contract as C
from test_sdk import env  # noqa: F401  (the clean-environment fixture)

pytestmark = pytest.mark.unit


def lines(capsys):
    return [json.loads(l[len(C.REPORT_PREFIX):]) for l in capsys.readouterr().out.splitlines()]


def test_gpus_defaults_to_cpu_and_reads_the_variable(env):
    assert trial.gpus() == 0
    env(gpus=4)
    assert trial.gpus() == 4


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_bad_gpus_names_the_variable(env, value):
    env(gpus=value)
    with pytest.raises(InputError, match=C.ENV_GPUS):
        trial.gpus()


def test_a_throughput_report_carries_the_gpus(env, tmp_path, capsys):
    result = tmp_path / "result.json"
    env(result_file=result, gpus=2)
    trial.report(1, val_loss=0.5)     # without throughput: the line and file as before
    assert lines(capsys) == [{"step": 1, "metrics": {"val_loss": 0.5}}]
    assert json.loads(result.read_text()) == {"step": 1, "metrics": {"val_loss": 0.5}}
    trial.report(2, val_loss=0.25, throughput=812.5)
    body = {"step": 2, "metrics": {"val_loss": 0.25, "throughput": 812.5}, "gpus": 2}
    assert lines(capsys) == [body] and json.loads(result.read_text()) == body


def test_throughput_on_cpu_reports_zero_gpus(env, tmp_path, capsys):
    trial.report(1, throughput=100)
    assert lines(capsys) == [{"step": 1, "metrics": {"throughput": 100}, "gpus": 0}]


@pytest.mark.parametrize("value", [0, -3.0, float("inf"), float("nan")])
def test_throughput_must_be_positive_and_finite(env, value):
    with pytest.raises(InputError, match="throughput"):
        trial.report(1, loss=0.1, throughput=value)


def test_gpus_go_when_truncation_drops_the_throughput(env, tmp_path, capsys):
    result = tmp_path / "result.json"
    env(result_file=result, gpus=1)
    trial.report(1, loss=0.1, **{f"m{i:03}": 0.123456789 for i in range(300)}, throughput=5.0)
    body = json.loads(result.read_text())
    assert body["truncated"] and "throughput" not in body["metrics"] and "gpus" not in body
