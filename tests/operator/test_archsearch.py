"""ArchitectureSearch on the real cluster: the operator runs it as a Study it owns, in a trial
pod of the torch trial image (trial_image/Dockerfile.torch, built by tests/cluster/image),
and mirrors its progress into the search's status; a pod deleted mid-search resumes from
its checkpoint."""

from __future__ import annotations

import os

import yaml

from rung import __version__

IMAGE = os.environ.get("RUNG_TORCH_TRIAL_IMAGE", f"docker.io/library/rung-trial-torch:{__version__}")


def search(ns: str, name: str, epochs: int, channels: int = 4) -> str:
    return yaml.safe_dump({
        "apiVersion": "rung.dev/v1alpha1", "kind": "ArchitectureSearch", "metadata": {"name": name, "namespace": ns},
        "spec": {"method": "darts", "dataset": "digits", "epochs": epochs, "seed": 3, "cells": 2, "nodes": 2,
                 "channels": channels, "ops": ["sep_conv_3x3", "max_pool_3x3", "skip_connect", "zero"],
                 "settings": {"order": 1, "batch_size": 128},
                 "evaluation": {"epochs": 1, "cells": 2, "channels": 4, "batchSize": 128},
                 "trial": {"image": IMAGE, "resources": {"cpu": "1", "memory": "2Gi"}, "timeoutSeconds": 600}}})


def status(kubectl, ns: str, name: str) -> dict:
    return kubectl.json("get", "architecturesearch", name, "-n", ns).get("status") or {}


def ended(kubectl, ns: str, name: str) -> dict:
    return kubectl.wait_for(lambda: (s := status(kubectl, ns, name)).get("phase") in ("Succeeded", "Failed") and s,
                            600, f"ArchitectureSearch {name} to end", interval=1.0)


def test_an_architecture_search_succeeds_with_its_genotype(kubectl, operator, namespace):
    kubectl.apply(search(namespace, "nas", epochs=3))
    s = ended(kubectl, namespace, "nas")
    assert s["phase"] == "Succeeded", s
    genotype = s["genotype"]
    assert len(genotype["normal"]) == len(genotype["reduction"]) == 2
    assert all(len(node) == 2 and op != "zero" for node in genotype["normal"] for op, _ in node)
    assert s["epoch"] == 3 and s["searchSeconds"] > 0 and s["gpuHours"] == 0 and s["resumedFrom"] == 0
    assert 0 <= s["evaluation"]["testAccuracy"] <= 1 and 0 <= s["evaluation"]["randomTestAccuracy"] <= 1
    assert {c["type"]: c["status"] for c in s["conditions"]}["Succeeded"] == "True"
    study = kubectl.json("get", "study", "nas", "-n", namespace)
    (owner,) = study["metadata"]["ownerReferences"]
    assert owner["kind"] == "ArchitectureSearch" and owner["name"] == "nas" and owner["controller"]
    assert study["status"]["phase"] == "Succeeded"


def test_a_search_whose_pod_is_deleted_resumes_from_its_checkpoint(kubectl, operator, namespace):
    epochs = 12
    kubectl.apply(search(namespace, "nas-lost", epochs=epochs, channels=8))
    kubectl.wait_for(lambda: (status(kubectl, namespace, "nas-lost").get("epoch") or 0) >= 2, 300,
                     "two search epochs checkpointed", interval=0.3)
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "rung.dev/study=nas-lost")["items"]
    running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
    assert running, "the search's pod is not running"
    kubectl("delete", "pod", running[0], "-n", namespace, "--wait=true", "--grace-period=1")
    s = ended(kubectl, namespace, "nas-lost")
    assert s["phase"] == "Succeeded", s
    assert s["restarts"] >= 1 and 2 <= s["resumedFrom"] < epochs, s
    assert s["epoch"] == epochs and s["genotype"]
    trial = kubectl.json("get", "trial", "nas-lost-0", "-n", namespace)
    (segment,) = trial["status"]["segments"]
    assert segment["losses"] >= 1 and segment["status"] == "completed"
