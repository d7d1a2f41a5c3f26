"""Genotypes: the discrete architecture a search ends with, as plain JSON-ready dicts.

Format (node numbers: 0 and 1 are the cell's inputs, the outputs of the cell two back and of
the previous cell; 2, 3, ... the intermediate nodes in order):

    {"normal":     [[[op, from_node], [op, from_node]],   # node 2's two incoming edges
                    [[op, from_node], [op, from_node]],   # node 3's
                    ...],
     "normal_concat": [2, 3, ...],                        # nodes concatenated into the output
     "reduction": [...], "reduction_concat": [...]}

The rule (DARTS): per intermediate node keep the two strongest incoming edges, an edge's
strength being its largest non-zero op weight, and put that op on it. The zero op is never
chosen. Ties (ASAP drives pruned and saturated weights to exactly 0) fall back on alpha.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rung.errors import InputError
from rung.nas.ops import CANDIDATE_OPS, ZERO

CELL_TYPES = ("normal", "reduction")


def cell_genotype(weights: Sequence[Sequence[float]], ops: Sequence[str], nodes: int,
                  alphas: Sequence[Sequence[float]] | None = None) -> list[list[list]]:
    """One cell's genotype from its op weights ([edges][ops], edges ordered as in space.edges)."""
    if all(name == ZERO for name in ops):
        raise InputError("settings.ops", "has only the zero op", "add a non-zero op")
    alphas = alphas if alphas is not None else weights
    cell, e = [], 0
    for i in range(nodes):
        candidates = []
        for j in range(2 + i):
            w, a = weights[e + j], alphas[e + j]
            best = max((k for k, name in enumerate(ops) if name != ZERO), key=lambda k: (w[k], a[k]))
            candidates.append(((w[best], a[best], -j), [ops[best], j]))
        candidates.sort(key=lambda c: c[0], reverse=True)
        cell.append([edge for _, edge in candidates[:2]])
        e += 2 + i
    return cell


def derive(weights: dict, ops: Sequence[str], nodes: int, alphas: dict | None = None) -> dict:
    """The genotype of a search network from {"normal": [edges][ops], "reduction": ...} weights."""
    genotype = {}
    for t in CELL_TYPES:
        genotype[t] = cell_genotype(weights[t], ops, nodes, alphas[t] if alphas else None)
        genotype[f"{t}_concat"] = list(range(2, 2 + nodes))
    return genotype


def random_genotype(ops: Sequence[str], nodes: int, seed: int) -> dict:
    """A genotype drawn uniformly from the same space: two distinct inputs per node, non-zero ops."""
    choices = [o for o in ops if o != ZERO]
    if not choices:
        raise InputError("settings.ops", "has only the zero op", "add a non-zero op")
    rng = random.Random(seed)
    genotype = {}
    for t in CELL_TYPES:
        genotype[t] = [[[rng.choice(choices), j] for j in sorted(rng.sample(range(2 + i), 2))]
                       for i in range(nodes)]
        genotype[f"{t}_concat"] = list(range(2, 2 + nodes))
    return genotype


def check_genotype(genotype: dict) -> int:
    """Raises InputError naming what is wrong; returns the number of intermediate nodes."""
    if not isinstance(genotype, dict):
        raise InputError("genotype", "must be an object with normal and reduction cells")
    nodes = None
    for t in CELL_TYPES:
        cell = genotype.get(t)
        if not isinstance(cell, list) or not cell:
            raise InputError(f"genotype.{t}", "must be a non-empty list of nodes")
        if nodes is not None and len(cell) != nodes:
            raise InputError(f"genotype.{t}", f"has {len(cell)} nodes, the other cell {nodes}")
        nodes = len(cell)
        for i, node in enumerate(cell):
            if not isinstance(node, list) or not node:
                raise InputError(f"genotype.{t}[{i}]", "must list incoming edges as [op, from_node]")
            for edge in node:
                if (not isinstance(edge, (list, tuple)) or len(edge) != 2 or edge[0] not in CANDIDATE_OPS
                        or not isinstance(edge[1], int) or not 0 <= edge[1] < 2 + i):
                    raise InputError(f"genotype.{t}[{i}]", f"edge {edge!r} is not [op, from_node] with a "
                                     f"known op and 0 <= from_node < {2 + i}",
                                     f"ops: {', '.join(CANDIDATE_OPS)}")
        concat = genotype.get(f"{t}_concat", list(range(2, 2 + nodes)))
        if not concat or any(not isinstance(k, int) or not 0 <= k < 2 + nodes for k in concat):
            raise InputError(f"genotype.{t}_concat", f"must list node numbers below {2 + nodes}")
    return nodes
