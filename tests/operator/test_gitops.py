"""A Study kept in Git: applying the same manifest again (server-side, as Argo CD and
Flux do) changes nothing, and the operator writes only the Study's status (and, for a
Study whose checkpoints are removed on deletion, its finalizer)."""

import pytest

from test_operator import manifest as study_manifest

pytestmark = pytest.mark.cluster


def test_server_side_apply_twice_changes_nothing_and_the_operator_writes_only_status(kubectl, operator, namespace):
    manifest = study_manifest(namespace, "git", limits__maxTrials=4)
    kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-", input=manifest)
    kubectl.wait_for(lambda: (kubectl.json("get", "study", "git", "-n", namespace).get("status") or {}).get("phase")
                     in ("Succeeded", "Failed"), 300, "the Study to end")
    before = kubectl.json("get", "study", "git", "-n", namespace)
    diff = kubectl("diff", "--server-side", "--field-manager=gitops", "-f", "-", input=manifest, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr   # 0: no difference
    kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-", input=manifest)
    after = kubectl.json("get", "study", "git", "-n", namespace, "--show-managed-fields")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    for entry in after["metadata"]["managedFields"]:
        if entry["manager"] == "gitops":
            continue
        fields = entry.get("fieldsV1", {})
        owned = set(fields) - {"f:status"} if entry.get("subresource") != "status" else set()
        meta = set(fields.get("f:metadata", {})) - {"f:finalizers"}
        assert owned <= {"f:metadata"} and not meta, (entry["manager"], fields)
