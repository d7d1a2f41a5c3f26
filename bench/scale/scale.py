"""The operator at scale, on the harness's real API server and etcd with KWOK nodes.

`bench/scale/run [--trials N] [--concurrent M] [--studies S] [--gpus G]` starts the test
cluster (tests/cluster/up), cordons its real node, adds G/8 simulated 8-GPU nodes (KWOK),
starts one `rung operator` (unless --use-running-operator), applies S ASHA Studies of
N/S trials, M/S at a time, each trial on 1 GPU, and lets `kwok.Finisher` end each
trial pod after its simulated duration (--unit-seconds per budget unit, varied by
+-jitter) with a multi-fidelity Hartmann-6 result.

It measures, from its own watch of the pods: the time from a pod's completion to the
creation of the pod that takes its slot (per Study, first come first served; both as the
watch shows them, so in the API server's order), the share
of its GPUs held by its running trial pods while it has new trials to start (summed over
Studies, each in its own window), the operator's CPU
and RSS, API requests per finished segment (the operator's rung_api_requests_total and
rung_segments_finished_total), the largest Study and Trial objects as the API server
serves them and how the largest Study grows with its trials, and lost or duplicated work.
Beside the operator's share it reports the API server's: every client's writes per segment
by verb and resource (its apiserver_request_total counters) and its CPU over time, since on
one machine it, not the operator, is what runs out first; and the mean CPU of each cluster
process (etcd, scheduler, controller manager, KWOK) and of the whole machine.
`--restart-at F` kills the operator (SIGKILL) once F of the trials exist and starts it
again at once: the time until its first pod is "decisions flow again"; `--profile-restart
FILE` samples the new process's threads for 40 s with py-spy, to see where that time goes.

Prints a table; writes bench/scale/out/result.json and PNGs of running trials and of the
completion-to-successor latency over time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict, deque
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rung.kube.api import Kube, api_client, path
from rung.kube.informer import STUDY_LABEL
from rung.runtime.kubernetes import POD_SELECTOR

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import kwok  # noqa: E402

BUDGET_MIN, BUDGET_MAX = 1, 27   # ASHA rungs 1, 3, 9, 27 (eta 3)


def study(ns: str, name: str, trials: int, parallel: int) -> dict:
    return {
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "objective": {"metric": "loss"},
            "searchSpace": {f"x{i}": {"type": "float", "low": 0, "high": 1} for i in range(6)},
            "algorithm": {"name": "asha", "seed": 1, "settings": {"reductionFactor": 3}},
            "budget": {"min": BUDGET_MIN, "max": BUDGET_MAX},
            "limits": {"maxTrials": trials, "parallelism": parallel, "maxFailedTrials": 0},
            "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                      "resources": {"cpu": "10m", "memory": "16Mi"}, "gpus": {"min": 1, "max": 1}},
        }}


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def samples(text: str):
    """(name, labels, value) of each sample in Prometheus text."""
    return ((sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples)


BY_LABEL = {"rung_api_requests_total": "method", "rung_reconcile_errors_total": "cause",
            "rung_completion_to_next_pod_seconds_bucket": "le"}


def scrape(port: int) -> dict[str, float]:
    """Sum of each rung_* counter of the operator's metrics endpoint (0 when unreachable),
    and of the API requests by method and failed steps by cause ("name method")."""
    out: dict[str, float] = defaultdict(float)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return out
    for name, labels, value in samples(text):
        if name.startswith("rung_"):
            out[name] += value
            if name in BY_LABEL:
                out[f"{name} {labels.get(BY_LABEL[name])}"] += value
    return out


def by_label(counters: dict[str, float], name: str) -> dict[str, float]:
    """One of BY_LABEL's series out of scrape()'s sums: label value -> count."""
    return {k.split()[1]: v for k, v in counters.items() if k.startswith(f"{name} ")}


WRITES = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def apiserver_writes(kube: Kube) -> dict[str, float]:
    """The API server's count of write requests so far, by "VERB resource[/subresource]"."""
    out: dict[str, float] = defaultdict(float)
    for name, labels, value in samples(kube.text("/metrics")):
        if name == "apiserver_request_total" and labels.get("verb") in WRITES:
            sub = labels.get("subresource")
            out[f"{labels['verb']} {labels.get('resource')}{'/' + sub if sub else ''}"] += value
    return out


