"""Reading a trainable's params. Bad ones raise rung's InputError: the process exits 1 and
the SDK records the one-line message in the result file (a pod's termination message)."""

from __future__ import annotations

from rung.errors import InputError


def indexed(params: dict, name: str) -> list:
    """[params[name0], params[name1], ...] for as long as the keys are consecutive."""
    values = []
    while f"{name}{len(values)}" in params:
        values.append(params[f"{name}{len(values)}"])
    return values


def integer(value) -> int:
    """An int from JSON that may carry it as 64 or 64.0 (samplers emit floats for ints)."""
    return int(round(float(value)))


def number(params: dict, key: str, cast=float, default=None):
    if key not in params:
        if default is None:
            raise InputError(f"param {key}", "is missing", "add it to the search space")
        return default
    try:
        return cast(params[key])
    except (TypeError, ValueError):
        raise InputError(f"param {key}", f"{params[key]!r} is not a number", "give a number") from None


def floats(params: dict, name: str) -> list[float]:
    return [number(params, f"{name}{i}") for i in range(len(indexed(params, name)))]


def fidelity(z: float, z_max: float) -> float:
    if not 1 <= z <= z_max:
        raise InputError("budget", f"{z:g} is outside the fidelity range [1, {z_max:g}]",
                         f"set budget min >= 1 and max <= {z_max:g}")
    return z
