"""Warm-started against cold BOHB on a family of related tasks (shifted Hartmann-6).

A task of the family is multi-fidelity Hartmann-6 (preset "moderate", as bench/regret.py)
with its inputs shifted by an offset, wrapped: f_d(x, z) = hartmann((x - d) mod 1, z); its
optimum moves by d and keeps its value, so regret is comparable across tasks. A task's
meta-features are its offsets (offset0..offset5), standing in for a dataset's.

For each seed: a target offset d_T (uniform in [-0.1, 0.1]^6); three earlier related tasks
d_T + u, u uniform in [-0.05, 0.05]^6; one unrelated task d_T + 0.5 (optimum about 1.2
away). Each earlier task is run with cold BOHB (Hyperband + KDE, as bench/regret.py's
"bohb") for --source-evals full evaluations; its observations become a Prior of weight
similarity(meta-features) (rung.warmstart). Then on the target task:
- cold:                BOHB without priors, for --evals full evaluations;
- cold, another seed:  the same with another sampler seed: how far two cold runs differ
                       by chance alone (the ratio an equivalent method gets);
- warm:                BOHB warm-started from the three related tasks;
- unrelated:           BOHB warm-started from the unrelated task, weighted by similarity;
- unrelated, w=1:      the same prior at weight 1 (no similarity weighting).
Measured: the budget each arm needs until its incumbent (best loss at the highest budget
reached, as bench/regret.py) has the regret cold BOHB ended with, divided by the budget
cold BOHB needed to get there (< 1: less budget); median and quartiles over seeds. A run
that never gets there within --horizon x --evals counts as infinite. Also each arm's
median regret at fixed budgets. In-process simulator, one worker, non-resumable segments
(each costs its budget).

Run: PYTHONPATH=operator:trial_image python bench/warm_start.py [--seeds 20] [--evals 100]
     [--source-evals 100]   (about 2.5 minutes on one core)
Prints the tables (Markdown); writes the plot to bench/plots/warm_start.png.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from regret import Hartmann6, budget_to_reach
from rung.schedulers.hyperband import Hyperband
from rung.schedulers.simulate import simulate
from rung.search import KDESampler
from rung.warmstart import Prior, prior_from, similarity
from rung_trainables import benchmarks as B

RELATED, RELATED_SPREAD, TARGET_SPREAD, FAR = 3, 0.05, 0.1, 0.5
ARMS = ("cold", "cold, another seed", "warm", "unrelated", "unrelated, w=1")
RESEED = 10**6   # the sampler seed offset of "cold, another seed"


class ShiftedHartmann6(Hartmann6):
    def __init__(self, offset: np.ndarray):
        self.offset = np.asarray(offset, dtype=float)
        self.name = "shifted Hartmann-6"

    def meta_features(self) -> dict[str, float]:
        return {f"offset{i}": float(v) for i, v in enumerate(self.offset)}

    def inputs(self, c: dict) -> np.ndarray:
        return (np.array([c[f"x{i}"] for i in range(6)]) - self.offset) % 1.0

    def loss(self, c, budget, seed):
        return B.hartmann(self.inputs(c), budget, preset="moderate", seed=seed)

    def regret(self, c):
        return B.hartmann_regret(self.inputs(c))


def run_bohb(problem: ShiftedHartmann6, seed: int, evals: float, priors=(), sampler_seed: int | None = None):
    """(observations, [(spent, regret of the incumbent)]) of one BOHB run; `seed` seeds the
    sampler (unless `sampler_seed` is given) and the task's noise."""
    sampler = KDESampler(problem.space(), seed if sampler_seed is None else sampler_seed)
    sampler.warm_start([p for p in priors if p is not None])   # None: an earlier run gave too little
    scheduler = Hyperband(sampler, problem.budget_min, problem.budget_max, 10**9)
    events = simulate(scheduler, lambda t, c, b: problem.loss(c, b, seed), max_spent=evals * problem.budget_max,
                      resumable=problem.resumable)
    top, best, curve = -math.inf, (math.inf, None), []
    for e in events:
        if e.budget > top:
            top, best = e.budget, (math.inf, None)
        if e.budget == top and e.loss < best[0]:
            best = (e.loss, e.config)
        curve.append((e.spent, problem.regret(best[1])))
    return scheduler.observations, curve


