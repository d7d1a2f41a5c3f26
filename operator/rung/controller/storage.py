"""A Study's checkpoint store as the operator sees it: probed before new segments start,
emptied when the Study is deleted. (Retention runs in the trials themselves, next to
their checkpoints: see rung.trial.)

The operator reaches the store with the credentials of the Study's Secret
(spec.checkpoints.secretRef), read when needed and never copied into any object.
"""

from __future__ import annotations

import base64
import time

from rung.api import Study
from rung.kube.api import Kube, message_of, path, status_of
from rung.storage import StoreGate, open_store, study_prefix
from rung.storage.base import CheckpointStore, StoreUnavailable

def secret_env(kube: Kube, namespace: str, secret: str | None) -> dict[str, str]:
    if not secret:
        return {}
    try:
        data = kube.request("GET", path("secrets", namespace, secret)).get("data") or {}
    except Exception as e:
        if status_of(e) == 404:
            raise StoreUnavailable("spec.checkpoints.secretRef",
                                   f"Secret {secret!r} does not exist in namespace {namespace!r}",
                                   "create it (endpoint and credentials)", transient=True) from None
        raise StoreUnavailable("spec.checkpoints.secretRef", f"cannot read Secret {secret!r}: {message_of(e)}",
                               "let the operator read it (RBAC)", transient=True) from None
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def open_study_store(root: str, env: dict[str, str]) -> CheckpointStore:
    if root.startswith("s3://"):
        from rung.storage.s3 import S3Store, parse_s3_uri

        bucket, prefix = parse_s3_uri(root)
        return S3Store(bucket, prefix, env=env, from_secret=True, max_attempts=3)
    return open_store(root)


class StudyStore:
    def __init__(self, kube: Kube, study: Study, root: str, secret: str | None, clock=time.monotonic):
        """`secret`: the Secret (in the Study's namespace) with the store's credentials."""
        self.kube, self.study, self.root, self.secret = kube, study, root, secret
        self.prefix = study_prefix(study.metadata.namespace, study.name, study.uid)
        # A probe is a Secret read and a write, read and delete of one small object.
        self.gate = StoreGate(self.store, self.prefix, clock=clock)

    def store(self) -> CheckpointStore:
        return open_study_store(self.root, secret_env(self.kube, self.study.metadata.namespace, self.secret))

    def delete_all(self) -> None:
        """Every checkpoint of the Study, and uploads cut off midway. Call it only once no
        pod of the Study runs: a late save would bring checkpoints back."""
        self.store().delete_study(self.prefix)
