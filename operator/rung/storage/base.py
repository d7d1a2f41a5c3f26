"""The checkpoint store interface, and the sealing rules every store shares.

A checkpoint is a set of files under `<key_prefix>/<step>/`. It counts only once it is
sealed: MANIFEST.json (names, sizes, sha256 of every file, and the metrics the trial
reported at that step) is written last, so a checkpoint cut short by a crash or
preemption is never resumed, and a file that rots later fails its checksum and is
skipped for the previous sealed step.

Retention (`prune`) runs in the trial itself, after each save (rung.trial.sdk): it
keeps the latest checkpoint that is sealed and whole plus the `keep_best` best by the
objective, deciding from one listing (names and sizes) and the manifests alone, never
reading a state file. Writes cut off mid-way (S3 multipart uploads, a folder's temp
files) are invisible to readers but cost storage until `abort_incomplete` removes them.

The algorithm lives here once; a store only supplies seven primitives on keys
("a/b/c" paths below its root); file.py and s3.py implement the same seven.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from abc import ABC, abstractmethod
from typing import Callable

from rung.errors import InputError

MANIFEST = "MANIFEST.json"
FORMAT = 1
URI_FIELD = "spec.checkpoints.uri"


class StoreUnavailable(InputError):
    """The store cannot be used as configured or reached (missing bucket, refused
    credentials, endpoint down after retries). `transient` is True when the same call may
    succeed later (the endpoint was unreachable), False when a setting must change."""

    def __init__(self, field: str, problem: str, fix: str = "", transient: bool = False):
        super().__init__(field, problem, fix)
        self.transient = transient


def format_step(step: float) -> str:
    """Canonical directory name of a step: 3 -> "3", 2.5 -> "2.5" (parses back exactly)."""
    value = float(step)
    if not math.isfinite(value) or value < 0:
        raise InputError("step", f"{step!r} is not a finite number >= 0", "report budgets like 1, 3, 9")
    if value.is_integer():
        return str(int(value))
    return repr(value)  # shortest text that round-trips, e.g. "0.1", "2.5"


def parse_step(name: str) -> float | None:
    """The step a directory name stands for, or None for anything that is not canonical."""
    try:
        value = float(name)
        return value if format_step(value) == name else None
    except (ValueError, InputError):
        return None


def check_prefix(key_prefix: str) -> str:
    """Normalise a key prefix ("ns/study/trial"); refuse ones that could escape the root."""
    parts = [p for p in str(key_prefix).strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise InputError("key_prefix", f"{key_prefix!r} must be a relative path without '..'",
                         "use <namespace>/<study>/<run>/<trial>")
    return "/".join(parts)


def check_file_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == MANIFEST:
        raise InputError("checkpoint file", f"{name!r} is not allowed",
                         f"use a plain file name, not starting with '.', other than {MANIFEST}")
    return name


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_manifest(step: float, files: dict[str, bytes], metrics: dict | None = None,
                   owner: str | None = None) -> bytes:
    body = {
        "format": FORMAT,
        "step": float(step),
        "created": time.time(),
        "files": {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in sorted(files.items())},
    }
    if metrics:  # inf/nan would make the file invalid JSON, and rank nowhere anyway
        body["metrics"] = {k: v for k, v in metrics.items() if _finite(v)}
    if owner is not None:
        body["owner"] = owner
    return json.dumps(body, indent=1).encode()


def owner_of(params: dict) -> str:
    """What binds a checkpoint to the configuration that wrote it: a digest of its params."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_manifest(raw: bytes | None, step: float) -> dict | None:
    """The manifest if it is well formed and for this step, else None."""
    if raw is None:
        return None
    try:
        body = json.loads(raw)
        if float(body["step"]) != step or not isinstance(body["files"], dict):
            return None
        return body
    except (ValueError, KeyError, TypeError):
        return None


def intact(entry: dict, data: bytes | None) -> bool:
    return (data is not None and len(data) == entry.get("size")
            and hashlib.sha256(data).hexdigest() == entry.get("sha256"))


def whole(table: dict, sizes: dict[str, int]) -> bool:
    """Every file the manifest names is listed with the manifest's size: the check
    retention can afford (a listing, no download); loading still verifies checksums."""
    return all(isinstance(e, dict) and sizes.get(name) == e.get("size") for name, e in table.items())


def loss(body: dict, objective: str, goal: str) -> float | None:
    """The manifest's objective as a loss (lower is better), or None when unranked."""
    metrics = body.get("metrics")
    value = metrics.get(objective) if isinstance(metrics, dict) else None
    if not _finite(value):
        return None
    return value if goal == "minimize" else -value


