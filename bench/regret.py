"""Budget that BOHB, ASHA and Hyperband need to reach random search's final regret.

For each seed, random search evaluates N configurations at the full budget; its final
regret (noise-free, of the configuration it would return) is the target. Each
multi-fidelity method then runs with the same seed until its incumbent (best observed
loss at the highest budget reached so far) has regret <= that target; the budget it
spent, divided by random search's, is its ratio (< 1: it needs less). Runs in-process
on the simulator (one worker), so only the algorithms are compared, not process start-up.

A second table gives each method's median regret after a fixed budget (--at, in full
evaluations), e.g. to compare two versions of a sampler.

Run: python bench/regret.py [--seeds 20] [--at 100] [--only counting] [--out bench/out]
Writes the tables to stdout and PNG plots (median regret against budget) to --out.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from rung.schedulers.asha import ASHA
from rung.schedulers.full import FullBudget
from rung.schedulers.hyperband import Hyperband
from rung.schedulers.simulate import simulate
from rung.search import SAMPLERS
from rung.space import Param, SearchSpace
from rung_trainables import benchmarks as B

METHODS = {  # name -> (scheduler, sampler)
    "random": (FullBudget, "random"),
    "hyperband": (Hyperband, "random"),
    "asha": (ASHA, "random"),
    "bohb": (Hyperband, "tpe"),
    "async-bohb": (ASHA, "tpe"),
}


class CountingOnes:
    name, n_cat, n_cont = "counting ones (8+8)", 8, 8
    budget_min, budget_max, resumable = 9, 729, True  # draws continue from the checkpoint

    def space(self):
        return SearchSpace([Param(f"cat{i}", "categorical", choices=(0, 1)) for i in range(self.n_cat)]
                           + [Param(f"x{i}", "float", 0.0, 1.0) for i in range(self.n_cont)])

    def split(self, c):
        return [c[f"cat{i}"] for i in range(self.n_cat)], [c[f"x{i}"] for i in range(self.n_cont)]

    def loss(self, c, budget, seed):
        cat, cont = self.split(c)
        return B.counting_ones(cat, cont, round(budget), seed=seed)

    def regret(self, c):
        cat, cont = self.split(c)
        return B.counting_ones_regret(B.counting_ones_true(cat, cont), self.n_cat + self.n_cont)


class Hartmann6:
    name = "Hartmann-6 (moderate)"
    budget_min, budget_max, resumable = 1, 100, False  # each fidelity is a fresh evaluation

    def space(self):
        return SearchSpace([Param(f"x{i}", "float", 0.0, 1.0) for i in range(6)])

    def loss(self, c, budget, seed):
        return B.hartmann([c[f"x{i}"] for i in range(6)], budget, preset="moderate", seed=seed)

    def regret(self, c):
        return B.hartmann_regret([c[f"x{i}"] for i in range(6)])


def trace(problem, method: str, seed: int, max_spent: float):
    """[(spent, regret of the incumbent)] after each finished segment."""
    scheduler_cls, sampler = METHODS[method]
    scheduler = scheduler_cls(SAMPLERS[sampler](problem.space(), seed), problem.budget_min,
                              problem.budget_max, 10**9)
    events = simulate(scheduler, lambda t, c, b: problem.loss(c, b, seed), max_spent=max_spent,
                      resumable=problem.resumable)
    top, best, out = -math.inf, (math.inf, None), []
    for e in events:
        if e.budget > top:
            top, best = e.budget, (math.inf, None)
        if e.budget == top and e.loss < best[0]:
            best = (e.loss, e.config)
        out.append((e.spent, problem.regret(best[1])))
    return out


def budget_to_reach(curve, target: float) -> float:
    for spent, regret in curve:
        if regret <= target:
            return spent
    return math.inf


def run(problem, seeds: int, n_random: int, horizon: float):
    full = problem.budget_max
    rows, curves = {m: [] for m in METHODS if m != "random"}, {m: [] for m in METHODS}
    for seed in range(seeds):
        rs = trace(problem, "random", seed, n_random * full)
        target = rs[-1][1]
        rs_spent = rs[-1][0]
        curves["random"].append(rs)
        for m in rows:
            curve = trace(problem, m, seed, horizon * rs_spent)
            curves[m].append(curve)
            rows[m].append(budget_to_reach(curve, target) / rs_spent)
    return rows, curves


def regret_at(problem, seeds: int, evaluations: float) -> dict[str, float]:
    """Median regret of each method's incumbent once it has spent `evaluations` full budgets."""
    spend = evaluations * problem.budget_max
    return {m: float(np.median([trace(problem, m, seed, spend)[-1][1] for seed in range(seeds)]))
            for m in METHODS}


def plot(problem, curves, n_random, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = problem.budget_max
    grid = np.geomspace(full / 10, curves["random"][0][-1][0] * 3, 60)
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, runs in curves.items():
        ys = []
        for curve in runs:
            spent = np.array([s for s, _ in curve])
            reg = np.array([r for _, r in curve])
            idx = np.searchsorted(spent, grid, side="right") - 1
            ys.append(np.where(idx >= 0, reg[np.clip(idx, 0, None)], np.nan))
        ys = np.array(ys)
        seen = ~np.all(np.isnan(ys), axis=0)  # before the first result there is no incumbent
        ax.plot(grid[seen] / full, np.nanmedian(ys[:, seen], axis=0), label=m)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("budget spent (full evaluations)"), ax.set_ylabel("median regret")
    ax.set_title(problem.name), ax.legend()
    fig.tight_layout()
    path = out / (problem.name.split()[0].lower() + "_regret.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--random-evals", type=int, default=64, help="random search's full-budget evaluations")
    ap.add_argument("--horizon", type=float, default=3.0, help="give up at this multiple of random's budget")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--at", type=float, default=100.0, help="full evaluations for the fixed-budget table")
    ap.add_argument("--only", choices=("counting", "hartmann"), help="run one benchmark")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    problems = [p for p in (CountingOnes(), Hartmann6()) if args.only is None or p.name.lower().startswith(args.only)]
    print(f"| benchmark | method | median ratio | geo-mean ratio | reached (of {args.seeds}) |")
    print("|---|---|---|---|---|")
    for problem in problems:
        t0 = time.time()
        rows, curves = run(problem, args.seeds, args.random_evals, args.horizon)
        for m, ratios in rows.items():
            r = np.array(ratios)
            ok = np.isfinite(r)
            geo = float(np.exp(np.mean(np.log(np.where(ok, r, args.horizon)))))
            print(f"| {problem.name} | {m} | {np.median(np.where(ok, r, np.inf)):.3f} | {geo:.3f} "
                  f"| {int(ok.sum())} |", flush=True)
        path = plot(problem, curves, args.random_evals, args.out)
        print(f"<!-- {problem.name}: {time.time() - t0:.0f} s, plot {path} -->", flush=True)
    print(f"\n| benchmark | method | median regret after {args.at:g} full evaluations ({args.seeds} seeds) |")
    print("|---|---|---:|")
    for problem in problems:
        for m, regret in regret_at(problem, args.seeds, args.at).items():
            print(f"| {problem.name} | {m} | {regret:.4f} |", flush=True)


if __name__ == "__main__":
    main()
