"""Operator reaction time on a real cluster: from a segment pod's completion to the
creation of the next pod, p50 and p99, and the operator's RSS during the run.

Needs a cluster: $KUBECONFIG, or the one `tests/cluster/up` starts (its path is printed).
The bench installs the CRDs, starts `rung operator` itself (to sample its RSS), applies an
ASHA Study of count_steps trials and watches pods. Times are taken by this watcher when
it sees each event, so both ends of an interval carry the same watch delay.

Run: KUBECONFIG=$(tests/cluster/up) python bench/operator_latency.py [--trials 40] [--parallel 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def study_manifest(ns: str, name: str, trials: int, parallel: int, cpu: str = "50m") -> dict:
    return {
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "objective": {"metric": "loss"},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
            "algorithm": {"name": "asha", "seed": 1, "settings": {"reductionFactor": 3}},
            "budget": {"min": 1, "max": 9},
            "limits": {"maxTrials": trials, "parallelism": parallel},
            "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                      "resources": {"cpu": cpu, "memory": "128Mi"}},
        }}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    config.load_kube_config()
    kubectl = os.environ.get("KUBECTL", "kubectl")
    subprocess.run([kubectl, "apply", "-f", str(ROOT / "crds")], check=True, capture_output=True)
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    ns = f"bench-{int(time.time())}"
    core.create_namespace({"metadata": {"name": ns}})
    op = subprocess.Popen([sys.executable, "-m", "rung.cli", "operator", "--namespace", ns],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss, done = [], threading.Event()

    def sample():
        while not done.is_set() and op.poll() is None:
            rss.append(rss_mib(op.pid))
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    try:
        custom.create_namespaced_custom_object("rung.dev", "v1alpha1", ns, "studies",
                                               study_manifest(ns, "latency", args.trials, args.parallel))
        completed, created, seen, done_pods = [], [], set(), set()
        start, phase, version = time.monotonic(), None, None
        while phase not in ("Succeeded", "Failed") and time.monotonic() - start < args.timeout:
            if op.poll() is not None:
                sys.exit(f"the operator exited with code {op.returncode}; run `rung operator` by hand to see why")
            # short watches, so the Study's end is noticed even when no pod changes any more
            for ev in watch.Watch().stream(core.list_namespaced_pod, ns, timeout_seconds=3,
                                           resource_version=version):
                pod, now = ev["object"], time.monotonic()
                version = pod.metadata.resource_version
                if pod.metadata.name not in seen:
                    seen.add(pod.metadata.name)
                    created.append(now)
                if pod.status.phase == "Succeeded" and pod.metadata.name not in done_pods:
                    done_pods.add(pod.metadata.name)
                    completed.append(now)
            phase = (custom.get_namespaced_custom_object("rung.dev", "v1alpha1", ns, "studies", "latency")
                     .get("status") or {}).get("phase")
        # each completion that was followed by a creation: the delay to the first creation after it
        delays = []
        for t in completed:
            after = [c for c in created if c >= t]
            if after:
                delays.append(after[0] - t)
        delays.sort()
        p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] * 1000
        print(f"pods: {len(seen)}, completions followed by a "
              f"creation: {len(delays)}, wall {time.monotonic() - start:.0f} s, Study phase {phase}")
        print("| completion -> next pod | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|")
        print(f"| rung operator | {p(0.5):.0f} | {p(0.99):.0f} | {delays[-1] * 1000:.0f} |")
        print(f"operator RSS: median {statistics.median(rss):.0f} MiB, max {max(rss):.0f} MiB")
    finally:
        done.set()
        op.terminate()
        stopping = time.monotonic()
        try:
            op.wait(timeout=60)
            print(f"operator stopped {time.monotonic() - stopping:.1f} s after SIGTERM")
        except subprocess.TimeoutExpired:
            print("operator still running 60 s after SIGTERM; killed")
            op.kill()
        core.delete_namespace(ns)


if __name__ == "__main__":
    main()
