"""The pod runtime's decisions, against the in-memory API of fake_kube (the real API server
is in tests/operator)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fake_kube import FakeKube, api_error
from rung.kube.informer import ObjectCache
from rung.runtime.base import Ended, Outcome, Refused, Report, SegmentSpec
from rung.runtime.kubernetes import HANDLED_LABEL, POD_SELECTOR, KubernetesRuntime

pytestmark = pytest.mark.unit


def spec(trial="s-0", segment=0, attempt=0, study="s", **kw):
    return SegmentSpec(study=study, namespace="ns", trial=trial, index=0, segment=segment, params={"x": 1.5},
                       budget=3.0, resume_from=None, checkpoint_uri="file:///ck/ns/s/s-0",
                       command=["python", "-m", "t"], env={"A": "b"}, attempt=attempt, **kw)


def term(code, message="", reason=None):
    return {"exitCode": code, "message": message, "reason": reason or ("Completed" if code == 0 else "Error")}


def status(phase, terminated=None, waiting=None, reason=None, conditions=()):
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {"running": {}}
    return {"phase": phase, "reason": reason, "conditions": list(conditions),
            "containerStatuses": [{"state": state, "image": "img"}]}


DONE = status("Succeeded", term(0, json.dumps({"step": 3, "metrics": {"loss": 0.1}})))


class World:
    """The fake API, the operator's pod watch, and a runtime on them."""

    def __init__(self):
        self.clock = 0.0
        self.kube = FakeKube()
        self.pods = ObjectCache()
        self.kube.subscribe("pods", POD_SELECTOR, self.pods)
        self.runtime = self.new_runtime()

    def new_runtime(self, **kw):
        owner = {"apiVersion": "rung.dev/v1alpha1", "kind": "Trial", "name": "s-0", "uid": "u1"}
        return KubernetesRuntime(self.kube, self.pods, "ns", "s", default_image="img:1", owner=lambda t: owner,
                                 volumes=[({"name": "v", "hostPath": {"path": "/ck"}}, {"name": "v", "mountPath": "/ck"})],
                                 clock=lambda: self.clock, **kw)

    def pod(self, name):
        return self.kube.get("pods", "ns", name)

    def set(self, name, pod_status=None, **meta):
        pod = self.pod(name)
        new = {**pod, "metadata": {**pod["metadata"], **meta}, "status": pod_status or pod["status"]}
        self.kube._store("pods", new, "MODIFIED")
        self.kube.deliver()

    def poll(self, runtime=None):
        self.kube.deliver()
        return (runtime or self.runtime).poll()

    def end(self, runtime, trials):
        """Start the trials' pods and end them well; the runtime has told of their ends."""
        runtime.start_all([spec(trial=t, study=runtime.study) for t in trials])
        self.kube.deliver()
        for t in trials:
            self.set(f"{t}-s0", DONE)
        assert len(self.poll(runtime)) == len(trials)

    def finish(self, runtime, trials):
        """End the trials' pods and release them."""
        self.end(runtime, trials)
        runtime.release_all([f"{t}-s0" for t in trials])

    def kept(self):
        """The pods not being deleted."""
        return sorted(n for (kind, _, n), pod in self.kube.objects.items()
                      if kind == "pods" and not pod["metadata"].get("deletionTimestamp"))


@pytest.fixture
def w():
    return World()


