"""A discrete-event simulator of a GPU cluster running Studies with Rung's real engine.

Nothing here is a model of the engine: each simulated Study drives a real scheduler
(ask/tell, with its real sampler), every segment's GPU count comes from the real
`rung.sizing.choose`, and the Studies share the cluster through the real
`rung.sizing.shares`. Only the world is simulated: a segment's run time follows from the
Study's *true* efficiency curve, and its loss from a synthetic benchmark. No I/O, no
wall clock; the same inputs give the same run.

- `objectives`: counting ones and Hartmann-6 as (space, loss, regret) objects.
- `cluster`: `SimStudy` (one Study's declaration and its true curve), `simulate(...)`
  (the event loop) and `ClusterRun` (segments, per-Study results, GPU use over time).
- `policies`: how many GPUs a segment gets: `one`, `max`, `rung` and `oracle`.
- `plots`: matplotlib figures of a run (imported only by whoever plots).
"""

from rung.sim.cluster import ClusterRun, SegmentRecord, SimStudy, StudyResult, simulate
from rung.sim.policies import POLICIES

__all__ = ["ClusterRun", "SegmentRecord", "SimStudy", "StudyResult", "simulate", "POLICIES"]
