"""The offline benchmark functions: known optima, fidelity behaviour, determinism."""

import math

import numpy as np
import pytest

from rung_trainables import benchmarks as B

pytestmark = pytest.mark.unit


def test_counting_ones_optimum_and_regret():
    cat, cont = [1] * 8, [1.0] * 8
    for budget in (9, 81, 729):
        assert B.counting_ones(cat, cont, budget, seed=3) == -16.0
    assert B.counting_ones_true(cat, cont) == -16.0
    assert B.counting_ones_regret(-16.0, 16) == 0.0
    assert B.counting_ones_regret(B.counting_ones_true([0] * 8, [0.0] * 8), 16) == 1.0


def test_counting_ones_noise_shrinks_with_budget_and_resumes_exactly():
    cat, cont = [1, 0, 1, 0], [0.3, 0.5, 0.7, 0.9]
    true = B.counting_ones_true(cat, cont)
    errors = [np.mean([abs(B.counting_ones(cat, cont, b, seed=s) - true) for s in range(40)])
              for b in (9, 729)]
    assert errors[1] < errors[0] / 3
    state = B.counting_ones_start(cat, cont, seed=1)
    for b in (9, 27, 81):
        state = B.counting_ones_advance(state, cont, b)
    assert B.counting_ones_value(cat, state) == B.counting_ones(cat, cont, 81, seed=1)
    assert B.counting_ones(cat, cont, 81, seed=1) == B.counting_ones(cat, cont, 81, seed=1)
    assert B.counting_ones(cat, cont, 81, seed=1) != B.counting_ones(cat, cont, 81, seed=2)


@pytest.mark.parametrize("x1,x2", B.BRANIN_ARGMINS)
def test_branin_minimum_at_full_fidelity(x1, x2):
    assert B.branin(x1, x2) == pytest.approx(B.BRANIN_MIN, abs=1e-6)
    assert B.branin(x1, x2, z=1) != pytest.approx(B.BRANIN_MIN, abs=1e-3)


def test_branin_minimum_is_global_on_a_grid():
    (lo1, hi1), (lo2, hi2) = B.BRANIN_BOUNDS
    grid = [B.branin(a, b) for a in np.linspace(lo1, hi1, 61) for b in np.linspace(lo2, hi2, 61)]
    assert min(grid) >= B.BRANIN_MIN - 1e-9


def test_hartmann_optima_at_full_fidelity():
    assert B.hartmann(B.HARTMANN6_ARGMIN) == pytest.approx(B.HARTMANN6_MIN, abs=1e-5)
    assert B.hartmann(B.HARTMANN3_ARGMIN) == pytest.approx(B.HARTMANN3_MIN, abs=1e-5)
    # Noise and bias vanish at z = 100 whatever the preset.
    for preset in B.HARTMANN_PRESETS:
        assert B.hartmann(B.HARTMANN6_ARGMIN, 100, preset=preset, seed=9) == B.hartmann_true(B.HARTMANN6_ARGMIN)
    assert B.hartmann_regret(B.HARTMANN6_ARGMIN) == pytest.approx(0, abs=1e-5)
    rng = np.random.default_rng(0)
    assert all(B.hartmann(x) > B.HARTMANN6_MIN for x in rng.random((500, 6)))


def test_hartmann_low_fidelity_differs_and_is_deterministic_per_seed():
    x = B.HARTMANN6_ARGMIN
    low = B.hartmann(x, 3, preset="moderate", seed=1)
    assert low != pytest.approx(B.hartmann_true(x), abs=0.1)
    assert low == B.hartmann(x, 3, preset="moderate", seed=1)
    assert low != B.hartmann(x, 3, preset="moderate", seed=2)
    assert low != B.hartmann(x, 4, preset="moderate", seed=1)
    # bias flattens: without noise the low-fidelity value is higher (less negative)
    assert B.hartmann(x, 1, bias=3.0) > B.hartmann(x, 10, bias=3.0) > B.hartmann(x, 100, bias=3.0)


def test_costs_and_fidelity_scale():
    assert B.mf_cost(100) == pytest.approx(1.0) and B.mf_cost(1) == pytest.approx(0.05 + 0.95e-4)
    assert B.branin_cost(100) == pytest.approx(1.0) and B.branin_cost(1) == pytest.approx(0.05)
    assert B.fidelity_scale(1) == 0 and B.fidelity_scale(10) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        B.fidelity_scale(0.5)


def test_config_seed_is_stable():
    # Fixed value: the noise of a (config, budget) must not change between releases or runs.
    assert B.config_seed(0, 0.5, 3) == B.config_seed(0, 0.5, 3.0) == 12586832111733449182
    assert B.config_seed(0, 0.5) != B.config_seed(1, 0.5)
    assert math.isfinite(B.hartmann([0.5] * 6, 2, preset="terrible", seed=0))
