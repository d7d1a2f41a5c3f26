"""Pydantic models of the Trial resource: one configuration of a Study, trained in segments.

The operator creates a Trial (`<study>-<index>`, owned by its Study) and writes its spec
once; each segment trains it to a budget, resuming from the previous segment's checkpoint.
The status is the record the scheduler's state is rebuilt from after a restart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rung.api.study import API_VERSION, Choice, Condition, _Model, conditions_field

TrialPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Stopped"]
SegmentState = Literal["running", "completed", "failed", "stopped"]

# One live report: [step, loss].
CurvePoint = Annotated[list[float], Field(min_length=2, max_length=2)]


class TrialSpec(_Model):
    study: str = Field(min_length=1, description="The Study this Trial belongs to.")
    index: int = Field(ge=0, description="The Trial's number within its Study.")
    params: dict[str, Choice] = Field(default_factory=dict, description="The configuration to train.")
    parent: int | None = Field(None, ge=0, description="PBT: the index of the Trial whose checkpoint this one "
                                                       "started from.")
    replaces: int | None = Field(None, ge=0, description="PBT: the index of the Trial whose place this one took.")


class Segment(_Model):
    """One run of the trial code towards a budget."""
    budget: float = Field(description="The budget this segment must reach.")
    resume_from: float | None = Field(None, description="The rung budget it continued from.")
    status: SegmentState = "running"
    loss: float | None = Field(None, description="Final loss (minimised); none while running or when failed.")
    objectives: list[float] | None = Field(None, description="Multi-objective: the final loss of each objective.")
    reached: float | None = None
    restarts: int = Field(0, ge=0, description="Restarts after a crash or an infrastructure loss.")
    losses: int = Field(0, ge=0, description="Infrastructure losses (preemption, eviction, node loss).")
    stop_requested: bool = Field(False, description="The scheduler stopped it; never restart it.")
    gpus: int = Field(0, ge=0, description="GPUs its pods get.")
    efficiency: float | None = Field(None, description="The predicted (or measured) efficiency E(gpus) it was "
                                                       "sized with.")
    sizing: str = Field("", description="Why it got that many GPUs.")
    exit_code: int | None = None
    reason: str = ""
    # Times as rung.runtime.records.SegmentDoc keeps them, so a segment round-trips exactly.
    started: float | None = Field(None, description="Wall-clock start, seconds since the epoch.")
    ended: float | None = Field(None, description="Wall-clock end, seconds since the epoch.")
    elapsed: float | None = Field(None, description="The Study's accumulated run time when it ended.")
    pod: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, description="Latest reported metrics, as reported.")
    curve: list[CurvePoint] = Field(default_factory=list, description="Live [step, loss] reports.")


class TrialStatus(_Model):
    phase: TrialPhase = "Pending"
    budget: float | None = Field(None, description="The current segment's target budget.")
    reached: float | None = None
    value: float | None = Field(None, description="The objective metric, in user units, at `reached`.")
    segments: list[Segment] = Field(default_factory=list)
    conditions: list[Condition] = conditions_field()


class Trial(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_version: Literal["rung.dev/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["Trial"] = "Trial"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: TrialSpec
    status: TrialStatus | None = None
