"""The runtime interface: where trial segments run (local processes, Kubernetes pods).

The Study loop (rung.runtime.loop) talks only to this interface. A runtime starts a
segment attempt from a SegmentSpec; `poll()` hands back live Reports and an Ended event
per attempt, whose outcome says whose fault an end was (the trial's own error counts
toward maxFailedTrials; an infrastructure loss is restarted from the last sealed
checkpoint). An Ended event comes back from every poll until the loop has recorded it
and called `release()`, so a result is never lost between the two.
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
    attempt: int = 0               # restarts of this segment after a loss
    image: str | None = None       # spec.trial.image (pods only; None: the operator's default)
    resources: dict[str, str] = field(default_factory=dict)   # spec.trial.resources (pods only)
    objective: str = ""            # the objective metric, and its goal, for checkpoint retention
    goal: str = "minimize"
    keep_best: int | None = None   # spec.checkpoints.keepBest (None: keep every checkpoint)
    timeout: int | None = None     # spec.trial.timeoutSeconds: the attempt fails after this
    gpus: int = 0                  # GPUs chosen for the segment (pods only)
    gpu_resources: dict[str, str] = field(default_factory=dict)   # spec.trial.gpus.perGpu, per GPU
    privileged: bool = False       # spec.trial.privileged (pods only, if the operator allows it)
    host_network: bool = False     # spec.trial.hostNetwork (pods only, if the operator allows it)
    parent_uri: str | None = None  # PBT: the checkpoint prefix of the trial this one starts from,
    parent_params: dict | None = None   # its parameters (its checkpoints are bound to them)

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
    if spec.gpus:   # what a single-pod multi-GPU launcher (torchrun, DDP) reads
        env.update({C.ENV_GPUS: str(spec.gpus), "WORLD_SIZE": str(spec.gpus), "LOCAL_WORLD_SIZE": str(spec.gpus),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    if spec.parent_uri is not None:
        env.update({C.ENV_PARENT_CHECKPOINT_URI: spec.parent_uri, C.ENV_PARENT_STEP: repr(float(spec.resume_from or 0)),
                    C.ENV_PARENT_PARAMS: json.dumps(spec.parent_params, separators=(",", ":"))})
    if spec.keep_best is not None:
        env.update({C.ENV_KEEP_BEST: str(spec.keep_best), C.ENV_OBJECTIVE: spec.objective,
                    C.ENV_OBJECTIVE_GOAL: spec.goal})
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


def timed_out(seconds: int) -> str:
    return f"timed out after {seconds} s (spec.trial.timeoutSeconds)"


class Outcome(enum.StrEnum):
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
class Ended:
    """A segment attempt ended. `result` is the result file's JSON ({"step", "metrics"}) if any."""

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

    @property
    def run_name(self) -> str:
        return run_name(self.name, self.attempt)


Event = Report | Ended


class Refused(Exception):
    """Where segments run refused to start one for now: a quota, an admission policy,
    throttling, an API server that errs or cannot be reached. Never the trial's fault: the
    Study holds (the message says why) and the start is tried again later. `cause` is a
    short CamelCase reason (QuotaExceeded, AdmissionDenied, Throttled, ...)."""

    def __init__(self, cause: str, problem: str, fix: str = "it is retried with backoff"):
        self.cause, self.problem, self.fix = cause, problem, fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.problem}; {self.fix}"


class Runtime(ABC):
    """Runs segments. Every method is called from the loop's thread only."""

    @abstractmethod
    def start(self, spec: SegmentSpec) -> None:
        """Start a segment attempt. A start the trial cannot recover from (a command that
        does not exist) is an Ended(FAILED) event later; one the cluster refuses for now
        raises Refused."""

    def start_all(self, specs: list[SegmentSpec]) -> None:
        """Start several attempts, as start() each; a runtime may start them at once. On a
        refusal it raises Refused, and running() tells which ones were started."""
        for spec in specs:
            self.start(spec)

    @abstractmethod
    def poll(self, replay: bool = False) -> list[Event]:
        """New live Reports, and an Ended event (after all of that attempt's Reports) for
        every attempt that ended and was not released yet. `replay`: the loop has rebuilt
        its state; hand back every Report of attempts still running, not only new ones."""

    def release(self, run: str) -> None:
        """The loop has recorded the end of attempt `run` (or has no use for it): forget it."""

    def release_all(self, runs: list[str]) -> None:
        for run in runs:
            self.release(run)

    def gone(self, run: str) -> bool:
        """True when attempt `run` surely does not exist now: asked before an attempt the
        loop did not start itself is replaced by a new one. A runtime whose view may lag
        (a watch) looks it up."""
        return run not in self.running()

    @abstractmethod
    def stop(self, name: str) -> None:
        """Ask a segment to end (it ends with Outcome.STOPPED). Unknown names are ignored."""

    @abstractmethod
    def running(self) -> set[str]:
        """Run names (SegmentSpec.run_name) of attempts that exist and were not released:
        running, on their way, or ended but not released. The loop starts the current
        attempt of a running segment only when it is not among them."""

    def close(self) -> None:
        """Release the runtime (shutdown, Ctrl-C). Segments that cannot outlive it (local
        processes) are stopped; pods may keep running: a restarted loop finds them in running()."""