def one_seed(seed: int, args) -> dict[str, tuple[list, float]]:
    """Per arm: (regret curve, mean weight of its priors)."""
    rng = np.random.default_rng(seed)
    target = ShiftedHartmann6(rng.uniform(-TARGET_SPREAD, TARGET_SPREAD, 6))
    related = [ShiftedHartmann6(target.offset + rng.uniform(-RELATED_SPREAD, RELATED_SPREAD, 6))
               for _ in range(RELATED)]
    unrelated = ShiftedHartmann6(target.offset + FAR)
    space = target.space()

    def prior(task: ShiftedHartmann6, observations) -> Prior:
        return prior_from(space, space, observations, similarity(task.meta_features(), target.meta_features()))

    source = lambda task, k: run_bohb(task, 1000 * seed + k, args.source_evals)[0]
    far = source(unrelated, RELATED)
    arms = {"cold": [], "cold, another seed": [],
            "warm": [prior(task, source(task, k)) for k, task in enumerate(related)],
            "unrelated": [prior(unrelated, far)], "unrelated, w=1": [prior_from(space, space, far, 1.0)]}
    horizon = args.horizon * args.evals
    return {arm: (run_bohb(target, seed, args.evals if arm == "cold" else horizon, priors,
                           seed + RESEED if arm == "cold, another seed" else None)[1],
                  float(np.mean([p.weight for p in priors if p is not None])) if priors else math.nan)
            for arm, priors in arms.items()}


def summarise(results: list[dict], args) -> None:
    ratios = {arm: [] for arm in ARMS[1:]}
    for res in results:
        cold = res["cold"][0]
        target = cold[-1][1]
        cold_spent = budget_to_reach(cold, target)
        for arm in ratios:
            ratios[arm].append(budget_to_reach(res[arm][0], target) / cold_spent)
    print(f"| arm | prior weight (median) | budget ratio to cold's final regret: median | q1 | q3 "
          f"| reached (of {len(results)}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm, r in ratios.items():
        r = np.array(r)
        q1, med, q3 = (_quantile(r, q) for q in (0.25, 0.5, 0.75))
        weight = np.median([res[arm][1] for res in results])
        print(f"| {arm} | {'-' if np.isnan(weight) else f'{weight:.3f}'} | {med:.3f} | {q1:.3f} | {q3:.3f} | {int(np.isfinite(r).sum())} |")
    full = Hartmann6.budget_max
    print(f"\n| arm | median regret after {args.evals / 4:g} / {args.evals / 2:g} / {args.evals:g} full evaluations |")
    print("|---|---|")
    for arm in ARMS:
        cells = [np.median([_regret_at(res[arm][0], f * args.evals * full) for res in results])
                 for f in (0.25, 0.5, 1.0)]
        print(f"| {arm} | {' / '.join(f'{c:.4f}' for c in cells)} |")


def _quantile(values, q: float) -> float:
    """Linear-interpolated quantile where inf (never reached) sorts last and stays inf."""
    v = np.sort(np.asarray(values, dtype=float))
    pos = q * (len(v) - 1)
    lo, frac = int(pos), pos - int(pos)
    if frac == 0 or np.isinf(v[lo + 1]):
        return float(v[lo] if frac == 0 else math.inf)
    return float(v[lo] + (v[lo + 1] - v[lo]) * frac)


def _regret_at(curve, spent: float) -> float:
    before = [r for s, r in curve if s <= spent]
    return before[-1] if before else math.nan


def plot(results: list[dict], args, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = Hartmann6.budget_max
    grid = np.geomspace(full / 4, args.horizon * args.evals * full, 60)
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in ARMS:
        ys = np.array([[_regret_at(res[arm][0], g) for g in grid] for res in results])
        seen = ~np.all(np.isnan(ys), axis=0)
        ax.plot(grid[seen] / full, np.nanmedian(ys[:, seen], axis=0), label=arm)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("budget spent (full evaluations)"), ax.set_ylabel(f"median regret ({len(results)} seeds)")
    ax.set_title("BOHB on shifted Hartmann-6: warm start vs cold"), ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--evals", type=float, default=100, help="cold BOHB's budget, in full evaluations")
    ap.add_argument("--source-evals", type=float, default=100, help="each earlier task's BOHB budget")
    ap.add_argument("--horizon", type=float, default=1.5, help="warm runs give up at this multiple of --evals")
    ap.add_argument("--plot", type=Path, default=Path("bench/plots/warm_start.png"))
    args = ap.parse_args()
    t0 = time.time()
    results = [one_seed(seed, args) for seed in range(args.seeds)]
    summarise(results, args)
    plot(results, args, args.plot)
    print(f"\n<!-- {args.seeds} seeds in {time.time() - t0:.0f} s; plot {args.plot} -->")


if __name__ == "__main__":
    main()
