"""Multi-objective search against hand-worked cases: Pareto fronts, crowding, hypervolume,
the bounded front of a status, MO-ASHA's promotions and MOTPE's good/bad split."""

import itertools
import math
import random

import numpy as np
import pytest

from rung.pareto import (crowding_distance, front_subset, greedy_hypervolume_subset, hypervolume,
                         loss_matrix, non_dominated_sort, pareto_front, pareto_ranks, rank_order)
from rung.records import SegmentRecord, SegmentStatus, TrialRecord
from rung.schedulers.asha import ASHA
from rung.schedulers.mo_asha import MOASHA
from rung.schedulers.simulate import simulate
from rung.search.base import Observation
from rung.search.kde import KDESampler
from rung.search.motpe import MOTPESampler
from rung.search.random import RandomSampler
from rung.space import Param, SearchSpace
from test_schedulers import continue_alike

pytestmark = pytest.mark.unit

INF, NAN = math.inf, math.nan

# index:      0       1       2       3       4       5       6         7         8         9
POINTS = [(1, 5), (2, 3), (3, 4), (4, 1), (5, 5), (2, 3), (INF, 0), (3, 2), (0, NAN), (1, 6)]


# ---- fronts, ranks, crowding --------------------------------------------------------

def test_fronts_and_ranks_of_a_hand_worked_set():
    fronts = [f.tolist() for f in non_dominated_sort(POINTS)]
    # (2, 3) twice: equal points do not dominate each other; (1, 6) is beaten by (1, 5) alone,
    # which is no better in the first objective
    assert fronts == [[0, 1, 3, 5, 7], [2, 9], [4]]
    assert pareto_ranks(POINTS).tolist() == [0, 0, 1, 0, 2, 0, 3, 0, 3, 1]  # non-finite: after the last
    assert pareto_front(POINTS).tolist() == [0, 1, 3, 5, 7]
    assert [f.tolist() for f in non_dominated_sort(POINTS, limit=5)] == [[0, 1, 3, 5, 7]]


def test_non_finite_points_are_never_non_dominated():
    assert pareto_front([(INF, INF), (NAN, 0.0), (-INF, 0.0)]).tolist() == []
    assert pareto_front([(INF, -1.0), (3.0, 3.0)]).tolist() == [1]
    assert rank_order([(INF, 1.0), (5.0, 5.0), (NAN, 0.0)]) == [1, 0, 2]
    # a failed segment has no losses; a row of the wrong length is no result either
    np.testing.assert_array_equal(loss_matrix([(1, 2), None, (3,)]), [(1, 2), (INF, INF), (INF, INF)])
    assert rank_order(loss_matrix([None, None])) == [0, 1]


def test_crowding_distance_hand_worked():
    # objective ranges 3 and 4; (2, 3): 2/3 + 3/4; (3, 2): 2/3 + 2/4
    np.testing.assert_allclose(crowding_distance([(1, 5), (2, 3), (3, 2), (4, 1)]),
                               [INF, 2 / 3 + 3 / 4, 2 / 3 + 2 / 4, INF])
    # a constant objective separates nothing: identical points are tied, not extremes
    np.testing.assert_array_equal(crowding_distance([(1, 1)] * 3), [0, 0, 0])


def test_rank_order_puts_extremes_of_a_front_first():
    points = [(2, 2), (1, 4), (3, 3), (4, 1), (5, 5), (INF, 0)]
    assert rank_order(points) == [1, 3, 0, 2, 4, 5]


# ---- hypervolume --------------------------------------------------------------------

def test_hypervolume_two_objectives_hand_worked():
    front = [(1, 3), (2, 2), (3, 1)]               # a staircase: 1 + 2 + 3 under (4, 4)
    assert hypervolume(front, (4, 4)) == 6.0
    # dominated, outside the reference, on its boundary, or failed: no volume added
    assert hypervolume(front + [(3, 3), (5, 0), (4, 0), (INF, 0), (NAN, 0), (-INF, 3.5)], (4, 4)) == 6.0
    assert hypervolume([(1, 1)], (1, 2)) == 0.0 and hypervolume([], (1, 1)) == 0.0


