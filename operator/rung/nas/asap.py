"""ASAP (Noy et al., 2020), Algorithm 1: anneal the softmax temperature, prune weak ops.

Each training step: a weight step on L_train at temperature T(t) = T0 * beta^t; once
T < the grace temperature, an alpha step on L_val (first order) and then every live op whose
weight softmax(alpha / T) falls below the threshold is removed from its edge. Pruned ops are
masked out of the softmax and never run again, so the network gets cheaper as the search
goes. The search stops once every edge has a single op left. t counts epochs, fractional
within an epoch, so beta is the factor per epoch while T still moves at every step.
"""

from __future__ import annotations

import torch

from rung.nas.space import CELL_TYPES, SearchNetwork


def temperature(t0: float, beta: float, epochs_done: float) -> float:
    return t0 * beta ** epochs_done


@torch.no_grad()
def prune(model: SearchNetwork, threshold: float) -> int:
    """Removes live ops weighing under `threshold`, never an edge's strongest; returns how many."""
    pruned = 0
    for t in CELL_TYPES:
        alive = model.alive(t)
        weights = model.op_weights(t)
        weak = alive & (weights < threshold)
        strongest = torch.zeros_like(alive)
        strongest[torch.arange(len(weights), device=weights.device), weights.argmax(dim=-1)] = True
        weak &= ~strongest
        pruned += int(weak.sum())
        alive &= ~weak
    return pruned


def ops_left(model: SearchNetwork) -> dict[str, list[int]]:
    return {t: model.alive(t).sum(dim=-1).tolist() for t in CELL_TYPES}


def decided(model: SearchNetwork) -> bool:
    """Algorithm 1's stopping condition: one op left on every edge."""
    return all(bool((model.alive(t).sum(dim=-1) == 1).all()) for t in CELL_TYPES)
