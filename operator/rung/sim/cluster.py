"""The event loop: Studies arrive, ask their schedulers for segments, get GPUs, finish.

Time model. A segment that trains from budget r to budget b on n GPUs holds its n GPUs
for `startup_seconds + (b - r) * steps_per_unit * t_true(n)` simulated seconds (the whole
b, not b - r, when the objective cannot resume). `startup_seconds` stands for what a real
segment pays before its first step whatever n is: pod scheduling, container start,
checkpoint load (30 s by default; 0 gives the pure algorithmic timeline).

Dispatch. At every instant where something happened (a Study arrived, segments finished),
after all results of that instant are told to their schedulers, Studies are visited in
arrival order and each starts segments while it has a free slot (running < parallelism),
its scheduler has a decision, and `choose` gives it GPUs. With fair share on, `choose`
is capped by what is left of the Study's share; shares come from `rung.sizing.shares`
over each Study's demand (GPUs it holds + free slots x the GPUs its policy would give a
segment on an empty cluster) and are recomputed whenever a demand changes: a Study starts,
ends, runs out of decisions for now, or its model changes. A running segment is never
stopped: a Study over its share just starts nothing until it is back under it. With fair
share off, the first Study to arrive takes whatever it wants (first come, first served).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from rung.schedulers.base import Scheduler
from rung.sim import policies
from rung.sizing import EfficiencyModel, Measured, RingAllReduce, shares


@dataclass
class SimStudy:
    """One Study: what it declares (scheduler, gpus, weight, scaling model) and the truth."""

    name: str
    make_scheduler: Callable[[], Scheduler]  # a fresh scheduler (with its sampler) per run
    objective: object  # rung.sim.objectives-like: loss(config, budget, seed), regret(config), resumable
    true_curve: RingAllReduce  # what the segments really take per step
    declared: EfficiencyModel | None = None  # the Study's scaling prediction (None: the true curve)
    gpus_min: int = 1
    gpus_max: int = 8
    target_efficiency: float = 0.7
    parallelism: int = 1
    weight: float = 1.0
    arrival: float = 0.0
    steps_per_unit: float = 1.0  # training steps per unit of budget
    target_regret: float | None = None
    seed: int = 0  # the objective's noise seed


@dataclass(frozen=True)
class SegmentRecord:
    study: str
    trial: int
    budget: float
    resume_from: float | None
    gpus: int
    start: float
    end: float
    loss: float
    reason: str


@dataclass
class StudyResult:
    name: str
    arrival: float
    end: float | None = None  # when its scheduler finished (None: the run stopped first)
    time_to_target: float | None = None  # from arrival to the first incumbent at <= target regret
    gpu_seconds: float = 0.0  # held by its finished segments
    gpu_seconds_to_target: float | None = None  # held until the target was reached
    segments: int = 0
    full_budget_times: list[float] = field(default_factory=list)  # each config reaching budget max
    gpus_used: dict[int, int] = field(default_factory=dict)  # GPU count -> segments
    regret: list[tuple[float, float]] = field(default_factory=list)  # (time, incumbent's regret) on change

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600


@dataclass
class ClusterRun:
    total_gpus: int
    policy: str
    fair_share: bool
    end: float
    studies: dict[str, StudyResult]
    segments: list[SegmentRecord]
    usage: list[tuple[float, dict[str, int]]]  # (time, GPUs held per Study) from that time on

    def utilisation(self, until: float | None = None) -> float:
        """Mean fraction of the cluster's GPUs held, from time 0 to `until` (default: the end)."""
        until = self.end if until is None else until
        held = 0.0
        for (t0, use), (t1, _) in zip(self.usage, self.usage[1:] + [(until, {})]):
            t0, t1 = min(t0, until), min(t1, until)
            held += sum(use.values()) * (t1 - t0)
        return held / (self.total_gpus * until) if until > 0 else 0.0


class _StudyState:
    """A Study while it runs: its scheduler, what it holds, what it has measured."""

    def __init__(self, spec: SimStudy):
        self.spec = spec
        self.scheduler = spec.make_scheduler()
        self.result = StudyResult(spec.name, spec.arrival)
        self.running = 0  # segments
        self.used = 0  # GPUs
        self.stalled = False  # the last ask had nothing: no more asks until a result arrives
        self.done = False
        self.points: list[tuple[int, float]] = []  # (GPUs, steps per second) reported
        self.running_gpus: Counter[int] = Counter()  # GPU count -> segments running at it
        self._fit: EfficiencyModel | None = None
        self.top_budget, self.best = -math.inf, (math.inf, None)  # incumbent, as bench/regret.py

    def model(self) -> EfficiencyModel:
        """The Study's current efficiency model: the measured fit once it exists."""
        if self._fit is None:
            self._fit = Measured.fit(self.points) or self.spec.declared or self.spec.true_curve
        return self._fit

    def measure(self, gpus: int, steps_per_second: float) -> None:
        self.points.append((gpus, steps_per_second))
        self._fit = None

    def incumbent_regret(self) -> float:
        return math.inf if self.best[1] is None else self.spec.objective.regret(self.best[1])


