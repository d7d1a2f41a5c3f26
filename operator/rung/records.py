"""Trial records: the durable truth a Study is rebuilt from after a crash, a restart or a
failed write.

A TrialRecord is one configuration and its segments in order; a SegmentRecord is one run
of the trial code towards a budget. Losses are the minimised objective (the metric,
negated when the goal is maximize). A RecordStore keeps them: a results folder
(rung.runtime.folder), Trial objects on a cluster (rung.controller.trial_store), or
memory (tests). Schedulers are rebuilt from these same records.
"""

from __future__ import annotations

import enum
import json
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


class SegmentStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"   # reached its budget
    FAILED = "failed"         # the trial's own error; counts toward maxFailedTrials
    STOPPED = "stopped"       # the scheduler (or the Study's end) stopped it early


DIVERGED = "diverged"   # the reason of a completed segment whose objective was inf or nan starts so


@dataclass
class SegmentRecord:
    budget: float                       # the budget the segment was asked to reach
    resume_from: float | None = None    # the rung budget it continued from
    status: SegmentStatus = SegmentStatus.RUNNING
    loss: float | None = None           # final loss; None while running or when failed
    reached: float | None = None        # budget reached (the step it was stopped at, if stopped)
    curve: list[list[float]] = field(default_factory=list)  # live [step, loss] reports
    metrics: dict = field(default_factory=dict)              # latest reported metrics, as reported
    started: float | None = None        # wall-clock time (time.time())
    ended: float | None = None
    elapsed: float | None = None        # the Study's accumulated wall time when it ended
    exit_code: int | None = None
    reason: str = ""                    # why it failed or stopped
    restarts: int = 0                   # attempts after the first (an attempt is a pod or a process)
    losses: int = 0                     # infrastructure losses (counted apart from failures)
    stop_requested: bool = False        # the scheduler said stop; never restart it
    gpus: int = 0                       # GPUs its pods get (chosen when the segment is recorded)
    efficiency: float | None = None     # the predicted (or measured) E(gpus) it was chosen with
    sizing: str = ""                    # why that many, e.g. "4 GPUs: E(5) = 0.62 < 0.70"
    objectives: list[float] | None = None   # multi-objective: the final loss of each objective

    def __post_init__(self):
        self.status = SegmentStatus(self.status)

    @property
    def running(self) -> bool:
        return self.status == SegmentStatus.RUNNING

    @property
    def last_step(self) -> float | None:
        return self.curve[-1][0] if self.curve else None

    def used(self) -> float:
        """Budget this segment trained: from where it resumed to where it got."""
        end = self.reached if self.status == SegmentStatus.COMPLETED else self.last_step
        return max(0.0, (end or 0.0) - (self.resume_from or 0.0))

    def result(self) -> tuple[float, float | None] | None:
        """(budget reached, loss) once ended (loss None: it gave no usable result); None while running."""
        if self.running:
            return None
        return (self.budget if self.reached is None else self.reached), self.loss


@dataclass
class TrialRecord:
    index: int
    name: str
    config: dict
    segments: list[SegmentRecord] = field(default_factory=list)
    parent: int | None = None           # the trial whose checkpoint it started from (PBT)
    replaces: int | None = None         # the trial whose place it took (PBT)

    @property
    def state(self) -> SegmentStatus:
        return self.segments[-1].status if self.segments else SegmentStatus.RUNNING

    @property
    def current(self) -> SegmentRecord:
        return self.segments[-1]

    def to_json(self) -> dict:
        doc = {"index": self.index, "name": self.name, "state": str(self.state), "config": self.config,
               "segments": [_finite(asdict(s)) for s in self.segments]}
        doc.update({k: v for k, v in (("parent", self.parent), ("replaces", self.replaces)) if v is not None})
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> "TrialRecord":
        known = SegmentRecord.__dataclass_fields__
        segments = [SegmentRecord(**{k: v for k, v in s.items() if k in known}) for s in doc["segments"]]
        parent, replaces = doc.get("parent"), doc.get("replaces")
        return cls(int(doc["index"]), doc["name"], doc["config"], segments, None if parent is None else int(parent),
                   None if replaces is None else int(replaces))


def _finite(d: dict) -> dict:
    # JSON has no inf/nan: a non-finite loss is stored as null (the status says failed).
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class RecordStore(ABC):
    """Where a Study loop keeps its trial records and the Study's status.

    Every write either happens or raises; after a raise the loop reloads everything
    (`load`), so a store never needs to undo anything."""

    @abstractmethod
    def load(self) -> list[TrialRecord]:
        """Every trial record there is, by index (a consistent read, not a cache)."""

    @abstractmethod
    def save(self, trial: TrialRecord) -> None:
        """Persist one trial record durably (all or nothing)."""

    def save_all(self, trials: list[TrialRecord]) -> None:
        """Persist several records, each all or nothing; raises if any write failed. A
        store may write them at once."""
        for trial in trials:
            self.save(trial)

    @abstractmethod
    def load_status(self) -> dict:
        """The Study's status ({} before the first save)."""

    @abstractmethod
    def save_status(self, status: dict) -> bool | None:
        """Persist the Study's status; False when the store put the write off (the loop
        tries again at its next step)."""

    def changed(self) -> bool:
        """True when someone else changed the records since this store last read or
        wrote them (a deleted Trial, a second writer): the loop then reloads."""
        return False


class MemoryRecords(RecordStore):
    """Records in memory (tests); copies on the way in and out, like a real store."""

    def __init__(self):
        self.trials: dict[int, dict] = {}
        self.status: dict = {}

    def load(self):
        return [TrialRecord.from_json(json.loads(json.dumps(self.trials[i]))) for i in sorted(self.trials)]

    def save(self, trial):
        self.trials[trial.index] = json.loads(json.dumps(trial.to_json()))

    def load_status(self):
        return dict(self.status)

    def save_status(self, status):
        self.status = json.loads(json.dumps(status))
