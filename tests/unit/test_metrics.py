"""The operator's metrics endpoint and probes, scraped over HTTP while the Study controller
runs against fake_kube's API: the counters move by what happened, the probes answer as
documented in rung.controller.metrics, and Trial Events go out once per transition."""

from __future__ import annotations

import copy
import functools
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_kube import FakeKube, api_error
from rung.cli import _parser, main
from rung.controller import metrics
from rung.controller.events import EventPoster, Mark, post_event, transitions
from rung.controller.leader import LeaderElection
from rung.controller.manager import Controller
from rung.controller.study import OperatorConfig
from rung.kube.api import Kube, path
from rung.kube.informer import STUDY_LABEL
from rung.records import DIVERGED, SegmentRecord, SegmentStatus, TrialRecord
from rung.runtime.kubernetes import POD_SELECTOR
from test_operator_faults import NS, study_body

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def endpoint():
    probes = metrics.Probes()
    server = metrics.serve(0, "127.0.0.1", probes=probes)
    yield f"http://127.0.0.1:{server.server_address[1]}", probes
    server.shutdown()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    code, text = get(base + "/metrics")
    assert code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# ---- probes --------------------------------------------------------------------------------

def test_liveness_is_the_registered_threads_alive(endpoint):
    base, probes = endpoint
    assert get(base + "/healthz") == (200, "ok\n")            # a standby runs none: live
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="rung-worker-0")
    worker.start()
    probes.watch(worker)
    assert get(base + "/healthz")[0] == 200
    stop.set()
    worker.join()
    assert get(base + "/healthz") == (503, "dead threads: rung-worker-0\n")
    probes.unwatch(worker)                                      # ended by design (a stop)
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/nope")[0] == 404


def test_readiness_a_standby_is_ready_a_leader_once_its_watches_synced(endpoint):
    base, probes = endpoint
    assert get(base + "/readyz") == (200, "standby\n")
    probes.leader = True
    try:
        assert get(base + "/readyz") == (503, "leader; watches not synced yet\n")   # kopf not started yet
        synced = threading.Event()
        probes.synced = synced.is_set
        assert get(base + "/readyz")[0] == 503
        synced.set()
        assert get(base + "/readyz") == (200, "leader\n")
    finally:
        probes.leader, probes.synced = False, None


def test_the_leader_gauge_follows_the_lease(endpoint, monkeypatch):
    base, _ = endpoint
    monkeypatch.setattr(metrics, "PROBES", metrics.Probes())
    kube = FakeKube()
    election = LeaderElection(kube, "ns", identity="a")
    assert election.acquire(threading.Event())
    assert value(scrape(base), "rung_leader") == 1 and metrics.PROBES.leader
    election.release()
    assert value(scrape(base), "rung_leader") == 0 and not metrics.PROBES.leader
    election.acquire(threading.Event())
    lost = threading.Event()
    kube.fail = 1.0                                       # it cannot renew: it steps down

    class Stop:
        def wait(self, seconds):
            return False

    election.clock = iter(range(0, 10_000, 5)).__next__
    election.keep(lost, Stop())
    assert lost.is_set() and value(scrape(base), "rung_leader") == 0


# ---- a Study run, scraped ----------------------------------------------------------------------

