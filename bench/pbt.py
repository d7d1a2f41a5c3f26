"""PBT against ASHA on a trainable whose best learning rate falls during training.

The trainable is rung_trainables.shifting_lr (minibatch SGD on a noisy least-squares
problem: a large learning rate is best early, a small one late), stepped in-process. The
search space is lr in [1e-3, 1] (log); the budget is 2..54 steps (ASHA, eta 3: rungs 2, 6,
18, 54). Every method runs on 8 simulated workers, each step of training costing one
unit of time:

- PBT: population 8, interval 2 (the budget's minimum; --interval changes it), quantile
  0.25, factors 0.8/1.2, resample probability 0.25, until every member reached 54 steps;
- ASHA with the random sampler, given the compute PBT used (it starts no segment once
  that much is committed, so it may overshoot by the segments in flight);
- random search, 8 configurations trained to 54 steps (432 steps): PBT without exploit
  and explore.

A segment continues from a saved state: the driver keeps every trial's state after each
segment, keyed (trial, step); a PBT exploit starts from its parent's state at the step it
copied. A method's loss at a point of compute is the best loss any finished segment had so
far (each is a saved model); its final loss is that at the end. The PBT/ASHA ratio is the
median over seeds of the per-seed ratio of final losses (< 1: PBT ends lower).

Run: PYTHONPATH=operator:trial_image flock /tmp/rung-cpu.lock python bench/pbt.py
     [--seeds 20] [--interval 2] [--plot bench/plots/pbt.png]
(about 5 s for 20 seeds). Prints a Markdown table; writes a plot of the median (and
interquartile range) of the best loss so far against compute.
"""

from __future__ import annotations

import argparse
import heapq
import time
from pathlib import Path

import numpy as np

from rung.schedulers.asha import ASHA
from rung.schedulers.base import Scheduler
from rung.schedulers.full import FullBudget
from rung.schedulers.pbt import PBT
from rung.search.random import RandomSampler
from rung.space import Param, SearchSpace
from rung_trainables.shifting_lr import ShiftingLR

SPACE = SearchSpace([Param("lr", "float", 1e-3, 1.0, log=True)])
BUDGET_MIN, BUDGET_MAX, WORKERS, POPULATION = 2, 54, 8, 8
PROBLEM = ShiftingLR()


def drive(scheduler: Scheduler, seed: int, max_spent: float | None = None) -> list[tuple[float, float]]:
    """Run the scheduler on simulated workers; [(compute spent, loss)] per finished segment."""
    states: dict[tuple[int, float], dict] = {}
    heap, now, committed, spent, out = [], 0.0, 0.0, 0.0, []
    while True:
        while len(heap) < WORKERS and (max_spent is None or committed < max_spent):
            d = scheduler.ask()
            if d is None:
                break
            start = d.resume_from or 0.0
            if d.resume_from is None:  # from scratch: each trial its own minibatch order
                state = PROBLEM.start(seed * 100_003 + d.trial)
            else:  # its own checkpoint, or (a PBT exploit) its parent's
                state = states[(d.trial if d.parent is None else d.parent, start)]
            state = PROBLEM.train(state, d.config["lr"], round(d.budget - start))
            states[(d.trial, d.budget)] = state
            cost = d.budget - start
            committed += cost
            heapq.heappush(heap, (now + cost, d.trial, d.budget, PROBLEM.loss(state), cost))
        if not heap:
            return out
        now, trial, budget, loss, cost = heapq.heappop(heap)
        scheduler.tell(trial, budget, loss)
        spent += cost
        out.append((spent, loss))


def best_so_far(events: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return list(zip([s for s, _ in events], np.minimum.accumulate([l for _, l in events])))


def run_seed(seed: int, interval: float) -> dict[str, list[tuple[float, float]]]:
    pbt = PBT(RandomSampler(SPACE, seed), BUDGET_MIN, BUDGET_MAX, 10**6, population=POPULATION, interval=interval)
    curves = {"pbt": best_so_far(drive(pbt, seed))}
    compute = curves["pbt"][-1][0]
    asha = ASHA(RandomSampler(SPACE, seed), BUDGET_MIN, BUDGET_MAX, 10**6, reductionFactor=3)
    curves["asha"] = best_so_far(drive(asha, seed, max_spent=compute))
    random = FullBudget(RandomSampler(SPACE, seed), BUDGET_MIN, BUDGET_MAX, POPULATION)
    curves["random (8 x 54 steps)"] = best_so_far(drive(random, seed))
    return curves


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(BUDGET_MAX, max(r["pbt"][-1][0] for r in runs), 80)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in runs[0]:
        ys = []
        for r in runs:
            spent, best = np.array(r[method]).T
            idx = np.searchsorted(spent, grid, side="right") - 1
            ys.append(np.where(idx >= 0, best[np.clip(idx, 0, None)], np.nan))
        ys = np.array(ys)
        seen = ~np.all(np.isnan(ys), axis=0)
        q25, q50, q75 = np.nanpercentile(ys[:, seen], [25, 50, 75], axis=0)
        line, = ax.plot(grid[seen], q50, label=method)
        ax.fill_between(grid[seen], q25, q75, color=line.get_color(), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("compute spent (training steps, all workers)")
    ax.set_ylabel("best excess loss so far (median, IQR)")
    ax.set_title(f"shifting_lr: PBT vs ASHA, {len(runs)} seeds, {WORKERS} workers")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--plot", type=Path, default=Path("bench/plots/pbt.png"))
    ap.add_argument("--interval", type=float, default=BUDGET_MIN, help="PBT's steps between exploits")
    args = ap.parse_args()
    t0 = time.time()
    runs = [run_seed(seed, args.interval) for seed in range(args.seeds)]
    final = {m: np.array([r[m][-1][1] for r in runs]) for m in runs[0]}
    compute = {m: np.array([r[m][-1][0] for r in runs]) for m in runs[0]}
    print(f"| method | median final loss | IQR | median compute (steps) | PBT / method (median of per-seed ratios) "
          f"| seeds PBT ends lower (of {args.seeds}) |")
    print("|---|---:|---|---:|---:|---:|")
    for m, f in final.items():
        q25, q50, q75 = np.percentile(f, [25, 50, 75])
        ratio = "" if m == "pbt" else f"{np.median(final['pbt'] / f):.3f}"
        wins = "" if m == "pbt" else str(int(np.sum(final["pbt"] < f)))
        print(f"| {m} | {q50:.4f} | {q25:.4f} .. {q75:.4f} | {np.median(compute[m]):.0f} | {ratio} | {wins} |")
    plot(runs, args.plot)
    print(f"<!-- {time.time() - t0:.0f} s, plot {args.plot} -->")


if __name__ == "__main__":
    main()
