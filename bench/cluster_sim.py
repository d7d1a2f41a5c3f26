"""Cluster simulations with Rung's real schedulers, sizing and fair share (rung.sim).

1. Speed-up over one worker (1 GPU per trial, workers = GPUs) of ASHA and async BOHB on
   counting ones, at 8, 32, 100 and 500 workers. Two measures, each T(1) / T(W):
   - work: T(W) = simulated time until K configurations have been trained to the maximum
     budget R (729 draws): the same amount of finished top-rung work at every W;
   - quality: T(W) = simulated time until the incumbent's noise-free regret <= a target.
   No start-up cost (one budget unit = 1 s on one GPU): the algorithm's own scaling.
2. A mix of four Studies with different true efficiency curves on one cluster, under the
   policies one / max / rung / oracle: time to a target regret and GPU-hours per Study.
3. GPU use over time of the mix under Rung's sizing, fair share on and off (plot).

Run: python bench/cluster_sim.py [--seeds 5] [--out bench/out]
Writes tables to stdout and PNGs to --out.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from rung.schedulers.asha import ASHA
from rung.search import SAMPLERS
from rung.sim import SimStudy, simulate
from rung.sim.objectives import CountingOnes
from rung.sim.plots import plot_speedup, plot_usage
from rung.sizing import RingAllReduce

WORKERS = (1, 8, 32, 100, 500)
METHODS = {"asha": "random", "async-bohb": "tpe"}  # ASHA with its sampler of new configurations
ONE_SECOND = RingAllReduce(1.0, 0.0, 1.0, 0.0)  # 1 s per budget unit on 1 GPU


def asha_study(name, objective, sampler, seed, max_trials=10**9, **kw) -> SimStudy:
    """An ASHA Study (eta 3) over the objective's budgets; a fresh scheduler per run."""
    def make():
        return ASHA(SAMPLERS[sampler](objective.space(), seed), objective.budget_min, objective.budget_max,
                    max_trials)
    return SimStudy(name, make, objective, seed=seed, **kw)


# ---- 1. speed-up --------------------------------------------------------------------

def speedup(seeds: int, k_full: int, target: float):
    obj = CountingOnes()
    work = {m: {w: [] for w in WORKERS} for m in METHODS}
    quality = {m: {w: [] for w in WORKERS} for m in METHODS}
    for method, sampler in METHODS.items():
        for seed in range(seeds):
            t_work, t_quality = {}, {}
            for w in WORKERS:
                st = asha_study("s", obj, sampler, seed, true_curve=ONE_SECOND, gpus_min=1, gpus_max=1,
                                parallelism=w, target_regret=target)
                run = simulate([st], w, "one", startup_seconds=0.0,
                               stop=lambda r: len(r["s"].full_budget_times) >= k_full
                               and r["s"].time_to_target is not None)
                res = run.studies["s"]
                t_work[w] = res.full_budget_times[k_full - 1]
                t_quality[w] = res.time_to_target
            for w in WORKERS:
                work[method][w].append(t_work[1] / t_work[w])
                quality[method][w].append(t_quality[1] / t_quality[w])
    return work, quality


# ---- 2./3. the mix ------------------------------------------------------------------

