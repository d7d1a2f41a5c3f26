"""Leader election on a coordination.k8s.io Lease: of the operator's replicas, only the one
holding the Lease acts, so every Study has one writer.

The rules are client-go's: a Lease held by another replica is taken only once it has not
changed for `duration` seconds as seen on this replica's own clock (no comparison of
clocks across machines); the holder renews every `renew` seconds and steps down when it
could not renew for `deadline` seconds. `deadline` < `duration`, so the old holder has
stopped before another replica can take over. A replica that stops cleanly gives the
Lease up at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid

from rung.controller import metrics
from rung.kube.api import Kube, message_of, path, status_of

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(self, kube: Kube, namespace: str, name: str = "rung-operator", identity: str | None = None,
                 duration: float = 15.0, renew: float = 3.0, deadline: float = 10.0, clock=time.monotonic):
        assert renew < deadline < duration
        self.kube, self.namespace, self.name = kube, namespace, name
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.duration, self.renew, self.deadline, self.clock = duration, renew, deadline, clock
        self._seen: tuple[str, str] | None = None   # (holder, resourceVersion) last seen
        self._seen_at = 0.0
        self._held: dict | None = None              # the Lease as our last write left it

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True), or `stop` is set (False)."""
        while not stop.is_set():
            if self._try():
                log.info("leader election: %s holds lease %s/%s", self.identity, self.namespace, self.name)
                metrics.set_leader(True)
                return True
            stop.wait(self.renew)
        return False

    def keep(self, lost: threading.Event, stop: threading.Event) -> None:
        """Renew until `stop`; set `lost` if the Lease could not be renewed in time."""
        last = self.clock()
        while not stop.wait(self.renew):
            if self._try():
                last = self.clock()
            elif self.clock() - last > self.deadline:
                log.error("leader election: lease %s/%s not renewed for %.0f s; stepping down",
                          self.namespace, self.name, self.deadline)
                metrics.set_leader(False)
                lost.set()
                return

    def release(self) -> None:
        """Give the Lease up (a clean stop), so another replica need not wait it out."""
        metrics.set_leader(False)
        try:
            lease = self.kube.request("GET", path("leases", self.namespace, self.name))
            if lease["spec"].get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                self.kube.request("PUT", path("leases", self.namespace, self.name), body=lease)
            self._held = None
        except Exception as e:
            log.warning("leader election: cannot release the lease: %s", message_of(e))

    def _try(self) -> bool:
        """One attempt to take or renew the Lease: while we hold it, one write (PUT on the
        version we last wrote); otherwise a read, and a write when it is free or expired."""
        if self._held is not None:
            lease = dict(self._held, spec=self._spec(self._held["spec"]))
            if self._write("PUT", lease):
                return True
        try:
            lease = self.kube.request("GET", path("leases", self.namespace, self.name))
        except Exception as e:
            if status_of(e) != 404:
                log.warning("leader election: cannot read the lease: %s", message_of(e))
                return False
            return self._write("POST", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                        "metadata": {"name": self.name, "namespace": self.namespace},
                                        "spec": self._spec(None)})
        holder = lease["spec"].get("holderIdentity") or ""
        if holder and holder != self.identity:
            seen = (holder, lease["metadata"]["resourceVersion"])
            if seen != self._seen:   # it changed: the holder is alive; start the clock again
                self._seen, self._seen_at = seen, self.clock()
                return False
            if self.clock() - self._seen_at < self.duration:
                return False
            log.info("leader election: %s did not renew for %.0f s; taking over", holder, self.duration)
        lease["spec"] = self._spec(lease["spec"])
        return self._write("PUT", lease)

    def _spec(self, old: dict | None) -> dict:
        old = old or {}
        taking = old.get("holderIdentity") != self.identity
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration),
                "acquireTime": _now() if taking else old.get("acquireTime"), "renewTime": _now(),
                "leaseTransitions": int(old.get("leaseTransitions") or 0) + (1 if taking and old else 0)}

    def _write(self, method: str, lease: dict) -> bool:
        url = path("leases", self.namespace) if method == "POST" else path("leases", self.namespace, self.name)
        try:
            self._held = self.kube.request(method, url, body=lease)   # a PUT carries the version read
            return True
        except Exception as e:
            self._held = None
            if status_of(e) != 409:
                log.warning("leader election: cannot write the lease: %s", message_of(e))
            return False
