"""Durable trial records: the truth a Study is rebuilt from after a crash or Ctrl-C.

A results folder (default `.rung/<study>/`) holds
  study.json            the Study as it was first run; a different spec is refused
  status.json           the Study's state, failure reason and accumulated wall time
  .lock                 held (flock) by the one `rung run` using the folder
  trials/<trial>.json   one file per trial, each replaced atomically (temp + os.replace)
  segments/             per-segment logs, result files and pid files (rung.runtime.local)
  checkpoints/          the default file:// checkpoint store
Losses in records are the minimised objective (the metric, negated when goal is maximize).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rung.api import Study, parse_study
from rung.errors import InputError
from rung.schedulers.base import FAILED, SegmentRecord, TrialRecord

RUNNING, COMPLETED, FAILED_STATE, STOPPED = "running", "completed", "failed", "stopped"


@dataclass
class SegmentDoc:
    budget: float                       # the budget the segment was asked to reach
    resume_from: float | None = None    # the rung budget it continued from
    status: str = RUNNING               # running | completed | failed | stopped
    loss: float | None = None           # final loss; None while running or when failed
    reached: float | None = None        # budget reached (the step it was stopped at, if stopped)
    curve: list[list[float]] = field(default_factory=list)  # live [step, loss] reports
    metrics: dict = field(default_factory=dict)              # latest reported metrics, as reported
    started: float | None = None        # wall-clock time (time.time())
    ended: float | None = None
    elapsed: float | None = None        # the Study's accumulated wall time when it ended
    exit_code: int | None = None
    reason: str = ""                    # why it failed or stopped
    restarts: int = 0                   # restarts after a crash of `rung run` or a loss
    losses: int = 0                     # infrastructure losses (counted apart from failures)
    stop_requested: bool = False        # the scheduler said stop; never restart it

    @property
    def last_step(self) -> float | None:
        return self.curve[-1][0] if self.curve else None

    def used(self) -> float:
        """Budget this segment trained: from where it resumed to where it got."""
        end = self.reached if self.status == COMPLETED else self.last_step
        return max(0.0, (end or 0.0) - (self.resume_from or 0.0))

    def to_scheduler(self) -> SegmentRecord:
        finished = self.status != RUNNING
        loss = (FAILED if self.loss is None else self.loss) if finished else None
        reached = (self.budget if self.reached is None else self.reached) if finished else None
        return SegmentRecord(self.budget, loss, reached, [tuple(p) for p in self.curve])


@dataclass
class TrialDoc:
    index: int
    name: str
    config: dict
    segments: list[SegmentDoc] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.segments[-1].status if self.segments else RUNNING

    @property
    def current(self) -> SegmentDoc:
        return self.segments[-1]

    def to_scheduler(self) -> TrialRecord:
        return TrialRecord(self.index, self.config, [s.to_scheduler() for s in self.segments])

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "state": self.state, "config": self.config,
                "segments": [_finite(asdict(s)) for s in self.segments]}

    @classmethod
    def from_json(cls, doc: dict) -> "TrialDoc":
        known = SegmentDoc.__dataclass_fields__
        segments = [SegmentDoc(**{k: v for k, v in s.items() if k in known}) for s in doc["segments"]]
        return cls(int(doc["index"]), doc["name"], doc["config"], segments)


def _finite(d: dict) -> dict:
    # JSON has no inf/nan: a non-finite loss is stored as null (the status says failed).
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class RecordStore(ABC):
    """Where the loop keeps trial records and the Study's status."""

    @abstractmethod
    def load(self) -> list[TrialDoc]:
        """Every trial record, by index."""

    @abstractmethod
    def save(self, trial: TrialDoc) -> None:
        """Persist one trial record durably (all or nothing)."""

    @abstractmethod
    def load_status(self) -> dict:
        """The Study's status ({} before the first save)."""

    @abstractmethod
    def save_status(self, status: dict) -> None: ...