# name -> (objective, true curve, declared curve, target regret). Per-step parameters are
# (stepSeconds, gradientBytes, bandwidthGBps, latencySeconds).
TARGET = 0.25  # noise-free regret of counting ones (16 dims): 0 is the optimum
MIX = {
    # compute-bound, InfiniBand HDR: E(8) = 0.80, the oracle gives 8
    "scales": (CountingOnes(), RingAllReduce(1.0, 4.4e8, 25, 5e-6), None, TARGET),
    # small model, large gradients over 100 Gb Ethernet: E(2) = 0.61, the oracle gives 1
    "comm-bound": (CountingOnes(), RingAllReduce(0.05, 2e8, 12.5, 2.5e-5), None, TARGET),
    # E(4) = 0.73 >= 0.7 > E(5) = 0.67: the oracle gives 4
    "knee-at-4": (CountingOnes(), RingAllReduce(0.2, 3.125e8, 25, 5e-6), None, TARGET),
    # declares NVLink (E(8) = 0.96) but runs over Ethernet (E(2) = 0.80 > 0.7 > E(3) = 0.66)
    "mis-specified": (CountingOnes(), RingAllReduce(0.5, 8e8, 12.5, 2.5e-5),
                      RingAllReduce(0.5, 8e8, 300, 2e-6), TARGET),
}
ARRIVALS = (0.0, 0.0, 1800.0, 3600.0)  # seconds: two Studies at once, two later


def mix_studies(seed: int, parallelism: int, max_trials: int) -> list[SimStudy]:
    out = []
    for i, ((name, (obj, true, declared, target)), arrival) in enumerate(zip(MIX.items(), ARRIVALS)):
        out.append(asha_study(name, obj, "random", 100 * seed + i, true_curve=true, declared=declared, gpus_min=1,
                              gpus_max=8, target_efficiency=0.7, parallelism=parallelism, arrival=arrival,
                              steps_per_unit=10, target_regret=target,
                              max_trials=max_trials))
    return out


def geomean(xs):
    return math.exp(statistics.fmean(math.log(x) for x in xs))


