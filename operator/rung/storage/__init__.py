"""Checkpoint stores behind one interface: file:// and s3:// (boto3, see s3.py).

Layout: `<root>/<namespace>/<study>/<run>/<trial>/<step>/` holding the checkpoint's files and,
written last, MANIFEST.json. A trial receives its own prefix as one URI
(RUNG_CHECKPOINT_URI, e.g. file:///data/ckpt/default/mlp/<uid>/mlp-3 or
s3://bucket/ckpt/default/mlp/<uid>/mlp-3); `split_trial_uri` turns that back into
(store, key_prefix).
"""

from __future__ import annotations

import time
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

from rung.errors import InputError
from rung.storage.base import CheckpointStore, StoreUnavailable, format_step, parse_step
from rung.storage.file import FileStore
from rung.storage.s3 import S3Store, parse_s3_uri  # boto3 itself is imported on first use

__all__ = ["CheckpointStore", "FileStore", "S3Store", "StoreGate", "StoreUnavailable", "file_path", "open_store",
           "split_trial_uri", "trial_uri", "format_step", "parse_step"]

_FIELD = "spec.checkpoints.uri"


def file_path(uri: str) -> str:
    """The local path of an absolute file:// URI ('..' left as written)."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise InputError(_FIELD, f"{uri!r} is not an absolute file URI",
                         "write file:///absolute/path (three slashes)")
    return unquote(parts.path).rstrip("/") or "/"


def _scheme(uri: str) -> str:
    scheme = urlsplit(str(uri)).scheme.lower()
    if scheme in ("file", "s3"):
        return scheme
    raise InputError(_FIELD, f"{uri!r} has no supported scheme",
                     "use file:///absolute/path or s3://bucket/prefix")


def open_store(uri: str) -> CheckpointStore:
    """The store rooted at `uri` (file:///abs/path or s3://bucket/prefix)."""
    if _scheme(uri) == "s3":
        return S3Store(*parse_s3_uri(uri))
    return FileStore(file_path(uri))


def study_prefix(namespace: str, study: str, run: str) -> str:
    """The key prefix of one run of a Study: <namespace>/<study>/<run>. The run (the
    Study's uid on a cluster, the results folder's run id locally) keeps a Study created
    again under the same name, or a fresh `rung run`, from loading another run's checkpoints."""
    return "/".join(_segment(field, value) for field, value in (("namespace", namespace), ("study", study),
                                                                 ("run", run)))


def trial_uri(root_uri: str, namespace: str, study: str, run: str, trial: str) -> str:
    """The URI of one trial's checkpoints: <root>/<namespace>/<study>/<run>/<trial>."""
    return "/".join([str(root_uri).rstrip("/"), study_prefix(namespace, study, run), _segment("trial", trial)])


def _segment(field: str, value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise InputError(field, f"{value!r} cannot be a path segment", "use a DNS-1123 name")
    return quote(value)


def split_trial_uri(uri: str) -> tuple[CheckpointStore, str]:
    """(store, key_prefix) for a trial URI: the store is rooted one level above the trial."""
    if _scheme(uri) == "s3":
        bucket, prefix = parse_s3_uri(uri)
        parent, _, name = prefix.rpartition("/")
        if not name:
            raise InputError("RUNG_CHECKPOINT_URI", f"{uri!r} names no trial folder",
                             "pass s3://bucket/<root>/<namespace>/<study>/<run>/<trial>")
        return S3Store(bucket, parent), name
    path = file_path(uri)
    parent, _, name = path.rpartition("/")
    if not name:
        raise InputError("RUNG_CHECKPOINT_URI", f"{uri!r} names no trial folder",
                         "pass file:///root/<namespace>/<study>/<run>/<trial>")
    return FileStore(parent or "/"), name


class StoreGate:
    """A Study loop's gate on its checkpoint store: "" when new segments may start, else the
    one-line reason. Probes (write, read back, delete under `prefix`) at most every
    `ok_every` seconds while the store answers, every `failed_every` while it does not, and
    at once when asked for a fresh answer (a trial has just met a store fault)."""

    def __init__(self, store: Callable[[], CheckpointStore], prefix: str, *, ok_every: float = 60.0,
                 failed_every: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.store, self.prefix, self.clock = store, prefix, clock
        self.ok_every, self.failed_every = ok_every, failed_every
        self._next, self._answer = -1e9, ""

    def __call__(self, fresh: bool = False) -> str:
        if fresh or self.clock() >= self._next:
            try:
                self.store().probe(self.prefix)
                self._answer = ""
            except InputError as e:   # StoreUnavailable, or a setting the store refuses
                self._answer = e.line()
            self._next = self.clock() + (self.failed_every if self._answer else self.ok_every)
        return self._answer
