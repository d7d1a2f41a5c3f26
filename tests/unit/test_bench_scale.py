"""bench/scale's completion-to-successor measure, with the API server faked: a successor the
operator creates before the stand-in's status write returns still pairs with its completion."""

import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench/scale"))
import kwok  # noqa: E402
import scale  # noqa: E402

pytestmark = pytest.mark.unit

KEY = ("ns", "s0")


def pod(name: str, phase: str, segment: int = 0) -> dict:
    return {"metadata": {"name": name, "namespace": "ns",
                         "labels": {kwok.TRIAL_LABEL: name.rsplit("-s", 1)[0], kwok.SEGMENT_LABEL: str(segment)}},
            "spec": {"nodeName": "kwok-gpu-0", "containers": [{
                "image": "trial", "resources": {"limits": {"nvidia.com/gpu": "1"}},
                "env": [{"name": "RUNG_BUDGET", "value": "1"},
                        {"name": "RUNG_PARAMS", "value": '{"x0": 0.1, "x1": 0.2, "x2": 0.3, "x3": 0.4, '
                                                         '"x4": 0.5, "x5": 0.6}'}]}]},
            "status": {"phase": phase}}


class FastOperator:
    """An API server whose watch shows the status write, and the operator's successor pod,
    before the write's reply reaches the stand-in (as on a loaded server)."""

    def __init__(self):
        self.finisher = None

    def request(self, method, url, **kwargs):
        assert method == "PATCH" and url.endswith("/s0-0-s0/status")
        self.finisher._on_change(KEY, "MODIFIED", pod("s0-0-s0", "Succeeded"))
        self.finisher._on_change(KEY, "ADDED", pod("s0-1-s0", "Pending"))
        return {}


def test_a_successor_seen_before_the_status_write_returns_pairs_with_its_completion():
    kube = FastOperator()
    finisher = kube.finisher = kwok.Finisher(kube, unit_seconds=0.0, budget_max=27, stop=threading.Event(),
                                             namespace="ns")
    finisher._on_change(KEY, "ADDED", pod("s0-0-s0", "Pending"))
    finisher._on_change(KEY, "MODIFIED", pod("s0-0-s0", "Running"))
    finisher.finish_due()

    (began, delay, key, ended, successor), = scale.pairs(finisher.completed, finisher.created)
    assert (key, ended, successor) == (KEY, "s0-0-s0", "s0-1-s0")
    assert 0 <= delay < 0.1
    assert finisher.reached == {"s0-0": 1.0} and finisher.running == {}


def test_each_creation_takes_the_oldest_completion_of_its_study_not_yet_followed():
    other = ("ns", "s1")
    completed = [(1.0, KEY, "a"), (2.0, KEY, "b"), (2.5, other, "c")]
    created = [(0.5, KEY, "first"), (1.5, KEY, "x"), (3.0, other, "y"), (4.0, KEY, "z")]
    assert scale.pairs(completed, created) == [(1.0, 0.5, KEY, "a", "x"), (2.5, 0.5, other, "c", "y"),
                                               (2.0, 2.0, KEY, "b", "z")]


def test_a_pod_first_seen_in_a_relist_counts_as_created():
    finisher = kwok.Finisher(FastOperator(), unit_seconds=0.0, budget_max=27, stop=threading.Event(), namespace="ns")
    finisher._on_change(KEY, "ADDED", pod("s0-0-s0", "Pending"))
    finisher._on_change(KEY, "MODIFIED", pod("s0-0-s0", "Running"))
    finisher._on_change(KEY, "MODIFIED", pod("s0-1-s0", "Pending"))   # created while the watch was down
    assert [name for _, _, name in finisher.created] == ["s0-0-s0", "s0-1-s0"]
