"""The operator's Prometheus metrics, and its probes, on one HTTP port (`rung operator
--metrics-port`): /metrics, /healthz (liveness), /readyz (readiness).

Metrics are a courtesy: every update goes through `_safe`, so a metrics error is logged and
never fails a reconcile. Labels stay bounded: namespace and Study names, and outcomes,
causes and methods from small fixed sets; never trial or pod names. A Study's series go
when the Study does (`forget_study`).

Probes:
- /healthz: every thread the operator registered (the Study workers, the watches, the
  Lease renewer) is alive. A standby runs none of them and is live: a liveness probe never
  kills a healthy standby.
- /readyz: a standby is ready (it only waits for the Lease, so a rolling update of the
  Deployment is not held up by it); the leader is ready once its watches have listed
  everything, and not in the few seconds between taking the Lease and that.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from rung.kube.api import refusal, status_of

log = logging.getLogger(__name__)

Key = tuple[str, str]   # (namespace, study)
TRIAL_STATES = ("running", "completed", "failed", "stopped")   # the Study status's trial counts
OUTCOMES = ("succeeded", "diverged", "failed", "stopped", "lost")  # of a segment attempt

TRIALS = Gauge("rung_trials", "Trials of a Study by state, as its status counts them.",
               ["namespace", "study", "state"])
SEGMENTS_STARTED = Counter("rung_segments_started_total",
                           "Segment attempts recorded as started (a pod is created for each).",
                           ["namespace", "study"])
SEGMENTS_FINISHED = Counter("rung_segments_finished_total",
                            "Segment attempts recorded as ended, by outcome: succeeded, diverged (a non-finite "
                            "objective), failed, stopped, lost (its pod lost to the infrastructure; it restarts).",
                            ["namespace", "study", "outcome"])
DECISION_SECONDS = Histogram("rung_decision_seconds",
                             "Time of one step of a Study loop: read the world, record, decide, create pods.",
                             buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
NEXT_POD_SECONDS = Histogram("rung_completion_to_next_pod_seconds",
                             "From the pod watch showing a segment's pod ended to it showing the next new pod "
                             "of the same Study (as bench/operator_latency.py measures it).",
                             buckets=(.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300))
RECONCILE_ERRORS = Counter("rung_reconcile_errors_total",
                           "Study steps that failed, by cause: Conflict (someone else wrote; reloaded), a "
                           "refusal of the cluster (Throttled, QuotaExceeded, ApiUnreachable, ...; held and "
                           "retried), or Unexpected.", ["cause"])
API_REQUESTS = Counter("rung_api_requests_total", "Kubernetes API requests the operator made (kopf's own "
                       "watch of Studies aside), by method.", ["method"])
API_RETRIES = Counter("rung_api_retries_total", "API requests the cluster refused for now, which the operator "
                      "retries with backoff, by cause (Throttled, ApiServerError, ApiUnreachable, QuotaExceeded, "
                      "AdmissionDenied, Forbidden, ...).", ["cause"])
API_THROTTLED = Counter("rung_api_throttled_total", "API requests the API server throttled (429 Too Many Requests).")
LEADER = Gauge("rung_leader", "1 while this replica holds the leader Lease and acts, else 0 (a standby).")


def _safe(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("metrics: %s failed (ignored)", fn.__name__)
    return wrapper


# ---- updates, called by the controller -------------------------------------------------------

@_safe
def study_status(study: dict) -> None:
    """Trials by state from a Study object's status (the records the controller already has)."""
    meta, counts = study["metadata"], (study.get("status") or {}).get("trials") or {}
    for state in TRIAL_STATES:
        TRIALS.labels(meta["namespace"], meta["name"], state).set(counts.get(state) or 0)


@_safe
def segment_started(namespace: str, study: str) -> None:
    SEGMENTS_STARTED.labels(namespace, study).inc()


@_safe
def segment_finished(namespace: str, study: str, outcome: str) -> None:
    SEGMENTS_FINISHED.labels(namespace, study, outcome).inc()


@_safe
def decision(seconds: float) -> None:
    DECISION_SECONDS.observe(seconds)


