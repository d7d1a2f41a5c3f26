"""Kubernetes Events about Studies (what `kubectl describe study` shows)."""

from __future__ import annotations

import datetime as dt
import logging

from kubernetes.client import ApiClient, ApiException, CoreV1Api

log = logging.getLogger(__name__)


def post_event(api_client: ApiClient, body: dict, type_: str, reason: str, message: str) -> None:
    meta = body["metadata"]
    stamp = dt.datetime.now(dt.timezone.utc)
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": body.get("apiVersion", "rung.dev/v1alpha1"),
                           "kind": body.get("kind", "Study"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "lastTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1, "source": {"component": "rung-operator"}, "reportingComponent": "rung-operator",
    }
    try:
        CoreV1Api(api_client).create_namespaced_event(meta["namespace"], event)
    except ApiException as e:   # an Event is a courtesy; never fail the loop over one
        log.warning("cannot post event %s for %s: %s", reason, meta["name"], e.reason)
