"""The few Kubernetes API calls the operator makes, on plain JSON dicts, and what a failed
call means.

Every call has a timeout. `refusal(exc)` sorts failures: a cluster that will not do it
*now* (a quota, an admission policy, throttling, a server error, no answer) gives a
Refused (the Study holds and retries, nobody's fault); anything else is the request's own
problem (an invalid pod, a conflict, a missing object) and goes back to the caller.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Iterator

import urllib3
from kubernetes import client, config as kube_config
from kubernetes.client import ApiException
from kubernetes.watch.watch import iter_resp_lines

from rung.runtime.base import Refused

log = logging.getLogger(__name__)

GROUP, VERSION = "rung.dev", "v1alpha1"
TIMEOUT = (5.0, 30.0)   # seconds: connect, read
WATCH_SECONDS = 240     # a watch ends (and is resumed) this often, so a dead connection shows
JSON = "application/json"
# What a cache that keeps only metadata asks for: the server sends no spec or status, so
# there is less to encode, send and decode (a Trial's status grows with its segments).
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def kubeconfig_file() -> str | None:
    """KUBECONFIG as it is now (the client library reads it once, when it is imported)."""
    return os.environ.get("KUBECONFIG")


def api_client(connections: int | None = None) -> client.ApiClient:
    """From KUBECONFIG, or the in-cluster ServiceAccount. `connections`: how many the
    client keeps open (at least its threads that call at once; one more is opened and
    closed again per call, a TLS handshake each time)."""
    config = client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=config)
    except kube_config.ConfigException:
        kube_config.load_kube_config(config_file=kubeconfig_file(), client_configuration=config)
    if connections:
        config.connection_pool_maxsize = connections
    return client.ApiClient(config)


def path(kind: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    """The REST path of a collection or an object: kind is pods, events, secrets, nodes,
    leases, studies or trials."""
    base = {"pods": "/api/v1", "events": "/api/v1", "secrets": "/api/v1", "nodes": "/api/v1",
            "leases": "/apis/coordination.k8s.io/v1"}.get(kind, f"/apis/{GROUP}/{VERSION}")
    out = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{kind}"
    return out + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


class Kube:
    """A thin client: JSON in, JSON out, ApiException or urllib3 errors on failure.
    `on_request(method, error)` hears of every request once it is answered (error None)
    or has failed (the operator's metrics); it must not raise."""

    def __init__(self, api: client.ApiClient, timeout: tuple[float, float] = TIMEOUT,
                 on_request: Callable[[str, BaseException | None], None] = lambda method, error: None):
        self.api, self.timeout, self.on_request = api, timeout, on_request

    def request(self, method: str, url: str, *, query: dict | None = None, body=None,
                merge_patch: bool = False, timeout=None, accept: str = JSON) -> dict:
        resp = self._call(method, url, query, body, merge_patch, timeout or self.timeout, accept)
        data = resp.data
        return json.loads(data) if data else {}

    def text(self, url: str, query: dict | None = None) -> str:
        return self._call("GET", url, query, None, False, self.timeout).data.decode("utf-8", "replace")

    def watch(self, url: str, query: dict, metadata_only: bool = False) -> Iterator[dict]:
        """Watch events ({"type", "object"}) of a collection, from query's resourceVersion;
        `metadata_only`: each object's metadata alone."""
        query = {**query, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": WATCH_SECONDS}
        resp = self._call("GET", url, query, None, False, (self.timeout[0], WATCH_SECONDS + 30),
                          METADATA if metadata_only else JSON)
        try:
            for line in iter_resp_lines(resp):
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release_conn()

    def list_all(self, url: str, query: dict, metadata_only: bool = False) -> tuple[list[dict], str]:
        """Every item of a collection (in pages) and the list's resourceVersion;
        `metadata_only`: each item's metadata alone."""
        items, query = [], {**query, "limit": 500}
        while True:
            page = self.request("GET", url, query=query, accept=METADATA_LIST if metadata_only else JSON)
            items += page.get("items") or []
            more = (page.get("metadata") or {}).get("continue")
            if not more:
                return items, page["metadata"]["resourceVersion"]
            query["continue"] = more

    def _call(self, method, url, query, body, merge_patch, timeout, accept=JSON):
        headers = {"Accept": accept, "Content-Type": "application/merge-patch+json" if merge_patch else JSON}
        error = None
        try:
            return self.api.call_api(url, method, query_params=list((query or {}).items()), header_params=headers,
                                     body=body, auth_settings=["BearerToken"], _preload_content=False,
                                     _return_http_data_only=True, _request_timeout=timeout)
        except Exception as e:
            error = e
            raise
        finally:
            self.on_request(method, error)


def status_of(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiException) else None


def message_of(exc: BaseException) -> str:
    """The API server's one-line message of a failed call."""
    if isinstance(exc, ApiException):
        try:
            text = json.loads(exc.body).get("message") or exc.reason
        except (TypeError, ValueError):
            text = f"{exc.status} {exc.reason}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split())[:400]


def refusal(exc: BaseException) -> Refused | None:
    """A Refused when the cluster will not do this now but may later; None otherwise."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError, TimeoutError)):
        return Refused("ApiUnreachable", f"the API server did not answer: {message_of(exc)}")
    if not isinstance(exc, ApiException):
        return None
    status, message = exc.status, message_of(exc)
    if status == 0:   # the client's own TLS or connection failure
        return Refused("ApiUnreachable", f"the API server did not answer: {message}")
    if status == 429:
        return Refused("Throttled", f"the API server is throttling the operator (429): {message}")
    if status in (408, 504) or status >= 500:
        return Refused("ApiServerError", f"the API server failed ({status}): {message}")
    if status == 401:
        return Refused("Unauthorized", f"the API server refused the operator's credentials: {message}",
                       "renew the operator's token or kubeconfig")
    if status == 403:
        if "exceeded quota" in message:
            return Refused("QuotaExceeded", f"a ResourceQuota refuses trial pods: {message}",
                           "it is retried as the quota frees up; raise the quota or lower limits.parallelism")
        if "PodSecurity" in message or "admission webhook" in message or "denied the request" in message:
            return Refused("AdmissionDenied", f"admission refuses trial pods: {message}",
                           "it is retried; change the namespace's policy or the Study's trial template")
        if "being terminated" in message:
            return Refused("NamespaceTerminating", message)
        return Refused("Forbidden", f"the operator lacks a permission: {message}",
                       "grant it (the operator's ClusterRole); it is retried")
    return None
