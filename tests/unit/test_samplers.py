"""Samplers: determinism, rebuild, bounds, and each algorithm's defining behaviour."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.special import ndtr
from scipy.stats import qmc

from rung.errors import InputError
from rung.search import (SAMPLERS, AnnealingSampler, EvolutionSampler, GridSampler, KDESampler,
                         Observation, RandomSampler, Sampler, SobolSampler)
from rung.search.kde import snap
from rung.space import Param, SearchSpace

pytestmark = pytest.mark.unit

MIXED = SearchSpace([
    Param("x", "float", -2.0, 3.0),
    Param("lr", "float", 1e-5, 1e-1, log=True),
    Param("k", "int", 0, 9),
    Param("width", "int", 1, 1000, log=True),
    Param("act", "categorical", choices=("relu", "tanh", "gelu")),
    Param("bs", "ordinal", choices=(16, 32, 64, 128)),
])


def quad(c: dict) -> float:
    return (c["x"] - 1.0) ** 2 + (math.log10(c["lr"]) + 3) ** 2 + (c["act"] != "gelu")


def history(space: SearchSpace, n: int, f=quad, budget: float = 1.0, seed: int = 7) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        c = space.sample(rng)
        out.append(Observation(t, c, budget, f(c)))
    return out


def make(name: str, space: SearchSpace = MIXED, seed: int = 3, **settings) -> Sampler:
    return SAMPLERS[name](space, seed, **settings)


ALL = list(SAMPLERS)
MODEL = ["tpe", "evolution", "annealing"]  # samplers whose proposals depend on observations


def test_registry_names_classes_and_settings():
    assert set(SAMPLERS) == {"random", "grid", "sobol", "tpe", "evolution", "annealing", "motpe"}
    assert SAMPLERS["tpe"] is KDESampler and SAMPLERS["random"] is RandomSampler
    for cls in SAMPLERS.values():
        assert issubclass(cls, Sampler) and isinstance(cls.SETTINGS, dict)
    assert KDESampler.SETTINGS == {"randomFraction": 1 / 3, "topPercent": 15, "numSamples": 64,
                                   "bandwidthFactor": 3, "minBandwidth": 1e-3, "minPoints": None}
    assert EvolutionSampler.SETTINGS == {"populationSize": 20, "sampleSize": 5}
    assert AnnealingSampler.SETTINGS == {"initialTemperature": 1.0, "coolingRate": 0.95, "stepSize": 0.2}
    assert GridSampler.SETTINGS == {"gridPoints": 5}


@pytest.mark.parametrize("name", ALL)
def test_deterministic_per_index(name):
    obs = history(MIXED, 60)
    a, b = make(name), make(name)
    for i in (0, 1, 17, 60):
        assert a.propose(i, obs) == b.propose(i, obs)
    assert a.propose(60, obs) != a.propose(61, obs)
    if name != "grid":  # the grid ignores the seed
        assert make(name, seed=4).propose(60, obs) != a.propose(60, obs)


@pytest.mark.parametrize("name", MODEL)
def test_rebuilt_sampler_proposes_the_same(name):
    obs = history(MIXED, 80)
    live = make(name)
    for n in range(0, 81, 4):  # the scheduler's append-only list, growing between asks
        live.propose(n, obs[:n])
    for i in range(80, 90):
        assert live.propose(i, obs) == make(name).propose(i, obs)


@pytest.mark.parametrize("name", MODEL)
def test_independent_of_observation_order(name):
    obs = history(MIXED, 80)
    shuffled = obs[:]
    random.Random(1).shuffle(shuffled)
    for i in range(80, 90):
        assert make(name).propose(i, obs) == make(name).propose(i, shuffled)


def test_kde_cache_follows_a_replaced_or_shortened_list():
    obs = history(MIXED, 80)
    other = history(MIXED, 80, seed=8)
    s = make("tpe", randomFraction=0.0)
    for seq in (obs, obs[:50], other, obs[:79] + [other[79]], obs):
        assert s.propose(100, seq) == make("tpe", randomFraction=0.0).propose(100, seq)


@pytest.mark.parametrize("name", ALL)
def test_values_inside_bounds_and_typed(name):
    obs = history(MIXED, 60)
    s = make(name)
    for i in range(150):
        c = s.propose(i, obs)
        if c is None:  # grid exhausted
            assert name == "grid"
            break
        assert set(c) == set(MIXED.names)
        assert -2.0 <= c["x"] <= 3.0 and isinstance(c["x"], float)
        assert 1e-5 <= c["lr"] <= 1e-1
        assert c["k"] in range(0, 10) and isinstance(c["k"], int)
        assert 1 <= c["width"] <= 1000 and isinstance(c["width"], int)
        assert c["act"] in ("relu", "tanh", "gelu")
        assert c["bs"] in (16, 32, 64, 128)


# ---- grid ------------------------------------------------------------------------------

def test_grid_covers_exactly_the_product_in_order_then_none():
    s = GridSampler(MIXED, 0, gridPoints=3)
    expected = list(MIXED.grid(3))
    assert len(expected) == MIXED.grid_size(3) == 3 * 3 * 3 * 3 * 3 * 4
    got = [s.propose(i, []) for i in range(len(expected))]
    assert got == expected
    assert s.propose(len(expected), []) is None and s.propose(10 ** 9, []) is None
    assert s.propose(5, []) == expected[5]  # random access, any order


def test_grid_rejects_bad_points():
    with pytest.raises(InputError, match="gridPoints"):
        GridSampler(MIXED, 0, gridPoints=0)


# ---- sobol ------------------------------------------------------------------------------

def test_sobol_lower_discrepancy_than_random():
    space = SearchSpace([Param(f"u{i}", "float", 0.0, 1.0) for i in range(4)])
    n = 128
    sob, rnd = SobolSampler(space, 5), RandomSampler(space, 5)
    ps = np.array([space.encode(sob.propose(i, [])) for i in range(n)])
    pr = np.array([space.encode(rnd.propose(i, [])) for i in range(n)])
    assert qmc.discrepancy(ps) < 0.5 * qmc.discrepancy(pr)


def test_sobol_any_call_order_and_categorical_cells():
    space = SearchSpace([Param("a", "float", 0, 1), Param("c", "categorical", choices=tuple("abcde"))])
    forward = [SobolSampler(space, 2).propose(i, []) for i in range(64)]
    s = SobolSampler(space, 2)
    for i in [40, 3, 63, 0, 41]:  # going back resets the engine to the same scrambling
        assert s.propose(i, []) == forward[i]
    # 64 balanced points over 5 equal cells: each level 12 or 13 times
    counts = {lv: sum(c["c"] == lv for c in forward) for lv in "abcde"}
    assert all(12 <= v <= 13 for v in counts.values()), counts


# ---- KDE / TPE --------------------------------------------------------------------------

def test_kde_needs_min_points_plus_two_on_a_budget():
    s = KDESampler(MIXED, 0)
    n_min = len(MIXED) + 1
    obs = history(MIXED, n_min + 2)
    assert s.model_budget(obs[: n_min + 1]) is None
    assert s.model_budget(obs) == 1.0
    assert KDESampler(MIXED, 0, minPoints=3).model_budget(obs[:5]) == 1.0
    assert KDESampler(MIXED, 0, minPoints=3).model_budget(obs[:4]) is None


def test_kde_uses_largest_budget_with_enough_points():
    s = KDESampler(MIXED, 0, minPoints=3)
    low = history(MIXED, 30, budget=1.0)
    mid = [Observation(o.trial, o.config, 3.0, o.loss) for o in low[:5]]
    high = [Observation(o.trial, o.config, 9.0, o.loss) for o in low[:4]]  # one short
    assert s.model_budget(low + mid + high) == 3.0
    assert s.model_budget(low + mid + high + [Observation(5, low[5].config, 9.0, 1.0)]) == 9.0


def test_kde_good_bad_split_sizes_and_members():
    s = KDESampler(MIXED, 0)  # N_min = 7
    assert s.split_sizes(9) == (7, 7)         # overlapping at the threshold
    assert s.split_sizes(100) == (15, 85)
    assert s.split_sizes(5000) == (750, 4250)
    assert KDESampler(MIXED, 0, topPercent=50).split_sizes(20) == (10, 10)
    obs = history(MIXED, 100)
    obs[3] = Observation(3, obs[3].config, 1.0, math.inf)  # a failure is always bad
    s.model_budget(obs)
    good, bad = s._fit(1.0)
    ranked = sorted(obs, key=lambda o: (o.loss, o.trial))
    enc = lambda os: np.array([MIXED.encode(o.config) for o in os])
    np.testing.assert_allclose(good.data, enc(ranked[:15]))
    np.testing.assert_allclose(bad.data, enc(ranked[15:]))


def test_kde_ties_split_by_trial_whatever_the_order():
    space = SearchSpace([Param("x", "float", 0, 1)])
    obs = [Observation(t, {"x": t / 40}, 1.0, 1.0) for t in range(40)]  # all tied
    s = KDESampler(space, 0, minPoints=2, topPercent=10)
    s.model_budget(obs[::-1])
    good, _ = s._fit(1.0)
    np.testing.assert_allclose(good.data[:, 0], [0, 1 / 40, 2 / 40, 3 / 40])


def test_kde_density_matches_direct_formula():
    space = SearchSpace([Param("a", "float", 0, 1), Param("c", "categorical", choices=tuple("abcd")),
                         Param("k", "int", 1, 5)])
    obs = history(space, 30, f=lambda c: c["a"])
    s = KDESampler(space, 0, minPoints=2, topPercent=30)
    s.model_budget(obs)
    for kde in s._fit(1.0):
        x = space.sample_encoded(np.random.default_rng(0), 20)
        x[:, 2] = snap(space.params[2], x[:, 2])
        n, d = kde.data.shape
        bw = 1.06 * kde.data.std(axis=0) * n ** (-1 / (d + 4))
        h = np.maximum(bw[[0, 2]], 1e-3)
        lam = np.clip(bw[1], 1e-3, 3 / 4)
        want = []
        for xi in x:
            total = 0.0
            for p in kde.data:
                k = 1.0
                for j, hj in zip((0, 2), h):  # truncated normal on [0, 1]
                    z = (xi[j] - p[j]) / hj
                    k *= math.exp(-z * z / 2) / math.sqrt(2 * math.pi) / hj
                    k /= ndtr((1 - p[j]) / hj) - ndtr(-p[j] / hj)
                k *= (1 - lam) if xi[1] == p[1] else lam / 3
                total += k
            want.append(math.log(total / n))
        np.testing.assert_allclose(kde.logpdf(x), want, rtol=1e-6, atol=1e-9)


def test_kde_sampling_keeps_a_categorical_centre_with_probability_one_minus_lambda():
    """Widening (bandwidthFactor) applies to numeric kernels only: a binary dimension keeps
    its centre's level with probability 1 - lambda/2 (lambda/2 of the redraws hit it again)."""
    space = SearchSpace([Param("b", "categorical", choices=(0, 1)), Param("a", "float", 0, 1)])
    obs = history(space, 40, f=lambda c: c["a"])
    s = KDESampler(space, 0, minPoints=2, topPercent=30)
    s.model_budget(obs)
    good, _ = s._fit(1.0)
    lam = float(good.lam[0])
    assert 0.05 < lam < 0.45     # widened by 3, the keep rate would fall visibly
    # sample() picks its centres first, so a generator seeded alike names them
    rng = np.random.default_rng(5)
    idx = np.random.default_rng(5).integers(len(good.data), size=20000)
    x = good.sample(rng, 20000, factor=3.0)
    same = np.mean(x[:, 0] == good.data[idx, 0])
    assert abs(same - (1 - lam / 2)) < 0.02, (same, lam)