def mix(seeds: int, gpus: int, parallelism: int, max_trials: int, startup: float, noise: float):
    """{policy: {study: [(time to target, GPU-h to target, JCT, GPU-h), per seed]}}."""
    out = {}
    for policy in ("one", "max", "rung", "oracle"):
        out[policy] = {name: [] for name in MIX}
        for seed in range(seeds):
            run = simulate(mix_studies(seed, parallelism, max_trials), gpus, policy, fair_share=True,
                           startup_seconds=startup, measure_noise=noise, seed=seed)
            for name, res in run.studies.items():
                ttt = res.time_to_target if res.time_to_target is not None else math.inf
                out[policy][name].append((ttt, (res.gpu_seconds_to_target or math.inf) / 3600,
                                          res.end - res.arrival, res.gpu_hours, dict(res.gpus_used)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--k-full", type=int, default=64, help="speed-up: configurations trained to R")
    ap.add_argument("--target", type=float, default=0.2, help="speed-up: counting ones target regret")
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--parallelism", type=int, default=8)
    ap.add_argument("--max-trials", type=int, default=729)
    ap.add_argument("--startup", type=float, default=30.0)
    ap.add_argument("--noise", type=float, default=0.05, help="relative error of reported throughputs")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--only", choices=("speedup", "mix"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.only in (None, "speedup"):
        t0 = time.time()
        work, quality = speedup(args.seeds, args.k_full, args.target)
        print(f"\n### Speed-up over 1 worker, median of {args.seeds} seeds (min-max)\n")
        print("| method | measure | " + " | ".join(f"{w} workers" for w in WORKERS[1:]) + " |")
        print("|---|---|" + "---:|" * (len(WORKERS) - 1))
        for method in METHODS:
            for label, table in ((f"work: {args.k_full} configs trained to R", work),
                                 (f"quality: regret <= {args.target}", quality)):
                cells = [f"{statistics.median(table[method][w]):.1f} ({min(table[method][w]):.1f}-"
                         f"{max(table[method][w]):.1f})" for w in WORKERS[1:]]
                print(f"| {method} | {label} | " + " | ".join(cells) + " |")
        for label, table in (("work", work), ("quality", quality)):
            plot_speedup({m: {w: statistics.median(v[w]) for w in WORKERS} for m, v in table.items()},
                         args.out / f"sim_speedup_{label}.png", f"speed-up over 1 worker ({label})")
        print(f"<!-- speed-up: {time.time() - t0:.0f} s -->", flush=True)

    if args.only in (None, "mix"):
        t0 = time.time()
        res = mix(args.seeds, args.gpus, args.parallelism, args.max_trials, args.startup, args.noise)
        print(f"\n### Mix on {args.gpus} GPUs, {args.parallelism} trials at a time per Study, "
              f"geometric mean of {args.seeds} seeds\n")
        print("| Study | policy | time to target h | GPU-h to target | Study done h | GPU-h in all | segments by GPUs |")
        print("|---|---|---:|---:|---:|---:|---|")
        for name in MIX:
            for policy, by_study in res.items():
                rows = by_study[name]
                used = {}
                for r in rows:
                    for n, c in r[4].items():
                        used[n] = used.get(n, 0) + c
                hist = " ".join(f"{n}:{c}" for n, c in sorted(used.items()))
                print(f"| {name} | {policy} | {geomean([r[0] for r in rows]) / 3600:.2f} | "
                      f"{geomean([r[1] for r in rows]):.1f} | {geomean([r[2] for r in rows]) / 3600:.2f} | "
                      f"{geomean([r[3] for r in rows]):.1f} | {hist} |")
        # Time to target over the (Study, seed) pairs that reach it under every policy.
        pairs = [(name, k) for name in MIX for k in range(args.seeds)
                 if all(math.isfinite(res[p][name][k][0]) for p in res)]
        summary = {p: geomean([res[p][name][k][0] for name, k in pairs]) for p in res}
        print(f"\n{len(pairs)} of {len(MIX) * args.seeds} (Study, seed) pairs reach the target under every "
              "policy; the time to target below is over those.\n")
        print("| policy | time to target, geo-mean h | vs oracle | GPU-h to target, mean per pair |"
              " Study done, geo-mean h | vs oracle | GPU-h in all, per seed |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        done = {p: geomean([r[2] for name in MIX for r in by[name]]) for p, by in res.items()}
        for policy, by_study in res.items():
            rows = [r for name in MIX for r in by_study[name]]
            print(f"| {policy} | {summary[policy] / 3600:.2f} | {summary[policy] / summary['oracle']:.2f} "
                  f"| {statistics.fmean(res[policy][n][k][1] for n, k in pairs):.1f} "
                  f"| {done[policy] / 3600:.2f} | {done[policy] / done['oracle']:.2f} "
                  f"| {sum(r[3] for r in rows) / args.seeds:.0f} |")
        best_fixed = min(summary["one"], summary["max"])
        print(f"\nrung / oracle = {summary['rung'] / summary['oracle']:.3f}; "
              f"rung / better fixed policy = {summary['rung'] / best_fixed:.3f} "
              f"({1 - summary['rung'] / best_fixed:.0%} less time to target); Study done: rung / oracle = "
              f"{done['rung'] / done['oracle']:.3f}, rung / better fixed = "
              f"{done['rung'] / min(done['one'], done['max']):.3f}")

        runs = {}
        for fair in (True, False):
            runs[f"rung, fair share {'on' if fair else 'off'}"] = simulate(
                mix_studies(0, args.parallelism, args.max_trials), args.gpus, "rung", fair_share=fair,
                startup_seconds=args.startup, measure_noise=args.noise, seed=0)
        print("\n| fair share | mean GPU utilisation | " + " | ".join(f"{n}: time to target h / done h" for n in MIX) + " |")
        print("|---|---:|" + "---|" * len(MIX))
        for label, run in runs.items():
            cells = [f"{(r.time_to_target or math.inf) / 3600:.2f} / {(r.end - r.arrival) / 3600:.2f}"
                     for r in run.studies.values()]
            print(f"| {label.split(', ')[1]} | {run.utilisation():.0%} | " + " | ".join(cells) + " |")
        plot_usage(runs, args.out / "sim_utilisation.png",
                   f"GPUs held per Study, {args.gpus} GPUs, seed 0")
        print(f"<!-- mix: {time.time() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
