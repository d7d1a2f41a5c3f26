"""The checkpoint store interface, and the sealing rules every store shares.

A checkpoint is a set of files under `<key_prefix>/<step>/`. It counts only once it is
sealed: MANIFEST.json (names, sizes, sha256 of every file) is written last, so a
checkpoint cut short by a crash or preemption is never resumed, and a file that rots
later fails its checksum and is skipped for the previous sealed step.

The algorithm lives here once; a store only supplies five primitives on keys
("a/b/c" paths below its root); file.py and s3.py implement the same five.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from rung.errors import InputError

MANIFEST = "MANIFEST.json"
FORMAT = 1


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
                         "use <namespace>/<study>/<trial>")
    return "/".join(parts)


def check_file_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == MANIFEST:
        raise InputError("checkpoint file", f"{name!r} is not allowed",
                         f"use a plain file name, not starting with '.', other than {MANIFEST}")
    return name


def build_manifest(step: float, files: dict[str, bytes]) -> bytes:
    body = {
        "format": FORMAT,
        "step": float(step),
        "created": time.time(),
        "files": {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in sorted(files.items())},
    }
    return json.dumps(body, indent=1).encode()


def parse_manifest(raw: bytes | None, step: float) -> dict | None:
    """The manifest's file table if it is well formed and for this step, else None."""
    if raw is None:
        return None
    try:
        body = json.loads(raw)
        if float(body["step"]) != step or not isinstance(body["files"], dict):
            return None
        return body["files"]
    except (ValueError, KeyError, TypeError):
        return None


def intact(entry: dict, data: bytes | None) -> bool:
    return (data is not None and len(data) == entry.get("size")
            and hashlib.sha256(data).hexdigest() == entry.get("sha256"))


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

    # --- the interface ---------------------------------------------------------------
    def check(self) -> None:
        """Raise StoreUnavailable when the store cannot be used now (a remote store probes
        its endpoint, bucket and credentials; a local folder has nothing to probe)."""

    def save(self, key_prefix: str, step: float, files: dict[str, bytes]) -> None:
        """Write `files` as the checkpoint at `step`, then seal it."""
        base = f"{check_prefix(key_prefix)}/{format_step(step)}"
        for name in files:
            check_file_name(name)
        # Unseal first: re-saving a step (a segment rerun after preemption) must never
        # leave an old manifest vouching for a half-replaced set of files.
        self._remove(f"{base}/{MANIFEST}")
        for name, data in files.items():
            self._put(f"{base}/{name}", bytes(data))
        self._put(f"{base}/{MANIFEST}", build_manifest(step, files))

    def list_steps(self, key_prefix: str) -> list[float]:
        """Steps that have a manifest, ascending (contents are checked only on load)."""
        prefix = check_prefix(key_prefix)
        steps = [s for s in map(parse_step, self._children(prefix)) if s is not None]
        return sorted(s for s in steps if self._get(f"{prefix}/{format_step(s)}/{MANIFEST}") is not None)

    def load_latest(self, key_prefix: str, max_step: float | None = None
                    ) -> tuple[float, dict[str, bytes]] | None:
        """The highest-step checkpoint (<= max_step) that is sealed and intact, or None."""
        prefix = check_prefix(key_prefix)
        steps = sorted((s for s in map(parse_step, self._children(prefix)) if s is not None),
                       reverse=True)
        for step in steps:
            if max_step is not None and step > max_step:
                continue
            loaded = self._load(f"{prefix}/{format_step(step)}", step)
            if loaded is not None:
                return step, loaded
        return None

    def delete(self, key_prefix: str) -> None:
        """Remove every checkpoint under key_prefix (a trial's, or a whole study's)."""
        self._remove_tree(check_prefix(key_prefix))

    def delete_study(self, key_prefix: str) -> None:
        """Remove a whole study's checkpoints (<namespace>/<study>); refuses shorter
        prefixes, so a slip can never empty a namespace or the whole root."""
        prefix = check_prefix(key_prefix)
        if prefix.count("/") < 1:
            raise InputError("key_prefix", f"{key_prefix!r} is not <namespace>/<study>",
                             "pass the study's prefix, e.g. default/mlp")
        self._remove_tree(prefix)

    def prune(self, key_prefix: str, keep_latest: int = 1, keep_best: int = 0,
              loss_of: Callable[[str, float], float | None] | None = None,
              verify: bool = True) -> list[float]:
        """Retention for one trial: keep its `keep_latest` newest sealed checkpoints and the
        `keep_best` sealed ones with the lowest `loss_of(key_prefix, step)` (None: unranked);
        remove every other step below the newest kept one. Returns the removed steps.

        With `verify`, "newest" counts only checkpoints that load intact, so a damaged newest
        one never costs the one a resume would fall back to. Steps above the newest kept one
        (unsealed: possibly being written) are left alone; still, prune a trial only while
        none of its segments runs."""
        prefix = check_prefix(key_prefix)
        sealed = self.list_steps(prefix)
        latest: list[float] = []
        for step in reversed(sealed):
            if len(latest) >= keep_latest:
                break
            if not verify or self._load(f"{prefix}/{format_step(step)}", step) is not None:
                latest.append(step)
        if not latest:  # nothing resumable: removing anything could only lose data
            return []
        ranked = [(loss, s) for s in sealed
                  if loss_of is not None and (loss := loss_of(prefix, s)) is not None
                  and math.isfinite(loss)]
        keep = set(latest) | {s for _, s in sorted(ranked)[:max(keep_best, 0)]}
        removed = []
        for name in self._children(prefix):
            step = parse_step(name)
            if step is None or step in keep or step > max(latest):
                continue
            # Unseal first: a prune cut short leaves an unsealed folder, never a sealed
            # checkpoint with files missing.
            self._remove(f"{prefix}/{name}/{MANIFEST}")
            self._remove_tree(f"{prefix}/{name}")
            removed.append(step)
        return sorted(removed)

    def _load(self, base: str, step: float) -> dict[str, bytes] | None:
        table = parse_manifest(self._get(f"{base}/{MANIFEST}"), step)
        if table is None:
            return None
        files = {}
        for name, entry in table.items():
            data = self._get(f"{base}/{name}")
            if not isinstance(entry, dict) or not intact(entry, data):
                return None
            files[name] = data
        return files
