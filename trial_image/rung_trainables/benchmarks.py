"""Offline multi-fidelity benchmarks as pure functions (numpy only, no SDK, no I/O).

Used by the trainables in this package and, in-process, by bench/ simulations. Every
noisy value is a function of (seed, config, budget): the caller's seed and the config
values are hashed into the RNG seed, so results repeat across processes and machines.

- Counting ones (Falkner et al., BOHB, 2018).
- Multi-fidelity Hartmann-3/6 in the form of mf-prior-bench: fidelity z in 1..100.
- Multi-fidelity Branin (Kandasamy et al., 2017): three fidelity knobs tied to one z.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Sequence

import numpy as np

Z_MAX = 100  # fidelity range of the synthetic functions: z in [1, Z_MAX]


def config_seed(seed: int, *values: float) -> int:
    """A stable 64-bit seed from the caller's seed and config values (no hash randomisation)."""
    h = hashlib.sha256(struct.pack("<q", int(seed)))
    for v in values:
        h.update(struct.pack("<d", float(v)))
    return int.from_bytes(h.digest()[:8], "little")


def fidelity_scale(z: float, z_max: float = Z_MAX) -> float:
    """s = ln z / ln z_max, in [0, 1]; 1 at full fidelity."""
    if not 1 <= z <= z_max:
        raise ValueError(f"fidelity z={z} is outside [1, {z_max}]")
    return math.log(z) / math.log(z_max)


def mf_cost(z: float, z_max: float = Z_MAX) -> float:
    """Cost of one evaluation at fidelity z (mf-prior-bench, after Kandasamy et al. 2017)."""
    return 0.05 + 0.95 * (z / z_max) ** 2


# --- counting ones ------------------------------------------------------------------
# f = -(sum of binary params + sum over continuous params of the mean of b Bernoulli(x_j)
# draws); the budget b is the number of draws per continuous param. Optimum -d.
# The draws of one config come from one RNG stream, b rows of m uniforms, so the value at
# budget b is the same whether drawn at once or continued from a smaller budget.

def counting_ones_start(cat: Sequence[int], cont: Sequence[float], seed: int) -> dict:
    """Draw state before any draw (what a counting-ones trial checkpoints)."""
    rng = np.random.default_rng(config_seed(seed, *cat, *cont))
    return {"draws": 0, "ones": np.zeros(len(cont), dtype=np.int64), "rng": rng.bit_generator.state}


def counting_ones_advance(state: dict, cont: Sequence[float], budget: int) -> dict:
    """A new state with `budget` draws per continuous param; only the missing ones are drawn."""
    budget = int(budget)
    extra = budget - state["draws"]
    if extra < 0:
        raise ValueError(f"state already has {state['draws']} draws, more than budget {budget}")
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    ones = state["ones"] + (rng.random((extra, len(cont))) < np.asarray(cont, float)).sum(axis=0)
    return {"draws": budget, "ones": ones, "rng": rng.bit_generator.state}


def counting_ones_value(cat: Sequence[int], state: dict) -> float:
    draws = max(state["draws"], 1)
    return -(float(np.sum(cat)) + float(np.sum(state["ones"] / draws)))


def counting_ones(cat: Sequence[int], cont: Sequence[float], budget: int, seed: int = 0) -> float:
    """Noisy value at `budget` draws per continuous param."""
    state = counting_ones_advance(counting_ones_start(cat, cont, seed), cont, budget)
    return counting_ones_value(cat, state)


def counting_ones_true(cat: Sequence[int], cont: Sequence[float]) -> float:
    """Noise-free value (infinitely many draws): -(sum cat + sum cont)."""
    return -(float(np.sum(cat)) + float(np.sum(cont)))


def counting_ones_regret(value: float, dim: int) -> float:
    """f/d + 1: 0 at the optimum, 1 at all zeros."""
    return value / dim + 1.0


# --- multi-fidelity Hartmann --------------------------------------------------------
# alpha' = alpha - bias (1 - s); noise |N(0,1)| * noise * (1 - s); z = Z_MAX is the true
# Hartmann function with no noise.

_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470],
                         [1091, 8732, 5547], [381, 5743, 8828]], dtype=float)
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886],
                         [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650],
                         [4047, 8828, 8732, 5743, 1091, 381]], dtype=float)

HARTMANN3_ARGMIN = (0.114614, 0.555649, 0.852547)
HARTMANN3_MIN = -3.86278
HARTMANN6_ARGMIN = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
HARTMANN6_MIN = -3.32237

# (bias, noise) presets of mf-prior-bench
HARTMANN_PRESETS = {"good": (2.5, 2.0), "moderate": (3.0, 3.0), "bad": (3.5, 4.0),
                    "terrible": (4.0, 5.0)}


def hartmann(x: Sequence[float], z: float = Z_MAX, *, preset: str | None = None,
             bias: float = 0.0, noise: float = 0.0, seed: int = 0) -> float:
    """Hartmann-3 or -6 (by len(x)) at fidelity z; a preset overrides bias and noise."""
    x = np.asarray(x, dtype=float)
    if len(x) == 3:
        A, P = _H3_A, _H3_P
    elif len(x) == 6:
        A, P = _H6_A, _H6_P
    else:
        raise ValueError(f"Hartmann takes 3 or 6 coordinates, got {len(x)}")
    if preset is not None:
        bias, noise = HARTMANN_PRESETS[preset]
    s = fidelity_scale(z)
    alpha = _ALPHA - bias * (1 - s)
    value = -float(np.sum(alpha * np.exp(-np.sum(A * (x - P) ** 2, axis=1))))
    if noise and s < 1:
        rng = np.random.default_rng(config_seed(seed, *x, z))
        value += abs(rng.standard_normal()) * noise * (1 - s)
    return value


def hartmann_true(x: Sequence[float]) -> float:
    """The noise-free value at full fidelity (what regret is measured on)."""
    return hartmann(x, Z_MAX)


def hartmann_regret(x: Sequence[float]) -> float:
    return hartmann_true(x) - (HARTMANN3_MIN if len(x) == 3 else HARTMANN6_MIN)


# --- multi-fidelity Branin ----------------------------------------------------------
# a (x2 - b x1^2 + c x1 - r)^2 + s (1 - t) cos x1 + s with
#   b = 5.1/(4 pi^2) - 0.01 (1 - z1), c = 5/pi - 0.1 (1 - z2), t = 1/(8 pi) + DELTA_T (1 - z3).
# Here z1 = z2 = z3 = fidelity_scale(z). DELTA_T is 0.05 as the paper's text has it; the
# authors' Dragonfly code uses 0.005. Either way z = Z_MAX is the standard Branin.
BRANIN_DELTA_T = 0.05
BRANIN_MIN = 0.397887
BRANIN_ARGMINS = ((-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475))
BRANIN_BOUNDS = ((-5.0, 10.0), (0.0, 15.0))


def branin(x1: float, x2: float, z: float = Z_MAX) -> float:
    """Branin at fidelity z (deterministic: the fidelity biases it, nothing adds noise)."""
    u = 1 - fidelity_scale(z)
    b = 5.1 / (4 * math.pi ** 2) - 0.01 * u
    c = 5 / math.pi - 0.1 * u
    t = 1 / (8 * math.pi) + BRANIN_DELTA_T * u
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def branin_cost(z: float) -> float:
    """0.05 + 0.95 s^1.5, the cost model of Kandasamy et al.'s Branin experiment."""
    return 0.05 + 0.95 * fidelity_scale(z) ** 1.5
