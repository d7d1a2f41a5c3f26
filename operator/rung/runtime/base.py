"""The runtime interface: where trial segments run (local processes, Kubernetes pods).

The Study loop (rung.runtime.loop) talks only to this interface. A runtime starts a
segment from a SegmentSpec, and `poll()` hands back what happened since the last poll:
live Reports and, once per segment, a Finished event whose outcome says whose fault an
end was (the trial's own error counts toward maxFailedTrials; an infrastructure loss is
restarted from the last sealed checkpoint).
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from rung.trial import contract as C


def trial_name(study: str, index: int) -> str:
    return f"{study}-{index}"


def segment_name(trial: str, segment: int) -> str:
    return f"{trial}-s{segment}"


@dataclass(frozen=True)
class SegmentSpec:
    """Everything a runtime needs to run one segment of one trial."""

    study: str
    namespace: str
    trial: str                     # <study>-<index>
    index: int
    segment: int                   # 0, 1, ... within the trial
    params: dict
    budget: float                  # the budget this segment must reach
    resume_from: float | None      # the rung budget it continues from (informational: the
    #                                SDK resumes from the latest sealed checkpoint <= budget)
    checkpoint_uri: str            # this trial's checkpoint prefix (rung.storage.trial_uri)
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)   # spec.trial.env
    attempt: int = 0               # restarts of this segment after a crash or a loss

    @property
    def name(self) -> str:
        return segment_name(self.trial, self.segment)

    @property
    def run_name(self) -> str:
        """The name of this attempt (a pod name): restarts must never collide with a
        finished attempt that is still there."""
        return run_name(self.name, self.attempt)


def run_name(segment: str, attempt: int) -> str:
    return segment if attempt == 0 else f"{segment}-r{attempt}"


def contract_env(spec: SegmentSpec, result_file: str) -> dict[str, str]:
    """The RUNG_* variables of the trial contract, then the Study's own trial.env."""
    env = {
        C.ENV_STUDY: spec.study,
        C.ENV_TRIAL: spec.trial,
        C.ENV_SEGMENT: str(spec.segment),
        C.ENV_PARAMS: json.dumps(spec.params, separators=(",", ":")),
        C.ENV_BUDGET: repr(float(spec.budget)),
        C.ENV_CHECKPOINT_URI: spec.checkpoint_uri,
        C.ENV_RESULT_FILE: result_file,
    }
    return {**env, **spec.env}


def parse_report_line(line: str) -> tuple[float, dict] | None:
    """(step, metrics) of an '@rung {...}' stdout line; None for any other line."""
    if not line.startswith(C.REPORT_PREFIX):
        return None
    try:
        body = json.loads(line[len(C.REPORT_PREFIX):])
        step, metrics = float(body["step"]), body.get("metrics", {})
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(metrics, dict):
        return None
    return step, {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


class Outcome(str, enum.Enum):
    SUCCEEDED = "succeeded"   # exited 0
    FAILED = "failed"         # the trial's own error (non-zero exit, cannot start, ...)
    LOST = "lost"             # infrastructure loss (eviction, preemption, node loss)
    STOPPED = "stopped"       # ended because stop() asked it to


@dataclass(frozen=True)
class Report:
    """A live intermediate result, from an '@rung' stdout line."""

    trial: str
    segment: int
    step: float
    metrics: dict
    attempt: int = 0


@dataclass(frozen=True)
class Finished:
    """A segment ended. `result` is the result file's JSON ({"step", "metrics"}) if any."""

    trial: str
    segment: int
    outcome: Outcome
    exit_code: int | None = None
    result: dict | None = None
    reason: str = ""
    attempt: int = 0

    @property
    def name(self) -> str:
        return segment_name(self.trial, self.segment)


Event = Report | Finished


class Runtime(ABC):
    """Runs segments. Every method is called from the loop's thread only."""

    @abstractmethod
    def start(self, spec: SegmentSpec) -> None:
        """Start a segment. Failing to start is reported later as a Finished event."""

    @abstractmethod
    def poll(self) -> list[Event]:
        """Events since the last poll; a segment's Reports come before its Finished."""

    @abstractmethod
    def stop(self, name: str) -> None:
        """Ask a segment to end (it ends with Outcome.STOPPED). Unknown names are ignored."""

    @abstractmethod
    def running(self) -> set[str]:
        """Run names (SegmentSpec.run_name) of attempts whose Finished event has not been
        handed out by poll() yet."""

    def close(self) -> None:
        """Release the runtime (shutdown, Ctrl-C). Segments that cannot outlive it (local
        processes) are stopped; pods may keep running: a restarted loop finds them in running()."""
