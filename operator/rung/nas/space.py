"""The DARTS cell search space: mixed ops on the edges of a cell DAG, cells stacked into a net.

A cell has two input nodes (the outputs of the two previous cells) and `nodes`
intermediate nodes; intermediate node i sums one mixed op per earlier node (2 + i edges),
and the cell outputs the concatenation of its intermediate nodes. Edges are numbered node
by node: node 0's edges from nodes 0 and 1, then node 1's from 0, 1, 2, and so on.

A mixed op's output is sum_o softmax(alpha / T)_o * o(x) over the ops still alive on the
edge (T = 1 for DARTS; ASAP anneals it). Pruned ops are not run at all, and the zero op
is never run: it only takes its share of the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rung.nas.ops import ZERO, FactorizedReduce, ReLUConvBN, make_op

CELL_TYPES = ("normal", "reduction")


def edge_count(nodes: int) -> int:
    return sum(2 + i for i in range(nodes))


def edges(nodes: int) -> list[tuple[int, int]]:
    """(to_node, from_node) per edge in the order alphas use; to_node counts the inputs too."""
    return [(2 + i, j) for i in range(nodes) for j in range(2 + i)]


def reduction_cells(cells: int) -> set[int]:
    """DARTS puts reductions at 1/3 and 2/3 of the depth; two cells are normal then reduction."""
    return {cells // 3, 2 * cells // 3} if cells >= 3 else {cells - 1}


def stack_cells(net: nn.Module, cells: int, channels: int, in_channels: int, classes: int, make_cell) -> None:
    """A stem, `cells` cells with reductions at reduction_cells (channels doubled there) and
    a classifier, set on `net`. `make_cell(reduction, reduction_prev, c_pp, c_p, c)` returns
    (cell, channels out): the search and the derived networks differ only in their cells."""
    stem = 3 * channels
    net.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
    c_pp, c_p, c = stem, stem, channels
    net.cells = nn.ModuleList()
    reduction_prev = False
    for k in range(cells):
        reduction = k in reduction_cells(cells)
        c = c * 2 if reduction else c
        cell, out = make_cell(reduction, reduction_prev, c_pp, c_p, c)
        net.cells.append(cell)
        reduction_prev = reduction
        c_pp, c_p = c_p, out
    net.classifier = nn.Linear(c_p, classes)


class MixedOp(nn.Module):
    def __init__(self, ops: list[str], c: int, stride: int):
        super().__init__()
        self.stride = stride
        self.ops = nn.ModuleList()
        for name in ops:
            op = make_op(name, c, stride, affine=False)
            if "pool" in name:  # DARTS: pools get a BN so their scale matches the convs'
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            self.ops.append(op)
        self.computed = [i for i, name in enumerate(ops) if name != ZERO]

    def forward(self, x: torch.Tensor, weights: torch.Tensor, alive: list[bool]) -> torch.Tensor | None:
        """The weighted sum over live non-zero ops; None when nothing is left to compute."""
        out = None
        for i in self.computed:
            if alive[i]:
                term = weights[i] * self.ops[i](x)
                out = term if out is None else out + term
        return out


class SearchCell(nn.Module):
    def __init__(self, ops: list[str], nodes: int, c_prev_prev: int, c_prev: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.nodes = reduction, nodes
        self.pre0 = (FactorizedReduce(c_prev_prev, c, affine=False) if reduction_prev
                     else ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine=False))
        self.pre1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine=False)
        self.mixed = nn.ModuleList(MixedOp(ops, c, 2 if reduction and j < 2 else 1)
                                   for _, j in edges(nodes))

    def forward(self, s0, s1, weights: torch.Tensor, alive: list[list[bool]]) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        stride = 2 if self.reduction else 1
        n, c, h, w = states[1].shape
        empty_shape = (n, c, (h + stride - 1) // stride, (w + stride - 1) // stride)
        e = 0
        for i in range(self.nodes):
            total = None
            for j in range(2 + i):
                out = self.mixed[e](states[j], weights[e], alive[e])
                if out is not None:
                    total = out if total is None else total + out
                e += 1
            states.append(total if total is not None else states[1].new_zeros(empty_shape))
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    """Stem, `cells` search cells, global pooling, linear classifier.

    Holds the architecture: `alphas` (one [edges, ops] tensor per cell type) and `alive`
    masks (bool buffers of the same shape; ASAP clears entries as it prunes). `temperature`
    divides alpha inside the softmax.
    """

    def __init__(self, ops: list[str], nodes: int, cells: int, channels: int, in_channels: int,
                 classes: int, alpha_init: str = "zeros"):
        super().__init__()
        self.op_names, self.nodes = list(ops), nodes
        self.temperature = 1.0
        stack_cells(self, cells, channels, in_channels, classes,
                    lambda reduction, reduction_prev, c_pp, c_p, c: (
                        SearchCell(self.op_names, nodes, c_pp, c_p, c, reduction, reduction_prev), nodes * c))
        shape = (edge_count(nodes), len(ops))
        init = (lambda: torch.zeros(shape)) if alpha_init == "zeros" else (lambda: 1e-3 * torch.randn(shape))
        self.alphas = nn.ParameterDict({t: nn.Parameter(init()) for t in CELL_TYPES})
        for t in CELL_TYPES:
            self.register_buffer(f"alive_{t}", torch.ones(shape, dtype=torch.bool))

    def alive(self, cell_type: str) -> torch.Tensor:
        return getattr(self, f"alive_{cell_type}")

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas[t] for t in CELL_TYPES]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("alphas.")]

    def op_weights(self, cell_type: str) -> torch.Tensor:
        """softmax(alpha / T) over the live ops of each edge; pruned ops weigh exactly 0."""
        logits = self.alphas[cell_type] / self.temperature
        return F.softmax(logits.masked_fill(~self.alive(cell_type), float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {t: self.op_weights(t) for t in CELL_TYPES}
        alive = {t: self.alive(t).tolist() for t in CELL_TYPES}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            t = "reduction" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[t], alive[t])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(x), y)
