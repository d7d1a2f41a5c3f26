"""An in-memory stand-in for the Kubernetes API, speaking rung.kube.api.Kube's calls: enough
of the API server's rules (resourceVersions and their preconditions, merge patches, the
status subresource, label selectors, garbage collection by owner) and of a kubelet (pods
run, log `@rung` lines and end with a termination message) to test the operator's logic
without a cluster. It can fail a seeded fraction of calls, before or after they take
effect, and deliver watch events late. The real API server is in tests/operator.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import uuid

import urllib3
from kubernetes.client import ApiException

from rung.kube.informer import ObjectCache

PREFIXES = {"/api/v1": None, "/apis/coordination.k8s.io/v1": None, "/apis/rung.dev/v1alpha1": None}


def api_error(status: int, message: str) -> ApiException:
    e = ApiException(status=status, reason=message)
    e.body = json.dumps({"message": message})
    return e


def merge(target: dict, patch: dict) -> dict:
    """RFC 7386 merge patch."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def matches(labels: dict, selector: str) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k) != v:
                return False
        elif term not in labels:
            return False
    return True


def parse(url: str):
    """(kind, namespace, name, subresource) of a REST path."""
    for prefix in PREFIXES:
        if url.startswith(prefix):
            parts = url[len(prefix):].strip("/").split("/")
            break
    ns = None
    if parts[0] == "namespaces":
        ns, parts = parts[1], parts[2:]
    kind, name, sub = parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else None)
    return kind, ns, name, sub


