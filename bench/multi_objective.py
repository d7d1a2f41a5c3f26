"""Multi-objective search: hypervolume that MO-ASHA finds for the compute random search spends.

Problem: a ZDT1-shaped two-objective function with a fidelity. f1 = x0 (exact at every
budget, like a model's size or latency); f2 = g (1 - sqrt(x0 / g)), where g = 1 + 9 *
mean((x_i - c_i)^2) over x1..x5 measures the distance to the Pareto set. At budget z in
1..81 (s = ln z / ln 81) the low-fidelity g is centred on c_i = 0.3 +- 0.25 (1 - s)
(alternating sign) instead of 0.3 and f2 gets |N(0, 0.3 (1 - s))| noise, so a small budget
ranks configurations differently from the full one; at z = 81 both vanish. The true Pareto
front is f2 = 1 - sqrt(f1), f1 in [0, 1].

For each seed, random search evaluates N configurations at the full budget; MO-ASHA (eta
3, rungs 1..81, promoted trials continue from their checkpoint) with the random sampler
and with MOTPE runs on the same seed until it has spent as much, and so does plain ASHA
promoting by the first objective alone (what a single-objective Study would do). A method's result is the
set of configurations it trained to the full budget; its score is their hypervolume (values
at z = 81, noise-free) against the fixed reference point (1.1, 1.1), the front's nadir
+10%. The table gives each method's median hypervolume, its median ratio to random
search's (same seed), and the share of the true front's hypervolume (0.8767). One worker,
in-process simulator: only the algorithms are compared.

Run: python bench/multi_objective.py [--seeds 20] [--random-evals 64]
Prints the table; writes bench/plots/multi_objective.png (median hypervolume against
compute, in full evaluations).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from rung.pareto import hypervolume
from rung.schedulers.asha import ASHA
from rung.schedulers.full import FullBudget
from rung.schedulers.mo_asha import MOASHA
from rung.schedulers.simulate import simulate
from rung.search.motpe import MOTPESampler
from rung.search.random import RandomSampler
from rung.space import Param, SearchSpace
from rung_trainables.benchmarks import config_seed, fidelity_scale

BUDGET_MIN, BUDGET_MAX = 1, 81
DIM = 6
REFERENCE = (1.1, 1.1)
TRUE_FRONT_HV = 1.1 * 1.1 - 1 / 3            # area under (1.1, 1.1) above f2 = 1 - sqrt(f1)
SPACE = SearchSpace([Param(f"x{i}", "float", 0.0, 1.0) for i in range(DIM)])

METHODS = {  # name -> (scheduler, sampler)
    "random (full budget)": (FullBudget, RandomSampler),
    "ASHA on f1 alone": (ASHA, RandomSampler),
    "MO-ASHA": (MOASHA, RandomSampler),
    "MO-ASHA + MOTPE": (MOASHA, MOTPESampler),
}


def losses(config: dict, budget: float, seed: int) -> tuple[float, float]:
    """(f1, f2) of a configuration at a budget; noise-free at BUDGET_MAX."""
    x = np.array([config[f"x{i}"] for i in range(DIM)])
    s = fidelity_scale(budget, BUDGET_MAX)
    sign = np.where(np.arange(1, DIM) % 2, 1.0, -1.0)
    centre = 0.3 + 0.25 * (1 - s) * sign
    g = 1 + 9 * np.mean((x[1:] - centre) ** 2)
    f2 = g * (1 - math.sqrt(x[0] / g))
    if s < 1:
        rng = np.random.default_rng(config_seed(seed, budget, *x))
        f2 += abs(rng.normal(0.0, 0.3 * (1 - s)))
    return float(x[0]), float(f2)


def trace(method: str, seed: int, max_spent: float) -> list[tuple[float, float]]:
    """[(spent, hypervolume of the configurations trained to the full budget so far)]."""
    scheduler_cls, sampler_cls = METHODS[method]
    scheduler = scheduler_cls(sampler_cls(SPACE, seed), BUDGET_MIN, BUDGET_MAX, 10**9)
    events = simulate(scheduler, lambda t, c, b: losses(c, b, seed), max_spent=max_spent)
    found, out = [], []
    for e in events:
        if e.budget == BUDGET_MAX:
            found.append(e.losses)     # at the full budget, observed = noise-free
        out.append((e.spent, hypervolume(found, REFERENCE)))
    return out


def plot(curves: dict[str, list], horizon: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, horizon, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in curves.items():
        ys = []
        for curve in runs:
            spent = np.array([s for s, _ in curve])
            hv = np.array([h for _, h in curve])
            idx = np.searchsorted(spent, grid, side="right") - 1
            ys.append(np.where(idx >= 0, hv[np.clip(idx, 0, None)], 0.0))
        ax.plot(grid / BUDGET_MAX, np.median(ys, axis=0), label=method)
    ax.axhline(TRUE_FRONT_HV, color="grey", linestyle=":", label="true front")
    ax.set_xlabel("compute spent (full evaluations)")
    ax.set_ylabel(f"median hypervolume, ref {REFERENCE}")
    ax.set_title("two-objective ZDT1-shaped, fidelity 1..81")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--random-evals", type=int, default=64, help="random search's full-budget evaluations")
    ap.add_argument("--plot", type=Path, default=Path("bench/plots/multi_objective.png"))
    args = ap.parse_args()
    horizon = args.random_evals * BUDGET_MAX
    curves: dict[str, list] = {m: [] for m in METHODS}
    seconds = dict.fromkeys(METHODS, 0.0)
    for seed in range(args.seeds):
        for method in METHODS:
            t0 = time.perf_counter()
            curves[method].append(trace(method, seed, horizon))
            seconds[method] += time.perf_counter() - t0
    final = {m: np.array([runs[-1][1] for runs in curves[m]]) for m in METHODS}
    base = final["random (full budget)"]
    print(f"| method | median hypervolume | median ratio to random | min / max ratio "
          f"| share of true front | seconds ({args.seeds} seeds) |")
    print("|---|---:|---:|---:|---:|---:|")
    for m, hv in final.items():
        ratio = hv / base
        print(f"| {m} | {np.median(hv):.4f} | {np.median(ratio):.3f} | {ratio.min():.2f} / {ratio.max():.2f} "
              f"| {np.median(hv) / TRUE_FRONT_HV:.3f} | {seconds[m]:.1f} |")
    plot(curves, horizon, args.plot)
    print(f"<!-- {args.seeds} seeds, {args.random_evals} full evaluations each; plot {args.plot} -->")


if __name__ == "__main__":
    main()
