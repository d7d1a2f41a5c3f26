"""Kubernetes Events about Studies (what `kubectl describe study` shows)."""

from __future__ import annotations

import datetime as dt
import logging

from rung.kube.api import Kube, message_of, path

log = logging.getLogger(__name__)


def post_event(kube: Kube, obj: dict, type_: str, reason: str, message: str) -> bool:
    """One Event about `obj`. A courtesy: a failure is logged, never raised (False)."""
    meta = obj["metadata"]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj.get("apiVersion", "rung.dev/v1alpha1"),
                           "kind": obj.get("kind", "Study"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1, "source": {"component": "rung-operator"}, "reportingComponent": "rung-operator",
    }
    try:
        kube.request("POST", path("events", meta["namespace"]), body=event)
        return True
    except Exception as e:
        log.warning("cannot post event %s for %s: %s", reason, meta["name"], message_of(e))
        return False