class MemoryRecords(RecordStore):
    """Records in memory (tests); copies on the way in and out, like a real store."""

    def __init__(self):
        self.trials: dict[int, dict] = {}
        self.status: dict = {}

    def load(self):
        return [TrialDoc.from_json(json.loads(json.dumps(self.trials[i]))) for i in sorted(self.trials)]

    def save(self, trial):
        self.trials[trial.index] = json.loads(json.dumps(trial.to_json()))

    def load_status(self):
        return dict(self.status)

    def save_status(self, status):
        self.status = dict(status)


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON so that readers (and a crash) see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)   # mkstemp makes it private; records are plain project files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FolderRecords(RecordStore):
    """The records of one Study in a local results folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.trials_dir = self.root / "trials"
        self.study_file = self.root / "study.json"
        self.status_file = self.root / "status.json"

    @classmethod
    def create(cls, root: str | Path, study: Study) -> "FolderRecords":
        """Open the folder for `study`, making it (and study.json) if new. Call check_folder first."""
        records = cls(root)
        records.trials_dir.mkdir(parents=True, exist_ok=True)
        if not records.study_file.exists():
            write_json_atomic(records.study_file, study_document(study))
        return records

    def study(self) -> Study:
        return read_study(self.root)

    def load(self):
        docs = []
        for path in self.trials_dir.glob("*.json"):
            try:
                docs.append(TrialDoc.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise InputError(str(path), f"is not a readable trial record ({e})",
                                 "restore it or delete the results folder to start over") from None
        return sorted(docs, key=lambda t: t.index)

    def save(self, trial):
        write_json_atomic(self.trials_dir / f"{trial.name}.json", trial.to_json())

    def load_status(self):
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_status(self, status):
        write_json_atomic(self.status_file, status)


LOCK = ".lock"


@contextlib.contextmanager
def locked(root: Path):
    """Hold the results folder for this process (the kernel releases it even on kill -9)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("--results", f"{root} is in use by another `rung run`",
                             "wait for it to end, or use another --results folder") from None
        yield
    finally:
        os.close(fd)


# ---- the spec a results folder belongs to ------------------------------------------------

# Changing these between runs is fine: they do not change which trials a Study makes.
_RUN_OPTIONS = (("spec", "limits", "parallelism"),)


def study_document(study: Study) -> dict:
    """The Study as stored in study.json: normalised, defaults filled in."""
    doc = study.model_dump(mode="json", by_alias=True)
    doc["metadata"] = {"name": study.metadata.name, "namespace": study.metadata.namespace}
    return doc


def read_study(root: str | Path) -> Study:
    path = Path(root) / "study.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(str(root), "is not a Rung results folder (it has no study.json)",
                         "give the folder `rung run` wrote (default .rung/<study>) or a Study manifest") from None
    except (OSError, ValueError) as e:
        raise InputError(str(path), f"cannot be read ({e})", "restore it or delete the results folder") from None
    return parse_study(doc, source=str(path))


def check_folder(root: str | Path, study: Study) -> None:
    """Refuse a results folder that belongs to something else. Reads only; writes nothing."""
    root = Path(root)
    if not root.exists():
        return
    if not root.is_dir():
        raise InputError("--results", f"{root} is not a folder", "give a folder path")
    if not (root / "study.json").exists():
        if any(p.name != LOCK for p in root.iterdir()):
            raise InputError("--results", f"{root} is not empty and holds no Rung results",
                             "give a new or empty folder")
        return
    recorded = _without_run_options(study_document(read_study(root)))
    path = _first_difference(recorded, _without_run_options(study_document(study)))
    if path is not None:
        where, there, here = path
        raise InputError(where, f"differs from the Study recorded in {root} ({there!r} there, {here!r} here)",
                         f"use another --results folder, or delete {root} to start over")


def _without_run_options(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for path in _RUN_OPTIONS:
        node = doc
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return doc


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        if path == "spec.searchSpace" and list(a) != list(b) and set(a) == set(b):
            return path + " (order)", list(a), list(b)  # the order of parameters shapes sampling
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if a == b else (path or "manifest", a, b)
