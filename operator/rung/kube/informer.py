"""Shared watches: every object of one kind that carries a Study label, as the API server
has them, kept by a LIST then a WATCH (resumed from its resourceVersion, listed again when
the server says it is too old).

The label selector is applied by the API server, so the operator never receives pods that
are not Rung's, nor (for pods) the ones it has acknowledged. One informer per kind (and
per watched namespace) serves every Study: no Study polls the API.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from rung.kube.api import Kube, status_of

log = logging.getLogger(__name__)

STUDY_LABEL = "rung.dev/study"

Key = tuple[str, str]   # (namespace, study)


def version(obj: dict) -> int:
    """An object's resourceVersion as a number: etcd's revision, which only grows."""
    return int(obj["metadata"]["resourceVersion"])


class ObjectCache:
    """Objects by (namespace, study) and name. `keep(obj)` is what is stored (a pod whole,
    a Trial only its metadata); `on_change(key, kind_of_event, obj)` hears every change."""

    def __init__(self, keep: Callable[[dict], dict] = lambda obj: obj,
                 on_change: Callable[[Key, str, dict], None] | None = None):
        self.keep, self.on_change = keep, on_change
        self.lock = threading.Lock()
        self.groups: dict[Key, dict[str, dict]] = {}

    def snapshot(self, key: Key) -> dict[str, dict]:
        with self.lock:
            return dict(self.groups.get(key, {}))

    def replace(self, items: list[dict], namespace: str | None) -> None:
        """A fresh LIST (of one namespace, or of all when None): whatever is not in it is gone."""
        listed = {(_key(obj), obj["metadata"]["name"]): obj for obj in items if _key(obj)}
        with self.lock:
            gone = [(key, name, obj) for key, group in self.groups.items() for name, obj in group.items()
                    if (namespace is None or key[0] == namespace) and (key, name) not in listed]
        for key, name, obj in gone:
            self.apply("DELETED", obj, force=True)
        for obj in listed.values():
            self.apply("MODIFIED", obj)

    def apply(self, kind: str, obj: dict, force: bool = False) -> None:
        """One watch event. Older news than what is held is dropped (events and our own
        writes can arrive out of order)."""
        key, name = _key(obj), obj["metadata"]["name"]
        if key is None:
            return
        with self.lock:
            group = self.groups.setdefault(key, {})
            held = group.get(name)
            if held is not None and not force and version(obj) < version(held):
                return
            if kind == "DELETED":
                if held is None:
                    return
                del group[name]
                if not group:
                    del self.groups[key]
            else:
                group[name] = self.keep(obj)
        if self.on_change:
            self.on_change(key, kind, obj)


def _key(obj: dict) -> Key | None:
    meta = obj["metadata"]
    study = (meta.get("labels") or {}).get(STUDY_LABEL)
    return (meta.get("namespace", ""), study) if study else None


def metadata_only(obj: dict) -> dict:
    meta = obj["metadata"]
    return {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion", "labels")}}


class FirstList:
    """The whole objects of a metadata-only informer's first LIST, by Study, each handed
    out once and only while its cache still holds exactly those versions: a restarted
    operator then reads its Trials once instead of twice before its first decision. What
    no Study took goes after `keep_for` seconds."""

    def __init__(self, cache: ObjectCache, keep_for: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.cache, self.keep_for, self.clock = cache, keep_for, clock
        self.lock = threading.Lock()
        self.groups: dict[Key, list[dict]] = {}
        self.until = 0.0

    def keep(self, items: list[dict]) -> None:
        groups: dict[Key, list[dict]] = {}
        for obj in items:
            key = _key(obj)
            if key:
                groups.setdefault(key, []).append(obj)
        with self.lock:
            self.groups.update(groups)   # one informer per watched namespace
            self.until = self.clock() + self.keep_for

    def take(self, key: Key) -> list[dict] | None:
        """The Study's objects as listed, if none has changed, appeared or gone since
        (the cache hears every change); else None: list them afresh."""
        with self.lock:
            items = self.groups.pop(key, None)
        if items is None:
            return None
        held = {name: version(obj) for name, obj in self.cache.snapshot(key).items()}
        return items if held == {obj["metadata"]["name"]: version(obj) for obj in items} else None

    def expire(self) -> None:
        """Drop what no Study took in time (the workers call it between steps)."""
        with self.lock:
            if self.groups and self.clock() > self.until:
                self.groups.clear()


class Informer:
    """Keeps `cache` in step with the objects at `url` matching `selector`, in a thread.
    `metadata_only`: the server sends each object's metadata alone (for a cache that keeps
    no more); with `first_list`, the first LIST still fetches whole objects and hands
    them to it."""

    def __init__(self, kube: Kube, url: str, selector: str, cache: ObjectCache, namespace: str | None,
                 stop: threading.Event, metadata_only: bool = False, first_list: FirstList | None = None):
        self.kube, self.url, self.selector, self.cache = kube, url, selector, cache
        self.metadata_only, self.first_list = metadata_only, first_list
        self.namespace, self.stop = namespace, stop
        self.synced = threading.Event()   # set once the first LIST is in the cache
        self.thread = threading.Thread(target=self._run, name=f"informer {url}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        version_, delay = None, 0.5
        while not self.stop.is_set():
            try:
                if version_ is None:
                    whole = self.first_list is not None and not self.synced.is_set()
                    items, version_ = self.kube.list_all(self.url, {"labelSelector": self.selector},
                                                         self.metadata_only and not whole)
                    if whole:
                        self.first_list.keep(items)
                    self.cache.replace(items, self.namespace)
                    self.synced.set()
                for event in self.kube.watch(self.url, {"labelSelector": self.selector, "resourceVersion": version_},
                                             self.metadata_only):
                    if self.stop.is_set():
                        return
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":   # 410 Gone: our version is too old; list again
                        version_ = None if obj.get("code") == 410 else version_
                        break
                    version_ = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self.cache.apply(kind, obj)
                delay = 0.5
            except Exception as e:   # the API server is down or cut us off: resume later
                if status_of(e) == 410:
                    version_ = None
                log.warning("watch of %s failed (%s); retrying in %.1f s", self.url, e, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
