"""Pydantic models of the ArchitectureSearch resource (DARTS, ASAP): the one source of truth
for its schema. It runs as a one-trial Study (rung.archsearch translates it), so its trial,
checkpoint and fair-share fields are a Study's.

The schema checks shapes and ranges (the API server refuses those at once); the method's
own settings are checked by rung.api.nas.resolve_settings, the same rule rung.nas applies,
and reach users as an `Invalid` condition or one `rung run` error line.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rung.api.nas import CANDIDATE_OPS, resolve_settings
from rung.api.study import (API_VERSION, Checkpoints, Condition, FairShare, Metadata, TrialTemplate, _Model,
                            conditions_field)
from rung.errors import InputError

NAS_COMMAND = ["python", "-m", "rung_trainables.nas_search"]
Op = Literal[CANDIDATE_OPS]  # type: ignore[valid-type]

# Spec fields a search may change once it exists (the rest decides what it computes, or
# where its checkpoints are).
MUTABLE_SEARCH_SPEC = ("trial", "fairShare", "checkpoints.secretRef", "checkpoints.keepBest",
                       "checkpoints.retain")
# Settings that have a field of their own in the spec.
SPEC_SETTINGS = {"dataset": "dataset", "epochs": "epochs", "cells": "cells", "nodes": "nodes", "ops": "ops",
                 "channels": "channels"}


class NasTrialTemplate(TrialTemplate):
    """A Study's trial template whose command defaults to the built-in search trainable
    (its image needs torch: trial_image/Dockerfile.torch)."""
    command: list[str] = Field(default_factory=lambda: list(NAS_COMMAND), min_length=1)


class Evaluation(_Model):
    """The evaluation stage: the derived network and a random one from the same space,
    each trained from scratch the same way and scored on the test split."""
    epochs: int = Field(20, ge=0, description="Training epochs of each network; 0 skips the stage.")
    cells: int = Field(3, ge=2)
    channels: int = Field(16, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)


class ArchitectureSearchSpec(_Model):
    method: Literal["darts", "asap"]
    dataset: str = Field(min_length=1, description="digits (built in), a .npz path or a file:// URI.")
    epochs: int = Field(10, ge=1, description="Search epochs (ASAP: at most; it stops once decided).")
    seed: int = Field(0, ge=0, description="Seeds the data split, initialisation, alphas and batch order.")
    cells: int = Field(3, ge=2, description="Cells in the search network.")
    nodes: int = Field(4, ge=1, description="Intermediate nodes per cell.")
    ops: list[Op] = Field(default_factory=lambda: list(CANDIDATE_OPS), min_length=1,
                          description="Candidate ops on every edge.")
    channels: int = Field(8, ge=1, description="Channels of the first cell.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Method-specific knobs (rung.nas.search).")
    evaluation: Evaluation = Field(default_factory=Evaluation)
    trial: NasTrialTemplate = Field(default_factory=NasTrialTemplate)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    fair_share: FairShare = Field(default_factory=FairShare)

    def search_settings(self) -> dict:
        """The settings rung.nas.Search gets, resolved and checked; InputError names the
        spec field (spec.settings.<key>, or the spec field a setting has of its own)."""
        for key, field in SPEC_SETTINGS.items():
            if key in self.settings:
                raise InputError(f"spec.settings.{key}", "has a field of its own", f"set spec.{field} instead")
        own = {"dataset": self.dataset, "epochs": self.epochs, "cells": self.cells, "nodes": self.nodes,
               "ops": list(self.ops), "channels": self.channels}
        try:
            return resolve_settings(self.method, {**self.settings, **own})
        except InputError as e:
            field = e.field if e.field.removeprefix("settings.") not in SPEC_SETTINGS else e.field[len("settings."):]
            raise InputError(f"spec.{field}", e.problem, e.fix) from None


class SearchEvaluation(_Model):
    test_accuracy: float | None = Field(None, description="The derived network's, trained from scratch.")
    random_test_accuracy: float | None = Field(None, description="A random cell's from the same space, "
                                                                 "trained the same way.")
    parameters: int | None = None


class ArchitectureSearchStatus(_Model):
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Invalid"] = "Pending"
    study: str | None = Field(None, description="The Study that runs the search (owned by this object).")
    epoch: int | None = Field(None, description="Search epochs done (from the latest checkpoint).")
    val_accuracy: float | None = None
    current_genotype: dict[str, Any] | None = Field(None, description="The genotype at the latest epoch.")
    ops_left: dict[str, list[int]] | None = Field(None, description="Live ops per edge, per cell type.")
    genotype: dict[str, Any] | None = Field(None, description="The architecture found.")
    search_seconds: float | None = Field(None, description="Seconds spent searching (every attempt).")
    gpu_hours: float | None = Field(None, description="GPU-hours of the search's pods (0 on CPU).")
    resumed_from: int | None = Field(None, description="The epoch the latest attempt resumed from (0: fresh).")
    restarts: int | None = Field(None, description="Attempts lost (deleted pod, preemption) and restarted.")
    evaluation: SearchEvaluation | None = None
    message: str = ""
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = None


class ArchitectureSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_version: Literal["rung.dev/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["ArchitectureSearch"] = "ArchitectureSearch"
    metadata: Metadata
    spec: ArchitectureSearchSpec
    status: ArchitectureSearchStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def uid(self) -> str | None:
        return (self.metadata.model_extra or {}).get("uid")
