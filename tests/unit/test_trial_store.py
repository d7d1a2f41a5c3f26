"""Trial objects as records: optimistic concurrency, lost answers, foreign Trials, outside
changes, and the Study's status (against fake_kube's in-memory API)."""

from __future__ import annotations

import copy
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fake_kube import FakeKube, api_error
from rung.api import parse_study
from rung.controller.trial_store import StaleRecords, TrialStore
from rung.kube.api import path
from rung.records import SegmentRecord, SegmentStatus, TrialRecord
from rung.runtime.loop import StudyState

pytestmark = pytest.mark.unit

BODY = {"apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"objective": {"metric": "loss"}, "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
                 "algorithm": {"name": "asha"}, "budget": {"min": 1, "max": 9},
                 "limits": {"maxTrials": 5}, "trial": {"command": ["train"]}}}


@pytest.fixture
def kube():
    kube = FakeKube()
    kube.request("POST", path("studies", "ns"), body=BODY)
    return kube


def store(kube):
    s = TrialStore(kube, parse_study(kube.get("studies", "ns", "s")), lambda: kube.get("studies", "ns", "s"))
    s.load()
    return s


def trial(index=0, x=0.5, *segments):
    return TrialRecord(index, f"s-{index}", {"x": x}, list(segments) or [SegmentRecord(1.0)])


def test_a_write_over_someone_elses_change_is_refused_and_erases_nothing(kube):
    a, b = store(kube), store(kube)
    a.save(trial())
    b.load()
    done = trial(0, 0.5, SegmentRecord(1.0, status=SegmentStatus.COMPLETED, loss=0.2, reached=1.0))
    a.save(done)                                              # a records the result
    with pytest.raises(StaleRecords):
        b.save(trial(0, 0.5, SegmentRecord(1.0, restarts=1)))   # b still thinks it runs
    assert kube.get("trials", "ns", "s-0")["status"]["segments"][0]["status"] == "completed"
    assert a.changed() is False and b.changed() is False   # no watch feeds them here


def test_a_lost_answer_to_a_create_is_adopted_but_other_params_are_never_overwritten(kube):
    s = store(kube)

    def answer_lost(before):
        if not before:
            raise api_error(504, "the answer never came")

    kube._maybe_fail = answer_lost                        # the create happens, its answer is lost
    with pytest.raises(Exception):
        s.save(trial())
    del kube._maybe_fail
    fresh = store(kube)
    assert [t.name for t in fresh.load()] == ["s-0"]      # created, but its first segment never recorded
    fresh.uids.clear()                                    # as if it had not seen it: create again
    fresh.save(trial())                                   # 409, same params: adopted
    assert kube.get("trials", "ns", "s-0")["status"]["segments"][0]["budget"] == 1.0
    fresh.uids.clear()
    with pytest.raises(StaleRecords):
        fresh.save(trial(0, 0.9))                         # 409, other params: not ours to change
    assert kube.get("trials", "ns", "s-0")["spec"]["params"] == {"x": 0.5}


def test_trials_of_an_earlier_study_of_the_same_name_are_not_records(kube):
    kube.request("POST", path("trials", "ns"), body={
        "apiVersion": "rung.dev/v1alpha1", "kind": "Trial",
        "metadata": {"name": "s-3", "namespace": "ns", "labels": {"rung.dev/study": "s"},
                     "ownerReferences": [{"uid": "gone-study", "kind": "Study", "name": "s"}]},
        "spec": {"study": "s", "index": 3, "params": {"x": 0.1}}})
    assert store(kube).load() == []


def test_new_trials_are_created_while_the_others_statuses_are_written(kube):
    """save_all with a pool: a new Trial's create does not wait for the writes of the
    Trials that exist (a step's results), nor they for it."""
    s = TrialStore(kube, parse_study(kube.get("studies", "ns", "s")), lambda: kube.get("studies", "ns", "s"),
                   pool=ThreadPoolExecutor(4))
    s.load()
    s.save(trial(0))
    written, creates = threading.Event(), []
    request = kube.request

    def traced(method, url, **kw):
        if method == "POST" and url.endswith("/trials"):
            creates.append(written.wait(2))   # True: trial 0's result went out meanwhile
        out = request(method, url, **kw)
        written.set() if method == "PATCH" and url.endswith("/s-0/status") else None
        return out

    kube.request = traced
    s.save_all([trial(0, 0.5, SegmentRecord(1.0, status=SegmentStatus.COMPLETED, loss=0.2, reached=1.0)), trial(1)])
    assert creates == [True]
    assert kube.get("trials", "ns", "s-0")["status"]["phase"] == "Succeeded"
    assert kube.get("trials", "ns", "s-1")["status"]["phase"] == "Running"


