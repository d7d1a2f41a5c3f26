"""The settings of a rung.nas search, checked without torch: the operator (which has no
torch) refuses a bad ArchitectureSearch with the same message the search itself would give.

rung.nas.search documents each setting; rung.nas uses these definitions.
"""

from __future__ import annotations

from rung.errors import InputError

METHODS = ("darts", "asap")
ZERO = "zero"
SKIP = "skip_connect"
CANDIDATE_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
                 "max_pool_3x3", "avg_pool_3x3", SKIP, ZERO)
COMMON = {"dataset": "digits", "cells": 3, "nodes": 4, "ops": list(CANDIDATE_OPS), "channels": 8,
          "batch_size": 64, "epochs": 10, "lr": 0.025, "lr_min": 0.001, "momentum": 0.9,
          "weight_decay": 3e-4, "arch_lr": 3e-3, "arch_weight_decay": 1e-3}
METHOD_DEFAULTS = {"darts": {"order": 2, "warmup_epochs": 0},
                   "asap": {"t0": 1.0, "beta": 0.5, "grace_temperature": 0.8, "prune_threshold": 0.05}}
POSITIVE_INTS = ("cells", "nodes", "channels", "batch_size", "epochs")
NON_NEGATIVE = ("lr", "lr_min", "momentum", "weight_decay", "arch_lr", "arch_weight_decay")


def resolve_settings(method: str, settings: dict | None) -> dict:
    """Defaults filled in and every value checked; InputError names the bad key."""
    if method not in METHODS:
        raise InputError("method", f"{method!r} is not a NAS method", f"use one of {', '.join(METHODS)}")
    defaults = {**COMMON, **METHOD_DEFAULTS[method]}
    unknown = sorted(set(settings or {}) - set(defaults))
    if unknown:
        raise InputError(f"settings.{unknown[0]}", f"is not a {method} setting",
                         f"known: {', '.join(sorted(defaults))}")
    s = {**defaults, **(settings or {})}
    if not isinstance(s["dataset"], str) or not s["dataset"]:
        raise InputError("settings.dataset", f"must be a non-empty string, is {s['dataset']!r}",
                         "give digits, a .npz path or a file:// URI")
    for key in POSITIVE_INTS:
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] < 1:
            raise InputError(f"settings.{key}", f"must be an integer >= 1, is {s[key]!r}")
    if s["cells"] < 2:
        raise InputError("settings.cells", "must be >= 2 (a normal and a reduction cell)")
    for key in NON_NEGATIVE + tuple(k for k in ("t0", "beta", "grace_temperature", "prune_threshold") if k in s):
        if isinstance(s[key], bool) or not isinstance(s[key], (int, float)) or not s[key] >= 0:
            raise InputError(f"settings.{key}", f"must be a number >= 0, is {s[key]!r}")
        s[key] = float(s[key])
    ops = s["ops"]
    if (not isinstance(ops, list) or not all(isinstance(o, str) for o in ops) or len(set(ops)) != len(ops)
            or any(o not in CANDIDATE_OPS for o in ops)):
        raise InputError("settings.ops", f"{ops!r} is not a list of distinct candidate ops",
                         f"pick from {', '.join(CANDIDATE_OPS)}")
    if all(o == ZERO for o in ops):
        raise InputError("settings.ops", "has no op besides zero", "add one")
    s["ops"] = [o for o in CANDIDATE_OPS if o in ops]  # one canonical order: alphas' columns
    if method == "darts" and s["order"] not in (1, 2):
        raise InputError("settings.order", f"must be 1 or 2, is {s['order']!r}")
    if method == "darts" and (isinstance(s["warmup_epochs"], bool) or not isinstance(s["warmup_epochs"], int)
                              or not 0 <= s["warmup_epochs"] < s["epochs"]):
        raise InputError("settings.warmup_epochs", f"must be an integer from 0 to epochs - 1, is {s['warmup_epochs']!r}")
    if method == "asap":
        if not (0 < s["prune_threshold"] < 1 and 0 < s["beta"] < 1 and s["t0"] > 0):
            raise InputError("settings", "asap needs 0 < prune_threshold < 1, 0 < beta < 1 and t0 > 0")
    return s