def test_kde_snap_equals_encode_of_decode():
    u = np.concatenate([np.random.default_rng(0).random(3000), np.linspace(0, 1, 1001)])
    for p in MIXED.params:
        if p.kind in ("int", "ordinal"):
            np.testing.assert_array_equal(snap(p, u), [p.encode(p.decode(v)) for v in u])


def test_kde_concentrates_near_the_optimum():
    space = SearchSpace([Param(f"x{i}", "float", 0, 1) for i in range(4)])
    opt = np.full(4, 0.3)
    obs = history(space, 120, f=lambda c: float(np.sum((space.encode(c) - opt) ** 2)))
    kde = KDESampler(space, 1, randomFraction=0.0)
    rnd = RandomSampler(space, 1)
    dist = lambda s: np.mean([np.linalg.norm(space.encode(s.propose(i, obs)) - opt) for i in range(200, 260)])
    assert dist(kde) < 0.5 * dist(rnd)


def test_kde_unseen_categorical_level_scores_finite():
    space = SearchSpace([Param("c", "categorical", choices=tuple("abcdef")), Param("x", "float", 0, 1)])
    rng = np.random.default_rng(0)
    # only levels a and b ever observed; good ones all at 'a' (zero spread: minimum bandwidth)
    obs = [Observation(t, {"c": "a" if t % 2 else "b", "x": float(rng.random())}, 1.0, float(t % 2 == 0))
           for t in range(40)]
    s = KDESampler(space, 0, randomFraction=0.0)
    s.model_budget(obs)
    good, bad = s._fit(1.0)
    x = np.array([[lv, u] for lv in range(6) for u in (0.0, 0.37, 1.0)])
    with np.errstate(all="raise"):
        score = good.logpdf(x) - bad.logpdf(x)
        proposals = [s.propose(i, obs) for i in range(50)]
    assert np.all(np.isfinite(score))
    unseen = x[:, 0] >= 2
    assert score[x[:, 0] == 0].min() > score[unseen].max()  # 'a' is where the good ones are
    assert all(p["c"] in "abcdef" for p in proposals)


