"""A Study's checkpoint store as the operator sees it: probed before segments start,
pruned as trials end (retention), emptied when the Study is deleted.

The operator reaches the store with the credentials of the Study's Secret
(spec.checkpoints.secretRef), read when needed and never copied into any object.
"""

from __future__ import annotations

import base64
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client

from rung.api import Study
from rung.runtime.records import TrialDoc
from rung.storage import open_store
from rung.storage.base import CheckpointStore, StoreUnavailable

log = logging.getLogger(__name__)


def secret_env(core: client.CoreV1Api, namespace: str, secret: str | None) -> dict[str, str]:
    if not secret:
        return {}
    try:
        data = core.read_namespaced_secret(secret, namespace).data or {}
    except client.ApiException as e:
        if e.status == 404:
            raise StoreUnavailable("spec.checkpoints.secretRef",
                                   f"Secret {secret!r} does not exist in namespace {namespace!r}",
                                   "create it (endpoint and credentials)", transient=True) from None
        raise StoreUnavailable("spec.checkpoints.secretRef", f"cannot read Secret {secret!r}: {e.reason}",
                               "let the operator read it (RBAC)", transient=True) from None
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def open_study_store(root: str, env: dict[str, str]) -> CheckpointStore:
    if root.startswith("s3://"):
        from rung.storage.s3 import S3Store, parse_s3_uri

        bucket, prefix = parse_s3_uri(root)
        return S3Store(bucket, prefix, env=env, max_attempts=3)
    return open_store(root)


class StudyStore:
    def __init__(self, core: client.CoreV1Api, study: Study, root: str, probe_every: float = 5.0):
        self.core, self.study, self.root, self.probe_every = core, study, root, probe_every
        self.prefix = f"{study.metadata.namespace}/{study.name}"
        self._probed, self._answer = -1e9, ""
        self._pruner: ThreadPoolExecutor | None = None   # started by the first retain()

    def store(self) -> CheckpointStore:
        return open_study_store(self.root, secret_env(self.core, self.study.metadata.namespace,
                                                      self.study.spec.checkpoints.secret_ref))

    def gate(self) -> str:
        """"" when new segments may start, else why not (probed at most every few seconds)."""
        if time.monotonic() - self._probed >= self.probe_every:
            self._probed = time.monotonic()
            try:
                self.store().check()
                self._answer = ""
            except StoreUnavailable as e:
                self._answer = e.line()
        return self._answer

    def retain(self, trial: TrialDoc) -> None:
        """Keep the trial's latest sealed checkpoint and its keepBest best; in the background."""
        losses = {step: loss for seg in trial.segments for step, loss in seg.curve}
        if self._pruner is None:
            self._pruner = ThreadPoolExecutor(1, thread_name_prefix=f"retention-{self.study.name}")
        self._pruner.submit(self._prune, f"{self.prefix}/{trial.name}", losses)

    def _prune(self, prefix: str, losses: dict[float, float]) -> None:
        try:
            removed = self.store().prune(prefix, keep_latest=1, keep_best=self.study.spec.checkpoints.keep_best,
                                         loss_of=lambda _, step: losses.get(step))
            if removed:
                log.debug("retention: %s: removed steps %s", prefix, removed)
        except Exception as e:   # retention is housekeeping: never disturb the Study over it
            log.warning("retention of %s failed: %s", prefix, e)

    def delete_all(self) -> None:
        self.store().delete_study(self.prefix)

    def close(self) -> None:
        if self._pruner is not None:
            self._pruner.shutdown(wait=True)
