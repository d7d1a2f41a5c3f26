"""Multi-fidelity Hartmann-6 (Hartmann-3 when only x0..x2 are given), params in [0, 1].

budget = fidelity z in [1, 100]. Optional params: `preset` (good | moderate | bad |
terrible, default moderate), or `bias` and `noise`; `seed` (default 0). Reports `loss` at
step = budget, plus `loss_true` / `regret` (noise-free, z = 100) and `cost`.
"""

from rung import trial
from rung_trainables import benchmarks as B
from rung.errors import InputError
from rung_trainables._params import fidelity, floats, number


def main() -> None:
    p = trial.params()
    x = floats(p, "x")
    if len(x) not in (3, 6):
        raise InputError("params", f"has {len(x)} of x0..x5", "give x0..x5 (or x0..x2 for Hartmann-3)")
    z = fidelity(trial.budget(), B.Z_MAX)
    preset = str(p.get("preset", "moderate"))
    if preset not in B.HARTMANN_PRESETS:
        raise InputError("param preset", f"{preset!r} is unknown", f"use one of {sorted(B.HARTMANN_PRESETS)}")
    bias, noise = B.HARTMANN_PRESETS[preset]
    loss = B.hartmann(x, z, bias=number(p, "bias", float, bias), noise=number(p, "noise", float, noise),
                      seed=number(p, "seed", int, 0))
    trial.report(z, loss=loss, loss_true=B.hartmann_true(x), regret=B.hartmann_regret(x),
                 cost=B.mf_cost(z))


if __name__ == "__main__":
    main()
