"""The operator's API pool: a step's records and pods go before finished pods' labels and
deletes (its background lane), which run only while the steps leave half the pool free."""

from __future__ import annotations

import threading

import pytest

from fake_kube import FakeKube
from rung.controller.api_pool import ApiPool
from rung.controller.manager import Controller
from rung.controller.study import OperatorConfig

pytestmark = pytest.mark.unit


def test_labels_and_deletes_wait_while_the_steps_calls_fill_half_the_pool():
    controller = Controller(FakeKube(), OperatorConfig("img:1", "file:///ck", api_concurrency=4))
    gate, ran = threading.Event(), threading.Event()
    try:
        steps = [controller.pool.submit(gate.wait, 10) for _ in range(2)]   # records and pods, answering slowly
        label = controller.labeller.submit(ran.set)
        assert not ran.wait(0.5)   # two of four threads free: the label waits
        gate.set()
        assert all(f.result(5) for f in steps)
        label.result(5)
    finally:
        gate.set()
        controller.pool.shutdown()


def test_a_steps_call_goes_before_labels_submitted_earlier():
    pool = ApiPool(1, 1)
    gate, order = threading.Event(), []
    try:
        busy = pool.submit(gate.wait, 10)
        later = [pool.background.submit(order.append, "label") for _ in range(2)]
        first = pool.submit(order.append, "pod")
        gate.set()
        for f in [busy, first, *later]:
            f.result(5)
        assert order == ["pod", "label", "label"]
    finally:
        gate.set()
        pool.shutdown()


def test_background_calls_run_a_few_at_a_time_and_shutdown_cancels_what_waits():
    pool = ApiPool(8, 2)
    gate, together, peak, lock = threading.Event(), [0], [0], threading.Lock()

    def label():
        with lock:
            together[0] += 1
            peak[0] = max(peak[0], together[0])
        gate.wait(10)
        with lock:
            together[0] -= 1

    labels = [pool.background.submit(label) for _ in range(6)]
    threading.Event().wait(0.3)
    assert peak[0] == 2
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert sum(f.cancelled() for f in labels) == 4
    with pytest.raises(RuntimeError):
        pool.submit(print)
