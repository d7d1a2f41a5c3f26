"""The evaluation stage: a genotype's network trained from scratch, scored on the test split.

`evaluate(genotype, data, ...)` trains on train + val (the search's two halves) with SGD,
momentum and a cosine learning rate, then reports test accuracy. A random genotype from
the same space (rung.nas.genotype.random_genotype) goes through the same function, which
is the baseline a searched architecture has to beat.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from rung.nas.data import Data
from rung.nas.genotype import check_genotype
from rung.nas.ops import FactorizedReduce, ReLUConvBN, make_op
from rung.nas.space import stack_cells


class DerivedCell(nn.Module):
    def __init__(self, cell: list, concat: list[int], c_prev_prev: int, c_prev: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.cell, self.concat = reduction, cell, list(concat)
        self.pre0 = (FactorizedReduce(c_prev_prev, c, affine=True) if reduction_prev
                     else ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine=True))
        self.pre1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine=True)
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and j < 2 else 1, affine=True)
                                 for node in cell for op, j in node)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        k = 0
        for node in self.cell:
            total = 0
            for _, j in node:
                total = total + self.ops[k](states[j])
                k += 1
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class DerivedNetwork(nn.Module):
    """The search network's skeleton with each cell fixed to the genotype's."""

    def __init__(self, genotype: dict, cells: int, channels: int, in_channels: int, classes: int):
        super().__init__()
        check_genotype(genotype)

        def cell(reduction, reduction_prev, c_pp, c_p, c):
            t = "reduction" if reduction else "normal"
            concat = genotype.get(f"{t}_concat", list(range(2, 2 + len(genotype[t]))))
            return DerivedCell(genotype[t], concat, c_pp, c_p, c, reduction, reduction_prev), len(concat) * c

        stack_cells(self, cells, channels, in_channels, classes, cell)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


def evaluate(genotype: dict, data: Data, *, epochs: int = 20, cells: int = 3, channels: int = 16,
             batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 3e-4,
             seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Trains the genotype's network from scratch; returns test_accuracy, test_loss,
    parameters and seconds (training wall time)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DerivedNetwork(genotype, cells, channels, data.channels, data.classes)
    model.to(device)
    x = torch.cat([data.x_train, data.x_val]).to(device)
    y = torch.cat([data.y_train, data.y_val]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    steps = max(1, len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        for step in range(steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[index]), y[index]).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        logits = model(data.x_test.to(device))
        y_test = data.y_test.to(device)
        loss = float(F.cross_entropy(logits, y_test))
        accuracy = float((logits.argmax(dim=1) == y_test).float().mean())
    parameters = sum(p.numel() for p in model.parameters())
    return {"test_accuracy": accuracy, "test_loss": loss if math.isfinite(loss) else float("inf"),
            "parameters": parameters, "seconds": seconds}