def test_new_trials_are_created_side_by_side(kube):
    """save_all with a pool: a step's new Trials are created at once, not one after the
    other (a Study's rate of new trials is not bounded by one create's latency); one whose
    create fails is raised, while the others are written."""
    s = TrialStore(kube, parse_study(kube.get("studies", "ns", "s")), lambda: kube.get("studies", "ns", "s"),
                   pool=ThreadPoolExecutor(4))
    s.load()
    together = threading.Barrier(3, timeout=2)
    request = kube.request

    def traced(method, url, **kw):
        if method == "POST" and url.endswith("/trials"):
            together.wait()   # breaks unless all three creates are in flight at once
            if kw["body"]["metadata"]["name"] == "s-1":
                raise api_error(403, "refused by an admission policy")
        return request(method, url, **kw)

    kube.request = traced
    with pytest.raises(Exception, match="admission policy"):
        s.save_all([trial(0), trial(1), trial(2)])
    assert sorted(t.index for t in store(kube).load()) == [0, 2]


def test_outside_changes_are_told_from_our_own_writes(kube):
    s = store(kube)
    s.save(trial())
    ours = kube.get("trials", "ns", "s-0")
    assert s.trial_changed("MODIFIED", ours) is False      # the watch echoes our own write: no step
    assert s.changed() is False
    kube.request("PATCH", path("trials", "ns", "s-0", "status"), merge_patch=True,
                 body={"status": {"phase": "Failed"}})     # someone else writes
    assert s.trial_changed("MODIFIED", kube.get("trials", "ns", "s-0")) is True
    assert s.changed() is True
    assert s.trial_changed("DELETED", ours) is True        # kubectl delete trial
    assert s.changed() is True


def test_the_study_status_holds_counts_the_next_number_and_why_it_is_held(kube):
    s = store(kube)
    s.save(trial(0, 0.5, SegmentRecord(1.0, status=SegmentStatus.COMPLETED, loss=0.2, reached=1.0)))
    s.save(trial(1))
    s.save_status({"state": StudyState.RUNNING, "reason": "", "elapsed": 3.0, "next_index": 4,
                   "holds": {"Runtime": {"reason": "QuotaExceeded", "message": "a ResourceQuota refuses trial pods"}}})
    status = kube.get("studies", "ns", "s")["status"]
    assert status["nextIndex"] == 4 and status["trials"]["completed"] == 1 and status["trials"]["running"] == 1
    held = next(c for c in status["conditions"] if c["type"] == "Held")
    assert (held["status"], held["reason"]) == ("True", "QuotaExceeded")
    assert s.load_status()["next_index"] == 4
    s.save_status({"state": StudyState.RUNNING, "reason": "", "elapsed": 4.0, "next_index": 4, "holds": {}})
    held = next(c for c in kube.get("studies", "ns", "s")["status"]["conditions"] if c["type"] == "Held")
    assert (held["status"], held["reason"]) == ("False", "Resumed")


def test_a_status_write_of_progress_only_waits_its_interval_and_a_phase_or_condition_change_goes_at_once(kube):
    now, writes = [0.0], []
    request = kube.request

    def counting(method, url, **kw):
        if method == "PATCH" and url.endswith("/studies/s/status"):
            writes.append(now[0])
        return request(method, url, **kw)

    kube.request = counting
    s = TrialStore(kube, parse_study(kube.get("studies", "ns", "s")), lambda: kube.get("studies", "ns", "s"),
                   status_every=1.0, clock=lambda: now[0])
    s.load()

    def status(state=StudyState.RUNNING, holds=None):
        return {"state": state, "reason": "", "elapsed": now[0], "next_index": 2, "holds": holds or {}}

    def completed():
        return kube.get("studies", "ns", "s")["status"]["trials"]["completed"]

    s.save(trial(0))
    assert s.save_status(status()) is True                    # the first write goes at once
    s.save(trial(0, 0.5, SegmentRecord(1.0, status=SegmentStatus.COMPLETED, loss=0.2, reached=1.0)))
    now[0] = 0.4
    assert s.save_status(status()) is False and completed() == 0 and s.status_due() == pytest.approx(0.6)
    held = {"Runtime": {"reason": "QuotaExceeded", "message": "a ResourceQuota refuses trial pods"}}
    now[0] = 0.5
    assert s.save_status(status(holds=held)) is True and completed() == 1   # a condition: at once
    s.save(trial(1))
    now[0] = 1.2
    assert s.save_status(status(holds=held)) is False         # progress only, 0.7 s after the last write
    now[0] = 1.5
    assert s.save_status(status(holds=held)) is True and s.status_due() == 1.0
    assert kube.get("studies", "ns", "s")["status"]["trials"]["running"] == 1
    s.save(trial(1, 0.5, SegmentRecord(1.0, status=SegmentStatus.COMPLETED, loss=0.1, reached=1.0)))
    now[0] = 1.6
    assert s.save_status(status(StudyState.SUCCEEDED, held)) is True       # the phase: at once
    assert kube.get("studies", "ns", "s")["status"]["phase"] == "Succeeded" and completed() == 2
    assert writes == [0.0, 0.5, 1.5, 1.6]


