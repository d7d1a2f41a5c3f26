"""Trial segments as Kubernetes pods.

One pod per segment attempt, named `<trial>-s<segment>` (`-r<attempt>` for restarts),
owned by its Trial. Trial pods need no Kubernetes permissions: inputs are environment
variables, the segment's result comes back as the container's termination message, and
`@rung` stdout lines (the pod's log, read incrementally) carry the learning curve.

The runtime reads pods from the operator's shared watch (an ObjectCache of the pods that
carry a Study label and no `rung.dev/handled` label), never by polling the API. An ended
pod is reported on every poll until the loop has recorded its result and released it;
only then is it labelled handled, which takes it out of the watch. So a result can be
recorded late, but never lost, and a restarted operator finds every pod it has not
recorded yet. Handled pods are kept for their logs, the newest `keep_finished` of a Study;
older ones are deleted (their results are in the Trials), so a Study of many thousand
segments does not leave as many pods for the API server and the nodes to carry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass, field
from typing import Any, Callable

from rung.kube.api import Kube, message_of, path, refusal, status_of
from rung.kube.informer import STUDY_LABEL, ObjectCache
from rung.runtime.base import (Ended, Event, Outcome, Refused, Report, Runtime, SegmentSpec, contract_env,
                               parse_report_line, timed_out)
from rung.trial import contract as C

log = logging.getLogger(__name__)

TRIAL_LABEL, SEGMENT_LABEL, ATTEMPT_LABEL = "rung.dev/trial", "rung.dev/segment", "rung.dev/attempt"
HANDLED_LABEL = "rung.dev/handled"
POD_SELECTOR = f"{STUDY_LABEL},!{HANDLED_LABEL}"

# Waiting reasons that will not go away by themselves: the trial fails with this reason.
_STUCK = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
          "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# Messages of a container runtime that timed out or raced with itself, or of a kubelet whose
# watch of a Secret or ConfigMap had not caught up yet (a loaded node): the attempt is lost
# and runs again in a new pod, it is not the trial's fault.
_TRANSIENT = ("context deadline exceeded", "failed to reserve container name", "DeadlineExceeded",
              "failed to sync secret cache", "failed to sync configmap cache")
# Pod-level reasons of an infrastructure loss: the segment restarts, it is not the trial's fault.
_LOST_REASONS = {"Evicted", "Preempting", "Shutdown", "NodeShutdown", "NodeLost", "Terminated",
                 "UnexpectedAdmissionError", "OutOfcpu", "OutOfmemory"}
# Trial pods pass Pod Security "restricted": they run as a non-root user with no
# capabilities, no privilege escalation and a read-only root filesystem; /tmp is scratch
# space. A Study may ask for privileged containers only where the operator allows it.
TRIAL_USER = 65532
SCRATCH = "/tmp"
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": TRIAL_USER, "runAsGroup": TRIAL_USER, "fsGroup": TRIAL_USER,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True, "runAsNonRoot": True}
LOG_LIMIT = 4 * 1024 * 1024   # bytes of log read per request: a chatty trial cannot flood the operator
EXPECT_SECONDS = 60.0          # a created pod the watch has not shown by then is looked up
REPORT_EVERY = 2.0             # seconds between log reads of a running pod (stop-based schedulers)


@dataclass
class _Pod:
    """What the runtime knows of one attempt's pod."""
    trial: str
    segment: int
    attempt: int
    reports: list[Report] = field(default_factory=list)
    log_since: str | None = None     # timestamp of the last log line read
    log_read: float = -1e9           # when it was last read (monotonic)
    ended: Ended | None = None


