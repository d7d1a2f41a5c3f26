"""The operator's API load on a real cluster: requests per trial segment, and its CPU.

For each S in --studies it makes a fresh namespace and an operator identity in it
(tests/cluster/operator-identity: a ServiceAccount, so the API server's audit log names
every request the operator makes), starts `rung operator --namespace NS` as a real
process with that identity, applies S ASHA Studies of count_steps trials, and waits until
every Study is Succeeded or Failed. Then it stops the operator and reports, for that S:
segments run (pods the operator created), its API requests over the run (from the audit
log, tests/cluster/lib/audit.py), requests per segment overall and by verb + resource,
the operator's CPU seconds (utime + stime from /proc, sampled right before it stops; of
it, startup = until kopf's first list of Studies) and CPU ms per segment, its peak RSS (VmHWM) and the wall time from the first Study applied
to the last one finished.

Needs the cluster `tests/cluster/up` starts (its audit log is $RUNG_CLUSTER_DIR/logs/audit.log).

Run: KUBECONFIG=$(tests/cluster/up) python bench/api_load.py --label before \
         --operator-source /work/rung-before [--studies 1,10,50] [--trials 4] [--parallel 2]

--operator-source DIR puts DIR/operator and DIR/trial_image first on the operator's
PYTHONPATH (default: this checkout). Writes bench/out/api_load-<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster" / "lib"))
sys.path.insert(0, str(ROOT / "bench"))
from audit import count_requests  # noqa: E402
from operator_latency import study_manifest as latency_study  # noqa: E402

CLUSTER_DIR = Path(os.environ.get("RUNG_CLUSTER_DIR", "/tmp/rung-cluster"))
GROUP, VERSION = "rung.dev", "v1alpha1"
SA = "rung-operator"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def study_manifest(ns: str, name: str, trials: int, parallel: int) -> dict:
    # small requests, so 50 Studies x parallel pods fit on the 2-core test node
    return latency_study(ns, name, trials, parallel, cpu="10m")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def operator_env(source: Path, kubeconfig: str) -> dict:
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    paths = [str(source / "operator"), str(source / "trial_image")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_one(n_studies: int, args, custom: client.CustomObjectsApi, core: client.CoreV1Api) -> dict:
    ns = f"apiload-{args.label}-{n_studies}-{int(time.time())}"
    user = f"system:serviceaccount:{ns}:{SA}"
    kubeconfig = subprocess.run([str(ROOT / "tests/cluster/operator-identity"), ns],
                                check=True, capture_output=True, text=True).stdout.strip()
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"api_load-{args.label}-{n_studies}.operator.log"
    env = operator_env(args.operator_source, kubeconfig)
    where = subprocess.run([sys.executable, "-c", "import rung; print(rung.__file__)"],
                           env=env, cwd="/", capture_output=True, text=True).stdout.strip()
    print(f"[S={n_studies}] namespace {ns}, operator from {where}, log {log_path}", file=sys.stderr)

    t_begin = time.time()
    with open(log_path, "w") as log:
        op = subprocess.Popen([sys.executable, "-m", "rung.cli", "operator", "--namespace", ns,
                               "--checkpoint-root", f"file://{CLUSTER_DIR}/checkpoints"],
                              env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT)
    # kopf's first list of Studies means it is up: what it has used until then is startup
    audit_log = CLUSTER_DIR / "logs" / "audit.log"
    t_up = time.monotonic()
    while not count_requests(audit_log, user, since=t_begin)[("list", "studies", "")]:
        if op.poll() is not None or time.monotonic() - t_up > 120:
            op.kill()
            raise RuntimeError(f"the operator did not start; see {log_path}")
        time.sleep(0.5)
    time.sleep(1)
    cpu_startup = cpu_seconds(op.pid)
    names = [f"load-{i:03d}" for i in range(n_studies)]
    phases: dict[str, str] = {}
    timed_out = False
    try:
        t0 = time.monotonic()
        for name in names:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "studies",
                                                   study_manifest(ns, name, args.trials, args.parallel))
        last_line = 0.0
        while True:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "studies")["items"]
            phases = {s["metadata"]["name"]: (s.get("status") or {}).get("phase", "") for s in items}
            done = sum(p in ("Succeeded", "Failed") for p in phases.values())
            if done == n_studies:
                break
            if op.poll() is not None:
                raise RuntimeError(f"the operator exited ({op.returncode}); see {log_path}")
            if time.monotonic() - t0 > args.timeout:
                timed_out = True
                print(f"[S={n_studies}] timed out after {args.timeout:.0f} s", file=sys.stderr)
                break
            if time.monotonic() - last_line >= 15:
                pods = len(core.list_namespaced_pod(ns).items)
                print(f"[S={n_studies}] {done}/{n_studies} Studies finished, {pods} pods, "
                      f"{time.monotonic() - t0:.0f} s", file=sys.stderr)
                last_line = time.monotonic()
            time.sleep(2)
        wall = time.monotonic() - t0
        cpu, rss = cpu_seconds(op.pid), peak_rss_mib(op.pid)
    finally:
        op.send_signal(signal.SIGTERM)
        try:
            op.wait(timeout=30)
        except subprocess.TimeoutExpired:
            op.kill()
            op.wait()
    time.sleep(2)   # the API server logs a watch when it ends: let the closed ones land

    requests = count_requests(audit_log, user, since=t_begin)
    segments = count_requests(audit_log, user, since=t_begin, code=201)[("create", "pods", "")]
    total = sum(requests.values())
    per_kind = {f"{v} {r}{'/' + s if s else ''}": n for (v, r, s), n in requests.most_common()}
    result = {
        "studies": n_studies, "namespace": ns, "segments": segments, "requests": total,
        "requests_per_segment": total / segments if segments else None,
        "requests_by_kind": per_kind,
        "cpu_s": cpu, "cpu_startup_s": cpu_startup,
        "cpu_ms_per_segment": 1000 * cpu / segments if segments else None,
        "peak_rss_mib": rss, "wall_s": wall, "timed_out": timed_out,
        "phases": dict(Counter(phases.values())),
    }
    cleanup(ns, custom, core)
    return result


def cleanup(ns: str, custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    """Delete the namespace and the operator's ClusterRoleBinding (cluster-scoped: it would
    outlive the namespace). The operator is gone, so drop the finalizers kopf put on the
    Studies first (deletion would wait for it forever)."""
    try:
        client.RbacAuthorizationV1Api().delete_cluster_role_binding(f"rung-operator:{ns}:{SA}")
    except client.ApiException as e:
        if e.status != 404:
            raise
    for s in custom.list_namespaced_custom_object(GROUP, VERSION, ns, "studies")["items"]:
        if s["metadata"].get("finalizers"):
            custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "studies", s["metadata"]["name"],
                                                  {"metadata": {"finalizers": None}})
    core.delete_namespace(ns)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        try:
            core.read_namespace(ns)
        except client.ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(2)
    print(f"namespace {ns} still terminating after 300 s; going on", file=sys.stderr)


def table(label: str, runs: list[dict]) -> str:
    lines = [f"| Studies ({label}) | segments | API requests | requests / segment "
             "| operator CPU s (of it startup) | CPU ms / segment | peak RSS MiB | wall s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        seg = r["segments"] or 1
        lines.append(f"| {r['studies']} | {r['segments']} | {r['requests']} | {r['requests'] / seg:.1f} "
                     f"| {r['cpu_s']:.1f} ({r['cpu_startup_s']:.1f}) | {1000 * r['cpu_s'] / seg:.0f} | {r['peak_rss_mib']:.0f} "
                     f"| {r['wall_s']:.0f}{' (timed out)' if r['timed_out'] else ''} |")
    lines += ["", "| Studies | requests per segment by verb and resource (top 8) |", "|---:|---|"]
    for r in runs:
        seg = r["segments"] or 1
        top = list(r["requests_by_kind"].items())[:8]
        lines.append(f"| {r['studies']} | " + ", ".join(f"{k}: {n / seg:.2f}" for k, n in top) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", default="1,10,50", help="comma-separated Study counts, one run each")
    ap.add_argument("--trials", type=int, default=4, help="maxTrials of each Study")
    ap.add_argument("--parallel", type=int, default=2, help="parallelism of each Study")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one run's Studies")
    ap.add_argument("--label", default="before", help="names the output: bench/out/api_load-<label>.json")
    ap.add_argument("--operator-source", type=Path, default=ROOT,
                    help="checkout whose operator/ and trial_image/ the operator runs from")
    args = ap.parse_args()
    args.operator_source = args.operator_source.resolve()
    config.load_kube_config()
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    commit = subprocess.run(["git", "-C", str(args.operator_source), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    runs = []
    for n in [int(x) for x in args.studies.split(",")]:
        runs.append(run_one(n, args, custom, core))
        print(table(args.label, runs[-1:]), file=sys.stderr)
    out = ROOT / "bench" / "out" / f"api_load-{args.label}.json"
    out.write_text(json.dumps({"label": args.label, "operator_source": str(args.operator_source),
                               "commit": commit, "trials": args.trials, "parallel": args.parallel,
                               "command": " ".join(sys.argv), "runs": runs}, indent=1))
    print(f"operator {args.operator_source} ({commit}); {args.trials} trials, parallelism {args.parallel} "
          f"per Study; written to {out}\n")
    print(table(args.label, runs))


if __name__ == "__main__":
    main()
