"""Pydantic models of the Study resource: the one source of truth for its schema."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

API_VERSION = "rung.dev/v1alpha1"

# Algorithm names a Study may ask for. rung.schedulers.make_scheduler knows each one.
ALGORITHMS = (
    "random", "grid", "sobol", "tpe", "evolution", "annealing",
    "sha", "hyperband", "asha", "asha-stop", "bohb", "async-bohb", "median-stop",
    "curve-stop", "pbt", "mo-asha", "motpe",
)
# Algorithms that rank configurations by several objectives at once (spec.objectives);
# random, sobol and grid ignore the results, so they serve both kinds of Study.
MULTI_OBJECTIVE = ("mo-asha", "motpe", "random", "sobol", "grid")

# Spec fields a Study may change once it exists; edits take effect from the next segment.
# Everything else decides which trials the Study makes, or where their checkpoints are:
# the CRD refuses changes to it (CEL transition rules) and `rung run` refuses a results
# folder whose Study differs in it.
MUTABLE_SPEC = ("limits", "trial", "fairShare", "checkpoints.secretRef", "checkpoints.keepBest", "checkpoints.retain")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Objective(_Model):
    metric: str = Field(min_length=1, description="Name of the reported metric to optimise.")
    goal: Literal["minimize", "maximize"] = "minimize"


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high}); swap them")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {low}); raise low or set log: false")


class FloatParam(_Model):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers; give real bounds")
        _check_bounds(self.low, self.high, self.log)
        return self


class IntParam(_Model):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        _check_bounds(self.low, self.high, self.log)
        return self


Choice = Union[bool, int, float, str]


class CategoricalParam(_Model):
    type: Literal["categorical"]
    choices: list[Choice] = Field(description="Unordered choices.")

    @field_validator("choices")
    @classmethod
    def _choices(cls, v):
        if not v:
            raise ValueError("choices is empty; list at least one choice")
        if len(set(map(repr, v))) != len(v):
            raise ValueError("choices has duplicates; list each choice once")
        return v


class OrdinalParam(_Model):
    type: Literal["ordinal"]
    values: list[Choice] = Field(description="Ordered values; neighbours are similar.")

    @field_validator("values")
    @classmethod
    def _values(cls, v):
        if not v:
            raise ValueError("values is empty; list at least one value")
        if len(set(map(repr, v))) != len(v):
            raise ValueError("values has duplicates; list each value once")
        return v


ParamSpec = Annotated[
    Union[FloatParam, IntParam, CategoricalParam, OrdinalParam], Field(discriminator="type")
]


class Algorithm(_Model):
    name: str
    seed: int = 0
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {v!r}; use one of: {', '.join(ALGORITHMS)}")
        return v


class Budget(_Model):
    min: float = Field(1.0, gt=0, allow_inf_nan=False)   # an infinite budget never ends a segment
    max: float = Field(1.0, gt=0, allow_inf_nan=False)
    unit: str = "epochs"

    @model_validator(mode="after")
    def _order(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g}); make min <= max")
        return self


class Limits(_Model):
    max_trials: int = Field(20, ge=1)
    parallelism: int = Field(1, ge=1)
    max_failed_trials: int = Field(3, ge=0)
    max_preemptions: int = Field(10, ge=0)


class Scaling(_Model):
    """How a trial's step time scales with GPUs (data parallel, ring all-reduce): either the
    step time on one GPU and the interconnect, or a Paleo-style estimate from FLOPs per step
    and GPU / interconnect names (rung.sizing.GPUS, INTERCONNECTS)."""
    step_seconds: float | None = Field(None, gt=0, description="Seconds per step on one GPU.")
    gradient_bytes: float = Field(0, ge=0, description="Bytes all-reduced per step (the gradients).")
    bandwidth_gbps: float | None = Field(None, gt=0, alias="bandwidthGBps",
                                         description="Interconnect bandwidth per GPU, GB/s.")
    latency_seconds: float = Field(0, ge=0, description="Per-hop latency of the all-reduce, seconds.")
    flops_per_step: float | None = Field(None, gt=0, description="Paleo: FLOPs per step (instead of stepSeconds).")
    gpu: str | None = Field(None, description="Paleo: the GPU type, e.g. a100.")
    interconnect: str | None = Field(None, description="Paleo (or instead of bandwidthGBps): e.g. nvlink.")

    @model_validator(mode="after")
    def _one_form(self):
        if self.step_seconds is None and self.flops_per_step is None:
            raise ValueError("give stepSeconds (with bandwidthGBps or interconnect) or flopsPerStep (with gpu)")
        if self.step_seconds is not None and self.flops_per_step is not None:
            raise ValueError("give stepSeconds or flopsPerStep, not both")
        if self.flops_per_step is not None and self.gpu is None:
            raise ValueError("flopsPerStep needs gpu (e.g. a100)")
        if self.bandwidth_gbps is None and self.interconnect is None:
            raise ValueError("give bandwidthGBps or interconnect (e.g. nvlink)")
        return self


class GPUs(_Model):
    min: int = Field(1, ge=0)
    max: int = Field(1, ge=0)
    target_efficiency: float = Field(0.7, gt=0, le=1)
    scaling: Scaling | None = Field(None, description="The predicted efficiency curve; without it a Study starts "
                                                      "at min until throughputs it reports at two GPU counts "
                                                      "give a measured one.")
    per_gpu: dict[str, str] = Field(default_factory=dict,
                                    description="Resources a pod requests per GPU it gets (cpu, memory), on top "
                                                "of spec.trial.resources.")

    @model_validator(mode="after")
    def _order(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}); make min <= max")
        return self


class FairShare(_Model):
    weight: float = Field(1, gt=0, description="This Study's weight in the operator's fair share of GPUs.")


class TrialTemplate(_Model):
    image: str | None = None
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, str] = Field(default_factory=dict)
    gpus: GPUs | None = None
    # Per segment: a segment still running after this is stopped and counts as failed.
    timeout_seconds: int | None = Field(None, ge=1)
    privileged: bool = Field(False, description="Run trial containers privileged (on a cluster). Refused unless "
                                                "the operator allows it (studyPolicy.allowPrivileged).")
    host_network: bool = Field(False, description="Run trial pods in the node's network (on a cluster). Refused "
                                                  "unless the operator allows it (studyPolicy.allowHostNetwork).")


class Checkpoints(_Model):
    # The pattern lets the API server refuse what _scheme explains (file://relative, s3:// without a bucket).
    uri: Annotated[str, Field(pattern=r"^(file://(localhost)?/|s3://[^/]+)")] | None = None
    secret_ref: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)] | None = Field(
        None, description="A Secret in the Study's namespace with the store's endpoint and credentials (AWS_* "
                          "keys); it must carry the label the operator requires (studyPolicy.secretLabel).")
    retain: bool = Field(False, description="Keep the Study's checkpoints when it is deleted.")
    keep_best: int = Field(1, ge=0, description="Per trial, the best checkpoints kept besides the latest (PBT "
                                                "keeps every one: a member may copy another's at any step).")

    @field_validator("uri", mode="before")
    @classmethod
    def _scheme(cls, v):
        if not isinstance(v, str):
            return v
        if not re.match(r"^(file|s3)://", v):
            raise ValueError(f"uri {v!r} has no known scheme; use file:///path or s3://bucket/prefix")
        if v.startswith("file://") and not re.match(r"^file://(localhost)?/", v):
            raise ValueError(f"uri {v!r} is not an absolute file URI; write file:///absolute/path (three slashes)")
        if v.startswith("s3://") and not re.match(r"^s3://[^/]+", v):
            raise ValueError(f"uri {v!r} names no bucket; write s3://bucket/prefix")
        return v


class WarmStart(_Model):
    studies: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, max_length=20,
        description="Earlier Studies whose results seed this one's model (on a cluster: Study names in the same "
                    "namespace; with `rung run`: their results folders).")
    weight: float = Field(1.0, gt=0, le=1, description="How much their results count, before task similarity.")


class Task(_Model):
    meta_features: dict[str, float] = Field(
        default_factory=dict, description="Numbers that describe the task (`rung meta-features` computes them); "
                                          "warm start weighs earlier Studies by how alike theirs are.")


class StudySpec(_Model):
    objective: Objective | None = Field(None, description="The metric to optimise (or objectives: several).")
    objectives: list[Objective] | None = Field(
        None, min_length=2, max_length=4,
        description="Several metrics to optimise at once: the Study finds their Pareto front.")
    search_space: dict[str, ParamSpec]
    algorithm: Algorithm
    budget: Budget = Field(default_factory=Budget)
    limits: Limits = Field(default_factory=Limits)
    trial: TrialTemplate
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    fair_share: FairShare = Field(default_factory=FairShare)
    warm_start: WarmStart | None = None
    task: Task = Field(default_factory=Task)

    @model_validator(mode="after")
    def _one_objective_form(self):
        if (self.objective is None) == (self.objectives is None):
            raise ValueError("give objective (one metric) or objectives (several), not both and not neither")
        if self.objectives is not None:
            metrics = [o.metric for o in self.objectives]
            if len(set(metrics)) != len(metrics):
                raise ValueError("objectives name a metric twice; list each metric once")
            if self.algorithm.name not in MULTI_OBJECTIVE:
                raise ValueError(f"algorithm {self.algorithm.name!r} optimises one objective; with objectives use "
                                 f"one of: {', '.join(MULTI_OBJECTIVE)}")
        return self

    @field_validator("search_space")
    @classmethod
    def _not_empty(cls, v):
        if not v:
            raise ValueError("searchSpace is empty; add at least one parameter")
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", name):
                raise ValueError(f"parameter name {name!r} is not a plain identifier; rename it")
        return v


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str = "default"

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v):
        if len(v) > 63 or not _DNS_LABEL.match(v):
            raise ValueError(f"namespace {v!r} is not a DNS label; use lower-case letters, digits and '-'")
        return v

    @field_validator("name")
    @classmethod
    def _dns(cls, v):
        if len(v) > 52 or not _DNS_LABEL.match(v):
            raise ValueError(
                f"name {v!r} is not a DNS label of at most 52 characters; "
                "use lower-case letters, digits and '-'"
            )
        return v


# ---- status: written by the operator, never by users ----------------------------------------

class Condition(_Model):
    """A standard Kubernetes condition."""
    type: str = Field(min_length=1)
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


def conditions_field() -> Any:
    """A `conditions` list: one entry per type, so server-side apply merges them by type."""
    return Field(default_factory=list,
                 json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


class TrialCounts(_Model):
    total: int = Field(0, ge=0)
    running: int = Field(0, ge=0)
    completed: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)
    stopped: int = Field(0, ge=0)


class TopTrial(_Model):
    trial: str
    value: float
    budget: float


class BestTrial(TopTrial):
    params: dict[str, Choice] = Field(default_factory=dict)


class ParetoPoint(_Model):
    trial: str
    budget: float
    values: dict[str, float] = Field(description="Each objective's metric, in user units.")


PARETO_IN_STATUS = 10   # a front's size grows with trials: the status keeps this many, spread along it


class StudyStatus(_Model):
    """Observed state of a Study: small and bounded (per-trial history lives in the Trials)."""
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Invalid"] = "Pending"
    trials: TrialCounts = Field(default_factory=TrialCounts)
    best: BestTrial | None = None
    top: list[TopTrial] = Field(default_factory=list, max_length=10)
    pareto_front: list[ParetoPoint] = Field(
        default_factory=list, max_length=PARETO_IN_STATUS,
        description="Multi-objective: trials on the Pareto front, spread along it (`rung report` shows all).")
    elapsed: float = Field(0.0, ge=0, description="Seconds the Study has run.")
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = None


class Study(BaseModel):
    model_config = ConfigDict(extra="ignore")  # status and other server fields are not ours to check
    api_version: Literal["rung.dev/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["Study"] = "Study"
    metadata: Metadata
    spec: StudySpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def objectives(self) -> list[Objective]:
        """Every objective, in spec order (one for a single-objective Study)."""
        return self.spec.objectives or [self.spec.objective]

    @property
    def objective(self) -> Objective:
        """The first objective: it ranks checkpoints, and curves are reported in it."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return self.spec.objectives is not None

    @property
    def minimize(self) -> bool:
        return self.objective.goal == "minimize"

    @property
    def uid(self) -> str | None:
        """The API server's uid of this Study (None for a manifest read from a file)."""
        return (self.metadata.model_extra or {}).get("uid")
