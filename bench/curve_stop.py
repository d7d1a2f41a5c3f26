"""Curve-extrapolation stopping against median stopping, on recorded MLP-digits curves.

bench/data/mlp_digits_curves.json holds the validation-loss curves (40 epochs) of 200
random MLP configurations on digits (bench/record_mlp_curves.py). For each seed, the
same random 100 of them, in the same random order, are replayed through curve-stop
(rung.schedulers.curve_stop.CurveStop, threshold 0.05: its default and the paper's
delta, chosen once) and through median-stop (rung.schedulers.median.MedianStop with its
defaults), both as in a Study with budget 1..40 epochs, 100 trials and 4 workers: every
running trial trains one epoch per time step and reports it; a trial told to stop ends
there. Compute is the epochs trained in total; final regret is the best loss at 40
epochs among the trials that got there, minus the best final loss of all 200 recorded
configurations. "none" runs every trial to the end (the compute both rules save from).
One more row runs curve-stop at threshold 0.2, only to show which way the threshold
trades compute for regret; the claim is judged at 0.05.

A second table checks the predictive itself: for every recorded curve cut after n
epochs, how often the loss at epoch 40 falls below the forecast's 5% quantile (the
error that makes curve-stop stop a trial it should keep) and above its 95% quantile,
with the forecast as shipped and without its extrapolation term (KAPPA = 0).

Run: flock /tmp/rung-cpu.lock python bench/curve_stop.py [--seeds 20] [--trials 100] [--workers 4]
(about 2.5 minutes on one core). Prints Markdown tables; writes bench/plots/curve_stop.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from rung import curves
from rung.schedulers.curve_stop import CurveStop
from rung.schedulers.full import FullBudget
from rung.schedulers.median import MedianStop
from rung.search.base import Sampler
from rung.space import SearchSpace

DATA = Path("bench/data/mlp_digits_curves.json")
PLOT = Path("bench/plots/curve_stop.png")
RULES = {"none": FullBudget, "median-stop": MedianStop, "curve-stop": CurveStop,
         "curve-stop, threshold 0.2": functools.partial(CurveStop, threshold=0.2)}


class Replay(Sampler):
    """Proposes the recorded configurations in a fixed order (a configuration is its curve's index)."""

    def __init__(self, order: np.ndarray):
        super().__init__(SearchSpace([]))
        self.order = order

    def propose(self, index, observations):
        return {"curve": int(self.order[index])}


def replay(rule: str, losses: np.ndarray, order: np.ndarray, workers: int) -> tuple[int, float]:
    """(epochs trained, best loss at the full budget) of one Study over the curves in `order`."""
    epochs = losses.shape[1]
    scheduler = RULES[rule](Replay(order), 1, epochs, len(order))
    running: dict[int, list[int]] = {}   # trial -> [curve, epochs trained]
    spent, best = 0, math.inf
    while True:
        while len(running) < workers and (d := scheduler.ask()) is not None:
            running[d.trial] = [d.config["curve"], 0]
        if not running:
            return spent, best
        for trial in sorted(running):      # one epoch of every running trial
            state = running[trial]
            state[1] += 1
            spent += 1
            step, loss = state[1], losses[state[0], state[1] - 1]
            go_on = not math.isfinite(loss) or scheduler.report(trial, float(step), float(loss))
            if step == epochs:             # it got there, whatever the last report said
                scheduler.tell(trial, epochs, loss)
                best = min(best, loss)
                del running[trial]
            elif not go_on:
                scheduler.tell(trial, step, loss)
                del running[trial]


def compare(losses: np.ndarray, seeds: int, trials: int, workers: int) -> dict[str, np.ndarray]:
    """rule -> array (seeds, 2) of (compute, regret)."""
    best_recorded = np.nanmin(losses[:, -1])
    out = {rule: [] for rule in RULES}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(losses))[:trials]
        for rule in RULES:
            spent, best = replay(rule, losses, order, workers)
            out[rule].append((spent, best - best_recorded))
    return {rule: np.array(rows) for rule, rows in out.items()}


