"""The cluster's GPUs as the operator hands them to Studies' segments.

Each Study that asks for GPUs (spec.trial.gpus) registers its weight and demand; before a
new segment starts, its loop asks `GpuPool.choose`: the GPUs free now, the Study's fair
share of all of them minus what it holds, and its efficiency curve give the number
(rung.sizing.choose). Shares follow Studies that start, end or change (they are computed
again when one does, or the total changes), and they are enforced only at segment
boundaries: a running segment keeps its GPUs. What a Study holds is the GPUs of its
running segments, as its records say.

A choice costs O(running segments), not O(trials): the measured throughputs, which grow
with every segment, are gathered from the segments that ended since the last choice and
fitted again only when they changed.

The total is the sum of the nodes' allocatable GPU resource, read from the API server at
most every `refresh` seconds, by one thread at a time (a restarted operator's workers all
choose at once). The operator counts only its own trials' GPUs as used.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Hashable, Iterable

from rung.api import Study
from rung.records import TrialRecord
from rung.sizing import Choice, Measured, RingAllReduce, choose, paleo, probe, shares
from rung.trial.contract import THROUGHPUT_METRIC


IDEAL = RingAllReduce(1.0, 0.0, 1.0)   # E(n) = 1: sizes a Study without a curve at its minimum


def predicted(study: Study):
    """The efficiency curve the Study declares (None without spec.trial.gpus.scaling)."""
    scaling = study.spec.trial.gpus.scaling if study.spec.trial.gpus else None
    if scaling is None:
        return None
    if scaling.flops_per_step is not None:
        return paleo(scaling.flops_per_step, scaling.gradient_bytes, gpu=scaling.gpu,
                     interconnect=scaling.interconnect or "nvlink")
    if scaling.bandwidth_gbps is None:   # bandwidth from the interconnect's name
        model = paleo(1.0, scaling.gradient_bytes, gpu="a100", interconnect=scaling.interconnect)
        return RingAllReduce(scaling.step_seconds, scaling.gradient_bytes, model.bandwidth_gbps,
                             scaling.latency_seconds or model.latency_seconds)
    return RingAllReduce(scaling.step_seconds, scaling.gradient_bytes, scaling.bandwidth_gbps,
                         scaling.latency_seconds)


def throughput(seg) -> tuple[int, float] | None:
    """(GPUs, throughput) of a segment that reported one."""
    rate = seg.metrics.get(THROUGHPUT_METRIC)
    return (seg.gpus, rate) if seg.gpus and isinstance(rate, (int, float)) else None


def running_counts(running: list[TrialRecord]) -> set[int]:
    return {t.current.gpus for t in running if t.current.gpus}


def held(running: list[TrialRecord]) -> int:
    return sum(t.current.gpus for t in running)


class Throughputs:
    """A Study's measured throughputs, gathered from the trials whose segments ended (each
    segment once: it is keyed by trial and segment), and their fit. Measured.fit of them
    replaces the prediction once they cover two or more GPU counts."""

    def __init__(self):
        self.points: dict[tuple[int, int], tuple[int, float]] = {}
        self.model: Measured | None = None
        self.measured: set[int] = set()

    def add(self, ended: Iterable[TrialRecord]) -> None:
        new = {(t.index, k): point for t in ended for k, seg in enumerate(t.segments)
               if not seg.running and (point := throughput(seg)) is not None}
        if any(self.points.get(key) != point for key, point in new.items()):   # else the fit stands
            self.points.update(new)
            self.model = Measured.fit(self.points.values())
            self.measured = {n for n, _ in self.points.values()}


class GpuPool:
    def __init__(self, total: Callable[[], int], refresh: float = 30.0, clock=time.monotonic):
        """`total()` counts the cluster's GPUs (the nodes' allocatable resource)."""
        self._total, self.refresh, self.clock = total, refresh, clock
        self._known, self._read_at = 0, -1e9
        self._reading = threading.Lock()
        self.lock = threading.Lock()
        self._shares: tuple[int, dict] | None = None   # (total, shares) while the Studies stay the same
        self.studies: dict[Hashable, tuple[float, int]] = {}   # key -> (weight, GPUs wanted at once)
        self.held: dict[Hashable, int] = {}
        self.throughputs: dict[Hashable, Throughputs] = {}

    def total(self) -> int:
        """The GPUs last read; read again when due. While another thread reads, the last
        count stands (one waits for it only while none is known)."""
        if self._due() and self._reading.acquire(blocking=not self._known):
            try:
                if self._due():   # else another thread has just read
                    self._known, self._read_at = self._total(), self.clock()
            finally:
                self._reading.release()
        return self._known

    def _due(self) -> bool:
        # Read again sooner while none are seen: a node's new GPUs reach its status a little later.
        return self.clock() - self._read_at >= (self.refresh if self._known else min(self.refresh, 5.0))

    def _share(self, key: Hashable, total: int) -> int:
        """The Study's fair share (call with the lock held)."""
        if self._shares is None or self._shares[0] != total:
            self._shares = (total, shares(total, self.studies))
        return self._shares[1].get(key, 0)

    def register(self, key: Hashable, study: Study) -> None:
        gpus = study.spec.trial.gpus
        with self.lock:
            if gpus is None or gpus.max == 0:
                self.studies.pop(key, None)
            else:
                self.studies[key] = (study.spec.fair_share.weight, gpus.max * study.spec.limits.parallelism)
            self._shares = None

    def update(self, key: Hashable, running: list[TrialRecord], done: bool) -> None:
        """What a Study holds after a step; a Study that ended holds nothing and wants nothing."""
        with self.lock:
            if done and self.studies.pop(key, None) is not None:
                self._shares = None
            self.held[key] = 0 if done else held(running)

    def forget(self, key: Hashable) -> None:
        with self.lock:
            self.studies.pop(key, None)
            self.held.pop(key, None)
            self.throughputs.pop(key, None)
            self._shares = None

    def choose(self, key: Hashable, study: Study, running: list[TrialRecord],
               ended: Iterable[TrialRecord] = ()) -> Choice:
        """GPUs for the Study's next segment, given its `running` trials and those whose
        segments `ended` since it last asked (all of them after its loop restored); what it
        chose counts as held at once, so two Studies deciding together never hand out the
        same GPUs."""
        gpus = study.spec.trial.gpus
        measured = self.throughputs.setdefault(key, Throughputs())
        measured.add(ended)
        model = measured.model or predicted(study)
        total = self.total()
        with self.lock:
            self.held[key] = held(running)
            share = self._share(key, total)
            free = total - sum(self.held.values())
            left = share - self.held[key]
            if model is None:   # nothing to size by: the minimum, until throughputs are measured
                choice = choose(IDEAL, gpus.min, gpus.min, 1.0, free, left, total)
                choice = replace(choice, reason=choice.reason + " (min: no scaling given or measured yet)")
            else:
                choice = choose(model, gpus.min, gpus.max, gpus.target_efficiency, free, left, total)
            choice = probe(model or IDEAL, choice, measured.measured, running_counts(running), gpus.min,
                           gpus.max, free, left)
            if not choice.waits:
                self.held[key] += choice.n
            return choice


def node_gpus(kube, resource: str) -> Callable[[], int]:
    """Counts the GPUs the nodes offer (status.allocatable), skipping nodes that take no pods."""
    from rung.kube.api import path

    def total() -> int:
        nodes = kube.request("GET", path("nodes"))["items"]
        return sum(int((n.get("status") or {}).get("allocatable", {}).get(resource, 0)) for n in nodes
                   if not (n.get("spec") or {}).get("unschedulable"))
    return total
