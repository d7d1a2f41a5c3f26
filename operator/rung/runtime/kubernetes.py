"""Trial segments as Kubernetes pods.

One pod per segment attempt, named `<trial>-s<segment>` (`-r<attempt>` for restarts),
owned by its Trial. Trial pods need no Kubernetes permissions: inputs are environment
variables, the segment's result comes back as the container's termination message, and
`@rung` stdout lines (pod logs) carry the learning curve. Every poll LISTs the Study's
pods that are not yet marked handled, so the runtime keeps no state that a restart loses.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from kubernetes.client import ApiException, CoreV1Api

from rung.runtime.base import (Event, Finished, Outcome, Report, Runtime, SegmentSpec, contract_env,
                               parse_report_line)
from rung.trial import contract as C

log = logging.getLogger(__name__)

STUDY_LABEL, TRIAL_LABEL = "rung.dev/study", "rung.dev/trial"
SEGMENT_LABEL, ATTEMPT_LABEL, HANDLED_LABEL = "rung.dev/segment", "rung.dev/attempt", "rung.dev/handled"

# Waiting reasons that will not go away by themselves: the trial fails with this reason.
_STUCK = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
          "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# Pod-level reasons of an infrastructure loss: the segment restarts, it is not the trial's fault.
_LOST_REASONS = {"Evicted", "Preempting", "Shutdown", "NodeShutdown", "NodeLost", "Terminated",
                 "UnexpectedAdmissionError", "OutOfcpu", "OutOfmemory"}


class KubernetesRuntime(Runtime):
    def __init__(self, core: CoreV1Api, namespace: str, study: str, *, image: str,
                 owner: Callable[[str], dict | None], resources: dict[str, str] | None = None,
                 volumes: list[tuple[dict, dict]] = (), secret_env: str | None = None,
                 live_reports: bool = False, stop_grace: int = 5):
        """`owner(trial_name)` gives the ownerReference of a trial's pods; `volumes` are
        (volume, mount) pairs every trial pod gets (e.g. a hostPath for file:// checkpoints);
        `secret_env` names a Secret whose keys become environment variables (the object
        store's endpoint and credentials: never written into a spec or status);
        `live_reports` reads running pods' logs each poll (only stop-based schedulers need it)."""
        self.core, self.namespace, self.study, self.image = core, namespace, study, image
        self.owner, self.resources, self.volumes = owner, resources or {}, list(volumes)
        self.secret_env = secret_env
        self.live_reports, self.stop_grace = live_reports, stop_grace
        self._identity: dict[str, tuple[str, int, int]] = {}   # run name -> (trial, segment, attempt)
        self._failed_starts: list[Finished] = []
        self._stopping: set[str] = set()               # run names we asked to stop
        self._handled: set[str] = set()                # reported; labelled handled at the next poll
        self._live: set[str] = set()                   # run names not yet reported, as of the last poll

    # ---- the interface ----------------------------------------------------------------
    def start(self, spec: SegmentSpec) -> None:
        self._identity[spec.run_name] = (spec.trial, spec.segment, spec.attempt)
        try:
            self.core.create_namespaced_pod(self.namespace, self.pod(spec))
        except ApiException as e:
            if e.status != 409:   # 409: this attempt exists already (an earlier life created it)
                self._failed_starts.append(Finished(spec.trial, spec.segment, Outcome.FAILED, None, None,
                                                    f"cannot create pod {spec.run_name}: {_api_reason(e)}",
                                                    spec.attempt))
                return
        self._live.add(spec.run_name)

    def poll(self) -> list[Event]:
        self._label_handled()
        events: list[Event] = list(self._failed_starts)
        self._failed_starts = []
        seen = set()
        for pod in self._list():
            name = pod.metadata.name
            seen.add(name)
            self._identity[name] = _identity(pod)
            if name in self._handled:
                continue
            ended = self._outcome(pod)
            if ended is None:
                if self.live_reports and pod.status.phase == "Running":
                    events += self._reports(pod)
                continue
            events += self._reports(pod)
            events.append(ended)
            self._handled.add(name)
        # A pod that vanished without ending (deleted, garbage collected with its node) is an
        # infrastructure loss, unless we asked it to stop.
        for name in sorted(self._live - seen):
            who = self._identity.get(name)
            if who is not None:
                stopped = name in self._stopping
                events.append(Finished(*who[:2], Outcome.STOPPED if stopped else Outcome.LOST,
                                       None, None, "" if stopped else f"pod {name} was deleted", who[2]))
        self._live = seen - self._handled
        return events

    def stop(self, name: str) -> None:
        for run in [r for r in self._live if r == name or r.startswith(f"{name}-r")]:
            self._stopping.add(run)
            self._delete(run)

    def running(self) -> set[str]:
        pods = self._list()
        self._identity.update({p.metadata.name: _identity(p) for p in pods})
        self._live = {p.metadata.name for p in pods} - self._handled
        return set(self._live)

    def close(self) -> None:
        """Pods keep running: a restarted operator finds them by their labels."""

    def _list(self) -> list:
        """This Study's pods not yet marked handled: the level this runtime works from."""
        return self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{STUDY_LABEL}={self.study},!{HANDLED_LABEL}").items

    # ---- pods -------------------------------------------------------------------------
    def pod(self, spec: SegmentSpec) -> dict:
        labels = {STUDY_LABEL: spec.study, TRIAL_LABEL: spec.trial,
                  SEGMENT_LABEL: str(spec.segment), ATTEMPT_LABEL: str(spec.attempt)}
        env = {**contract_env(spec, C.DEFAULT_RESULT_FILE), "PYTHONUNBUFFERED": "1"}
        owner = self.owner(spec.trial)
        container: dict[str, Any] = {
            "name": "trial",
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": list(spec.command),
            "env": [{"name": k, "value": v} for k, v in env.items()],
            # The SDK writes the result there; if the trial dies first, its last log lines.
            "terminationMessagePath": C.DEFAULT_RESULT_FILE,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [m for _, m in self.volumes],
        }
        if self.secret_env:
            container["envFrom"] = [{"secretRef": {"name": self.secret_env}}]
        if self.resources:
            container["resources"] = {"requests": dict(self.resources),
                                      "limits": {k: v for k, v in self.resources.items() if k == "memory"}}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.run_name, "namespace": self.namespace, "labels": labels,
                         "ownerReferences": [owner] if owner else []},
            "spec": {"restartPolicy": "Never", "containers": [container],
                     "volumes": [v for v, _ in self.volumes],
                     "enableServiceLinks": False, "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": self.stop_grace},
        }

    def _outcome(self, pod) -> Finished | None:
        """The Finished event of an ended pod, or None while it runs."""
        name, status = pod.metadata.name, pod.status
        trial, segment, attempt = _identity(pod)
        state = _terminated(pod)
        if name in self._stopping and (state is not None or pod.metadata.deletion_timestamp):
            return Finished(trial, segment, Outcome.STOPPED, getattr(state, "exit_code", None), attempt=attempt)
        if status.phase == "Succeeded":
            return Finished(trial, segment, Outcome.SUCCEEDED, 0, _json(state.message if state else None),
                            attempt=attempt)
        going = pod.metadata.deletion_timestamp or _disrupted(pod)
        if going and state is None and status.phase not in ("Failed", "Unknown"):
            return None   # still running: a restart now would train beside it, so wait for its end
        if pod.metadata.deletion_timestamp:
            return Finished(trial, segment, Outcome.LOST, getattr(state, "exit_code", None), None,
                            f"pod {name} was deleted", attempt)
        if _disrupted(pod):
            return Finished(trial, segment, Outcome.LOST, getattr(state, "exit_code", None), None,
                            f"pod {name}: {status.reason or 'DisruptionTarget'}: {status.message or ''}".strip(),
                            attempt)
        if status.phase == "Failed":
            code = getattr(state, "exit_code", None)
            message = (state.message or "").strip() if state else ""
            result = _json(message)
            if result is not None:
                message = str(result.get("error") or "")
            why = state.reason if state and state.reason not in (None, "Error") else f"exited with code {code}"
            return Finished(trial, segment, Outcome.FAILED, code, result,
                            f"{why}: {_last_line(message)}" if message else why, attempt)
        for cs in status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in _STUCK:
                self._delete(name)
                return Finished(trial, segment, Outcome.FAILED, None, None,
                                f"{waiting.reason}: {waiting.message or cs.image}", attempt)
        return None

    def _reports(self, pod) -> list[Report]:
        try:
            text = self.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, container="trial")
        except ApiException:
            return []   # no log (never started, or the node is gone)
        trial, segment, attempt = _identity(pod)
        out = []
        for line in text.splitlines():
            parsed = parse_report_line(line)
            if parsed:
                out.append(Report(trial, segment, *parsed, attempt=attempt))
        return out

    def _label_handled(self) -> None:
        """Mark reported pods (their results are recorded by now) so no LIST returns them again."""
        retry = set()
        for name in sorted(self._handled):
            try:
                self.core.patch_namespaced_pod(name, self.namespace,
                                               {"metadata": {"labels": {HANDLED_LABEL: "true"}}})
            except ApiException as e:
                if e.status != 404:
                    log.warning("cannot label pod %s handled: %s", name, _api_reason(e))
                    retry.add(name)
        self._handled = retry

    def _delete(self, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=self.stop_grace)
        except ApiException as e:
            if e.status != 404:
                log.warning("cannot delete pod %s: %s", name, _api_reason(e))


def _identity(pod) -> tuple[str, int, int]:
    labels = pod.metadata.labels or {}
    return labels[TRIAL_LABEL], int(labels[SEGMENT_LABEL]), int(labels.get(ATTEMPT_LABEL, 0))


def _terminated(pod):
    for cs in pod.status.container_statuses or []:
        if cs.state and cs.state.terminated:
            return cs.state.terminated
    return None


def _disrupted(pod) -> bool:
    status = pod.status
    if status.reason in _LOST_REASONS or status.phase == "Unknown":   # Unknown: its node stopped answering
        return True
    for cond in status.conditions or []:
        if cond.type == "DisruptionTarget" and cond.status == "True":
            return True
    return False


def _json(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _api_reason(e: ApiException) -> str:
    try:
        return json.loads(e.body).get("message") or e.reason
    except (TypeError, ValueError):
        return f"{e.status} {e.reason}"


__all__ = ["KubernetesRuntime", "STUDY_LABEL", "TRIAL_LABEL"]
