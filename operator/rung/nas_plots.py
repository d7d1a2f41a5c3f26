"""PNG pictures of an architecture search (matplotlib; no torch): the genotype's cells as
graphs, and the search's history, the op weights over epochs (DARTS) or the ops left per
edge (ASAP)."""

from __future__ import annotations

from pathlib import Path

CELL_TYPES = ("normal", "reduction")
_INPUTS = ("c[k-2]", "c[k-1]")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_genotype(genotype: dict, path: Path) -> Path:
    """Each cell as a graph: the two inputs on the left, the intermediate nodes in a row, the
    output (their concatenation) on the right; an arrow per kept edge, named by its op."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, cell_type in zip(axes, CELL_TYPES):
        cell, concat = genotype[cell_type], genotype.get(f"{cell_type}_concat", [])
        n = len(cell)
        where = {0: (0.0, 0.8), 1: (0.0, 0.2)}
        where.update({2 + i: (1.0 + i, 0.5 + (0.25 if i % 2 else -0.25)) for i in range(n)})
        out = (n + 1.0, 0.5)
        for i, edges in enumerate(cell):
            for op, j in edges:
                _arrow(ax, where[j], where[2 + i], op)
        for k in concat:
            _arrow(ax, where[k], out, "")
        for k, (x, y) in where.items():
            _node(ax, x, y, _INPUTS[k] if k < 2 else str(k - 2), "#cfe2f3" if k < 2 else "#fff2cc")
        _node(ax, *out, "c[k]", "#d9ead3")
        ax.set_xlim(-0.6, n + 1.6)
        ax.set_ylim(-0.1, 1.1)
        ax.set_title(f"{cell_type} cell")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _node(ax, x, y, label, color):
    ax.text(x, y, label, ha="center", va="center", fontsize=10, zorder=3,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": color, "edgecolor": "#444"})


def _arrow(ax, a, b, label):
    ax.annotate("", xy=b, xytext=a, zorder=1,
                arrowprops={"arrowstyle": "->", "color": "#555", "shrinkA": 14, "shrinkB": 14,
                            "connectionstyle": "arc3,rad=0.15"})
    if label:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.03, label, ha="center", fontsize=7, color="#a61c00",
                zorder=2)


def plot_history(history: list[dict], method: str, ops: list[str], path: Path) -> Path:
    """DARTS: per cell type, each op's softmax weight averaged over the edges, by epoch.
    ASAP: per cell type, the ops left on each edge, by epoch (pruning until one is left)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    epochs = [h["epoch"] for h in history]
    for ax, cell_type in zip(axes, CELL_TYPES):
        if method == "asap":
            edges = len(history[0]["ops_left"][cell_type]) if history else 0
            for e in range(edges):
                ax.plot(epochs, [h["ops_left"][cell_type][e] for h in history], marker=".", alpha=0.6,
                        label=f"edge {e}" if edges <= 10 else None)
            ax.set_ylabel("ops left on the edge")
        else:
            for k, op in enumerate(ops):
                mean = [sum(w[k] for w in h["weights"][cell_type]) / max(1, len(h["weights"][cell_type]))
                        for h in history]
                ax.plot(epochs, mean, marker=".", label=op)
            ax.set_ylabel("op weight, mean over edges")
        ax.set_xlabel("epoch")
        ax.set_title(f"{cell_type} cell")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:
        axes[-1].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(f"{method}: {'ops left per edge' if method == 'asap' else 'op weights'} by epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