def test_pod_manifest(w):
    w.runtime.start(spec(attempt=2, resources={"cpu": "100m", "memory": "64Mi"}, keep_best=2, objective="acc",
                         goal="maximize"))
    pod = w.pod("s-0-s0-r2")
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert pod["metadata"]["labels"] == {"rung.dev/study": "s", "rung.dev/trial": "s-0",
                                         "rung.dev/segment": "0", "rung.dev/attempt": "2"}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert pod["spec"]["restartPolicy"] == "Never" and c["image"] == "img:1"
    assert json.loads(env["RUNG_PARAMS"]) == {"x": 1.5} and env["RUNG_BUDGET"] == "3.0" and env["A"] == "b"
    assert (env["RUNG_KEEP_BEST"], env["RUNG_OBJECTIVE"], env["RUNG_OBJECTIVE_GOAL"]) == ("2", "acc", "maximize")
    assert env["RUNG_RESULT_FILE"] == c["terminationMessagePath"] == "/dev/termination-log"
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}
    assert c["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}, {"name": "v", "mountPath": "/ck"}]
    assert w.runtime.running() == {"s-0-s0-r2"}
    w.runtime.start(spec(trial="s-1", image="mine:2"))
    assert w.pod("s-1-s0")["spec"]["containers"][0]["image"] == "mine:2"   # the Study's own image wins


def test_trial_pods_pass_pod_security_restricted_by_default(w):
    w.runtime.start(spec())
    pod = w.pod("s-0-s0")["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    assert pod["automountServiceAccountToken"] is False and "hostNetwork" not in pod
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]   # the one writable place besides volumes
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/tmp"


def test_gpus_privileged_and_host_network_as_the_operator_allowed_them(w):
    runtime = w.new_runtime(gpu_resource="example.com/gpu")
    runtime.start(spec(gpus=2, privileged=True, host_network=True, resources={"cpu": "1"}))
    pod = w.pod("s-0-s0")["spec"]
    c = pod["containers"][0]
    assert c["resources"] == {"requests": {"cpu": "1", "example.com/gpu": "2"}, "limits": {"example.com/gpu": "2"}}
    assert c["securityContext"] == {"privileged": True} and pod["securityContext"] == {}
    assert pod["hostNetwork"] is True


def test_an_end_is_reported_until_released_then_the_pod_leaves_the_watch(w):
    w.runtime.start(spec())
    assert w.poll() == []
    w.kube.logs["s-0-s0"] = [("2026-01-01T00:00:01Z", "hello"),
                             ("2026-01-01T00:00:02Z", '@rung {"step": 1, "metrics": {"loss": 0.5}}'),
                             ("2026-01-01T00:00:03Z", '@rung {"step": 3, "metrics": {"loss": 0.2}}')]
    w.set("s-0-s0", status("Succeeded", term(0, json.dumps({"step": 3, "metrics": {"loss": 0.2}}))))
    events = w.poll()
    assert events[:2] == [Report("s-0", 0, 1.0, {"loss": 0.5}), Report("s-0", 0, 3.0, {"loss": 0.2})]
    assert events[2] == Ended("s-0", 0, Outcome.SUCCEEDED, 0, {"step": 3, "metrics": {"loss": 0.2}})
    reads = w.kube.calls
    assert w.poll() == events and w.kube.calls == reads   # again (not recorded yet), from memory
    w.runtime.release("s-0-s0")
    assert w.poll() == [] and w.runtime.running() == set()
    assert w.pod("s-0-s0")["metadata"]["labels"][HANDLED_LABEL] == "true"
    w.kube.deliver()
    assert "s-0-s0" not in w.pods.snapshot(("ns", "s"))


def test_a_result_with_its_curve_ends_the_segment_without_reading_the_log(w):
    w.runtime.start(spec())
    w.poll()
    result = {"step": 3, "metrics": {"loss": 0.2}, "curve": [[1, 0.5], [3, 0.2]]}
    w.set("s-0-s0", status("Succeeded", term(0, json.dumps(result))))
    calls = w.kube.calls
    assert w.poll() == [Ended("s-0", 0, Outcome.SUCCEEDED, 0, result)]
    assert w.kube.calls == calls   # no GET of the log


@pytest.mark.parametrize("pod_status,outcome,reason", [
    (status("Failed", term(3)), Outcome.FAILED, "exited with code 3"),
    (status("Failed", term(1, json.dumps({"step": 2, "error": "ValueError: lr"}))), Outcome.FAILED, "ValueError: lr"),
    (status("Failed", term(137, reason="OOMKilled")), Outcome.FAILED, "OOMKilled"),
    (status("Pending", waiting={"reason": "ErrImagePull", "message": "no such image"}), Outcome.FAILED, "ErrImagePull"),
    (status("Pending", waiting={"reason": "CreateContainerError", "message": "context deadline exceeded"}),
     Outcome.LOST, "CreateContainerError: context deadline exceeded"),
    (status("Pending", waiting={"reason": "CreateContainerError", "message": "exec: \"nope\": not found"}),
     Outcome.FAILED, "CreateContainerError"),
    # the kubelet's own watch of a Secret just created had not caught up: it is not the trial's fault
    (status("Pending", waiting={"reason": "CreateContainerConfigError",
                                "message": "failed to sync secret cache: timed out waiting for the condition"}),
     Outcome.LOST, "failed to sync secret cache"),
    (status("Pending", waiting={"reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}),
     Outcome.FAILED, 'secret "s3" not found'),
    (status("Failed", term(143), reason="Evicted"), Outcome.LOST, "Evicted"),
    (status("Failed", term(143), conditions=[{"type": "DisruptionTarget", "status": "True"}]), Outcome.LOST,
     "DisruptionTarget"),
    (status("Unknown", reason="NodeLost"), Outcome.LOST, "NodeLost"),
    (status("Failed", term(137), reason="DeadlineExceeded"), Outcome.FAILED, "timed out after 5 s"),
])
def test_endings_are_classified(w, pod_status, outcome, reason):
    w.runtime.start(spec(timeout=5))
    assert w.pod("s-0-s0")["spec"]["activeDeadlineSeconds"] == 5
    w.set("s-0-s0", pod_status)
    (event,) = w.poll()
    assert event.outcome == outcome and reason in event.reason
    if "ErrImagePull" in reason:
        assert w.pod("s-0-s0")["metadata"].get("deletionTimestamp")   # never left pulling forever


def test_a_deleted_pod_is_a_loss_and_a_stopped_one_is_stopped(w):
    w.runtime.start(spec(trial="s-0"))
    w.runtime.start(spec(trial="s-1"))
    w.poll()
    w.kube._remove("pods", "ns", "s-0-s0")          # someone deleted it (or its node went away)
    w.runtime.stop("s-1-s0")
    assert w.pod("s-1-s0")["metadata"].get("deletionTimestamp")
    w.kube._remove("pods", "ns", "s-1-s0")
    events = {e.trial: e for e in w.poll()}
    assert events["s-0"].outcome == Outcome.LOST and "deleted" in events["s-0"].reason
    assert events["s-1"].outcome == Outcome.STOPPED


def test_a_pod_being_deleted_by_someone_else_is_a_loss_once_it_has_stopped(w):
    w.runtime.start(spec())
    w.set("s-0-s0", status("Running", conditions=[{"type": "DisruptionTarget", "status": "True"}]),
          deletionTimestamp="now")
    assert w.poll() == []            # still training: a restart now would run beside it
    w.set("s-0-s0", status("Running", term(143)))
    (event,) = w.poll()
    assert event.outcome == Outcome.LOST


def test_creates_are_idempotent_invalid_pods_fail_and_refusals_hold_with_backoff(w):
    w.runtime.start(spec())
    w.runtime.start(spec())                    # an earlier life created it: 409, not a failure
    assert w.poll() == []
    real = w.kube._create
    w.kube._create = lambda kind, ns, body: (_ for _ in ()).throw(api_error(422, "spec.containers: Invalid"))
    w.runtime.start(spec(trial="s-1"))
    (event,) = w.poll()
    assert event.outcome == Outcome.FAILED and "cannot create pod s-1-s0: spec.containers: Invalid" in event.reason
    w.kube._create = lambda kind, ns, body: (_ for _ in ()).throw(
        api_error(403, 'pods "s-2-s0" is forbidden: exceeded quota: q, requested: pods=1, limited: pods=1'))
    with pytest.raises(Refused) as refused:
        w.runtime.start(spec(trial="s-2"))
    assert refused.value.cause == "QuotaExceeded" and "retrying in 1 s" in refused.value.line()
    calls = w.kube.calls
    with pytest.raises(Refused):
        w.runtime.start(spec(trial="s-2"))     # within the backoff: not even asked
    assert w.kube.calls == calls
    w.kube._create = real
    w.clock += 1.5
    w.runtime.start(spec(trial="s-2"))
    assert "s-2-s0" in w.runtime.running()


def test_a_restarted_runtime_finds_unrecorded_pods(w):
    w.runtime.start(spec())
    w.kube.deliver()
    fresh = w.new_runtime()                     # the operator restarted
    assert fresh.running() == {"s-0-s0"}
    w.set("s-0-s0", status("Succeeded", term(0, "{}")))
    assert [e.outcome for e in w.poll(fresh)] == [Outcome.SUCCEEDED]


def test_gone_looks_past_a_lagging_watch(w):
    w.kube.delay = 1.0                          # the watch delivers nothing
    w.kube.request("POST", "/api/v1/namespaces/ns/pods", body=w.runtime.pod(spec()))   # created by an earlier life
    assert w.runtime.running() == set()
    assert w.runtime.gone("s-0-s0") is False and "s-0-s0" in w.runtime.running()
    assert w.runtime.gone("s-0-s0-r1") is True


def test_live_reports_are_read_incrementally_and_replayed_on_request(w):
    runtime = w.new_runtime(live_reports=True)
    runtime.start(spec())
    w.set("s-0-s0", status("Running"))
    w.kube.logs["s-0-s0"] = [("2026-01-01T00:00:01Z", '@rung {"step": 1, "metrics": {"loss": 0.5}}')]
    assert [e.step for e in w.poll(runtime)] == [1.0]
    w.kube.logs["s-0-s0"].append(("2026-01-01T00:00:02Z", '@rung {"step": 2, "metrics": {"loss": 0.4}}'))
    assert w.poll(runtime) == []                # not due yet
    w.clock += 5
    assert [e.step for e in w.poll(runtime)] == [2.0]
    assert [e.step for e in runtime.poll(replay=True)] == [1.0, 2.0]


class SideBySide:
    """Wraps the fake API: calls are serialised (the fake is single-threaded), and each
    waits until another is in flight, so only calls made side by side get through fast."""

    def __init__(self, kube, refuse: str | None = None):
        self.kube, self.refuse = kube, refuse
        self.lock, self.inflight, self.most = threading.Lock(), 0, 0
        self.both = threading.Barrier(2)

    def request(self, method, url, **kw):
        with self.lock:
            self.inflight += 1
            self.most = max(self.most, self.inflight)
        try:
            self.both.wait(timeout=2)
        except threading.BrokenBarrierError:
            self.both.reset()
        try:
            with self.lock:
                body = kw.get("body") or {}
                if self.refuse and self.refuse in str(body.get("metadata", {}).get("name", "")):
                    raise api_error(403, "pods is forbidden: exceeded quota: q, requested: pods=1, limited: pods=1")
                return self.kube.request(method, url, **kw)
        finally:
            with self.lock:
                self.inflight -= 1


def test_with_a_pool_pods_are_created_and_labelled_side_by_side_and_a_refusal_names_its_pod(w):
    api = SideBySide(w.kube, refuse="s-3")
    with ThreadPoolExecutor(4) as pool:
        runtime = w.new_runtime(pool=pool)
        runtime.kube = api
        with pytest.raises(Refused) as refused:
            runtime.start_all([spec(trial=f"s-{i}") for i in range(4)])
        assert api.most >= 2                                   # side by side
        assert refused.value.cause == "QuotaExceeded" and "(pod s-3-s0)" in refused.value.line()
        assert runtime.running() == {"s-0-s0", "s-1-s0", "s-2-s0"}   # the others were created
        w.kube.deliver()
        for i in range(3):
            w.set(f"s-{i}-s0", status("Succeeded", term(0, json.dumps({"step": 3, "metrics": {"loss": 0.1}}))))
        assert len(runtime.poll()) == 3
        api.most = 0
        runtime.release_all([f"s-{i}-s0" for i in range(3)])
    assert api.most >= 2                                       # the labels, side by side too
    assert all(w.pod(f"s-{i}-s0")["metadata"]["labels"][HANDLED_LABEL] == "true" for i in range(3))


class LabelsWait:
    """The fake API, with pod label patches held until `go` is set; the first one fails."""

    def __init__(self, kube):
        self.kube, self.go, self.failed, self.answered = kube, threading.Event(), False, 0

    def __getattr__(self, name):
        return getattr(self.kube, name)

    def request(self, method, url, **kw):
        if method != "PATCH" or "/pods/" not in url:
            return self.kube.request(method, url, **kw)
        try:
            assert self.go.wait(5)
            if not self.failed:
                self.failed = True
                raise api_error(500, "etcdserver: request timed out")
            return self.kube.request(method, url, **kw)
        finally:
            self.answered += 1


def test_with_a_pool_a_release_does_not_wait_for_its_labels_and_a_failed_one_goes_again(w):
    with ThreadPoolExecutor(4) as pool:
        runtime = w.new_runtime(pool=pool)
        w.end(runtime, ["s-0", "s-1"])
        runtime.kube = api = LabelsWait(w.kube)
        runtime.release_all(["s-0-s0", "s-1-s0"])
        assert api.answered == 0                                 # it returned with both labels held
        assert w.poll(runtime) == [] and runtime.running() == set()   # recorded: never told again
        api.go.set()
        for _ in range(100):                                     # the next polls take them in
            w.poll(runtime)
            if all(w.pod(f"s-{i}-s0")["metadata"]["labels"].get(HANDLED_LABEL) for i in range(2)):
                break
            threading.Event().wait(0.02)
        assert api.failed and all(w.pod(f"s-{i}-s0")["metadata"]["labels"][HANDLED_LABEL] == "true" for i in range(2))
        w.poll(runtime)
        assert runtime.running() == set() and not runtime._released   # out of the watch: forgotten


class FailsOnce:
    """The fake API, with the first DELETE of one pod failing."""

    def __init__(self, kube, pod):
        self.kube, self.pod = kube, pod

    def __getattr__(self, name):
        return getattr(self.kube, name)

    def request(self, method, url, **kw):
        if method == "DELETE" and url.endswith(f"/{self.pod}"):
            self.pod = None
            raise api_error(500, "etcdserver: request timed out")
        return self.kube.request(method, url, **kw)


def test_a_study_keeps_its_newest_finished_pods_and_deletes_older_ones_also_those_an_earlier_operator_left(w):
    earlier = w.new_runtime()                         # keeps every pod
    w.finish(earlier, ["s-0", "s-1", "s-2"])
    w.poll(earlier)
    assert w.kept() == ["s-0-s0", "s-1-s0", "s-2-s0"]
    runtime = w.new_runtime(keep_finished=2)          # the operator restarted with a limit
    calls = w.kube.calls
    assert w.poll(runtime) == [] and w.kube.calls == calls   # no listing before its first pods
    runtime.start(spec(trial="s-9"))                  # running: never touched
    w.finish(runtime, ["s-3", "s-4"])
    w.poll(runtime)
    assert w.kept() == ["s-3-s0", "s-4-s0", "s-9-s0"]
    runtime.kube = FailsOnce(w.kube, "s-3-s0")
    w.finish(runtime, ["s-5"])
    assert w.kept() == ["s-3-s0", "s-4-s0", "s-5-s0", "s-9-s0"]   # the failed delete is tried again
    w.poll(runtime)
    assert w.kept() == ["s-4-s0", "s-5-s0", "s-9-s0"]
    assert [e.outcome for e in w.poll(runtime)] == [] and runtime.running() == {"s-9-s0"}


class Later:
    """A cleanup executor that runs what it is given only when told to."""

    def __init__(self):
        self.tasks = []

    def submit(self, fn, *args):
        self.tasks.append((fn, args))

    def run(self):
        tasks, self.tasks = self.tasks, []
        for fn, args in tasks:
            fn(*args)


def test_a_restarted_runtime_lists_and_deletes_handled_pods_off_the_step_and_counts_each_once(w):
    lists = []
    real_list_all = w.kube.list_all
    w.kube.list_all = lambda url, query, metadata_only=False: (lists.append(metadata_only), real_list_all(
        url, query, metadata_only))[1]
    w.finish(w.new_runtime(), ["s-0", "s-1", "s-2"])          # an earlier operator's, kept
    cleanup = Later()
    runtime = w.new_runtime(keep_finished=2, cleanup=cleanup)
    w.finish(runtime, ["s-3"])
    w.finish(runtime, ["s-4"])                                  # both labelled before the listing runs
    assert lists == [] and len(w.kept()) == 5                   # the steps neither listed nor deleted
    cleanup.run()
    assert lists == [True]                                    # names and times are all it reads
    assert w.kept() == ["s-3-s0", "s-4-s0"]
    w.finish(runtime, ["s-5"])
    cleanup.run()
    assert w.kept() == ["s-4-s0", "s-5-s0"]                     # s-4 counted once, so two are kept


def test_a_study_that_ended_waits_for_its_last_labels_and_keeps_only_its_newest_pods(w):
    with ThreadPoolExecutor(4) as pool:
        runtime = w.new_runtime(pool=pool, keep_finished=1)
        w.finish(runtime, ["s-0", "s-1", "s-2"])                 # the Study's last step
        runtime.settle()                                         # no poll follows
        assert len(w.kept()) == 1


def test_a_backlog_of_handled_labels_never_holds_up_new_pods(w):
    gate = threading.Event()
    real = w.kube.request

    def request(method, url, **kw):   # handled labels hang (a loaded API server), all else answers
        if method == "PATCH" and "/pods/" in url:
            gate.wait(10)
        return real(method, url, **kw)

    with ThreadPoolExecutor(2) as pool, ThreadPoolExecutor(1) as labeller:
        runtime = w.new_runtime(pool=pool, labeller=labeller)
        w.kube.request = request
        w.finish(runtime, ["s-0", "s-1", "s-2"])   # recorded: three labels go out, and hang
        started = threading.Thread(target=runtime.start_all, args=([spec(trial="s-3"), spec(trial="s-4")],))
        started.start()
        started.join(5)
        try:
            assert not started.is_alive() and {"s-3-s0", "s-4-s0"} <= runtime.running()
        finally:
            gate.set()
        runtime.settle()
        assert all(w.pod(f"s-{i}-s0")["metadata"]["labels"].get(HANDLED_LABEL) for i in range(3))


def test_old_handled_pods_are_deleted_side_by_side(w):
    together = threading.Barrier(2, timeout=5)   # passes only with deletes in flight two at once
    real = w.kube.request

    def request(method, url, **kw):
        if method == "DELETE":
            together.wait()
        return real(method, url, **kw)

    w.finish(w.new_runtime(), ["s-0", "s-1", "s-2", "s-3"])   # an earlier operator's, kept
    w.kube.request = request
    with ThreadPoolExecutor(2) as pool, ThreadPoolExecutor(3) as labeller:
        runtime = w.new_runtime(pool=pool, labeller=labeller, keep_finished=1)
        w.finish(runtime, ["s-4"])   # the first trim: s-0 to s-3 go
        runtime.settle()
    assert w.kept() == ["s-4-s0"]


def test_the_operators_cleanup_trims_several_studies_at_once(w):
    from rung.controller.manager import Controller
    from rung.controller.study import OperatorConfig

    together = threading.Barrier(2, timeout=5)   # passes only with two Studies' deletes in flight at once
    real = w.kube.request

    def request(method, url, **kw):
        if method == "DELETE":
            together.wait()
        return real(method, url, **kw)

    controller = Controller(w.kube, OperatorConfig("img:1", "file:///ck", api_concurrency=8))
    with controller.cleanup as cleanup:
        a = w.new_runtime(keep_finished=1, cleanup=cleanup)
        b = w.new_runtime(keep_finished=1, cleanup=cleanup)
        b.study = "t"
        w.finish(a, ["s-0"])
        w.finish(b, ["t-0"])
        cleanup.submit(lambda: None).result()   # both first trims (their listings) done
        w.kube.request = request
        w.finish(a, ["s-1"])   # each Study deletes its one older pod
        w.finish(b, ["t-1"])
    assert w.kept() == ["s-1-s0", "t-1-s0"]
