"""Count API requests in the test cluster's audit log ($RUNG_CLUSTER_DIR/logs/audit.log).

`tests/cluster/up` starts kube-apiserver with lib/audit-policy.yaml: one JSON line per
finished request (stage ResponseComplete, level Metadata) by any service account. A watch
is logged when it ends, so stop the client before counting its watches.

    from audit import count_requests            # tests/cluster/lib on sys.path
    c = count_requests(path, "system:serviceaccount:ns:rung-operator", since=t0, until=t1)
    c[("patch", "studies", "status")]           # -> int
    count_requests(path, user, code=201)[("create", "pods", "")]   # pods really created
    sum(c.values())                              # all requests of that user

Command line: python tests/cluster/lib/audit.py AUDIT_LOG USER [--since EPOCH] [--until EPOCH]
"""

from __future__ import annotations

import collections
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

Key = tuple[str, str, str]   # (verb, resource, subresource)


def _epoch(t: datetime | float | int | str | None) -> float | None:
    """Seconds since the epoch from a datetime (naive = UTC), a number or an RFC 3339 string."""
    if t is None or isinstance(t, (int, float)):
        return t
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def _key(event: dict) -> Key:
    ref = event.get("objectRef") or {}
    if ref.get("resource"):
        return event.get("verb", ""), ref["resource"], ref.get("subresource", "")
    # non-resource URLs (/api, /apis, /version, /readyz): the path stands for the resource
    return event.get("verb", ""), event.get("requestURI", "").split("?")[0], ""


def count_requests(path: str | Path, user: str, since=None, until=None, *,
                   code: int | None = None) -> collections.Counter:
    """Requests by `user` (e.g. "system:serviceaccount:NS:rung-operator") in the audit log at
    `path`, as a Counter keyed by (verb, resource, subresource); subresource "" when none.

    since / until (datetime, epoch seconds or RFC 3339 string; None = open) bound the time
    the API server *received* the request: since <= received < until. Each request counts
    once (deduplicated by auditID). Lines that are not complete JSON (the last line while
    the server is still writing it) are skipped. A missing file counts nothing.
    code: count only requests answered with this HTTP status (201: objects created).
    """
    lo, hi = _epoch(since), _epoch(until)
    seen: set[str] = set()
    counts: collections.Counter = collections.Counter()
    for f in _files(Path(path)):
        with f:
            for line in f:
                if not line.endswith(b"\n"):
                    break                      # partially written last line
                if user.encode() not in line:
                    continue                   # cheap: most lines are someone else's
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if (ev.get("user") or {}).get("username") != user:
                    continue
                aid = ev.get("auditID")
                if aid in seen:
                    continue
                if code is not None and (ev.get("responseStatus") or {}).get("code") != code:
                    continue
                if lo is not None or hi is not None:
                    ts = _epoch(ev.get("requestReceivedTimestamp") or ev.get("stageTimestamp"))
                    if (lo is not None and ts < lo) or (hi is not None and ts >= hi):
                        continue
                seen.add(aid)
                counts[_key(ev)] += 1
    return counts


def _files(path: Path):
    """The log and the backups the API server rotated it into (<stem>-<time><suffix>), oldest first."""
    for p in sorted(path.parent.glob(f"{path.stem}-*{path.suffix}")) + [path]:
        try:
            yield open(p, "rb")
        except FileNotFoundError:
            continue


def main(argv: list[str]) -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("user")
    ap.add_argument("--since", type=float)
    ap.add_argument("--until", type=float)
    a = ap.parse_args(argv)
    c = count_requests(a.path, a.user, a.since, a.until)
    for (verb, res, sub), n in c.most_common():
        print(f"{n:8d}  {verb} {res}{'/' + sub if sub else ''}")
    print(f"{sum(c.values()):8d}  total")


if __name__ == "__main__":
    main(sys.argv[1:])