class CheckpointStore(ABC):
    """Sealed checkpoints of many trials, addressed by key prefix and step."""

    # --- primitives a store implements ---------------------------------------------
    @abstractmethod
    def _children(self, prefix: str) -> list[str]:
        """Names directly below prefix ([] when it does not exist)."""

    @abstractmethod
    def _get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it is missing or unreadable."""

    @abstractmethod
    def _put(self, key: str, data: bytes) -> None:
        """Write one object so that it is either wholly there or not at all, and durable."""

    @abstractmethod
    def _remove(self, key: str) -> None:
        """Remove one object; missing is fine."""

    @abstractmethod
    def _remove_tree(self, prefix: str) -> None:
        """Remove everything under prefix; missing is fine."""

    @abstractmethod
    def _sizes(self, prefix: str) -> dict[str, int]:
        """{key relative to prefix: size} of every object under it, from one listing."""

    @abstractmethod
    def _abort_uploads(self, prefix: str) -> int:
        """Remove the remains of writes under prefix that never completed; how many."""

    @abstractmethod
    def location(self, key: str) -> str:
        """Where a key is, for messages: a path or an s3:// URI."""

    # --- the interface ---------------------------------------------------------------
    def check(self) -> None:
        """Raise StoreUnavailable when the store cannot be used now (a remote store probes
        its endpoint, bucket and credentials; a local folder has nothing to probe)."""

    def probe(self, key_prefix: str) -> None:
        """Write a small object under key_prefix, read it back and delete it; raise
        StoreUnavailable (one line) if any of it fails. A Study checks its store so before
        its first trial, so a wrong setting is one message, not every trial failing."""
        key, data = f"{check_prefix(key_prefix)}/.probe-{uuid.uuid4().hex}", b"rung store probe\n"
        self._put(key, data)
        try:
            if self._get(key) != data:
                raise StoreUnavailable(URI_FIELD, f"wrote {self.location(key)} but could not read it back",
                                       "check the store's read permissions")
        finally:
            self._remove(key)

    def save(self, key_prefix: str, step: float, files: dict[str, bytes],
             metrics: dict[str, float] | None = None, owner: str | None = None) -> None:
        """Write `files` as the checkpoint at `step`, then seal it; the manifest records
        `metrics` (what the trial reported at that step) so retention can rank it, and
        `owner` (owner_of the trial's params) so no other configuration loads it."""
        base = f"{check_prefix(key_prefix)}/{format_step(step)}"
        for name in files:
            check_file_name(name)
        # Unseal first: re-saving a step (a segment rerun after preemption) must never
        # leave an old manifest vouching for a half-replaced set of files.
        self._remove(f"{base}/{MANIFEST}")
        for name, data in files.items():
            self._put(f"{base}/{name}", bytes(data))
        self._put(f"{base}/{MANIFEST}", build_manifest(step, files, metrics, owner))

    def list_steps(self, key_prefix: str) -> list[float]:
        """Steps that have a manifest, ascending (contents are checked only on load)."""
        prefix = check_prefix(key_prefix)
        steps = [s for s in map(parse_step, self._children(prefix)) if s is not None]
        return sorted(s for s in steps if self._get(f"{prefix}/{format_step(s)}/{MANIFEST}") is not None)

    def load_latest(self, key_prefix: str, max_step: float | None = None, owner: str | None = None,
                    skipped: Callable[[str, str], None] = lambda where, why: None
                    ) -> tuple[float, dict[str, bytes]] | None:
        """The highest-step checkpoint (<= max_step) that is sealed, intact and, when `owner`
        is given, written by that owner; or None. Each one passed over on the way is
        reported as skipped(location, why)."""
        prefix = check_prefix(key_prefix)
        steps = sorted((s for s in map(parse_step, self._children(prefix)) if s is not None),
                       reverse=True)
        for step in steps:
            if max_step is not None and step > max_step:
                continue
            base = f"{prefix}/{format_step(step)}"
            loaded = self._load(base, step, owner)
            if isinstance(loaded, dict):
                return step, loaded
            skipped(self.location(base), loaded)
        return None

    def load_file(self, key_prefix: str, name: str) -> tuple[float, bytes] | None:
        """One file of the highest-step sealed checkpoint that has it intact: (step, bytes),
        or None. Reads that file and the manifests alone (an artefact beside a large state)."""
        prefix = check_prefix(key_prefix)
        steps = sorted((s for s in map(parse_step, self._children(prefix)) if s is not None), reverse=True)
        for step in steps:
            base = f"{prefix}/{format_step(step)}"
            body = parse_manifest(self._get(f"{base}/{MANIFEST}"), step)
            entry = body["files"].get(name) if body is not None else None
            if isinstance(entry, dict):
                data = self._get(f"{base}/{check_file_name(name)}")
                if intact(entry, data):
                    return step, data
        return None

    def abort_incomplete(self, key_prefix: str) -> int:
        """Abort the writes under key_prefix that were cut off (a pod killed mid-upload):
        unfinished S3 multipart uploads, a folder's leftover temp files. Readers never see
        them, but they cost storage forever. Call it only while nothing else writes there
        (a trial's own prefix before its first save). Returns how many were removed."""
        return self._abort_uploads(check_prefix(key_prefix))

    def delete(self, key_prefix: str) -> None:
        """Remove every checkpoint under key_prefix (a trial's, or a whole study's)."""
        prefix = check_prefix(key_prefix)
        self._abort_uploads(prefix)
        self._remove_tree(prefix)

    def delete_study(self, key_prefix: str) -> None:
        """Remove one run of a study's checkpoints (<namespace>/<study>/<run>); refuses
        shorter prefixes, so a slip can never empty a Study's other runs, a namespace or the root."""
        prefix = check_prefix(key_prefix)
        if prefix.count("/") < 2:
            raise InputError("key_prefix", f"{key_prefix!r} is not <namespace>/<study>/<run>",
                             "pass the study run's prefix, e.g. default/mlp/0c5f...")
        self.delete(prefix)

    def prune(self, key_prefix: str, keep_best: int = 0, objective: str | None = None,
              goal: str = "minimize") -> list[float]:
        """Retention for one trial: keep its latest checkpoint that is sealed and whole, and
        the `keep_best` sealed, whole ones with the best `objective` in their manifests
        (`goal` minimize|maximize; manifests without it are unranked); remove every other
        step below the latest kept one. Returns the removed steps.

        Costs one listing of the trial prefix and one manifest GET per step folder; no
        state file is read. Steps above the latest kept one (unsealed: possibly being
        written; or damaged) are left alone. Run it only while no other segment of the
        trial writes."""
        if goal not in ("minimize", "maximize"):
            raise InputError("goal", f"{goal!r} is not minimize or maximize", "pass one of the two")
        if keep_best > 0 and not objective:
            raise InputError("objective", "ranking the best checkpoints needs an objective metric",
                             "name the metric (e.g. val_loss), or keep_best=0")
        prefix = check_prefix(key_prefix)
        listed: dict[float, dict[str, int]] = {}   # step -> {file name: size}
        for key, size in self._sizes(prefix).items():
            folder, _, name = key.partition("/")
            step = parse_step(folder)
            if step is not None and name and "/" not in name:
                listed.setdefault(step, {})[name] = size
        sealed = {}   # step -> manifest, for the checkpoints that are sealed and whole
        for step, sizes in listed.items():
            if MANIFEST in sizes:
                body = parse_manifest(self._get(f"{prefix}/{format_step(step)}/{MANIFEST}"), step)
                if body is not None and whole(body["files"], sizes):
                    sealed[step] = body
        if not sealed:  # nothing resumable: removing anything could only lose data
            return []
        latest = max(sealed)
        ranked = sorted((value, step) for step, body in sealed.items()
                        if objective and (value := loss(body, objective, goal)) is not None)
        keep = {latest} | {step for _, step in ranked[:max(keep_best, 0)]}
        removed = sorted(step for step in listed if step < latest and step not in keep)
        for step in removed:
            # Unseal first: a prune cut short leaves an unsealed folder, never a sealed
            # checkpoint with files missing.
            self._remove(f"{prefix}/{format_step(step)}/{MANIFEST}")
            self._remove_tree(f"{prefix}/{format_step(step)}")
        return removed

    def _load(self, base: str, step: float, owner: str | None) -> dict[str, bytes] | str:
        """The checkpoint's files, or why it cannot be loaded."""
        body = parse_manifest(self._get(f"{base}/{MANIFEST}"), step)
        if body is None:
            return f"no readable {MANIFEST} (cut off before it was sealed, or damaged)"
        if owner is not None and body.get("owner") != owner:
            return "written by another configuration (or run) than this trial's"
        files = {}
        for name, entry in body["files"].items():
            data = self._get(f"{base}/{name}")
            if not isinstance(entry, dict) or not intact(entry, data):
                return f"{name} is missing or fails its checksum"
            files[name] = data
        return files