class KubernetesRuntime(Runtime):
    def __init__(self, kube: Kube, pods: ObjectCache, namespace: str, study: str, *, default_image: str,
                 owner: Callable[[str], dict | None], volumes: list[tuple[dict, dict]] = (),
                 secret_env: str | None = None, live_reports: bool = False, stop_grace: int = 5,
                 gpu_resource: str = "nvidia.com/gpu", clock: Callable[[], float] = time.monotonic,
                 pool: Executor | None = None, keep_finished: int | None = None,
                 cleanup: Executor | None = None, labeller: Executor | None = None):
        """`owner(trial_name)` gives the ownerReference of a trial's pods; `volumes` are
        (volume, mount) pairs every trial pod gets (e.g. a hostPath for file:// checkpoints);
        `secret_env` names a Secret whose keys become environment variables (the object
        store's endpoint and credentials: never written into a spec or status);
        `live_reports` reads running pods' logs (only stop-based schedulers need it);
        `pool` creates and labels several pods at once (None: one by one); `keep_finished`:
        how many handled pods the Study keeps (None: all); `cleanup` deletes the others off
        the step's path (None: in the step); `labeller` labels recorded pods handled and
        deletes them (None: the pool), apart from the pool so that a backlog of them never
        delays a record or a pod (after a restart, hundreds wait at once)."""
        self.kube, self.pods, self.namespace, self.study = kube, pods, namespace, study
        self.default_image, self.owner, self.volumes = default_image, owner, list(volumes)
        self.secret_env, self.live_reports, self.stop_grace, self.clock = secret_env, live_reports, stop_grace, clock
        self.gpu_resource, self.pool, self.keep_finished, self.cleanup = gpu_resource, pool, keep_finished, cleanup
        self.labeller = labeller or pool
        self._known: dict[str, _Pod] = {}         # run name -> attempts seen in the watch, not released
        self._expected: dict[str, float] = {}     # created, not yet in the watch -> when
        self._unstartable: dict[str, Ended] = {}  # the API refused the pod itself (invalid)
        self._released: dict[str, bool] = {}      # recorded by the loop -> labelled handled yet
        self._labelling: dict[str, Future] = {}   # handled labels on their way (with a pool)
        self._handled: deque[str] | None = None   # handled pods kept, oldest first (None: not listed yet)
        self._listed: set[str] = set()            # what the listing found (some are passed again)
        self._trim_again = False                  # a listing or delete failed: try again at the next poll
        self._trimming = threading.Lock()         # one trim of this Study at a time (the cleanup has threads)
        self._stopping: set[str] = set()
        self._refused: Refused | None = None      # the last refusal, and when to try again
        self._retry_at, self._backoff = 0.0, 0.0

    # ---- the interface ----------------------------------------------------------------
    def start(self, spec: SegmentSpec) -> None:
        self.start_all([spec])

    def start_all(self, specs: list[SegmentSpec]) -> None:
        """Create the pods (side by side with a pool; one by one otherwise, stopping at the
        first refusal). What the API said of each is then sorted here, in the loop's thread."""
        now = self.clock()
        if self._refused is not None and now < self._retry_at:
            raise self._refused
        refused = None
        for spec, error in self._each(self._create, specs, until=lambda e: refusal(e) is not None, pool=self.pool):
            if error is None or status_of(error) == 409:   # 409: it exists already (created before a
                self._expected[spec.run_name] = now           # crash, or a lost answer)
            elif (why := refusal(error)) is None:   # the pod itself is invalid: the trial cannot run as specified
                self._unstartable[spec.run_name] = Ended(
                    spec.trial, spec.segment, Outcome.FAILED, None, None,
                    f"cannot create pod {spec.run_name}: {message_of(error)}", spec.attempt)
            elif refused is None:
                refused = (why, spec)
        if refused is not None:
            why, spec = refused
            self._backoff = min(max(1.0, 2 * self._backoff), 30.0)
            self._retry_at = now + self._backoff
            self._refused = Refused(why.cause, f"{why.problem} (pod {spec.run_name})",
                                    f"retrying in {self._backoff:.0f} s")
            raise self._refused
        self._refused, self._backoff = None, 0.0

    def _create(self, spec: SegmentSpec) -> None:
        self.kube.request("POST", path("pods", self.namespace), body=self.pod(spec))

    @staticmethod
    def _each(call: Callable, items: list, until: Callable[[BaseException], bool] = lambda e: False,
              pool: Executor | None = None):
        """[(item, the exception call(item) raised, or None)]: at once with a pool; else one
        by one, stopping after the first exception `until` accepts."""
        if pool is not None and len(items) > 1:
            futures = [pool.submit(call, item) for item in items]
            return [(item, f.exception()) for item, f in zip(items, futures)]
        out = []
        for item in items:
            try:
                call(item)
                out.append((item, None))
            except Exception as e:
                out.append((item, e))
                if until(e):
                    break
        return out

    def poll(self, replay: bool = False) -> list[Event]:
        self._label_released()
        pods = self.pods.snapshot((self.namespace, self.study))
        events: list[Event] = []
        for name, pod in pods.items():
            if name in self._released:
                continue   # recorded; its handled label is on its way
            self._expected.pop(name, None)
            known = self._known.get(name)
            if known is None:
                known = self._known[name] = _Pod(*_identity(pod))
            if known.ended is None:
                events += self._update(name, known, pod, replay)
        for name in [n for n in self._known if n not in pods and n not in self._released]:
            known = self._known[name]
            if known.ended is None:   # gone without ending: deleted, or lost with its node
                stopped = name in self._stopping
                known.ended = Ended(known.trial, known.segment, Outcome.STOPPED if stopped else Outcome.LOST,
                                    None, None, "" if stopped else f"pod {name} was deleted", known.attempt)
        self._check_expected()
        # Every end not yet released, each after its reports: the loop may not have recorded it.
        for known in self._known.values():
            if known.ended is not None:
                events += known.reports + [known.ended]
        return events + list(self._unstartable.values())

    def release(self, run: str) -> None:
        self.release_all([run])

    def release_all(self, runs: list[str]) -> None:
        label = []
        for run in runs:
            self._known.pop(run, None)
            self._stopping.discard(run)
            if self._unstartable.pop(run, None) is None and run not in self._released:
                label.append(run)
        self._label(label)

    def _label(self, runs: list[str]) -> None:
        """Label recorded pods handled. With a labeller the step does not wait for it: the next
        poll takes in how it went (a worker is free for the next Study sooner)."""
        for run in runs:
            self._released[run] = False   # recorded; labelled once the call succeeds
        if self.labeller is None:
            self._labelled(self._each(self._label_handled, runs))
        else:
            self._labelling.update((run, self.labeller.submit(self._label_handled, run)) for run in runs)

    def settle(self) -> None:
        """Wait for the labels on their way and take them in: the Study is over, no poll follows."""
        self._take_in(list(self._labelling))

    def _take_in(self, runs: list[str]) -> None:
        """How the labels of these runs went (waits for those still on their way)."""
        self._labelled([(run, _error(self._labelling.pop(run))) for run in runs])

    def _labelled(self, results: list) -> None:
        handled = []
        for run, error in results:
            self._released[run] = error is None
            if error is None:
                handled.append(run)
        if self.keep_finished is not None and (handled or self._trim_again):
            self._trim_again = False
            if self.cleanup is not None:   # the listing and deletes wait on no step
                self.cleanup.submit(self._keep_newest, handled)
            else:
                self._keep_newest(handled)

    def gone(self, run: str) -> bool:
        if run in self.running():
            return False
        try:
            self.kube.request("GET", path("pods", self.namespace, run))
        except Exception as e:
            if status_of(e) == 404:
                return True
            raise
        self._expected[run] = self.clock()   # there, and the watch has not shown it yet
        return False

    def stop(self, name: str) -> None:
        for run in [r for r in self.running() if r == name or r.startswith(f"{name}-r")]:
            known = self._known.get(run)
            if known is not None and known.ended is not None:
                continue   # over already: its end stands (and its pod keeps its log)
            self._stopping.add(run)
            self._delete(run)

    def running(self) -> set[str]:
        pods = self.pods.snapshot((self.namespace, self.study))
        return ((set(pods) - set(self._released)) | set(self._expected) | set(self._unstartable)
                | {n for n, k in self._known.items() if k.ended is not None})

    def close(self) -> None:
        """Pods keep running: a restarted operator finds them in the watch."""

    # ---- pods -------------------------------------------------------------------------
    def pod(self, spec: SegmentSpec) -> dict:
        labels = {STUDY_LABEL: spec.study, TRIAL_LABEL: spec.trial,
                  SEGMENT_LABEL: str(spec.segment), ATTEMPT_LABEL: str(spec.attempt)}
        env = {**contract_env(spec, C.DEFAULT_RESULT_FILE), "PYTHONUNBUFFERED": "1", "HOME": SCRATCH,
               "TMPDIR": SCRATCH}
        owner = self.owner(spec.trial)
        container: dict[str, Any] = {
            "name": "trial",
            "image": spec.image or self.default_image,
            "imagePullPolicy": "IfNotPresent",
            "command": list(spec.command),
            "env": [{"name": k, "value": v} for k, v in env.items()],
            # The SDK writes the result there; if the trial dies first, its last log lines.
            "terminationMessagePath": C.DEFAULT_RESULT_FILE,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}] + [m for _, m in self.volumes],
            "securityContext": ({"privileged": True} if spec.privileged else RESTRICTED_CONTAINER),
        }
        if self.secret_env:
            container["envFrom"] = [{"secretRef": {"name": self.secret_env}}]
        requests = dict(spec.resources)
        if spec.gpus:   # an extended resource: its limit is its request; cpu and memory scale with it
            for name, per_gpu in spec.gpu_resources.items():
                requests[name] = _times(per_gpu, spec.gpus, requests.get(name))
            requests[self.gpu_resource] = str(spec.gpus)
        limits = {k: v for k, v in requests.items() if k in ("memory", self.gpu_resource)}
        if requests:
            container["resources"] = {"requests": requests, "limits": limits}
        pod_spec = {"restartPolicy": "Never", "containers": [container],
                    "volumes": [{"name": "scratch", "emptyDir": {}}] + [v for v, _ in self.volumes],
                    "enableServiceLinks": False, "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": self.stop_grace,
                    "securityContext": {} if spec.privileged else RESTRICTED_POD}
        if spec.host_network:
            pod_spec["hostNetwork"] = True
        if spec.timeout:
            pod_spec["activeDeadlineSeconds"] = spec.timeout
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.run_name, "namespace": self.namespace, "labels": labels,
                         "ownerReferences": [owner] if owner else []},
            "spec": pod_spec,
        }

    def _update(self, name: str, known: _Pod, pod: dict, replay: bool) -> list[Report]:
        """Whether the attempt ended, and the reports of one still running (new ones, or all
        on replay): an ended one's reports go out with its Ended. The log is read when the
        pod has ended, and while it runs only for stop-based schedulers."""
        known.ended = self._outcome(name, pod)
        running = (pod.get("status") or {}).get("phase") == "Running"
        due = self.clock() - known.log_read >= REPORT_EVERY
        fresh = []
        # A result with its curve is the whole story: no log read (one request less per
        # segment, and nodes that serve no logs cost nothing).
        whole = known.ended is not None and isinstance((known.ended.result or {}).get("curve"), list)
        if (known.ended is not None and not whole) or (self.live_reports and running and due):
            fresh = self._log_reports(name, known)
            known.reports += fresh
        if known.ended is not None:
            return []
        return known.reports if replay else fresh

    def _log_reports(self, name: str, known: _Pod) -> list[Report]:
        query = {"container": "trial", "timestamps": "true", "limitBytes": LOG_LIMIT}
        if known.log_since:
            query["sinceTime"] = known.log_since
        try:
            text = self.kube.text(path("pods", self.namespace, name, "log"), query)
        except Exception as e:   # no log (never started, or its node is gone): the result still counts
            log.debug("no log for pod %s: %s", name, message_of(e))
            return []
        known.log_read = self.clock()
        out = []
        for line in text.splitlines():
            stamp, _, rest = line.partition(" ")
            if known.log_since and _instant(stamp) <= _instant(known.log_since):
                continue   # sinceTime includes the last line read before
            known.log_since = stamp
            parsed = parse_report_line(rest)
            if parsed:
                out.append(Report(known.trial, known.segment, *parsed, attempt=known.attempt))
        return out

    def _outcome(self, name: str, pod: dict) -> Ended | None:
        """The end of an attempt, or None while it runs."""
        meta, status = pod["metadata"], pod.get("status") or {}
        trial, segment, attempt = _identity(pod)
        state = _terminated(pod)
        code = state.get("exitCode") if state else None
        deleting, phase = bool(meta.get("deletionTimestamp")), status.get("phase")
        if name in self._stopping and (state is not None or deleting):
            return Ended(trial, segment, Outcome.STOPPED, code, attempt=attempt)
        if phase == "Succeeded":
            return Ended(trial, segment, Outcome.SUCCEEDED, 0, _json(state.get("message") if state else None),
                         attempt=attempt)
        if phase == "Failed" and status.get("reason") == "DeadlineExceeded":   # activeDeadlineSeconds
            return Ended(trial, segment, Outcome.FAILED, code, None,
                         timed_out(pod["spec"].get("activeDeadlineSeconds", 0)), attempt)
        disrupted = _disrupted(status)
        if (deleting or disrupted) and state is None and phase not in ("Failed", "Unknown"):
            return None   # still running: a restart now would train beside it, so wait for its end
        if deleting:
            return Ended(trial, segment, Outcome.LOST, code, None, f"pod {name} was deleted", attempt)
        if disrupted:
            why = f"{status.get('reason') or 'DisruptionTarget'}: {status.get('message') or ''}".strip()
            return Ended(trial, segment, Outcome.LOST, code, None, f"pod {name}: {why}", attempt)
        if phase == "Failed":
            message = (state.get("message") or "").strip() if state else ""
            result = _json(message)
            if result is not None:
                message = str(result.get("error") or "")
            reason = state.get("reason") if state else None
            why = reason if reason not in (None, "Error") else f"exited with code {code}"
            return Ended(trial, segment, Outcome.FAILED, code, result,
                         f"{why}: {_last_line(message)}" if message else why, attempt)
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") in _STUCK:
                self._delete(name, quiet=True)
                message = waiting.get("message") or cs.get("image")
                lost = any(t in str(message) for t in _TRANSIENT)
                return Ended(trial, segment, Outcome.LOST if lost else Outcome.FAILED, None, None,
                             f"{waiting['reason']}: {message}", attempt)
        return None

    def _check_expected(self) -> None:
        """A created pod the watch has not shown for long is looked up: still there (the
        watch lags) or gone (deleted before the watch saw it; the loop starts anew)."""
        now = self.clock()
        for name in [n for n, since in self._expected.items() if now - since >= EXPECT_SECONDS]:
            del self._expected[name]
            try:
                self.gone(name)   # puts it back if it is there
            except Exception as e:
                self._expected[name] = now
                log.warning("cannot look up pod %s: %s", name, message_of(e))

    def _label_released(self) -> None:
        """Take in the labels that went out; forget recorded pods the watch has let go of;
        label again those it still shows unlabelled."""
        self._take_in([run for run, future in self._labelling.items() if future.done()])
        pods = self.pods.snapshot((self.namespace, self.study))
        again = []
        for name in list(self._released):
            if name not in pods:
                del self._released[name]   # out of the watch: done
            elif not self._released[name] and name not in self._labelling:
                again.append(name)
        self._label(again)

    def _keep_newest(self, handled: list[str]) -> None:
        """Delete the Study's handled pods beyond the newest `keep_finished`, given those
        just labelled handled. Those an earlier operator left are listed once, at the first
        release (a restarted runtime's first pods go out before it). On a cleanup thread,
        where there are some (other Studies' trims run beside it), one trim at a time."""
        with self._trimming:
            self._trim(handled)

    def _trim(self, handled: list[str]) -> None:
        if self._handled is None:
            try:
                pods, _ = self.kube.list_all(path("pods", self.namespace), metadata_only=True, query={
                    "labelSelector": f"{STUDY_LABEL}={self.study},{HANDLED_LABEL}"})
            except Exception as e:
                log.warning("cannot list the handled pods of study %s (retried): %s", self.study, message_of(e))
                self._trim_again = True
                return
            pods.sort(key=lambda pod: (pod["metadata"].get("creationTimestamp") or "", pod["metadata"]["name"]))
            self._handled = deque(pod["metadata"]["name"] for pod in pods)
            self._listed = set(self._handled)
        else:   # labelled before the listing, some are in it already
            self._handled.extend(run for run in handled if run not in self._listed)
        old = [self._handled.popleft() for _ in range(len(self._handled) - self.keep_finished)]
        # Ended pods go at once (grace 0), as the pod garbage collector deletes them, and side
        # by side with the labels: one at a time falls behind a loaded API server's completions.
        failed = [(name, e) for name, e in self._each(lambda name: self._delete(name, grace=0), old,
                                                      pool=self.labeller) if e is not None]
        for name, e in reversed(failed):
            log.warning("cannot delete handled pod %s (retried): %s", name, message_of(e))
            self._handled.appendleft(name)
            self._trim_again = True

    def _label_handled(self, name: str) -> None:
        """Mark a recorded pod handled, so the watch lets go of it (raises: retry later)."""
        try:
            self.kube.request("PATCH", path("pods", self.namespace, name), merge_patch=True,
                              body={"metadata": {"labels": {HANDLED_LABEL: "true"}}})
        except Exception as e:
            if status_of(e) != 404:
                log.warning("cannot label pod %s handled (retried): %s", name, message_of(e))
                raise

    def _delete(self, name: str, quiet: bool = False, grace: int | None = None) -> None:
        try:
            self.kube.request("DELETE", path("pods", self.namespace, name),
                              query={"gracePeriodSeconds": self.stop_grace if grace is None else grace})
        except Exception as e:
            if status_of(e) != 404:
                if not quiet:
                    raise
                log.warning("cannot delete pod %s: %s", name, message_of(e))


