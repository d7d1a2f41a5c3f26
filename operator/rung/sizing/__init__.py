"""GPU sizing: how many GPUs a trial's next segment gets, and how Studies share them.

The pieces, all pure (no I/O, no clock, no Kubernetes):

- `models`: an efficiency curve E(n) = t(1) / (n t(n)) per Study: `RingAllReduce` from the
  Study's scaling parameters, `paleo(...)` from FLOPs per step and GPU / interconnect
  names, and `Measured.fit(...)` from reported throughputs, which replaces the prediction
  once segments ran at two or more GPU counts.
- `fairshare.shares(total, demands)`: each running Study's share of the cluster's GPUs,
  weighted max-min fair, recomputed when Studies start, end or change.
- `choice.choose(...)`: per segment, the largest n in [min, max] with E(n) >= target that
  fits the free GPUs and what is left of the Study's share, with a one-line reason;
  `choice.probe(...)` moves one segment to a second GPU count while a Study has tried only
  one, so the measured curve can take over.

The caller (the Study loop) enforces shares at segment boundaries only: a running segment
keeps its GPUs, and a Study over its share just starts its next segments smaller or later.
"""

from rung.sizing.choice import Choice, choose, probe
from rung.sizing.fairshare import shares
from rung.sizing.models import GPUS, INTERCONNECTS, Curve, EfficiencyModel, Measured, RingAllReduce, paleo

__all__ = [
    "Choice", "choose", "probe", "shares",
    "Curve", "EfficiencyModel", "RingAllReduce", "Measured", "paleo", "GPUS", "INTERCONNECTS",
]