def test_kde_random_fraction_about_one_third():
    # 100 levels; the model always returns level 0, a random config almost never does
    levels = tuple(range(100))
    space = SearchSpace([Param("c", "categorical", choices=levels)])
    obs = [Observation(t, {"c": 0 if t < 10 else t}, 1.0, 0.0 if t < 10 else 1.0) for t in range(60)]
    s = KDESampler(space, 11, minPoints=3, topPercent=10)
    off_model = sum(s.propose(i, obs)["c"] != 0 for i in range(900)) / 900
    assert 0.27 < off_model < 0.40  # expected 1/3 * 99/100
    assert sum(KDESampler(space, 11, minPoints=3, topPercent=10, randomFraction=0.0)
               .propose(i, obs)["c"] != 0 for i in range(100)) <= 5


def test_kde_failed_losses_and_nan_are_handled():
    obs = history(MIXED, 40)
    obs = [Observation(o.trial, o.config, o.budget, math.inf if o.trial % 3 else float("nan")) for o in obs]
    c = KDESampler(MIXED, 0, randomFraction=0.0).propose(40, obs)
    assert set(c) == set(MIXED.names)


def test_kde_rejects_bad_settings():
    with pytest.raises(InputError, match="topPercent"):
        KDESampler(MIXED, 0, topPercent=0)
    with pytest.raises(InputError, match="randomFraction"):
        KDESampler(MIXED, 0, randomFraction=1.5)
    with pytest.raises(InputError, match="numSamples"):
        KDESampler(MIXED, 0, numSamples=2.5)