def _error(future: Future) -> BaseException | None:
    return CancelledError() if future.cancelled() else future.exception()


def _identity(pod: dict) -> tuple[str, int, int]:
    labels = pod["metadata"].get("labels") or {}
    return labels[TRIAL_LABEL], int(labels[SEGMENT_LABEL]), int(labels.get(ATTEMPT_LABEL, 0))


def _instant(stamp: str) -> tuple[str, str]:
    """An RFC 3339 timestamp as a key that sorts in time (the kubelet trims fraction zeros)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return whole, fraction.ljust(9, "0")


def _terminated(pod: dict) -> dict | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None


def _disrupted(status: dict) -> bool:
    if status.get("reason") in _LOST_REASONS or status.get("phase") == "Unknown":   # Unknown: its node is gone
        return True
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _json(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


__all__ = ["KubernetesRuntime", "POD_SELECTOR", "STUDY_LABEL", "TRIAL_LABEL", "HANDLED_LABEL"]


def _times(quantity: str, n: int, base: str | None) -> str:
    """`base` + n x `quantity` (Kubernetes quantities, e.g. 2 x 500m + 1 = 2)."""
    from kubernetes.utils import parse_quantity   # Decimal, exact
    total = parse_quantity(quantity) * n + (parse_quantity(base) if base else 0)
    return str(total.normalize()) if total == total.to_integral() else f"{int(total * 1000)}m"