def apiserver_pid() -> int | None:
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "kube-apiserver":
                return int(proc.name)
        except OSError:
            continue
    return None


# The machine's other busy processes (names as /proc/PID/comm has them): on a small machine
# they compete with the operator and the API server for the same cores.
CLUSTER_PROCESSES = ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller", "kwok")


def machine_cpu() -> dict[str, float]:
    """CPU seconds so far: the machine's busy time ("machine", all cores) and each of
    CLUSTER_PROCESSES (summed over processes of that name)."""
    out: dict[str, float] = defaultdict(float)
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, *rest = map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:])
    out["machine"] = (user + nice + system + sum(rest[:3])) / ticks
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (name := (proc / "comm").read_text().strip()) in CLUSTER_PROCESSES:
                out[name] += proc_sample(int(proc.name))[1]
        except OSError:
            continue
    return out


class Operator:
    """`rung operator` as a child process, restartable; counters summed over restarts."""

    def __init__(self, ns: str, port: int, log: Path, extra: list[str]):
        self.ns, self.port, self.log, self.extra = ns, port, log, extra
        self.proc: subprocess.Popen | None = None
        self.base: dict[str, float] = defaultdict(float)   # counters of processes that ended
        self.cpu_base = 0.0
        self.last: dict[str, float] = {}
        self.last_cpu = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            # One identity across restarts, as a container restarted in its pod (the chart
            # passes the pod's name): the new process takes its Lease back at once. A new pod
            # would wait up to the Lease's 15 s first.
            [sys.executable, "-m", "rung.cli", "operator", "--namespace", self.ns, "--lease-namespace", self.ns,
             "--identity", "scale-operator",
             "--metrics-port", str(self.port),
             "--checkpoint-root", "file:///tmp/rung-scale/checkpoints", "--log-level", "warning", *self.extra],
            stdout=self.log.open("a"), stderr=subprocess.STDOUT)

    def sample(self) -> tuple[float, float]:
        rss, cpu = proc_sample(self.proc.pid)
        self.last_cpu = cpu
        metrics = scrape(self.port)
        if metrics:
            self.last = metrics
        return rss, self.cpu_base + cpu

    def counters(self) -> dict[str, float]:
        return {k: self.base[k] + self.last.get(k, 0.0) for k in set(self.base) | set(self.last)}

    def kill(self) -> None:
        self.sample()
        for k, v in self.last.items():
            self.base[k] += v
        self.cpu_base += self.last_cpu
        self.last = {}
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def pairs(completed, created) -> list[tuple[float, float, tuple, str, str]]:
    """(completion time, delay, Study key, ended pod, next pod) per completion whose slot a
    later creation filled: per Study, creations take the oldest completion not yet followed
    by one."""
    events = sorted([(t, 0, key, pod) for t, key, pod in completed] + [(t, 1, key, pod) for t, key, pod in created])
    waiting: dict = defaultdict(deque)
    out = []
    for t, kind, key, pod in events:
        if kind == 0:
            waiting[key].append((t, pod))
        elif waiting[key]:
            began, ended = waiting[key].popleft()
            out.append((began, t - began, key, ended, pod))
    return out


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def object_sizes(kube: Kube, ns: str) -> tuple[int, int]:
    """Bytes (JSON, as served) of the largest Study and the largest Trial in the namespace."""
    studies = kube.request("GET", path("studies", ns))["items"]
    largest_study = max((len(json.dumps(s)) for s in studies), default=0)
    trials, _ = kube.list_all(path("trials", ns), {})
    return largest_study, max((len(json.dumps(t)) for t in trials), default=0)


def audit(kube: Kube, ns: str, studies: dict[str, int], finisher: kwok.Finisher) -> dict:
    """Lost: trials a Study should have that do not exist or did not end well. Duplicated:
    trial indexes held by two objects, or a segment that ran in two pods. Pods left: the
    Studies' pods still there (not being deleted)."""
    trials, _ = kube.list_all(path("trials", ns), {})
    lost, duplicated, phases = 0, 0, defaultdict(int)
    for name, n in studies.items():
        mine = [t for t in trials if t["spec"]["study"] == name]
        indexes = [int(t["spec"]["index"]) for t in mine]
        duplicated += len(indexes) - len(set(indexes))
        lost += len(set(range(n)) - set(indexes))
        for t in mine:
            phase = (t.get("status") or {}).get("phase", "None")
            phases[phase] += 1
            lost += phase not in ("Succeeded", "Stopped")
    duplicated += sum(c - 1 for c in finisher.segments_started.values() if c > 1)
    pods, _ = kube.list_all(path("pods", ns), {"labelSelector": STUDY_LABEL})
    left = sum(not p["metadata"].get("deletionTimestamp") for p in pods)
    return {"lost": lost, "duplicated": duplicated, "trial_phases": dict(phases), "trials": len(trials),
            "pods_left": left}