class Operator:
    """The operator's Controller (its caches fed by the fake instead of informers), stepping
    the Study as a worker would."""

    def __init__(self, kube: FakeKube):
        self.kube = kube
        self.controller = Controller(kube, OperatorConfig("img:1", "file:///ckpt", (NS,)))
        self.controller.events.close()   # the fake is single-threaded: Trial Events go out in the step
        self.controller.events = SimpleNamespace(put=functools.partial(post_event, kube), close=lambda: None)
        self.pod_events: list[tuple[str, str, str]] = []   # (kind, pod, phase) as the watch showed them
        on_change = self.controller.pods.on_change

        def seen(key, kind, obj):
            self.pod_events.append((kind, obj["metadata"]["name"], (obj.get("status") or {}).get("phase")))
            on_change(key, kind, obj)

        self.controller.pods.on_change = seen
        kube.subscribe("pods", POD_SELECTOR, self.controller.pods)
        kube.subscribe("trials", STUDY_LABEL, self.controller.trials)

    def run(self, name: str, steps: int = 3000) -> int:
        for n in range(1, steps):
            self.kube.tick()
            self.kube.deliver()
            self.controller.observe(copy.deepcopy(self.kube.get("studies", NS, name)))   # as a watch shows it
            self.controller.studies[(NS, name)].step()
            if (self.kube.get("studies", NS, name).get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return n
        raise AssertionError("the Study did not end")


def trial_events(kube: FakeKube) -> Counter:
    return Counter((o["involvedObject"]["name"], o["reason"]) for (k, _, _), o in kube.objects.items()
                   if k == "events" and o["involvedObject"]["kind"] == "Trial")


def test_a_study_run_moves_the_counters_by_what_happened(endpoint):
    base, _ = endpoint
    kube = FakeKube()
    kube.request("POST", path("studies", NS), body=study_body("m", "asha", 12, 3))
    before = scrape(base)
    op = Operator(kube)
    steps = op.run("m")
    after = scrape(base)
    study = dict(namespace=NS, study="m")

    trials = [o for (k, _, _), o in kube.objects.items() if k == "trials"]
    segments = [s for t in trials for s in t["status"]["segments"]]
    completed = sum(s["status"] == "completed" for s in segments)
    stopped = sum(s["status"] == "stopped" for s in segments)
    assert len(trials) == 12 and completed > 12 and not any(s["status"] == "failed" for s in segments)
    assert moved(before, after, "rung_segments_started_total", **study) == len(segments)
    assert moved(before, after, "rung_segments_finished_total", **study, outcome="succeeded") == completed
    assert moved(before, after, "rung_segments_finished_total", **study, outcome="stopped") == stopped
    assert moved(before, after, "rung_segments_finished_total", **study, outcome="failed") == 0
    assert moved(before, after, "rung_decision_seconds_count") == steps

    status = kube.get("studies", NS, "m")["status"]
    assert value(after, "rung_trials", **study, state="completed") == status["trials"]["completed"] > 0
    assert value(after, "rung_trials", **study, state="running") == 0

    # Completion to next pod: each pod seen ended before the last new pod waits for the next one.
    last_added = max(i for i, (kind, _, _) in enumerate(op.pod_events) if kind == "ADDED")
    first_end = {}
    for i, (kind, name, phase) in enumerate(op.pod_events):
        if kind != "DELETED" and phase in ("Succeeded", "Failed"):
            first_end.setdefault(name, i)
    answered = sum(i < last_added for i in first_end.values())
    assert answered > 10
    assert moved(before, after, "rung_completion_to_next_pod_seconds_count") == answered

    # One Event per transition: a start per segment, a success per completed one.
    events = trial_events(kube)
    for t in trials:
        name, segs = t["metadata"]["name"], t["status"]["segments"]
        assert events[(name, "SegmentStarted")] == len(segs)
        assert events[(name, "SegmentSucceeded")] == sum(s["status"] == "completed" for s in segs)

    op.controller.forget((NS, "m"))                       # the Study is deleted: its series go
    gone = scrape(base)
    assert not [k for k in gone if ("study", "m") in k[1]]


def test_lost_pods_count_as_lost_and_restarted_once_each(endpoint):
    base, _ = endpoint
    kube = FakeKube()
    kube.request("POST", path("studies", NS), body=study_body("l", "random", 3, 3))
    op = Operator(kube)
    before = scrape(base)
    while not [p for p in kube.pods("l") if p["status"]["phase"] == "Running"]:
        kube.tick()
        kube.deliver()
        op.controller.observe(copy.deepcopy(kube.get("studies", NS, "l")))
        op.controller.studies[(NS, "l")].step()
    victim = next(p for p in kube.pods("l") if p["status"]["phase"] == "Running")
    kube._delete_pod(victim["metadata"]["name"], NS)       # preempted
    op.run("l")
    after = scrape(base)
    assert moved(before, after, "rung_segments_finished_total", namespace=NS, study="l", outcome="lost") == 1
    assert moved(before, after, "rung_segments_started_total", namespace=NS, study="l") == 3 + 1
    trial = victim["metadata"]["labels"]["rung.dev/trial"]
    assert trial_events(kube)[(trial, "SegmentRestarted")] == 1


def test_reconcile_errors_by_cause(endpoint, monkeypatch):
    base, _ = endpoint
    kube = FakeKube()
    kube.request("POST", path("studies", NS), body=study_body("e", "asha", 6, 2))
    op = Operator(kube)
    op.controller.observe(copy.deepcopy(kube.get("studies", NS, "e")))
    study = op.controller.studies[(NS, "e")]
    real = kube.request
    failures = iter([api_error(429, "too many requests"), api_error(409, "the object has been modified"),
                     RuntimeError("a bug")])

    def failing(method, url, **kw):
        if method == "PATCH" and "/trials/" in url:
            failure = next(failures, None)
            if failure is not None:
                raise failure
        return real(method, url, **kw)

    monkeypatch.setattr(kube, "request", failing)
    before = scrape(base)
    for _ in range(20):
        kube.tick()
        kube.deliver()
        study.step()
    after = scrape(base)
    assert moved(before, after, "rung_reconcile_errors_total", cause="Throttled") == 1
    assert moved(before, after, "rung_reconcile_errors_total", cause="Conflict") == 1   # 409: StaleRecords
    assert moved(before, after, "rung_reconcile_errors_total", cause="Unexpected") == 1


def test_api_retries_and_throttling_are_counted_where_requests_fail(endpoint):
    base, _ = endpoint
    import urllib3

    answers = [api_error(429, "too many requests"), api_error(500, "etcdserver: request timed out"),
               urllib3.exceptions.ProtocolError("connection reset by peer"), api_error(404, "not found"), None]

    class Api:   # kubernetes.client.ApiClient's call_api, answering from the list
        def call_api(self, *args, **kwargs):
            answer = answers.pop(0)
            if answer is not None:
                raise answer

            class Resp:
                data = b'{"kind": "Pod"}'
            return Resp()

    kube = Kube(Api(), on_request=metrics.api_request)
    before = scrape(base)
    for _ in range(4):
        with pytest.raises(Exception):
            kube.request("GET", path("pods", NS, "p"))
    assert kube.request("POST", path("pods", NS), body={}) == {"kind": "Pod"}
    after = scrape(base)
    assert moved(before, after, "rung_api_requests_total", method="GET") == 4
    assert moved(before, after, "rung_api_requests_total", method="POST") == 1
    assert moved(before, after, "rung_api_throttled_total") == 1
    for cause in ("Throttled", "ApiServerError", "ApiUnreachable"):
        assert moved(before, after, "rung_api_retries_total", cause=cause) == 1
    assert sum(v for (name, _), v in after.items() if name == "rung_api_retries_total") - \
        sum(v for (name, _), v in before.items() if name == "rung_api_retries_total") == 3   # not the 404


def test_a_metrics_error_never_fails_a_step(monkeypatch, caplog):
    kube = FakeKube()
    kube.request("POST", path("studies", NS), body=study_body("b", "asha", 3, 3))
    op = Operator(kube)

    def broken(*args, **kwargs):
        raise ValueError("broken metrics")

    for metric in (metrics.TRIALS, metrics.SEGMENTS_STARTED, metrics.SEGMENTS_FINISHED):
        monkeypatch.setattr(metric, "labels", broken)
    monkeypatch.setattr(metrics.DECISION_SECONDS, "observe", broken)
    op.run("b")
    assert kube.get("studies", NS, "b")["status"]["phase"] == "Succeeded"
    assert "metrics: study_status failed (ignored)" in caplog.text


def test_next_pod_latency_waits_each_end_for_the_next_new_pod(endpoint):
    base, _ = endpoint
    now = [0.0]
    latency = metrics.NextPodLatency(clock=lambda: now[0])
    key = (NS, "q")

    def pod(name, phase):
        return {"metadata": {"name": name}, "status": {"phase": phase}}

    before = scrape(base)
    for t, kind, name, phase in [(1, "MODIFIED", "a", "Succeeded"), (2, "MODIFIED", "b", "Failed"),
                                 (3, "MODIFIED", "a", "Succeeded"),   # the same end again: not a new one
                                 (5, "ADDED", "c", "Pending"),        # answers a (4 s) and b (3 s)
                                 (6, "ADDED", "d", "Pending"),        # nothing waits
                                 (7, "MODIFIED", "a", "Succeeded"),   # still the old end
                                 (8, "DELETED", "a", "Succeeded"),    # recorded: out of the watch
                                 (9, "MODIFIED", "e", "Succeeded"), (10, "DELETED", "e", "Succeeded"),
                                 (12, "ADDED", "f", "Pending"),       # answers e (3 s), gone already
                                 (13, "DELETED", "b", "Failed")]:
        now[0] = t
        latency.pod_changed(key, kind, pod(name, phase))
    after = scrape(base)
    assert moved(before, after, "rung_completion_to_next_pod_seconds_count") == 3
    assert moved(before, after, "rung_completion_to_next_pod_seconds_sum") == pytest.approx(4 + 3 + 3)
    assert latency.ended == {} and latency.waiting == {}


def test_trial_transitions_one_event_each():
    def trial(*segments):
        return TrialRecord(0, "s-0", {"x": 1}, list(segments))

    seg = SegmentRecord(3.0, resume_from=1.0)
    (started,) = transitions(None, trial(seg), "loss", 1.0)
    assert (started.reason, started.message, started.started) == (
        "SegmentStarted", "segment 0: to budget 3, resuming from 1", True)
    running = Mark(1, SegmentStatus.RUNNING, 0)
    assert transitions(running, trial(seg), "loss", 1.0) == []          # a report saved: no news
    lost = SegmentRecord(3.0, restarts=1, losses=1)
    (restarted,) = transitions(running, trial(lost), "loss", 1.0)
    assert (restarted.type, restarted.reason, restarted.started, restarted.outcome) == (
        "Warning", "SegmentRestarted", True, "lost")
    done = SegmentRecord(3.0, status=SegmentStatus.COMPLETED, loss=0.25, reached=3.0)
    (succeeded,) = transitions(running, trial(done), "accuracy", -1.0)
    assert (succeeded.reason, succeeded.message) == ("SegmentSucceeded", "segment 0: reached 3, accuracy -0.25")
    diverged = SegmentRecord(3.0, status=SegmentStatus.COMPLETED, reached=3.0, reason=f"{DIVERGED}: loss was nan")
    assert transitions(running, trial(diverged), "loss", 1.0)[0].reason == "SegmentDiverged"
    failed = SegmentRecord(3.0, status=SegmentStatus.FAILED, reason="exited with code 1: boom")
    (f,) = transitions(running, trial(failed), "loss", 1.0)
    assert (f.type, f.reason, f.message, f.outcome) == ("Warning", "SegmentFailed",
                                                        "segment 0: exited with code 1: boom", "failed")
    stopped = SegmentRecord(3.0, status=SegmentStatus.STOPPED, reason="stopped by the scheduler")
    assert transitions(running, trial(stopped), "loss", 1.0)[0].reason == "SegmentStopped"
    assert transitions(Mark(1, SegmentStatus.FAILED, 0), trial(failed), "loss", 1.0) == []   # told already
    nxt = transitions(Mark(1, SegmentStatus.COMPLETED, 0), trial(done, SegmentRecord(9.0, resume_from=3.0)),
                      "loss", 1.0)
    assert [t.reason for t in nxt] == ["SegmentStarted"]                 # a promotion
    both = transitions(running, trial(done, SegmentRecord(9.0, resume_from=3.0)), "loss", 1.0)
    assert [(t.reason, t.message) for t in both] == [                      # its end and promotion, one write
        ("SegmentSucceeded", "segment 0: reached 3, loss 0.25"),
        ("SegmentStarted", "segment 1: to budget 9, resuming from 3")]


def test_operator_flags():
    args = _parser().parse_args(["operator"])
    assert (args.metrics_port, args.log_level, args.verbose) == (8080, "info", False)
    args = _parser().parse_args(["operator", "--metrics-port", "0", "--log-level", "warning", "--verbose"])
    assert (args.metrics_port, args.log_level, args.verbose) == (0, "warning", True)


def test_a_metrics_port_out_of_range_is_refused_before_anything_starts(capsys):
    assert main(["operator", "--metrics-port", "70000"]) == 2
    assert "error: --metrics-port: 70000 is not a port; give 1 to 65535, or 0 for none" in capsys.readouterr().err


class RecordingKube:
    """Thread-safe: records each Event POST (with when it came) and can refuse them."""

    def __init__(self, refuse=False):
        self.lock, self.posted, self.refuse = threading.Lock(), [], refuse

    def request(self, method, url, *, body=None, **kw):
        if self.refuse:
            raise api_error(503, "unavailable")
        with self.lock:
            self.posted.append(body["reason"])
        return {}


def trial_obj(name):
    return {"apiVersion": "rung.dev/v1alpha1", "kind": "Trial", "metadata": {"name": name, "namespace": NS, "uid": "u"}}


def test_trial_events_go_out_from_their_own_thread_in_order_at_a_bounded_rate_and_overflow_is_dropped():
    kube, release = RecordingKube(), threading.Event()
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        release.wait(5)   # holds the poster after its first Event until released

    poster = EventPoster(kube, rate=20, capacity=3, sleep=sleep)
    poster.put(trial_obj("t-0"), "Normal", "R0", "m")
    deadline = time.monotonic() + 5
    while not sleeps and time.monotonic() < deadline:   # the poster sent it and is held
        time.sleep(0.01)
    for i in range(1, 6):
        poster.put(trial_obj(f"t-{i}"), "Normal", f"R{i}", "m")   # never blocks the caller
    assert poster.dropped == 2   # three wait; the other two did not fit
    release.set()
    deadline = time.monotonic() + 5
    while len(kube.posted) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    poster.close()
    assert kube.posted == ["R0", "R1", "R2", "R3"]
    assert sleeps and all(s == pytest.approx(0.05) for s in sleeps)   # 20 a second at most


def test_an_event_the_api_refuses_is_logged_and_the_poster_goes_on():
    kube = RecordingKube(refuse=True)
    poster = EventPoster(kube, rate=1000)
    poster.put(trial_obj("t"), "Normal", "R", "m")
    time.sleep(0.1)
    kube.refuse = False
    poster.put(trial_obj("t"), "Normal", "S", "m")
    deadline = time.monotonic() + 5
    while not kube.posted and time.monotonic() < deadline:
        time.sleep(0.01)
    poster.close()
    assert kube.posted == ["S"] and not poster.thread.is_alive()
