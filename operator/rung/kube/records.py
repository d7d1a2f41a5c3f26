"""Trial and Study objects as records: the segment format of a Trial's status, and reading
a Study's records back from the API server (`rung report study/NAME`).

Kept apart from the controller so that reading needs neither kopf nor the operator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiException
from pydantic.alias_generators import to_camel

from rung.api import Study, parse_study
from rung.errors import InputError
from rung.kube.api import Kube, api_client, kubeconfig_file, message_of, path, status_of
from rung.kube.informer import STUDY_LABEL
from rung.records import SegmentRecord, TrialRecord
from rung.runtime.loop import StudyState

MAX_CURVE = 1000   # points kept per segment in a Trial's status (etcd objects stay small)

_SEGMENT_KEYS = {f.name: to_camel(f.name) for f in fields(SegmentRecord)}


def segment_to_status(seg: SegmentRecord) -> dict:
    doc = {_SEGMENT_KEYS[k]: v for k, v in asdict(seg).items() if v is not None}
    doc["status"] = str(seg.status)
    # JSON has no inf/nan (a diverged metric): the API server would refuse the whole status
    doc["metrics"] = {k: v for k, v in seg.metrics.items() if not isinstance(v, float) or math.isfinite(v)}
    doc["curve"] = thin([p for p in seg.curve if all(math.isfinite(x) for x in p)], MAX_CURVE)
    return doc


def thin(points: list, limit: int) -> list:
    """At most `limit` points, evenly spread, the first and the last kept."""
    if len(points) <= limit:
        return list(points)
    last = len(points) - 1
    return [points[round(i * last / (limit - 1))] for i in range(limit)]


def segment_from_status(doc: dict) -> SegmentRecord:
    back = {v: k for k, v in _SEGMENT_KEYS.items()}
    return SegmentRecord(**{back[k]: v for k, v in doc.items() if k in back})


def trial_from_object(obj: dict) -> TrialRecord:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return TrialRecord(int(spec["index"]), obj["metadata"]["name"], dict(spec.get("params") or {}),
                       [segment_from_status(s) for s in status.get("segments") or []], spec.get("parent"),
                       spec.get("replaces"))


def study_status(obj: dict) -> dict:
    """A Study object's status as a record store's status (state, reason, elapsed, next_index)."""
    status = obj.get("status") or {}
    phase = status.get("phase")
    state = {"Succeeded": StudyState.SUCCEEDED, "Failed": StudyState.FAILED}.get(phase, StudyState.RUNNING)
    reason = next((c.get("message", "") for c in status.get("conditions") or []
                   if c.get("type") == "Failed" and c.get("status") == "True"), "")
    return {"state": state, "reason": reason, "elapsed": float(status.get("elapsed") or 0.0),
            "next_index": int(status.get("nextIndex") or 0)}


def owned_by(obj: dict, owner: dict) -> bool:
    uid = owner["metadata"]["uid"]
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])


# ---- reading a Study from the cluster ------------------------------------------------------

def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, else `default`."""
    try:
        _, context = kube_config.list_kube_config_contexts(config_file=kubeconfig_file())
    except (kube_config.ConfigException, OSError):
        return "default"
    return (context or {}).get("context", {}).get("namespace") or "default"


def connect() -> Kube:
    try:
        return Kube(api_client())
    except (kube_config.ConfigException, OSError) as e:
        raise InputError("kubeconfig", f"cannot load it ({' '.join(str(e).split())})",
                         "set KUBECONFIG or write ~/.kube/config")


def fetch_study(kube: Kube, namespace: str, name: str) -> tuple[Study, list[TrialRecord], dict]:
    """The Study, its Trials as records (by index) and its status, as the API server has
    them; a failed call raises as the client does."""
    obj = kube.request("GET", path("studies", namespace, name))
    items, _ = kube.list_all(path("trials", namespace), {"labelSelector": f"{STUDY_LABEL}={name}"})
    study = parse_study(obj, source=f"study/{name}")
    # Trials of an earlier Study of the same name (on their way out) are not this one's.
    trials = sorted((trial_from_object(t) for t in items if owned_by(t, obj)), key=lambda t: t.index)
    return study, trials, study_status(obj)


def read_study(kube: Kube, namespace: str, name: str) -> tuple[Study, list[TrialRecord], dict]:
    """fetch_study for a person: a failed call is one line that says what to do."""
    where = f"study/{name}"
    try:
        return fetch_study(kube, namespace, name)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        code, message = status_of(e), message_of(e)
        if code == 404 and name in message:   # else the CRDs are missing: that 404 names no object
            raise InputError(where, f"no Study {name} in namespace {namespace}",
                             "check the name and --namespace (kubectl get studies -A)") from None
        if code == 404:
            raise InputError(where, f"this cluster has no Rung CRDs ({message})",
                             "install them: rung crds | kubectl apply -f -") from None
        if code in (401, 403):
            raise InputError(where, f"the API server refused to show it ({message})",
                             "use credentials that may get studies and list trials") from None
        if code:
            raise InputError(where, f"the API server failed ({code}: {message})", "try again") from None
        cause = str(getattr(e, "reason", None) or e).rpartition(": ")[2]   # urllib3 nests it
        raise InputError(where, f"the API server{_server(kube)} did not answer ({cause})",
                         "check that the cluster is up and KUBECONFIG points at it") from None


def _server(kube: Kube) -> str:
    config = getattr(getattr(kube, "api", None), "configuration", None)
    return f" at {config.host}" if config is not None else ""