# ---- evolution -----------------------------------------------------------------------------

def diff_keys(a: dict, b: dict) -> list[str]:
    return [k for k in a if a[k] != b[k]]


def test_evolution_random_until_population_full():
    obs = history(MIXED, 19)
    s = EvolutionSampler(MIXED, 3)
    assert s.propose(19, obs) == RandomSampler(MIXED, 3).propose(19, obs)


def test_evolution_mutates_exactly_one_param_of_a_tournament_winner():
    obs = history(MIXED, 50)
    s = EvolutionSampler(MIXED, 3)
    pop = s.population(obs)
    assert [o.trial for o in pop] == list(range(30, 50))  # the 20 most recent
    ranked = sorted(pop, key=lambda o: o.loss)
    for i in range(50, 90):
        child = s.propose(i, obs)
        parents = [o for o in pop if len(diff_keys(child, o.config)) == 1]
        assert parents, child
        # a winner of 5 sampled members is never among the 4 worst
        assert any(p in ranked[:-4] for p in parents)
    # a tournament over the whole population always picks the best
    best = ranked[0]
    full = EvolutionSampler(MIXED, 3, sampleSize=20)
    for i in range(50, 70):
        assert len(diff_keys(full.propose(i, obs), best.config)) == 1


def test_evolution_ages_out_old_trials_and_uses_largest_budget():
    space = SearchSpace([Param("x", "float", 0, 1), Param("k", "int", 1, 3)])
    obs = [Observation(0, {"x": 0.5, "k": 2}, 1.0, -100.0)]  # the best ever, but old
    obs += [Observation(t, {"x": t / 30, "k": 1}, 1.0, float(t)) for t in range(1, 6)]
    # trial 6 looks best at the small budget, is bad at the large one
    obs += [Observation(6, {"x": 0.9, "k": 3}, 1.0, -50.0), Observation(6, {"x": 0.9, "k": 3}, 9.0, 99.0)]
    s = EvolutionSampler(space, 0, populationSize=5, sampleSize=5)
    assert [o.trial for o in s.population(obs)] == [2, 3, 4, 5, 6]
    assert s.population(obs)[-1].budget == 9.0
    # the same trial told twice at one budget: the lower loss counts, in any order
    twice = obs + [Observation(6, {"x": 0.9, "k": 3}, 9.0, 0.5)]
    assert s.population(twice)[-1].loss == s.population(twice[::-1])[-1].loss == 0.5
    for i in range(10, 20):
        child = s.propose(i, obs)  # the winner is trial 2 (loss 2)
        assert len(diff_keys(child, {"x": 2 / 30, "k": 1})) == 1


