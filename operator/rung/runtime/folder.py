"""The records of a `rung run` Study in a local results folder (a RecordStore).

A results folder (default `.rung/<study>/`) holds
  study.json            the Study as it was first run; a different spec is refused
  status.json           the Study's state, failure reason and accumulated wall time
  run-id                this run's name in checkpoint paths: a fresh folder never loads
                        checkpoints another run left under the same Study name
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
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from rung.api import MUTABLE_SPEC, Study, parse_study
from rung.errors import InputError
from rung.records import RecordStore, TrialRecord

def unwritable(path: Path, e: OSError) -> InputError:
    return InputError(str(path), f"cannot be written ({e.strerror or e})",
                      "free some space or make it writable, then run the same command again")


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
        self.run_id_file = self.root / "run-id"

    @classmethod
    def create(cls, root: str | Path, study: Study) -> "FolderRecords":
        """Open the folder for `study`, making it if new. study.json takes the manifest as it
        is now (check_folder first: only MUTABLE_SPEC fields may differ from the last run)."""
        records = cls(root)
        with records._writing(records.root):
            records.trials_dir.mkdir(parents=True, exist_ok=True)
            doc = study_document(study)
            if not records.study_file.exists() or json.loads(records.study_file.read_text()) != doc:
                write_json_atomic(records.study_file, doc)
            if not records.run_id_file.exists():
                records.run_id_file.write_text(uuid.uuid4().hex + "\n")
        records.run_id   # a hand-broken run-id is refused now, not mid-run
        return records

    @property
    def run_id(self) -> str:
        text = self.run_id_file.read_text().strip()
        if not text.isalnum():
            raise InputError(str(self.run_id_file), f"is not a run id ({text[:40]!r})",
                             "restore it (the name of the run's folder under checkpoints/<namespace>/<study>/)")
        return text

    @contextlib.contextmanager
    def _writing(self, path: Path):
        """A full disk or a read-only folder is one line; the records stay as they were
        (each file is replaced whole), so the same command resumes once it is fixed."""
        try:
            yield
        except OSError as e:
            raise unwritable(path, e) from None

    def study(self) -> Study:
        return read_study(self.root)

    def load(self):
        docs = []
        for path in self.trials_dir.glob("*.json"):
            try:
                docs.append(TrialRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise InputError(str(path), f"is not a readable trial record ({e})",
                                 "restore it or delete the results folder to start over") from None
        return sorted(docs, key=lambda t: t.index)

    def save(self, trial):
        path = self.trials_dir / f"{trial.name}.json"
        with self._writing(path):
            write_json_atomic(path, trial.to_json())

    def load_status(self):
        try:
            status = json.loads(self.status_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            status = e
        if not isinstance(status, dict):
            raise InputError(str(self.status_file), "is not a readable status record",
                             "restore it, or delete it: the Study's state is rebuilt from the trials")
        return status

    def save_status(self, status):
        with self._writing(self.status_file):
            write_json_atomic(self.status_file, status)


LOCK = ".lock"


@contextlib.contextmanager
def locked(root: Path):
    """Hold the results folder for this process (the kernel releases it even on kill -9)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise InputError("--results", f"cannot write {root} ({e.strerror or e})",
                         "give a folder you can write to") from None
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
    recorded = _immutable_part(study_document(read_study(root)))
    path = _first_difference(recorded, _immutable_part(study_document(study)))
    if path is not None:
        where, there, here = path
        raise InputError(where, f"differs from the Study recorded in {root} ({there!r} there, {here!r} here)",
                         f"use another --results folder, or delete {root} to start over")


def _immutable_part(doc: dict) -> dict:
    """The document without the spec fields a Study may change between runs (MUTABLE_SPEC)."""
    doc = json.loads(json.dumps(doc))
    for path in MUTABLE_SPEC:
        *parents, last = path.split(".")
        node = doc["spec"]
        for key in parents:
            node = node.get(key) or {}
        node.pop(last, None)
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