def coverage(losses: np.ndarray, cuts: list[int]) -> list[tuple[int, float, float, float, float]]:
    """Per cut: the share of final losses below the 5% and above the 95% forecast quantile,
    with KAPPA as shipped and with KAPPA = 0."""
    epochs, rows = losses.shape[1], []
    shipped = curves.KAPPA
    for n in cuts:
        shares = []
        for kappa in (shipped, 0.0):
            curves.KAPPA = kappa
            pit = np.array([curves.fit_curve(np.arange(1, n + 1), c[:n]).prob_below(c[-1], epochs)
                            for c in losses if np.all(np.isfinite(c))])
            shares += [float(np.mean(pit < 0.05)), float(np.mean(pit > 0.95))]
        curves.KAPPA = shipped
        rows.append((n, *shares))
    return rows


def plot(results: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = results["none"][0, 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for (rule, rows), colour in zip(results.items(), ("grey", "tab:blue", "tab:orange", "tab:green")):
        ax.scatter(rows[:, 0] / full, rows[:, 1], s=18, alpha=0.6, color=colour, label=f"{rule} (one seed)")
        ax.scatter(np.mean(rows[:, 0]) / full, np.mean(rows[:, 1]), s=140, marker="X", color=colour,
                   edgecolor="black", label=f"{rule} (mean)")
    ax.set_xlabel("compute (epochs trained / running every trial to the end)")
    ax.set_ylabel("final regret (validation log-loss)")
    ax.set_title(f"MLP on digits, {len(results['none'])} seeds: stopping rules")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.68, 0.98))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    doc = json.loads(DATA.read_text())
    losses = np.array([[math.inf if v is None else v for v in c] for c in doc["curves"]])
    t0 = time.time()
    results = compare(losses, args.seeds, args.trials, args.workers)
    ratio = results["curve-stop"][:, 0] / results["median-stop"][:, 0]
    print(f"{len(losses)} recorded curves of {losses.shape[1]} epochs; {args.trials} trials, {args.workers} workers, "
          f"{args.seeds} seeds ({time.time() - t0:.0f} s)\n")
    print("| rule | compute, epochs (mean) | vs none | regret mean | regret median | regret max "
          "| seeds that lost the best of their 100 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    full, reachable = results["none"][:, 0].mean(), results["none"][:, 1]
    for rule, rows in results.items():
        print(f"| {rule} | {rows[:, 0].mean():.0f} | {rows[:, 0].mean() / full:.3f} | {rows[:, 1].mean():.4f} "
              f"| {np.median(rows[:, 1]):.4f} | {rows[:, 1].max():.4f} | {int(np.sum(rows[:, 1] > reachable + 1e-12))} |")
    same = results["curve-stop"][:, 1] <= results["median-stop"][:, 1] + 1e-12
    print(f"\ncompute curve-stop / median-stop: median {np.median(ratio):.3f}, geometric mean "
          f"{math.exp(np.mean(np.log(ratio))):.3f}, range {ratio.min():.3f}-{ratio.max():.3f}; "
          f"curve-stop's regret <= median-stop's in {int(same.sum())} of {args.seeds} seeds")
    print("\n| epochs seen | final < 5% quantile | final > 95% quantile | same, KAPPA = 0 | same, KAPPA = 0 |")
    print("|---:|---:|---:|---:|---:|")
    for n, below, above, below0, above0 in coverage(losses, [5, 10, 20]):
        print(f"| {n} | {below:.3f} | {above:.3f} | {below0:.3f} | {above0:.3f} |")
    plot(results, PLOT)
    print(f"\n<!-- {time.time() - t0:.0f} s in all; plot {PLOT} -->")


if __name__ == "__main__":
    main()
