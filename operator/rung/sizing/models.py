"""Efficiency models: E(n) = speedup(n) / n = t(1) / (n t(n)) for n GPUs.

Every model is an object with `step_time(n)` (seconds per step on n GPUs, or any unit
proportional to it) and `efficiency(n)`; `Curve` supplies `efficiency` from `step_time`.

- `RingAllReduce`: data parallel with a ring all-reduce of the gradients each step.
- `paleo(...)`: the same model with its parameters from FLOPs per step and a table of GPU
  and interconnect types (Paleo, Qi, Sparks & Talwalkar, ICLR 2017: compute time from peak
  FLOPs times a "platform percent of peak", communication from the link's bandwidth).
- `Measured.fit(points)`: a curve fitted to observed throughputs, replacing the prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from rung.errors import InputError


class EfficiencyModel(Protocol):
    def step_time(self, n: int) -> float: ...

    def efficiency(self, n: int) -> float: ...


class Curve:
    """Mixin: efficiency from step_time, with E(1) = 1 by definition."""

    def step_time(self, n: int) -> float:
        raise NotImplementedError

    def efficiency(self, n: int) -> float:
        if n <= 1:
            return 1.0
        t1, tn = self.step_time(1), self.step_time(n)
        return t1 / (n * tn) if tn > 0 else 1.0


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"step_time needs n >= 1 GPUs, got {n}")


@dataclass(frozen=True)
class RingAllReduce(Curve):
    """t(1) = step; t(n) = step/n + 2(n-1)/n * bytes/bandwidth + 2(n-1) * latency.

    A ring all-reduce sends 2(n-1)/n of the gradients through each GPU's link and takes
    2(n-1) latency-bound hops; compute splits evenly (a fixed global batch).
    """

    step_seconds: float
    gradient_bytes: float
    bandwidth_gbps: float  # GB/s (bytes, not bits), per GPU link and direction
    latency_seconds: float = 0.0

    def __post_init__(self):
        for name in ("step_seconds", "gradient_bytes", "latency_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"scaling.{_camel(name)}", f"{value!r} is not a finite number >= 0")
        if not (math.isfinite(self.bandwidth_gbps) and self.bandwidth_gbps > 0):
            raise InputError("scaling.bandwidthGBps", f"{self.bandwidth_gbps!r} is not a finite number > 0")
        if self.step_seconds == 0:
            raise InputError("scaling.stepSeconds", "0 leaves no compute to split", "give a time > 0")

    def step_time(self, n: int) -> float:
        _check_n(n)
        if n == 1:
            return self.step_seconds
        transfer = self.gradient_bytes / (self.bandwidth_gbps * 1e9)
        return self.step_seconds / n + 2 * (n - 1) / n * transfer + 2 * (n - 1) * self.latency_seconds


def _camel(name: str) -> str:
    if name == "bandwidth_gbps":
        return "bandwidthGBps"
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


# Peak dense tensor-core FP16 and FP32 TFLOP/s (no structured sparsity), from NVIDIA's data
# sheets: V100 SXM2 (Tesla V100 data sheet), A100 SXM (A100 data sheet, 312 dense FP16),
# H100 SXM and H200 SXM (H100 / H200 data sheets: 1979 FP16 "with sparsity" halved), L4
# (L4 data sheet: 242 with sparsity halved), T4 (T4 data sheet, 65 mixed precision).
GPUS: dict[str, dict[str, float]] = {
    "v100": {"fp16": 125.0, "fp32": 15.7},
    "a100": {"fp16": 312.0, "fp32": 19.5},
    "h100": {"fp16": 989.5, "fp32": 67.0},
    "h200": {"fp16": 989.5, "fp32": 67.0},
    "l4": {"fp16": 121.0, "fp32": 30.3},
    "t4": {"fp16": 65.0, "fp32": 8.1},
}

# Per-GPU bandwidth in GB/s, one direction, nominal link rate: NVLink 3 (A100: 600 GB/s
# both ways), NVLink 4 (H100: 900 GB/s both ways), PCIe 4.0 / 5.0 x16 (PCI-SIG: 16 / 32
# GT/s per lane), InfiniBand HDR / NDR (200 / 400 Gb/s per port, one port per GPU), 100 Gb
# Ethernet. Latency is one hop's order of magnitude (link plus NCCL software overhead),
# not a spec-sheet figure: the all-reduce time of large gradients is set by bandwidth.
INTERCONNECTS: dict[str, dict[str, float]] = {
    "nvlink": {"bandwidth_gbps": 300.0, "latency_seconds": 2e-6},
    "nvlink4": {"bandwidth_gbps": 450.0, "latency_seconds": 2e-6},
    "pcie4": {"bandwidth_gbps": 32.0, "latency_seconds": 5e-6},
    "pcie5": {"bandwidth_gbps": 64.0, "latency_seconds": 5e-6},
    "infiniband-hdr": {"bandwidth_gbps": 25.0, "latency_seconds": 5e-6},
    "infiniband-ndr": {"bandwidth_gbps": 50.0, "latency_seconds": 5e-6},
    "ethernet-100g": {"bandwidth_gbps": 12.5, "latency_seconds": 2.5e-5},
}


def _lookup(table: dict, name: str, field: str) -> dict:
    key = str(name).strip().lower().replace("_", "-")
    if key not in table:
        raise InputError(field, f"unknown {name!r}", f"use one of: {', '.join(table)}")
    return table[key]


def paleo(flops_per_step: float, gradient_bytes: float, gpu: str = "a100", interconnect: str = "nvlink",
          utilisation: float = 0.5, precision: str = "fp16") -> RingAllReduce:
    """A RingAllReduce whose one-GPU step is flops / (peak * utilisation).

    `utilisation` is Paleo's platform percent of peak: real kernels reach a fraction of the
    spec sheet's peak, 0.3-0.6 for typical training; 0.5 unless measured.
    """
    peak = _lookup(GPUS, gpu, "scaling.gpu")
    if precision not in ("fp16", "fp32"):
        raise InputError("scaling.precision", f"unknown {precision!r}", "use one of: fp16, fp32")
    if not (0 < utilisation <= 1):
        raise InputError("scaling.utilisation", f"{utilisation!r} is not in (0, 1]")
    if not (math.isfinite(flops_per_step) and flops_per_step > 0):
        raise InputError("scaling.flopsPerStep", f"{flops_per_step!r} is not a finite number > 0")
    link = _lookup(INTERCONNECTS, interconnect, "scaling.interconnect")
    step = flops_per_step / (peak[precision] * 1e12 * utilisation)
    return RingAllReduce(step, gradient_bytes, link["bandwidth_gbps"], link["latency_seconds"])


@dataclass(frozen=True)
class Measured(Curve):
    """t(n) = a/n + b(n-1)/n + c(n-1) in seconds per sample, a, b, c >= 0.

    The RingAllReduce family in other units (a = compute, b = 2 * transfer, c = 2 * latency),
    so a fit can reproduce any analytical prediction. With a, b, c >= 0, n t(n) = a + b(n-1)
    + c n(n-1) never decreases: E(n) is non-increasing and the speed-up saturates.
    """

    a: float
    b: float
    c: float

    def step_time(self, n: int) -> float:
        _check_n(n)
        return self.a / n + self.b * (n - 1) / n + self.c * (n - 1)

    @classmethod
    def fit(cls, points: Iterable[tuple[int, float]]) -> Measured | None:
        """Fit [(n_gpus, samples_per_second), ...]; None until two distinct n are observed.

        None, not an error: too few segments is the normal state early in a Study, and the
        caller keeps its prediction. Points with n < 1 or a throughput that is not a finite
        number > 0 are skipped, so one bad report cannot stop a Study. Residuals are
        relative (each row divided by its observed time), so the many-GPU points, with
        small times, weigh as much as the one-GPU point. With two distinct n the latency
        term c is fixed at 0: three unknowns need three distinct n.
        """
        good = [(int(n), float(rate)) for n, rate in points
                if n >= 1 and math.isfinite(rate) and rate > 0]
        distinct = len({n for n, _ in good})
        if distinct < 2:
            return None
        n = np.array([p[0] for p in good], dtype=float)
        t = 1.0 / np.array([p[1] for p in good])
        columns = [1 / n, (n - 1) / n] + ([n - 1] if distinct >= 3 else [])
        design = np.stack(columns, axis=1) / t[:, None]
        from scipy.optimize import nnls  # here: scipy loads only once a curve is fitted, not at start-up

        coef, _ = nnls(design, np.ones_like(t))
        a, b, c = (list(coef) + [0.0])[:3]
        return cls(float(a), float(b), float(c))
