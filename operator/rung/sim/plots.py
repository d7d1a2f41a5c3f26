"""Figures of simulated runs (matplotlib, Agg): the only module of rung.sim that writes."""

from __future__ import annotations

from pathlib import Path

from rung.sim.cluster import ClusterRun


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def usage_steps(run: ClusterRun, study: str) -> tuple[list[float], list[int]]:
    """(times, GPUs held by `study`) as a step function, for plotting with where="post"."""
    times = [t for t, _ in run.usage] + [run.end]
    held = [use.get(study, 0) for _, use in run.usage] + [0]
    return times, held


def plot_usage(runs: dict[str, ClusterRun], path: Path, title: str) -> Path:
    """One panel per run: GPUs held by each Study over time, stacked, against the cluster size."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(7, 2.6 * len(runs)), sharex=True, squeeze=False)
    for ax, (label, run) in zip(axes[:, 0], runs.items()):
        names = list(run.studies)
        times = sorted({t for t, _ in run.usage} | {run.end})
        stacks = []
        for name in names:
            held, k = [], 0
            for t in times:
                while k + 1 < len(run.usage) and run.usage[k + 1][0] <= t:
                    k += 1
                held.append(run.usage[k][1].get(name, 0) if t < run.end else 0)
            stacks.append(held)
        hours = [t / 3600 for t in times]
        ax.stackplot(hours, stacks, labels=names, step="post")
        ax.axhline(run.total_gpus, color="k", lw=0.8, ls="--")
        ax.set_ylabel("GPUs held")
        ax.set_title(f"{label}: mean utilisation {run.utilisation():.0%}", fontsize=10)
        ax.set_ylim(0, run.total_gpus * 1.05)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("simulated hours")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_speedup(rows: dict[str, dict[int, float]], path: Path, title: str) -> Path:
    """Speed-up against workers, log-log, with the linear ideal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    workers = sorted({w for r in rows.values() for w in r})
    ax.plot(workers, workers, "k--", lw=0.8, label="linear")
    for label, by_w in rows.items():
        ws = sorted(by_w)
        ax.plot(ws, [by_w[w] for w in ws], "o-", label=label)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("workers (GPUs, 1 per trial)"), ax.set_ylabel("speed-up over 1 worker")
    ax.set_title(title, fontsize=10), ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
