"""Leader election on a Lease, against fake_kube's API and a clock of the test's own."""

import threading

import pytest

from fake_kube import FakeKube
from rung.controller.leader import LeaderElection

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def elector(kube, clock, name):
    return LeaderElection(kube, "ns", identity=name, duration=15, renew=3, deadline=10, clock=clock)


def test_one_holder_a_standby_that_waits_out_the_lease_and_a_release_that_hands_over_at_once():
    kube, clock = FakeKube(), Clock()
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")
    assert a._try() and not b._try()
    for _ in range(10):                      # a renews every 3 s: b never takes over
        clock.now += 3
        assert a._try() and not b._try()
    clock.now += 14                          # a stops renewing (dead); b waits the lease out
    assert not b._try()
    clock.now += 2
    assert b._try() and kube.get("leases", "ns", "rung-operator")["spec"]["holderIdentity"] == "b"
    assert not a._try()                      # a, back, finds the Lease taken
    b.release()
    assert a._try()                          # given up: no wait


def test_a_replica_restarted_under_its_name_takes_its_lease_back_at_once():
    kube, clock = FakeKube(), Clock()
    assert elector(kube, clock, "pod-1")._try()
    assert elector(kube, clock, "pod-1")._try()   # the same identity, a new process


def test_a_holder_that_cannot_renew_steps_down_before_anyone_can_take_over():
    kube, clock = FakeKube(), Clock()
    a = elector(kube, clock, "a")
    assert a._try()
    kube.fail = 1.0                          # every call fails from now on
    lost = threading.Event()
    waits = []

    class Stop:
        def wait(self, seconds):            # keep() sleeps through stop.wait: advance the clock instead
            waits.append(seconds)
            clock.now += seconds
            return len(waits) > 20

    a.keep(lost, Stop())
    assert lost.is_set() and 10 < clock.now <= 15   # stepped down after the deadline, within the lease


def test_a_sigterm_before_kopf_takes_the_signals_over_still_stops_the_leader_and_releases_its_lease(
        monkeypatch, tmp_path):
    """A rolling update can stop a replica the moment it becomes leader: the signal then
    reaches the operator's own handler, not kopf's, and must still stop kopf."""
    import os
    import signal

    import kopf

    import rung.controller.leader
    import rung.kube.api
    from rung.cli import main

    events = []

    class Election:
        def __init__(self, *args, **kwargs):
            pass

        def acquire(self, stop):
            return True

        def keep(self, lost, stop):
            while not stop.wait(0.05):
                pass

        def release(self):
            events.append("released")

    def run(stop_flag, **kwargs):   # kopf, before it has put its own signal handlers in
        os.kill(os.getpid(), signal.SIGTERM)
        events.append("stopped" if stop_flag.wait(5) else "still running after 5 s")

    monkeypatch.setattr(rung.controller.leader, "LeaderElection", Election)
    monkeypatch.setattr(rung.kube.api, "api_client", lambda: None)
    monkeypatch.setattr(kopf, "run", run)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(["operator", "--metrics-port", "0", "--checkpoint-root", f"file://{tmp_path}"]) == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert events == ["stopped", "released"]