class FakeKube:
    def __init__(self, rng: random.Random | None = None, fail: float = 0.0, delay: float = 0.0, pace: float = 1.0):
        """`fail`: the fraction of calls that fail; `delay`: how often watches stall;
        `pace`: the chance that a pod moves on at each tick."""
        self.rng, self.fail, self.delay, self.pace = rng or random.Random(0), fail, delay, pace
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.rv = 100
        self.watchers: list[tuple[str, str, ObjectCache]] = []
        self.pending: list[tuple[str, dict, ObjectCache]] = []   # watch events not yet delivered
        self.logs: dict[str, list[str]] = {}
        self.created_names: list[tuple[str, str]] = []            # (kind, name) of every create that happened
        self.calls = 0
        self.ticks = 0
        self.lock = threading.RLock()

    # ---- the Kube interface -----------------------------------------------------------
    def request(self, method, url, *, query=None, body=None, merge_patch=False, timeout=None):
        with self.lock:   # an operator's pool calls from several threads; one at a time here
            self.calls += 1
            self._maybe_fail(before=True)
            out = self._do(method, url, query or {}, body)
            if method != "GET":
                self._maybe_fail(before=False)   # it happened, but the answer is lost
            return copy.deepcopy(out)

    def text(self, url, query=None):
        with self.lock:
            return self._text(url, query)

    def _text(self, url, query=None):
        self.calls += 1
        self._maybe_fail(before=True)
        kind, ns, name, sub = parse(url)
        if (kind, ns, name) not in self.objects:
            raise api_error(404, "not found")
        since = (query or {}).get("sinceTime")
        return "".join(f"{stamp} {line}\n" for stamp, line in self.logs.get(name, []) if since is None or stamp >= since)

    def list_all(self, url, query, metadata_only=False):
        out = self.request("GET", url, query=query)
        items = [{"metadata": o["metadata"]} for o in out["items"]] if metadata_only else out["items"]
        return items, out["metadata"]["resourceVersion"]

    def watch(self, url, query, metadata_only=False):
        raise NotImplementedError("tests feed caches with subscribe()")

    # ---- test controls ----------------------------------------------------------------
    def subscribe(self, kind: str, selector: str, cache: ObjectCache) -> None:
        """A watch feeding `cache`: listed now, then every change (maybe late)."""
        self.watchers.append((kind, selector, cache))
        self.relist(cache)

    def relist(self, cache: ObjectCache) -> None:
        for kind, selector, c in self.watchers:
            if c is cache:
                self.pending = [p for p in self.pending if p[2] is not cache]
                cache.replace([copy.deepcopy(o) for (k, _, _), o in self.objects.items()
                               if k == kind and matches(o["metadata"].get("labels") or {}, selector)], None)

    def deliver(self) -> None:
        """Hand pending watch events to their caches, in order; with probability `delay`
        the watches stall this time (events arrive late)."""
        if self.rng.random() < self.delay:
            return
        pending, self.pending = self.pending, []
        for kind, obj, cache in pending:
            cache.apply(kind, obj)

    def tick(self) -> None:
        """The kubelet: pods move on one step."""
        self.ticks += 1
        for (kind, ns, name), pod in list(self.objects.items()):
            if kind == "pods" and self.rng.random() < self.pace:
                self._kubelet(pod)

    def pods(self, study: str | None = None) -> list[dict]:
        return [o for (k, _, _), o in self.objects.items()
                if k == "pods" and (study is None or o["metadata"]["labels"].get("rung.dev/study") == study)]

    def get(self, kind, ns, name):
        return self.objects.get((kind, ns, name))

    def delete(self, kind, ns, name):
        """Someone (kubectl) deletes an object; the garbage collector follows owners."""
        self._remove(kind, ns, name)

    # ---- internals --------------------------------------------------------------------
    def _maybe_fail(self, before: bool) -> None:
        if self.rng.random() < (self.fail if before else self.fail / 2):
            raise self.rng.choice([
                lambda: api_error(429, "too many requests"),
                lambda: api_error(500, "etcdserver: request timed out"),
                lambda: urllib3.exceptions.ProtocolError("connection reset by peer"),
                lambda: api_error(403, 'pods "x" is forbidden: exceeded quota: q, requested: pods=1'),
            ])()

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _do(self, method, url, query, body):
        kind, ns, name, sub = parse(url)
        key = (kind, ns, name)
        if name is None and method == "GET":
            items = [o for (k, n, _), o in self.objects.items()
                     if k == kind and (ns is None or n == ns)
                     and matches(o["metadata"].get("labels") or {}, query.get("labelSelector", ""))]
            return {"items": items, "metadata": {"resourceVersion": str(self.rv)}}
        if name is None and method == "POST":
            return self._create(kind, ns, body)
        if name is None and method == "DELETE":
            for (k, n, nm), o in list(self.objects.items()):
                if k == kind and n == ns and matches(o["metadata"].get("labels") or {}, query.get("labelSelector", "")):
                    self._delete_pod(nm, ns) if kind == "pods" else self._remove(kind, ns, nm)
            return {}
        obj = self.objects.get(key)
        if obj is None:
            raise api_error(404, f"{kind} {name} not found")
        if method == "GET":
            return obj
        if method == "DELETE":
            if kind == "pods":
                self._delete_pod(name, ns)
            else:
                self._remove(kind, ns, name)
            return {}
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != obj["metadata"]["resourceVersion"]:
            raise api_error(409, "the object has been modified")
        if method == "PUT":
            new = copy.deepcopy(body)
            new["metadata"] = {**obj["metadata"], **{k: v for k, v in body["metadata"].items() if k != "resourceVersion"}}
        elif sub == "status":
            new = {**obj, "status": merge(obj.get("status") or {}, body.get("status") or {})}
        else:
            new = merge(obj, {k: v for k, v in body.items() if k != "status"})
            new["metadata"] = merge(obj["metadata"], {k: v for k, v in (body.get("metadata") or {}).items()
                                                      if k != "resourceVersion"})
        self._store(kind, new, "MODIFIED")
        return new

    def _create(self, kind, ns, body):
        name = body["metadata"].get("name") or body["metadata"]["generateName"] + uuid.uuid4().hex[:5]
        if (kind, ns, name) in self.objects:
            raise api_error(409, f"{kind} {name} already exists")
        obj = copy.deepcopy(body)
        obj["metadata"] = {**obj["metadata"], "name": name, "namespace": ns, "uid": uuid.uuid4().hex,
                           "generation": 1}
        if kind in ("trials", "studies"):
            obj.pop("status", None)   # the status subresource: create ignores it
        if kind == "pods":
            obj["status"] = {"phase": "Pending"}
        self.created_names.append((kind, name))
        self._store(kind, obj, "ADDED")
        return obj

    def _store(self, kind, obj, event):
        obj["metadata"]["resourceVersion"] = self._next_rv()
        key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        old = self.objects.get(key)
        self.objects[key] = obj
        self._notify(kind, old, obj, event)

    def _remove(self, kind, ns, name):
        obj = self.objects.pop((kind, ns, name), None)
        if obj is None:
            return
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._notify(kind, obj, None, "DELETED", gone)
        uid = obj["metadata"]["uid"]
        for (k, n, nm), o in list(self.objects.items()):   # the garbage collector
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or []):
                self._remove(k, n, nm)

    def _notify(self, kind, old, new, event, gone=None):
        for k, selector, cache in self.watchers:
            if k != kind:
                continue
            was = old is not None and matches(old["metadata"].get("labels") or {}, selector)
            now = new is not None and matches(new["metadata"].get("labels") or {}, selector)
            if now:
                self.pending.append(("ADDED" if not was else "MODIFIED", copy.deepcopy(new), cache))
            elif was:   # out of the selector, or deleted
                self.pending.append(("DELETED", copy.deepcopy(gone or new), cache))

    def _delete_pod(self, name, ns):
        pod = self.objects.get(("pods", ns, name))
        if pod is not None and not pod["metadata"].get("deletionTimestamp"):
            self._store("pods", {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "now"}}, "MODIFIED")

    def _kubelet(self, pod):
        """Pending -> Running -> (one `@rung` step per tick) -> Succeeded; a deleted pod stops,
        then goes. The trainable's loss is quality(params, step) of tests/unit/test_loop.py."""
        from test_loop import quality

        meta, status = pod["metadata"], pod["status"]
        name, ns = meta["name"], meta["namespace"]
        if meta.get("deletionTimestamp"):
            if status["phase"] in ("Succeeded", "Failed") or status.get("containerStatuses"):
                self._remove("pods", ns, name)
            else:
                status = {**status, "containerStatuses": [{"state": {"terminated": {"exitCode": 143}}}]}
                self._store("pods", {**pod, "status": status}, "MODIFIED")
            return
        if status["phase"] in ("Succeeded", "Failed"):
            return
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        params, budget = json.loads(env["RUNG_PARAMS"]), float(env["RUNG_BUDGET"])
        lines = self.logs.setdefault(name, [])
        step = len(lines) + 1
        if status["phase"] == "Pending":
            status = {"phase": "Running"}
        elif step <= budget:
            stamp = f"2026-01-01T00:{self.ticks // 60:02d}:{self.ticks % 60:02d}.{step:06d}Z"
            lines.append((stamp, "@rung " + json.dumps({"step": step, "metrics": {"loss": quality(params, step)}})))
            return   # logs are not an object change
        else:
            result = {"step": budget, "metrics": {"loss": quality(params, budget)}}
            if int(env.get("RUNG_GPUS", 0)):   # a GPU trainable reports its samples per second
                result["metrics"]["throughput"] = 100.0 * int(env["RUNG_GPUS"])
            status = {"phase": "Succeeded", "containerStatuses": [
                {"state": {"terminated": {"exitCode": 0, "message": json.dumps(result)}}}]}
        self._store("pods", {**pod, "status": status}, "MODIFIED")