@_safe
def reconcile_error(cause: str) -> None:
    RECONCILE_ERRORS.labels(cause).inc()


@_safe
def api_request(method: str, exc: BaseException | None) -> None:
    """After every request of rung.kube.api.Kube (its `on_request` hook)."""
    API_REQUESTS.labels(method).inc()
    refused = refusal(exc) if exc is not None else None
    if refused is not None:
        API_RETRIES.labels(refused.cause).inc()
    if exc is not None and status_of(exc) == 429:
        API_THROTTLED.inc()


@_safe
def set_leader(leader: bool) -> None:
    PROBES.leader = leader
    LEADER.set(1 if leader else 0)


@_safe
def forget_study(namespace: str, study: str) -> None:
    """A Study is gone: drop its series (label sets are bounded by the Studies that exist)."""
    for metric, values in ((TRIALS, TRIAL_STATES), (SEGMENTS_STARTED, (None,)), (SEGMENTS_FINISHED, OUTCOMES)):
        for value in values:
            with contextlib.suppress(KeyError):   # never set
                metric.remove(namespace, study, *([value] if value else []))
    NEXT_POD.forget((namespace, study))


class NextPodLatency:
    """Completion-to-next-pod latency from the pod watch's events (rung.kube.informer's
    on_change): each ended pod waits for the Study's next new pod, and the delay is observed
    then, as bench/operator_latency.py does from outside. An ended pod usually leaves the
    watch (labelled handled) before the next pod is created; its wait goes on."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock, self.lock = clock, threading.Lock()
        self.ended: dict[Key, set[str]] = {}        # pods in the watch seen ended (an end counts once)
        self.waiting: dict[Key, list[float]] = {}   # when each end not yet followed by a new pod was seen

    @_safe
    def pod_changed(self, key: Key, kind: str, pod: dict) -> None:
        name, now = pod["metadata"]["name"], self.clock()
        with self.lock:
            ended = self.ended.setdefault(key, set())
            if kind == "DELETED":
                ended.discard(name)
            elif kind == "ADDED":
                for since in self.waiting.pop(key, ()):
                    NEXT_POD_SECONDS.observe(now - since)
            elif (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and name not in ended:
                ended.add(name)
                self.waiting.setdefault(key, []).append(now)
            if not ended:
                del self.ended[key]

    def forget(self, key: Key) -> None:
        """The Study is over or gone: its pods' ends wait for nothing."""
        with self.lock:
            self.ended.pop(key, None)
            self.waiting.pop(key, None)


NEXT_POD = NextPodLatency()


# ---- probes and the HTTP endpoint ------------------------------------------------------------

class Probes:
    def __init__(self):
        self.leader = False
        self.threads: set[threading.Thread] = set()   # must stay alive while registered
        self.synced: Callable[[], bool] | None = None  # the leader's watches have listed everything

    def watch(self, *threads: threading.Thread) -> None:
        self.threads.update(threads)

    def unwatch(self, *threads: threading.Thread) -> None:
        self.threads.difference_update(threads)

    def live(self) -> tuple[bool, str]:
        dead = sorted(t.name for t in list(self.threads) if not t.is_alive())
        return (False, "dead threads: " + ", ".join(dead)) if dead else (True, "ok")

    def ready(self) -> tuple[bool, str]:
        if not self.leader:
            return True, "standby"
        if self.synced is None or not self.synced():
            return False, "leader; watches not synced yet"
        return True, "leader"


PROBES = Probes()


def serve(port: int, address: str = "", probes: Probes = PROBES, registry=REGISTRY) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz in a daemon thread (port 0: any free port;
    `server.server_address[1]` says which)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            route = self.path.split("?")[0]
            if route == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept"))
                self._send(200, encoder(registry), content_type)
            elif route in ("/healthz", "/readyz"):
                ok, why = probes.live() if route == "/healthz" else probes.ready()
                self._send(200 if ok else 503, why.encode() + b"\n", "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found; try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):   # probes every few seconds: not worth a log line
            log.debug("metrics endpoint: " + fmt, *args)

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rung-metrics", daemon=True).start()
    log.info("metrics and probes on port %d: /metrics, /healthz, /readyz", server.server_address[1])
    return server
