"""The operator's API client against the real API server."""

from __future__ import annotations

import json
import threading

from rung.kube.api import Kube, api_client, path

TRIAL = {"apiVersion": "rung.dev/v1alpha1", "kind": "Trial",
         "metadata": {"name": "t-0", "labels": {"rung.dev/study": "t"}},
         "spec": {"study": "t", "index": 0, "params": {"lr": 0.1}}}


def test_a_metadata_only_list_and_watch_carry_names_labels_and_versions_but_no_spec_or_status(kubectl, namespace):
    kubectl.apply(json.dumps({**TRIAL, "metadata": {**TRIAL["metadata"], "namespace": namespace}}))
    kube = Kube(api_client())
    url, query = path("trials", namespace), {"labelSelector": "rung.dev/study=t"}
    full, _ = kube.list_all(url, query)
    items, version = kube.list_all(url, query, metadata_only=True)
    assert [i["metadata"]["name"] for i in items] == ["t-0"] and full[0]["spec"]["params"] == {"lr": 0.1}
    meta = items[0]["metadata"]
    assert meta["labels"] == {"rung.dev/study": "t"} and meta["resourceVersion"] == full[0]["metadata"]["resourceVersion"]
    assert "spec" not in items[0] and "status" not in items[0]

    events, seen = [], threading.Event()

    def watch():
        for event in kube.watch(url, {**query, "resourceVersion": version}, metadata_only=True):
            if event["type"] != "BOOKMARK":
                events.append(event)
                seen.set()
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    written = kube.request("PATCH", path("trials", namespace, "t-0", "status"), merge_patch=True,
                           body={"status": {"phase": "Running", "budget": 1.0}})
    assert seen.wait(30), "no watch event for the status write"
    obj = events[0]["object"]
    assert events[0]["type"] == "MODIFIED" and obj["metadata"]["name"] == "t-0"
    assert obj["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    assert "spec" not in obj and "status" not in obj and obj["kind"] == "PartialObjectMetadata"
