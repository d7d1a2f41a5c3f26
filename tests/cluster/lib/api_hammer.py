"""Concurrent GETs against the API server with one kubeconfig's identity; counts HTTP codes.

Used to check that an APF throttle (tests/cluster/apf-throttle) really answers 429:

    python tests/cluster/lib/api_hammer.py KUBECONFIG [--threads 20] [--calls 50]
        [--path /api/v1/namespaces/default/pods]

Each thread keeps one HTTPS connection (as client-go does) and makes --calls requests
back to back. Prints one line: calls, counts per status code, and the share of 429s.
The kubeconfig may use a bearer token or a client certificate, and an embedded or
file CA. `hammer()` returns the Counter for use from Python.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import ssl
import threading
import time
from urllib.parse import urlparse

import yaml


def _context(kubeconfig: str) -> tuple[str, ssl.SSLContext, dict]:
    cfg = yaml.safe_load(open(kubeconfig))
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    if "certificate-authority-data" in cluster:
        tls = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    else:
        tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
    headers = {"Accept": "application/json"}
    if "token" in user:
        headers["Authorization"] = f"Bearer {user['token']}"
    if "client-certificate" in user:
        tls.load_cert_chain(user["client-certificate"], user["client-key"])
    return cluster["server"], tls, headers


def hammer(kubeconfig: str, threads: int = 20, calls: int = 50,
           path: str = "/api/v1/namespaces/default/pods") -> collections.Counter:
    """`threads` threads, each making `calls` GETs of `path`; a Counter of status codes
    ("error" for a failed connection)."""
    server, tls, headers = _context(kubeconfig)
    url = urlparse(server)
    codes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    go = threading.Event()

    def worker() -> None:
        conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=tls, timeout=30)
        go.wait()
        for _ in range(calls):
            try:
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                code = r.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=tls, timeout=30)
                code = "error"
            with lock:
                codes[code] += 1
        conn.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    go.set()
    for t in ts:
        t.join()
    return codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kubeconfig")
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--calls", type=int, default=50, help="requests per thread")
    ap.add_argument("--path", default="/api/v1/namespaces/default/pods")
    a = ap.parse_args()
    t0 = time.monotonic()
    c = hammer(a.kubeconfig, a.threads, a.calls, a.path)
    n = sum(c.values())
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=str))
    print(f"{n} calls in {time.monotonic() - t0:.1f} s ({a.threads} threads): {codes}; "
          f"429: {c[429] / n:.1%}")


if __name__ == "__main__":
    main()
