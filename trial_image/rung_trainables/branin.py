"""Multi-fidelity Branin. Params x0 in [-5, 10], x1 in [0, 15]; budget = fidelity z in
[1, 100] (z = 100 is the standard Branin, minimum 0.397887). Reports `loss` at step =
budget, plus `loss_true` / `regret` at full fidelity and `cost`.
"""

from rung import trial
from rung_trainables import benchmarks as B
from rung_trainables._params import fidelity, number


def main() -> None:
    p = trial.params()
    x0, x1 = number(p, "x0"), number(p, "x1")
    z = fidelity(trial.budget(), B.Z_MAX)
    true = B.branin(x0, x1)
    trial.report(z, loss=B.branin(x0, x1, z), loss_true=true, regret=true - B.BRANIN_MIN,
                 cost=B.branin_cost(z))


if __name__ == "__main__":
    main()
