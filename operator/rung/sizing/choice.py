"""The GPU count of one segment: the largest efficient n that fits now."""

from __future__ import annotations

from dataclasses import dataclass

from rung.sizing.models import EfficiencyModel


@dataclass(frozen=True)
class Choice:
    n: int  # GPUs for the segment; 0 is either a CPU-only segment or, with waits, none yet
    efficiency: float  # predicted E(n); 1.0 on CPU, 0.0 while waiting
    reason: str  # one line for the Trial's status
    waits: bool = False  # True: start nothing now, not even min fits


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def choose(model: EfficiencyModel, gpus_min: int, gpus_max: int, target: float, free: int,
           share: int | None = None, total: int | None = None) -> Choice:
    """The largest n in [gpus_min, gpus_max] with E(n) >= target, n <= free and n <= share.

    `free` is the cluster's free GPUs and `share` what is left of the Study's fair share
    (both after what is already running; share None: no cap). When no n >= 2 reaches the
    target it is gpus_min; when gpus_min does not fit, the Choice waits (n = 0) and the
    caller starts nothing. gpus_min = 0 allows a CPU-only segment (n = 0) when no GPU
    fits. `total` (cluster GPUs) only makes the reason read "2 of 8".
    """
    if gpus_min < 0 or gpus_max < gpus_min:
        raise ValueError(f"need 0 <= gpus_min <= gpus_max, got {gpus_min}, {gpus_max}")
    of = f" of {total}" if total is not None else ""
    free = max(free, 0)
    cap = min(gpus_max, free, gpus_max if share is None else max(share, 0))
    if cap < gpus_min:  # not even min fits: say which limit
        if free < gpus_min:
            why = f"{free}{of} GPUs free"
        else:
            why = f"fair share {share}{of}"
        return Choice(0, 0.0, f"waits: {why}, needs {gpus_min}", waits=True)
    if cap == 0:  # CPU only, by the spec (max 0) or because no GPU fits now
        why = "gpus.max = 0" if gpus_max == 0 else (
            f"0{of} GPUs free" if free == 0 else f"fair share 0{of}")
        return Choice(0, 1.0, f"0 GPUs (CPU only): {why}")

    lowest = max(gpus_min, 1)
    n = next((k for k in range(cap, lowest - 1, -1) if model.efficiency(k) >= target), None)
    if n is None:  # even the smallest allowed n misses the target: run at min anyway
        n = lowest
        e = model.efficiency(n)
        return Choice(n, e, f"{_gpus(n)} (min): even E({n}) = {e:.2f} < {target:.2f}")
    e = model.efficiency(n)
    tag = " (min)" if n == gpus_min else ""
    if n < cap:  # the curve stopped it
        why = f"E({n + 1}) = {model.efficiency(n + 1):.2f} < {target:.2f}"
    elif n == gpus_max:
        tag = " (max)"
        why = f"E({n}) = {e:.2f} >= {target:.2f}"
    elif n == free and (share is None or free <= share):
        why = f"{free}{of} free, E({n}) = {e:.2f}"
    else:
        why = f"fair share {share}{of}, E({n}) = {e:.2f}"
    return Choice(n, e, f"{_gpus(n)}{tag}: {why}")


def probe(model: EfficiencyModel, choice: Choice, measured: set[int], running: set[int],
          gpus_min: int, gpus_max: int, free: int, share: int | None = None) -> Choice:
    """A segment at a second GPU count while the Study has measured only one.

    The measured curve needs throughputs at two counts; a Study whose prediction puts every
    segment at the same count would never get them, and a wrong prediction would stand for
    ever. So once throughputs were reported at exactly one count (`measured`), and no
    segment runs at another (`running`), a segment chosen at that count runs at half of it,
    or at twice it when half is below the minimum, if that fits. A trial that reports no
    throughput never probes: there would be nothing to fit.
    """
    if choice.waits or choice.n == 0 or not measured or measured | running != {choice.n}:
        return choice
    cap = min(gpus_max, max(free, 0), gpus_max if share is None else max(share, 0))
    half, double = choice.n // 2, 2 * choice.n
    n = half if half >= max(gpus_min, 1) else double if double <= cap else None
    if n is None:
        return choice
    return Choice(n, model.efficiency(n), f"{_gpus(n)} (probe): throughput measured only at {choice.n} "
                                          "so far; a second count lets the measured curve take over")
