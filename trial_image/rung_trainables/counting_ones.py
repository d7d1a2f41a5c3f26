"""Counting ones (BOHB paper). Params cat0..cat{n-1} in {0, 1} and x0..x{m-1} in [0, 1];
budget = Bernoulli draws per continuous param. Optional param `seed` (default 0).

Reports `loss` (the noisy value) at step = budget, plus `loss_true` and `regret` of the
noise-free value. A promoted segment resumes its checkpointed draws and only draws the
extra ones, with the same result as drawing all of them at once.
"""

from rung import trial
from rung_trainables import benchmarks as B
from rung.errors import InputError
from rung_trainables._params import floats, indexed, number


def main() -> None:
    p = trial.params()
    cat = [int(number(p, f"cat{i}")) for i in range(len(indexed(p, "cat")))]
    cont = floats(p, "x")
    if not cat and not cont:
        raise InputError("params", "has no cat0.. or x0..", "give the search space at least one")
    if any(c not in (0, 1) for c in cat) or any(not 0 <= x <= 1 for x in cont):
        raise InputError("params", "cat* must be 0 or 1 and x* in [0, 1]", "fix the search space")
    draws = round(trial.budget())
    state = trial.load_checkpoint() or B.counting_ones_start(cat, cont, number(p, "seed", int, 0))
    state = B.counting_ones_advance(state, cont, draws)
    true = B.counting_ones_true(cat, cont)
    trial.report(draws, loss=B.counting_ones_value(cat, state), loss_true=true,
                 regret=B.counting_ones_regret(true, len(cat) + len(cont)))
    trial.save_checkpoint(state, draws)


if __name__ == "__main__":
    main()