def _union_volume(points, ref):
    """Inclusion-exclusion over every subset of boxes: exact and independent of the sweep."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * np.prod(np.clip(np.asarray(ref) - corner, 0, None))
    return total


def test_hypervolume_three_and_more_objectives():
    # three unit-offset boxes under (2, 2, 2): 3 * 4 - 3 * 2 + 1
    assert hypervolume([(0, 0, 1), (1, 0, 0), (0, 1, 0)], (2, 2, 2)) == 7.0
    rng = np.random.default_rng(0)
    for d in (2, 3, 4):
        points = rng.random((7, d))
        assert hypervolume(points, np.ones(d)) == pytest.approx(_union_volume(points, np.ones(d)))


def test_greedy_hypervolume_subset_hand_worked():
    # alone under (8.8, 8.8): 5.44, 5.44, 12.54 -> the middle one first; then the gains over
    # it are 5.44 - 3.04 = 2.40 and 5.44 - 2.64 = 2.80
    points = [(2, 8), (8, 2), (5, 5.5)]
    assert greedy_hypervolume_subset(points, 3, (8.8, 8.8)) == [2, 1, 0]
    assert greedy_hypervolume_subset([(1, 2), (2, 1)], 2, (3, 3)) == [0, 1]  # a tie: lower index


# ---- the bounded front of a status --------------------------------------------------

def test_front_subset_keeps_the_extremes_and_thins_evenly():
    xs = [3, 0, 10, 2, 5, 1]
    points = [(x, 10 - x) for x in xs] + [(6, 6), (INF, 0)]   # one dominated, one failed
    # crowding (range 10): x=1 and x=2 tie at 0.4, the higher index (x=1) goes; then x=2
    # (0.6 against 0.8 and 1.4), then x=3 (1.0 against 1.4)
    assert sorted(xs[i] for i in front_subset(points, 5)) == [0, 2, 3, 5, 10]
    assert sorted(xs[i] for i in front_subset(points, 3)) == [0, 5, 10]
    assert sorted(xs[i] for i in front_subset(points, 2)) == [0, 10]
    assert front_subset(points, 10).tolist() == [0, 1, 2, 3, 4, 5]
    assert front_subset(points, 0).tolist() == []


# ---- MO-ASHA -------------------------------------------------------------------------

SPACE = SearchSpace([Param("x", "float", 0.0, 1.0), Param("y", "float", 0.0, 1.0)])


def make(cls, bmin=1, bmax=9, max_trials=100, seed=0, **settings):
    return cls(RandomSampler(SPACE, seed), bmin, bmax, max_trials, **settings)


def two_objectives(trial, config, budget):
    """Conflicting objectives that both improve with budget."""
    return config["x"] + 1 / budget, (1 - config["x"]) ** 2 + config["y"] + 1 / budget


def test_mo_asha_promotes_the_first_front_by_crowding_then_trial():
    s = make(MOASHA)
    # the first front is {0, 1, 3}; 1 and 3 are its extremes, so they lead 0 (its middle)
    losses = {0: (2, 2), 1: (1, 4), 2: (3, 3), 3: (4, 1), 4: (5, 5), 5: None}
    assert [(d.trial, d.budget) for d in (s.ask() for _ in range(6))] == [(t, 1) for t in range(6)]
    for t, v in losses.items():
        s.tell(t, 1, v[0] if v else INF, v)
    promoted = [s.ask() for _ in range(3)]      # top floor(6/3) = 2
    assert [(d.trial, d.budget, d.resume_from) for d in promoted] == [(1, 3, 1), (3, 3, 1), (6, 1, None)]
    s.tell(6, 1, 0.5, (0.5, 0.5))               # dominates all: alone in the first front now
    assert (s.ask().trial, s.ask().trial) == (6, 7)
    s.tell(1, 3, 0.5, (0.5, 3.5))
    s.tell(3, 3, 3.5, (3.5, 0.5))
    s.tell(6, 3, 0.2, (0.2, 0.2))               # rung 1 has 3: its top 1 is trial 6
    s.tell(7, 1, 0.1, (0.1, 0.1))               # rung 0 has 8: its top 2 are 7 and 6
    d = s.ask()                                 # the highest rung first
    assert (d.trial, d.budget, d.resume_from) == (6, 9, 3)
    d = s.ask()
    assert (d.trial, d.budget, d.resume_from) == (7, 3, 1)


def test_mo_asha_never_promotes_failures():
    s = make(MOASHA)
    for t in range(3):
        s.ask()
    s.tell(0, 1, 1.0, (1.0, INF))               # one objective diverged
    s.tell(1, 1, NAN, (NAN, 1.0))
    s.tell(2, 1, INF)                           # no losses at all
    assert s.ask().trial == 3                   # top 1 of 3 exists, but every result failed
    s = make(MOASHA, max_trials=40)
    events = simulate(s, lambda t, c, b: (INF, 0.0) if t % 2 == 0 else two_objectives(t, c, b), workers=3)
    assert all(e.trial % 2 == 1 for e in events if e.budget > 1) and s.finished()
    assert events[-1].losses is not None and s.observations[-1].losses == events[-1].losses


def test_mo_asha_with_one_objective_decides_as_asha():
    quadratic = lambda t, c, b: (c["x"] - 0.3) ** 2 + (c["y"] - 0.6) ** 2 + 1 / b
    rounded = lambda t, c, b: round(quadratic(t, c, b), 1)          # many exact ties
    for f in (quadratic, rounded):
        runs = [simulate(make(cls, 1, 27, max_trials=80, seed=2), f, workers=4) for cls in (ASHA, MOASHA)]
        assert [(e.trial, e.budget) for e in runs[0]] == [(e.trial, e.budget) for e in runs[1]]


def test_mo_asha_settings_are_the_reduction_factor_alone():
    assert MOASHA.SETTINGS == {"reductionFactor": 3}
    s = make(MOASHA, 1, 8, reductionFactor=2)
    assert [r.budget for r in s.rungs] == [1, 2, 4, 8]
    s.ask(), s.ask()
    s.tell(0, 1, 2.0, (2.0, 2.0))
    s.tell(1, 1, 1.0, (1.0, 1.0))                # top floor(2/2) = 1: trial 1 dominates
    d = s.ask()
    assert (d.trial, d.budget, d.resume_from) == (1, 2, 1)


def _records(s, running, log):
    recs = {t: TrialRecord(t, f"s-{t}", c) for t, c in s.configs.items()}
    for t, b, v in log:
        recs[t].segments.append(SegmentRecord(budget=b, status=SegmentStatus.COMPLETED, loss=v[0],
                                              objectives=list(v), reached=b))
    for t, b in running.items():
        recs[t].segments.append(SegmentRecord(budget=b))
    return list(recs.values())


def test_mo_asha_rebuilt_from_records_makes_the_same_decisions():
    rng = random.Random(1)
    s = make(MOASHA, 1, 27, max_trials=60, seed=3)
    running, log = {}, []
    for _ in range(40):                          # a partial, out-of-order parallel history
        while len(running) < 5 and (d := s.ask()) is not None:
            running[d.trial] = d.budget
        t = rng.choice(sorted(running))
        b = running.pop(t)
        v = two_objectives(t, s.configs[t], b)
        s.tell(t, b, v[0], v)
        log.append((t, b, v))
    rebuilt = make(MOASHA, 1, 27, max_trials=60, seed=3).restore(_records(s, running, log))
    assert rebuilt.running == s.running

    def tell(x, t, budget):
        v = two_objectives(t, x.configs[t], budget)
        x.tell(t, budget, v[0], v)
    continue_alike(s, rebuilt, tell)
    assert s.finished() == rebuilt.finished()


def test_mo_asha_a_deleted_trial_counts_as_failed_when_rebuilt():
    s = make(MOASHA)
    losses = {0: (5, 5), 1: (4, 4), 2: (3, 3), 3: (1, 1), 5: (6, 6)}   # trial 4's record was deleted
    for t in range(6):
        s.ask()
    log = [(t, 1, v) for t, v in losses.items()]
    records = [r for r in _records(s, {}, log) if r.index != 4]
    rebuilt = make(MOASHA).restore(records, next_index=6)
    # 6 results in rung 0 (the deleted trial's is a failure): top 2 are 3 and 2, never 4
    assert [(d.trial, d.budget) for d in (rebuilt.ask() for _ in range(3))] == [(3, 3), (2, 3), (6, 1)]


# ---- MOTPE ---------------------------------------------------------------------------

LINE = SearchSpace([Param("x", "float", 0.0, 1.0)])


def test_motpe_split_by_fronts_then_hypervolume():
    # trial 0 dominates all (front 0); 1, 2, 3 form front 1; the rest are worse or failed.
    # n_good = 3: trial 0, then 2 of front 1 by greedy hypervolume under (8.8, 8.8):
    # 3 (alone 12.54), then 2 (2.80 over 3) before 1 (2.40); by crowding it would be 1 and 2
    losses = [(1, 1), (2, 8), (8, 2), (5, 5.5), (9, 9), (9.5, 9.5), (10, 9), (9, 10), (11, 11), None]
    obs = [Observation(t, {"x": t / 10}, 1.0, v[0] if v else INF, v) for t, v in enumerate(losses)]
    s = MOTPESampler(LINE, 0, minPoints=3, topPercent=30, randomFraction=0.0)
    for history in (obs, obs[::-1]):             # the order observations came in does not matter
        s.model_budget(history)
        good, bad = s._fit(1.0)
        assert sorted(good.data[:, 0]) == pytest.approx([0.0, 0.2, 0.3])
        assert sorted(bad.data[:, 0]) == pytest.approx([0.1, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])


def test_motpe_cache_follows_a_growing_then_replaced_history():
    def history(seed):
        rng = np.random.default_rng(seed)
        xs = rng.random(60)
        return [Observation(t, {"x": x}, 1.0, x, (x, (x - 0.6) ** 2 + 0.1 * (t % 3))) for t, x in enumerate(xs)]

    obs, other = history(1), history(2)
    fresh = lambda: MOTPESampler(LINE, 4, minPoints=3, randomFraction=0.0)
    live = fresh()
    for n in range(0, 61, 3):                   # the scheduler's append-only list, growing between asks
        live.propose(n, obs[:n])
    for seq in (obs, other, obs[:40], obs[:59] + [other[59]]):
        assert [live.propose(i, seq) for i in range(60, 64)] == [fresh().propose(i, seq) for i in range(60, 64)]


def test_motpe_without_losses_is_bohbs_kde():
    space = SearchSpace([Param("x", "float", -2, 3), Param("c", "categorical", choices=("a", "b", "c"))])
    rng = np.random.default_rng(7)
    obs = []
    for t in range(60):
        c = space.sample(rng)
        obs.append(Observation(t, c, 1.0, round((c["x"] - 1) ** 2, 0) + (c["c"] != "b")))  # with ties
    random.Random(2).shuffle(obs)
    motpe, kde = MOTPESampler(space, 5), KDESampler(space, 5)
    assert [motpe.propose(i, obs) for i in range(60, 90)] == [kde.propose(i, obs) for i in range(60, 90)]


def test_motpe_proposes_near_the_pareto_set():
    # ZDT1-like: f1 = x0 and f2 falls with it; the Pareto set is x1 = x2 = x3 = 0.3, any x0
    space = SearchSpace([Param(f"x{i}", "float", 0, 1) for i in range(4)])

    def losses(c):
        g = 1 + 9 * np.mean([(c[f"x{i}"] - 0.3) ** 2 for i in (1, 2, 3)])
        return c["x0"], g * (1 - math.sqrt(c["x0"] / g))

    rng = np.random.default_rng(1)
    obs = [Observation(t, c, 1.0, losses(c)[0], losses(c)) for t, c in enumerate(space.sample(rng) for _ in range(120))]
    off = lambda c: np.linalg.norm([c[f"x{i}"] - 0.3 for i in (1, 2, 3)])
    motpe = [MOTPESampler(space, 1, randomFraction=0.0).propose(i, obs) for i in range(200, 260)]
    rand = [RandomSampler(space, 1).propose(i, obs) for i in range(200, 260)]
    assert np.mean([off(c) for c in motpe]) < 0.6 * np.mean([off(c) for c in rand])
    assert np.ptp([c["x0"] for c in motpe]) > 0.3     # along the front, not at one end of it
