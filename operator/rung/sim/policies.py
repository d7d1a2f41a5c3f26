"""How many GPUs a segment gets, by policy; every policy goes through `rung.sizing.choose`,
so all of them respect the free GPUs and the Study's fair share the same way.

- `one`: always 1 GPU (min = max = 1).
- `max`: always the Study's gpus.max (min = max = gpus.max): waits until that many fit.
- `rung`: Rung's choice from the model the Study declares, replaced by `Measured.fit`
  of the throughputs its segments reported once they ran at two or more GPU counts (one
  segment probes a second count while only one was measured, as in the operator).
- `oracle`: the same choice computed from the true curve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rung.sizing import Choice, choose, probe

if TYPE_CHECKING:
    from rung.sim.cluster import _StudyState

POLICIES = ("one", "max", "rung", "oracle")


def choice(policy: str, st: "_StudyState", free: int, share: int | None, total: int) -> Choice:
    """The GPU count of the Study's next segment under `policy` (free/share as in choose)."""
    s = st.spec
    if policy == "one":
        return choose(s.true_curve, 1, 1, s.target_efficiency, free, share, total)
    if policy == "max":
        return choose(s.true_curve, s.gpus_max, s.gpus_max, s.target_efficiency, free, share, total)
    if policy == "rung":
        model = st.model()
        picked = choose(model, s.gpus_min, s.gpus_max, s.target_efficiency, free, share, total)
        return probe(model, picked, {n for n, _ in st.points}, set(st.running_gpus), s.gpus_min, s.gpus_max,
                     free, share)
    if policy == "oracle":
        return choose(s.true_curve, s.gpus_min, s.gpus_max, s.target_efficiency, free, share, total)
    raise ValueError(f"unknown policy {policy!r}; use one of: {', '.join(POLICIES)}")
