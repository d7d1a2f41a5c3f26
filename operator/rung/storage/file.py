"""file:// checkpoint store: a folder on a local or shared filesystem."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from rung.storage.base import URI_FIELD, CheckpointStore, StoreUnavailable


def _fsync_dir(path: Path) -> None:
    # Makes a rename or a new entry durable; some filesystems refuse it on directories.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FileStore(CheckpointStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _children(self, prefix: str) -> list[str]:
        try:
            return [e.name for e in os.scandir(self._path(prefix)) if e.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    def location(self, key: str) -> str:
        return str(self._path(key))

    def _fault(self, e: OSError, action: str, key: str) -> StoreUnavailable:
        """A full disk or a folder this user cannot write is the store's fault, not the trial's."""
        return StoreUnavailable(URI_FIELD, f"cannot {action} {self._path(key)}: {e.strerror or e}",
                                "free some space, or give a folder this user can write to")

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        # Temp file + fsync + rename: readers see the old object or the whole new one.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            raise self._fault(e, "write", key) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def _remove(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._fault(e, "remove", key) from None
        _fsync_dir(path.parent)

    def _remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def _sizes(self, prefix: str) -> dict[str, int]:
        root, sizes = self._path(prefix), {}
        for folder, _, names in os.walk(root):
            rel = Path(folder).relative_to(root).parts
            for name in names:
                try:
                    sizes["/".join((*rel, name))] = os.stat(os.path.join(folder, name)).st_size
                except FileNotFoundError:  # removed while we listed
                    pass
        return sizes

    def _abort_uploads(self, prefix: str) -> int:
        # A write killed between its temp file and the rename leaves `.<name>.<hex>.tmp`.
        count = 0
        for folder, _, names in os.walk(self._path(prefix)):
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    Path(folder, name).unlink(missing_ok=True)
                    count += 1
        return count