def test_the_controller_steps_again_to_write_a_status_it_put_off_without_waiting_for_news():
    from rung.controller.study import OperatorConfig, StudyController
    from rung.kube.informer import ObjectCache
    from rung.runtime.kubernetes import POD_SELECTOR
    from test_operator_faults import NS, study_body

    kube, pods, now = FakeKube(random.Random(1), pace=1.0), ObjectCache(), [0.0]
    kube.subscribe("pods", POD_SELECTOR, pods)
    body = study_body("r", "random", 3, 1)
    body["spec"]["budget"] = {"min": 1, "max": 1}
    kube.request("POST", path("studies", NS), body=body)
    study = StudyController(kube, pods, OperatorConfig("img:1", "file:///ckpt", (NS,), interval=1.0),
                            copy.deepcopy(kube.get("studies", NS, "r")), clock=lambda: now[0])
    study.step()                                              # trial 0 starts; the first status write
    for _ in range(3):                                        # Pending -> Running -> step 1 -> Succeeded
        kube.tick()
        kube.deliver()
    now[0] = 0.3
    delay = study.step()                                      # 0 recorded, 1 started, 0.3 s after the write
    assert kube.get("trials", NS, "r-0")["status"]["phase"] == "Succeeded"
    assert kube.get("studies", NS, "r")["status"]["trials"]["completed"] == 0   # put off...
    assert delay == pytest.approx(0.7)                        # ...and due in 0.7 s, not at the next resync
    now[0] += delay
    study.step()                                              # nothing new happened: only the status
    assert kube.get("studies", NS, "r")["status"]["trials"] == {
        "total": 2, "running": 1, "completed": 1, "failed": 0, "stopped": 0}


def test_a_first_load_takes_the_trial_watchs_first_list_only_while_nothing_changed_since(kube):
    from rung.kube.informer import STUDY_LABEL, FirstList, ObjectCache, metadata_only

    s = store(kube)
    s.save_all([trial(0, 0.1), trial(1, 0.2), trial(2, 0.3)])
    watched = ObjectCache(keep=metadata_only)

    def restarted(change=None):
        """A new operator: its Trial watch's first LIST (whole), then maybe a change it hears
        of before the Study's first load; the Trial LISTs that load makes."""
        first = FirstList(watched)
        kube.subscribe("trials", STUDY_LABEL, watched)
        first.keep(kube.list_all(path("trials", "ns"), {"labelSelector": STUDY_LABEL})[0])
        if change:
            change()
            kube.deliver()
        kube.watchers = []
        lists = []
        real = kube.list_all
        kube.list_all = lambda url, query, metadata_only=False: (lists.append(url), real(url, query, metadata_only))[1]
        new = TrialStore(kube, parse_study(kube.get("studies", "ns", "s")), lambda: kube.get("studies", "ns", "s"),
                         listed=lambda: first.take(("ns", "s")))
        try:
            loaded, again = new.load(), new.load()
        finally:
            kube.list_all = real
        return [(t.index, t.config["x"], t.current.status) for t in loaded], lists, again == loaded

    assert restarted() == ([(0, 0.1, SegmentStatus.RUNNING), (1, 0.2, SegmentStatus.RUNNING),
                            (2, 0.3, SegmentStatus.RUNNING)], [path("trials", "ns")], True)   # the reload lists
    ended = trial(1, 0.2, SegmentRecord(1.0, status=SegmentStatus.COMPLETED, loss=0.5, reached=1.0))
    loaded, lists, _ = restarted(lambda: s.save(ended))   # written after the first list: it is stale
    assert loaded[1] == (1, 0.2, SegmentStatus.COMPLETED) and lists == [path("trials", "ns")] * 2
    loaded, lists, _ = restarted(lambda: s.save(trial(3, 0.4)))   # a Trial it did not list
    assert [t[0] for t in loaded] == [0, 1, 2, 3] and len(lists) == 2
    gone = kube.get("trials", "ns", "s-0")["metadata"]["name"]
    loaded, lists, _ = restarted(lambda: kube.request("DELETE", path("trials", "ns", gone)))
    assert [t[0] for t in loaded] == [1, 2, 3] and len(lists) == 2


def test_a_first_list_no_study_took_is_dropped_after_a_while():
    from rung.kube.informer import FirstList, ObjectCache

    now = [0.0]
    cache = ObjectCache()
    first = FirstList(cache, keep_for=60, clock=lambda: now[0])
    obj = {"metadata": {"name": "t", "namespace": "ns", "resourceVersion": "5", "labels": {"rung.dev/study": "s"}}}
    cache.replace([obj], None)
    first.keep([obj])
    now[0] = 61
    first.expire()
    assert first.groups == {} and first.take(("ns", "s")) is None