def plots(out: Path, samples, latency, t0: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([s["t"] for s in samples], [s["running"] for s in samples])
    ax.set_xlabel("s since the first Study was applied")
    ax.set_ylabel("running trial pods")
    ax.set_title("running trials (and the API server's CPU)")
    cpu = [(b["t"], (b["apiserver_cpu_s"] - a["apiserver_cpu_s"]) / (b["t"] - a["t"]))
           for a, b in zip(samples[::10], samples[10::10]) if "apiserver_cpu_s" in a and b["t"] > a["t"]]
    if cpu:
        right = ax.twinx()
        right.plot(*zip(*cpu), color="tab:red", linewidth=0.8)
        right.set_ylabel("kube-apiserver CPU, cores", color="tab:red")
        right.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out / "running.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.scatter([t - t0 for t, _ in latency], [d for _, d in latency], s=2)
    ax.set_yscale("log")
    ax.set_xlabel("completion time, s since the first Study was applied")
    ax.set_ylabel("completion -> successor, s")
    ax.set_title("completion-to-successor latency")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000, help="trials in all (split over the Studies)")
    ap.add_argument("--concurrent", type=int, default=1_000, help="segments at once (split over the Studies)")
    ap.add_argument("--studies", type=int, default=1)
    ap.add_argument("--gpus", type=int, default=None, help="simulated GPUs (default: --concurrent)")
    ap.add_argument("--unit-seconds", type=float, default=30.0, help="simulated seconds per budget unit")
    ap.add_argument("--jitter", type=float, default=0.5, help="durations vary uniformly by this fraction")
    ap.add_argument("--restart-at", type=float, default=None, help="kill -9 and restart the operator at this "
                                                                   "fraction of trials created")
    ap.add_argument("--profile-restart", type=Path, default=None, metavar="FILE",
                    help="record the restarted operator's first 40 s with py-spy (pip install py-spy): "
                         "speedscope JSON, one profile per thread")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--use-running-operator", action="store_true",
                    help="measure the operator already running in the cluster (no RSS/CPU then)")
    ap.add_argument("--metrics-port", type=int, default=9109)
    ap.add_argument("--keep-finished-pods", type=int, default=None, metavar="N",
                    help="the operator's --keep-finished-pods (default: the operator's); KWOK takes in every "
                         "kept pod again each time its watch is closed (see kwok.start_kwok)")
    ap.add_argument("--namespace", help="an existing namespace to run in (default: a new one, deleted after)")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    gpus = args.gpus or args.concurrent

    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        kubeconfig = subprocess.run([str(ROOT / "tests/cluster/up")], check=True, capture_output=True,
                                    text=True).stdout.strip()
        os.environ["KUBECONFIG"] = kubeconfig
    if not kwok.kwok_binary().exists():
        subprocess.run([str(ROOT / "tests/cluster/build"), "kwok"], check=True)
    kube = Kube(api_client())
    kubectl = os.environ.get("KUBECTL", "kubectl")
    subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True)

    wait_for_earlier_runs(kube)
    ns = args.namespace or f"scale-{int(time.time())}"
    if not args.namespace:
        kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    stop = threading.Event()
    cordoned = kwok.set_schedulable(kube, False)
    kwok.create_nodes(kube, gpus)
    kwok_proc = kwok.start_kwok(kubeconfig, args.out / "kwok.log")
    operator = None if args.use_running_operator else Operator(ns, args.metrics_port, args.out / "operator.log",
        [] if args.keep_finished_pods is None else ["--keep-finished-pods", str(args.keep_finished_pods)])
    finisher = kwok.Finisher(kube, args.unit_seconds, BUDGET_MAX, stop, ns, jitter=args.jitter)
    names = {f"s{i}": args.trials // args.studies + (i < args.trials % args.studies) for i in range(args.studies)}
    samples, sizes, restart, study_of = [], [], {}, {}
    per_study = {name: args.concurrent // args.studies + (i < args.concurrent % args.studies)
                 for i, name in enumerate(names)}
    apiserver = apiserver_pid()
    cpu_before = machine_cpu()
    writes_before = apiserver_writes(kube)
    try:
        finisher.start()
        if operator:
            operator.start()
        t0 = time.time()
        for name, n in names.items():
            kube.request("POST", path("studies", ns), body=study(ns, name, n, per_study[name]))
        ended, last_size, last_print = False, 0.0, 0.0
        while not ended and time.time() - t0 < args.timeout:
            time.sleep(1.0)
            now = time.time()
            objs = kube.request("GET", path("studies", ns))["items"]
            phases = [(o.get("status") or {}).get("phase") for o in objs]
            created = len({(k, n.rsplit("-s", 1)[0]) for _, k, n in finisher.created})
            with finisher.lock:
                running = len(finisher.running)
                busy = sum(finisher.running.values())
                study_of.update((n, k[1]) for _, k, n in finisher.created[len(study_of):])
                by_study = defaultdict(int)
                for pod, held in finisher.running.items():
                    by_study[study_of.get(pod)] += held
            with finisher.cache.lock:   # every trial pod that exists: finished ones the operator has not deleted too
                pods = sum(len(group) for group in finisher.cache.groups.values())
            sample = {"t": now - t0, "running": running, "gpus_busy": busy / gpus, "trials_created": created,
                      "completed": len(finisher.completed), "pods": pods, "busy_by_study": dict(by_study)}
            if operator:
                sample["rss_mb"], sample["cpu_s"] = operator.sample()
                # The operator's own count of completions whose next pod came over 1 s later, so
                # far: where the bench's pairs and the operator's watch disagree, and when.
                counters = operator.counters()
                slow = by_label(counters, "rung_completion_to_next_pod_seconds_bucket")
                sample["operator_next_pod_over_1s"] = slow.get("+Inf", 0.0) - slow.get("1.0", 0.0)
                # Its steps so far and their total time: how long a step took, over time.
                sample["operator_steps"] = counters.get("rung_decision_seconds_count", 0.0)
                sample["operator_step_s"] = counters.get("rung_decision_seconds_sum", 0.0)
                sample["operator_requests"] = by_label(counters, "rung_api_requests_total")
            if apiserver:
                sample["apiserver_cpu_s"] = proc_sample(apiserver)[1]
            samples.append(sample)
            if now - last_size >= 15:
                last_size = now
                sizes.append({"t": now - t0, "trials": created, "study_bytes": max(len(json.dumps(o)) for o in objs)})
            if (operator and args.restart_at is not None and not restart
                    and created >= args.restart_at * args.trials):
                restart["killed_at"] = time.time() - t0
                operator.kill()
                # Every pod the old process created is on the API server now, though some may
                # still be on their way through the finisher's watch: the new process's pods
                # are those not listed here. Handled pods are left out of the list (thousands,
                # kept for their logs): their creation reached the watch long ago. The new
                # process starts at once, as a restarted container would.
                old_pods = {p["metadata"]["name"] for p in kube.list_all(
                    path("pods", ns), {"labelSelector": POD_SELECTOR}, metadata_only=True)[0]}
                restart["restarted_at"] = time.time() - t0
                operator.start()
                if args.profile_restart:   # where the new process's first seconds go, thread by thread
                    subprocess.Popen(["py-spy", "record", "--pid", str(operator.proc.pid), "-d", "40", "-r", "50",
                                      "--idle", "--threads", "-f", "speedscope", "-o", str(args.profile_restart)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if restart and "first_pod_after" not in restart:
                after = [t for t, _, name in finisher.created
                         if t - t0 >= restart["restarted_at"] and name not in old_pods]
                if after:
                    restart["first_pod_after"] = min(after) - t0
            if now - last_print >= 10:
                last_print = now
                print(f"{now - t0:7.0f} s  trials {created}/{args.trials}  running {running}  pods {pods}  "
                      f"completed {len(finisher.completed)}  phases {sorted(set(map(str, phases)))}",
                      file=sys.stderr, flush=True)
            ended = all(p in ("Succeeded", "Failed") for p in phases) and len(phases) == len(names)
        wall = time.time() - t0
        cpu_after = machine_cpu()
        writes_after = apiserver_writes(kube)
        counters = operator.counters() if operator else scrape(args.metrics_port)
        study_bytes, trial_bytes = object_sizes(kube, ns)
        result = audit(kube, ns, names, finisher)
        # While a Study has new trials to start (up to its last trial's first pod) every
        # completion frees a slot its operator fills; after that only promotions follow, and
        # late: each Study is measured in its own window.
        last_new = defaultdict(float)
        for t, key, n in finisher.created:
            if n.endswith("-s0"):
                last_new[key[1]] = max(last_new[key[1]], t - t0)
        measured = [(t, d, key[1], ended, pod) for t, d, key, ended, pod in pairs(finisher.completed, finisher.created)
                    if t - t0 <= last_new[key[1]]]
        latency = [(t, d) for t, d, *_ in measured]
        delays = [d for _, d in latency]
        held = wanted = 0
        for sample in samples:
            for name, per in per_study.items():
                if 10 <= sample["t"] <= last_new[name]:
                    held, wanted = held + sample["busy_by_study"].get(name, 0), wanted + per
        segments = counters.get("rung_segments_finished_total", 0.0)
        result.update({
            "trials_requested": args.trials, "concurrent": args.concurrent, "studies": args.studies, "gpus": gpus,
            "unit_seconds": args.unit_seconds, "jitter": args.jitter, "keep_finished_pods": args.keep_finished_pods,
            "wall_s": wall, "phases": phases,
            "segments": len(finisher.completed),
            "decisions_per_s": len(finisher.created) / wall,
            "p50_s": quantile(delays, 0.5), "p99_s": quantile(delays, 0.99), "max_s": max(delays, default=float("nan")),
            "gpu_busy": held / wanted if wanted else float("nan"),
            "rss_mb": max((s.get("rss_mb", 0) for s in samples), default=None) if operator else None,
            "cpu_fraction": (samples[-1]["cpu_s"] / wall) if operator and samples else None,
            "api_requests": counters.get("rung_api_requests_total"),
            "requests_per_segment": (counters.get("rung_api_requests_total", 0.0) / segments) if segments else None,
            "requests_per_segment_by_method": {k: round(v / segments, 3) for k, v in
                                               by_label(counters, "rung_api_requests_total").items()}
                                              if segments else None,
            # The operator's own view of the same latency, from its pod watch (cumulative buckets).
            "operator_next_pod_buckets": by_label(counters, "rung_completion_to_next_pod_seconds_bucket"),
            "failed_steps": by_label(counters, "rung_reconcile_errors_total"),
            "apiserver_writes_per_segment": {k: round(n / len(finisher.completed), 3) for k, n in sorted(
                ((k, v - writes_before.get(k, 0.0)) for k, v in writes_after.items()), key=lambda kv: -kv[1])
                if n > 0} if finisher.completed else None,
            "apiserver_cpu_fraction": ((samples[-1]["apiserver_cpu_s"] - samples[0]["apiserver_cpu_s"])
                                       / (samples[-1]["t"] - samples[0]["t"])) if apiserver and len(samples) > 1 else None,
            "cores": os.cpu_count(),
            "cpu_cores_mean": {k: round((cpu_after[k] - cpu_before.get(k, 0.0)) / wall, 3) for k in cpu_after},
            "largest_object_bytes": max(study_bytes, trial_bytes), "largest_study_bytes": study_bytes,
            "largest_trial_bytes": trial_bytes, "study_size_by_trials": sizes,
            "restart": restart or None, "finisher_errors": finisher.errors,
        })
        if restart.get("first_pod_after") is not None:
            result["restart"]["decisions_again_after_s"] = restart["first_pod_after"] - restart["restarted_at"]
        (args.out / "result.json").write_text(json.dumps(result, indent=1))
        (args.out / "samples.json").write_text(json.dumps({"t0": t0, "samples": samples, "latency": latency,
                                                           "latency_pods": [m[2:] for m in measured]}))
        plots(args.out, samples, latency, t0)
        table(result)
        return result
    finally:
        stop.set()
        if operator:
            operator.stop()
        kwok_proc.terminate()
        kwok_proc.wait()
        if not args.namespace:   # the operator is gone: the Studies' deletion finalizers go by hand
            for obj in kube.request("GET", path("studies", ns))["items"]:
                kube.request("PATCH", path("studies", ns, obj["metadata"]["name"]), merge_patch=True,
                             body={"metadata": {"finalizers": None}})
            kube.request("DELETE", f"/api/v1/namespaces/{ns}")
        kwok.delete_nodes(kube)
        for name in cordoned:
            kube.request("PATCH", path("nodes", name=name), body={"spec": {"unschedulable": False}},
                         merge_patch=True)


def wait_for_earlier_runs(kube: Kube, timeout: float = 900) -> None:
    """An earlier run's namespace still being deleted (thousands of pods and Trials) keeps
    the API server and KWOK busy: start once it is gone."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = [n["metadata"]["name"] for n in kube.request("GET", "/api/v1/namespaces")["items"]
                if n["metadata"]["name"].startswith("scale-") and (n.get("status") or {}).get("phase") == "Terminating"]
        if not left:
            return
        print(f"waiting for an earlier run's namespace to be deleted: {', '.join(left)}", file=sys.stderr, flush=True)
        time.sleep(5)


def within(buckets: dict[str, float]) -> str:
    """Shares of the operator's completion-to-next-pod histogram within 1 s and 5 s."""
    n = buckets.get("+Inf", 0.0)
    return f"{buckets.get('1.0', 0.0) / n:.1%} / {buckets.get('5.0', 0.0) / n:.1%} of {n:.0f}" if n else "n/a"


def table(r: dict) -> None:
    rows = [
        ("trials / Studies / at once / GPUs", f"{r['trials_requested']} / {r['studies']} / {r['concurrent']} / {r['gpus']}"),
        ("Study phases", ", ".join(sorted(set(map(str, r["phases"]))))),
        ("segments finished", f"{r['segments']}"),
        ("wall time", f"{r['wall_s']:.0f} s"),
        ("pods created per second", f"{r['decisions_per_s']:.1f}"),
        ("completion -> successor p50 / p99 / max", f"{r['p50_s']:.2f} / {r['p99_s']:.2f} / {r['max_s']:.2f} s"),
        ("the same by the operator's pod watch, whole run: within 1 s / 5 s", within(r["operator_next_pod_buckets"])),
        ("GPUs busy while a Study has new trials to start", f"{r['gpu_busy']:.1%}"),
        ("operator RSS (max)", f"{r['rss_mb']:.0f} MB" if r["rss_mb"] else "n/a"),
        ("operator CPU (cores, mean)", f"{r['cpu_fraction']:.2f}" if r["cpu_fraction"] is not None else "n/a"),
        ("API requests per segment", f"{r['requests_per_segment']:.2f} (" + ", ".join(
            f"{m} {n:.2f}" for m, n in sorted(r["requests_per_segment_by_method"].items())) + ")"
         if r["requests_per_segment"] else "n/a"),
        ("failed steps (by cause)", ", ".join(f"{c} {n:.0f}" for c, n in sorted(r["failed_steps"].items())) or "none"),
        ("API server: writes per segment, all clients",
         f"{sum(r['apiserver_writes_per_segment'].values()):.2f}" if r.get("apiserver_writes_per_segment") else "n/a"),
        ("API server CPU (cores, mean)", f"{r['apiserver_cpu_fraction']:.2f}" if r.get("apiserver_cpu_fraction") else "n/a"),
        (f"the machine's {r['cores']} cores busy (mean); cluster processes' cores",
         f"{r['cpu_cores_mean']['machine'] / r['cores']:.0%}; " + ", ".join(
             f"{k} {v:.2f}" for k, v in r["cpu_cores_mean"].items() if k != "machine")),
        ("largest Study / Trial object", f"{r['largest_study_bytes']} / {r['largest_trial_bytes']} bytes"),
        ("lost / duplicated", f"{r['lost']} / {r['duplicated']}"),
        ("Studies' pods left at the end", f"{r['pods_left']}"),
    ]
    if r.get("restart"):
        rows.append(("restart: decisions flow again after", f"{r['restart'].get('decisions_again_after_s', float('nan')):.1f} s"))
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if r.get("apiserver_writes_per_segment"):
        print("\n| API server writes per segment (all clients) | |\n|---|---:|")
        for k, v in r["apiserver_writes_per_segment"].items():
            if v >= 0.01:
                print(f"| {k} | {v:.2f} |")


if __name__ == "__main__":
    main()
