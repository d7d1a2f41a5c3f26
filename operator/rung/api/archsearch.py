"""Pydantic models of the ArchitectureSearch resource (DARTS, ASAP). No controller runs it yet."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rung.api.study import API_VERSION, Checkpoints, Condition, TrialTemplate, _Model, conditions_field


class ArchitectureSearchSpec(_Model):
    method: Literal["darts", "asap"]
    dataset: str = Field(min_length=1)
    epochs: int = Field(50, ge=1, description="Search epochs.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Method-specific knobs.")
    trial: TrialTemplate
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)


class ArchitectureSearchStatus(_Model):
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Invalid"] = "Pending"
    genotype: dict[str, Any] | None = Field(None, description="The architecture found.")
    conditions: list[Condition] = conditions_field()


class ArchitectureSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_version: Literal["rung.dev/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["ArchitectureSearch"] = "ArchitectureSearch"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ArchitectureSearchSpec
    status: ArchitectureSearchStatus | None = None