def test_evolution_mutation_changes_ints_and_bounds():
    space = SearchSpace([Param("k", "int", 0, 1), Param("x", "float", 0, 1)])
    obs = [Observation(t, {"k": 0, "x": 1.0}, 1.0, float(t)) for t in range(20)]
    s = EvolutionSampler(space, 0)
    for i in range(20, 60):
        assert len(diff_keys(s.propose(i, obs), {"k": 0, "x": 1.0})) == 1


# ---- annealing -------------------------------------------------------------------------------

def chain_obs(losses, space=MIXED):
    rng = np.random.default_rng(0)
    return [Observation(t, space.sample(rng), 1.0, float(v)) for t, v in enumerate(losses)]


def test_annealing_random_without_observations():
    assert AnnealingSampler(MIXED, 4).propose(0, []) == RandomSampler(MIXED, 4).propose(0, [])


def test_annealing_accepts_improvements_and_cools():
    s = AnnealingSampler(MIXED, 0)
    state = s.chain(chain_obs([10, 9, 8, 7, 6, 5]))
    assert state.current.trial == 5 and state.accepted == (0, 1, 2, 3, 4, 5)
    assert state.steps == 5 and state.temperature == pytest.approx(0.95 ** 5)
    # at a very low temperature a worse trial is never accepted
    cold = AnnealingSampler(MIXED, 0, initialTemperature=1e-6)
    assert cold.chain(chain_obs([1] + [2, 3] * 20)).accepted == (0,)
    # at a very high one almost every worse trial is
    hot = AnnealingSampler(MIXED, 0, initialTemperature=1e6, coolingRate=1.0)
    assert len(hot.chain(chain_obs([1] + [2, 3] * 20)).accepted) >= 38
    # a failure never replaces the current state
    assert hot.chain(chain_obs([1, math.inf, math.inf])).accepted == (0,)


def test_annealing_steps_shrink_as_it_cools():
    space = SearchSpace([Param(f"x{i}", "float", 0, 1) for i in range(3)])
    s = AnnealingSampler(space, 0, coolingRate=0.9)

    def mean_step(n):
        obs = chain_obs([0.0] + [1.0] * (n - 1), space)  # current stays trial 0 once cold
        cur = space.encode(s.chain(obs).current.config)
        return np.mean([np.linalg.norm(space.encode(s.propose(i, obs)) - cur) for i in range(100, 200)])

    hot, cold = mean_step(1), mean_step(40)  # T: 1 vs 0.9^39 ~ 0.016
    assert cold < 0.3 * hot


def test_annealing_neighbour_always_differs():
    space = SearchSpace([Param("k", "int", 1, 3), Param("c", "categorical", choices=("a", "b"))])
    obs = chain_obs([0.0] + [1.0] * 60, space)  # cold: the int step rarely moves on its own
    s = AnnealingSampler(space, 0)
    cur = s.chain(obs).current.config
    for i in range(100, 140):
        assert s.propose(i, obs) != cur


def test_annealing_uses_per_trial_uniforms_not_order():
    obs = chain_obs([5, 6, 4, 7, 3, 8, 2, 9])
    shuffled = obs[::-1]
    s = AnnealingSampler(MIXED, 1)
    assert s.chain(obs) == s.chain(shuffled)