def simulate(studies: list[SimStudy], total_gpus: int, policy: str = "rung", fair_share: bool = True,
             startup_seconds: float = 30.0, measure_noise: float = 0.0, seed: int = 0,
             stop: Callable[[dict[str, StudyResult]], bool] | None = None,
             max_time: float = math.inf) -> ClusterRun:
    """Run the Studies on `total_gpus` GPUs until every scheduler is finished, `stop(results)`
    is true after an instant, or simulated time passes `max_time`.

    `measure_noise` is the relative (log-normal) error of each throughput a segment reports
    to the measured fit; the run is a pure function of its arguments and `seed`.
    """
    if policy not in policies.POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of: {', '.join(policies.POLICIES)}")
    rng = np.random.default_rng(seed)
    states = [_StudyState(s) for s in sorted(studies, key=lambda s: s.arrival)]  # stable: ties keep order
    by_name = {st.spec.name: st for st in states}
    if len(by_name) != len(states):
        raise ValueError("Study names must be unique")
    events: list = []  # (time, seq, kind, payload); seq keeps ties in insertion order
    seq = 0

    def push(time, kind, payload):
        nonlocal seq
        heapq.heappush(events, (time, seq, kind, payload))
        seq += 1

    for st in states:
        push(st.spec.arrival, "arrive", st)
    active: list[_StudyState] = []
    free = total_gpus
    segments: list[SegmentRecord] = []
    usage: list[tuple[float, dict[str, int]]] = [(0.0, {})]
    now = 0.0
    cached: tuple[dict, dict] | None = None  # (demands, shares): shares change only with demands

    def demand(st: _StudyState) -> int:
        slots = 0 if st.stalled else st.spec.parallelism - st.running
        if slots <= 0:
            return st.used
        per = policies.choice(policy, st, total_gpus, None, total_gpus).n
        return st.used + slots * per

    def current_shares() -> dict | None:
        nonlocal cached
        if not fair_share:
            return None
        demands = {st.spec.name: (st.spec.weight, demand(st)) for st in active}
        if cached is None or cached[0] != demands:
            cached = (demands, shares(total_gpus, demands))
        return cached[1]

    def start(st: _StudyState, n: int, reason: str) -> bool:
        nonlocal free
        d = st.scheduler.ask()
        if d is None:
            st.stalled = True
            return False
        s, obj = st.spec, st.spec.objective
        units = d.budget - (d.resume_from or 0.0) if obj.resumable else d.budget
        duration = startup_seconds + units * s.steps_per_unit * s.true_curve.step_time(n)
        st.running += 1
        st.used += n
        st.running_gpus[n] += 1
        free -= n
        push(now + duration, "finish", (st, d, n, now, reason))
        return True

    def dispatch() -> None:
        while True:
            table = current_shares()
            started = False
            for st in active:
                while not st.done and not st.stalled and st.running < st.spec.parallelism:
                    left = None if table is None else table[st.spec.name] - st.used
                    c = policies.choice(policy, st, free, left, total_gpus)
                    if c.waits or not start(st, c.n, c.reason):
                        break
                    started = True
                    if table is not None and current_shares() is not table:
                        break  # a demand changed: shares first, then the next Study
            if not started and current_shares() is table:
                return

    def finish(st: _StudyState, payload) -> None:
        nonlocal free
        _, d, n, began, reason = payload
        s, res = st.spec, st.result
        loss = s.objective.loss(d.config, d.budget, s.seed)
        st.scheduler.tell(d.trial, d.budget, loss)
        st.running -= 1
        st.used -= n
        st.running_gpus[n] -= 1
        if not st.running_gpus[n]:
            del st.running_gpus[n]
        free += n
        st.stalled = False
        held = n * (now - began)
        res.gpu_seconds += held
        res.segments += 1
        res.gpus_used[n] = res.gpus_used.get(n, 0) + 1
        segments.append(SegmentRecord(s.name, d.trial, d.budget, d.resume_from, n, began, now, loss, reason))
        # What the trial reports: its step rate, measured with a relative error.
        rate = 1.0 / s.true_curve.step_time(n)
        if measure_noise:
            rate *= float(np.exp(rng.normal(0.0, measure_noise)))
        st.measure(n, rate)
        if d.budget >= s.objective.budget_max:
            res.full_budget_times.append(now)
        if d.budget > st.top_budget:
            st.top_budget, st.best = d.budget, (math.inf, None)
        if d.budget == st.top_budget and loss < st.best[0]:
            st.best = (loss, d.config)
            res.regret.append((now, st.incumbent_regret()))
        if (res.time_to_target is None and s.target_regret is not None
                and st.incumbent_regret() <= s.target_regret):
            res.time_to_target = now - s.arrival
            # Its running segments have held their GPUs up to now too.
            res.gpu_seconds_to_target = res.gpu_seconds + sum(
                p[2] * (now - p[3]) for _, _, kind, p in events if kind == "finish" and p[0] is st)
        if st.scheduler.finished():
            st.done = True
            res.end = now
            active.remove(st)

    while events:
        now = events[0][0]
        if now > max_time:
            now = max_time
            break
        while events and events[0][0] == now:  # everything of this instant, then one dispatch
            _, _, kind, payload = heapq.heappop(events)
            if kind == "arrive":
                active.append(payload)
            else:
                finish(payload[0], payload)
        dispatch()
        snapshot = {st.spec.name: st.used for st in states if st.used}
        if snapshot != usage[-1][1]:
            usage.append((now, snapshot))
        if stop is not None and stop({st.spec.name: st.result for st in states}):
            break
    if not events and any(not st.done for st in states):
        stuck = [st.spec.name for st in states if not st.done]
        raise RuntimeError(f"no event left but {stuck} did not finish (a Study whose gpus.min never fits?)")
    return ClusterRun(total_gpus, policy, fair_share, now, {st.spec.name: st.result for st in states},
                      segments, usage)
