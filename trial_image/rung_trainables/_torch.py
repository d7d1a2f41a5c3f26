"""Helpers of the torch trainables (they import torch themselves, only when it is there)."""

from __future__ import annotations


def cpu_copy(obj):
    """A copy with every tensor on the CPU: a checkpoint loads on any device."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj
