"""Schedulers against the seed's rules: ASHA promotion order, Hyperband brackets, SHA, stop rules, rebuild."""

import math
import random
from collections import Counter

import pytest

from rung.schedulers.asha import ASHA
from rung.schedulers.asha_stop import StopASHA
from rung.records import SegmentRecord, SegmentStatus, TrialRecord
from rung.schedulers.base import rung_budgets
from rung.schedulers.full import FullBudget
from rung.schedulers.hyperband import SHA, Hyperband
from rung.schedulers.median import MedianStop
from rung.schedulers.simulate import simulate
from rung.search.random import RandomSampler
from rung.space import Param, SearchSpace

pytestmark = pytest.mark.unit

SPACE = SearchSpace([Param("x", "float", 0.0, 1.0), Param("y", "float", 0.0, 1.0)])


def quadratic(trial, config, budget):
    """Deterministic loss that improves with budget and ranks configs the same at every budget."""
    return (config["x"] - 0.3) ** 2 + (config["y"] - 0.6) ** 2 + 1.0 / budget


def make(cls, bmin=1, bmax=27, max_trials=30, seed=0, **settings):
    return cls(RandomSampler(SPACE, seed), bmin, bmax, max_trials, **settings)


def test_rung_budgets_are_anchored_at_max():
    assert rung_budgets(1, 27, 3) == [1, 3, 9, 27]
    assert rung_budgets(1, 81, 3) == [1, 3, 9, 27, 81]
    assert rung_budgets(9, 729, 3) == [9, 27, 81, 243, 729]
    assert rung_budgets(5, 5, 3) == [5]
    b = rung_budgets(0.5, 10, 3)
    assert b[-1] == 10 and b[0] >= 0.5 and math.isclose(b[1] / b[0], 3)


# ---- ASHA ---------------------------------------------------------------------------

def test_asha_promotion_order_hand_worked():
    """eta=3, rungs 1/3/9: the seed's rule, step by step."""
    s = make(ASHA, 1, 9, max_trials=100)
    losses = {0: 5.0, 1: 3.0, 2: 4.0, 3: 1.0, 4: 6.0, 5: 7.0}

    def ask():
        d = s.ask()
        return (d.trial, d.budget, d.resume_from)

    assert ask() == (0, 1, None)
    s.tell(0, 1, losses[0])          # rung0: {0}; floor(1/3)=0 -> nothing to promote
    assert ask() == (1, 1, None)
    s.tell(1, 1, losses[1])          # rung0: {0,1}; floor(2/3)=0
    assert ask() == (2, 1, None)
    s.tell(2, 1, losses[2])          # rung0: {0,1,2}; top 1 is trial 1
    assert ask() == (1, 3, 1)        # promoted, resumes from its rung-0 checkpoint
    assert ask() == (3, 1, None)     # trial 2 is 2nd of 3: not in the top 1 -> new config
    s.tell(3, 1, losses[3])          # rung0 has 4: top 1 = trial 3 (best), not promoted yet
    assert ask() == (3, 3, 1)
    s.tell(1, 3, 2.0)                # rung1: {1}
    s.tell(3, 3, 0.5)                # rung1: {1,3}; floor(2/3)=0
    assert ask() == (4, 1, None)
    s.tell(4, 1, losses[4])
    assert ask() == (5, 1, None)
    s.tell(5, 1, losses[5])          # rung0 has 6: top 2 = trials 3, 1 (both promoted)
    assert ask() == (6, 1, None)
    s.tell(6, 1, 0.1)                # 7 in rung0: top 2 = {6, 3}; 6 not promoted
    assert ask() == (6, 3, 1)
    s.tell(6, 3, 0.05)               # rung1 has 3: top 1 = trial 6 -> rung 2 (highest rung first)
    assert ask() == (6, 9, 3)


def test_asha_prefers_the_highest_rung():
    s = make(ASHA, 1, 9, max_trials=100)
    first = [s.ask() for _ in range(12)]        # 12 workers start 12 configs at once
    assert [(d.trial, d.budget) for d in first] == [(t, 1) for t in range(12)]
    for t in range(12):
        s.tell(t, 1, float(t))                   # rung 0: top floor(12/3) = 4 -> trials 0..3
    promoted = [s.ask() for _ in range(3)]
    assert [(d.trial, d.budget, d.resume_from) for d in promoted] == [(0, 3, 1), (1, 3, 1), (2, 3, 1)]
    for d in promoted:
        s.tell(d.trial, 3, float(d.trial))
    # rung 1 now has a candidate (trial 0) and so has rung 0 (trial 3): the higher rung wins
    d = s.ask()
    assert (d.trial, d.budget, d.resume_from) == (0, 9, 3)
    d = s.ask()
    assert (d.trial, d.budget, d.resume_from) == (3, 3, 1)


def test_asha_promoted_trials_always_resume_and_never_repeat():
    s = make(ASHA, 1, 27, max_trials=200)
    events = simulate(s, quadratic, workers=7)
    assert s.finished()
    assert len(s.configs) == 200
    per_trial: dict[int, list[float]] = {}
    for e in events:
        per_trial.setdefault(e.trial, []).append(e.budget)
    for budgets in per_trial.values():
        # each trial climbs the rungs one by one from the bottom, each rung once
        assert budgets == rung_budgets(1, 27, 3)[: len(budgets)]
    # a promotion's cost is only the extra budget: total = sum of distinct rung increments
    counts = Counter(e.budget for e in events)
    assert counts[1] == 200 and counts[3] >= 200 // 3 - 7 and counts[27] >= 1


def test_asha_failed_trials_are_never_promoted():
    s = make(ASHA, 1, 9, max_trials=30)
    events = simulate(s, lambda t, c, b: math.inf if t % 2 == 0 else quadratic(t, c, b), workers=3)
    assert all(e.trial % 2 == 1 for e in events if e.budget > 1)


# ---- Hyperband / SHA ---------------------------------------------------------------

def test_hyperband_bracket_sizes_eta3_R81():
    s = make(Hyperband, 1, 81, max_trials=10_000)
    assert [s.bracket_plan(b) for b in range(6)] == [(4, 81), (3, 34), (2, 15), (1, 8), (0, 5), (4, 81)]


def test_hyperband_runs_each_bracket_with_the_halving_sizes():
    s = make(Hyperband, 1, 81, max_trials=81 + 34 + 15 + 8 + 5)
    events = simulate(s, quadratic, workers=1)
    assert s.finished()
    firsts = [0, 81, 115, 130, 138, 143]
    by_bracket = [Counter(e.budget for e in events if firsts[b] <= e.trial < firsts[b + 1]) for b in range(5)]
    assert by_bracket[0] == {1: 81, 3: 27, 9: 9, 27: 3, 81: 1}
    assert by_bracket[1] == {3: 34, 9: 11, 27: 3, 81: 1}
    assert by_bracket[2] == {9: 15, 27: 5, 81: 1}
    assert by_bracket[3] == {27: 8, 81: 2}
    assert by_bracket[4] == {81: 5}


def flipping(trial, config, budget):
    """A loss whose ranking reverses at every rung (eta 3): the best at budget 1 is the
    worst at 3, so promoting from a rung before all its members finished shows."""
    rung = round(math.log(budget, 3))
    return (config["x"] if rung % 2 == 0 else 1.0 - config["x"]) + 1.0 / budget


@pytest.mark.parametrize("workers", [1, 3, 50])
def test_hyperband_segments_per_budget_equal_the_bracket_table(workers):
    """Li et al.'s table for R = 27, eta = 3: bracket s runs n_i configurations at r_i."""
    s = make(Hyperband, 1, 27, max_trials=27 + 12 + 6 + 4)
    events = simulate(s, flipping, workers=workers)
    assert s.finished()
    firsts = [0, 27, 39, 45, 49]
    by_bracket = [Counter(e.budget for e in events if firsts[b] <= e.trial < firsts[b + 1]) for b in range(4)]
    assert by_bracket == [{1: 27, 3: 9, 9: 3, 27: 1}, {3: 12, 9: 4, 27: 1}, {9: 6, 27: 2}, {27: 4}]


@pytest.mark.parametrize("workers", [1, 3, 50])
def test_sha_segments_per_budget_and_the_winner_ranked_on_the_full_rung(workers):
    s = make(SHA, 1, 9, max_trials=9)
    events = simulate(s, flipping, workers=workers)
    assert Counter(e.budget for e in events) == {1: 9, 3: 3, 9: 1}
    at = lambda b: {e.trial: e.loss for e in events if e.budget == b}
    top3 = sorted(at(1), key=at(1).get)[:3]
    assert set(at(3)) == set(top3)
    assert set(at(9)) == {min(at(3), key=at(3).get)}


def test_sha_promotes_only_complete_rungs_and_keeps_the_best():
    s = make(SHA, 1, 9, max_trials=9)
    first = [s.ask() for _ in range(9)]
    assert all(d.budget == 1 for d in first)
    assert s.ask() is None                      # nothing to do until the rung completes
    for d in first[:-1]:
        s.tell(d.trial, 1, float(9 - d.trial))   # trial 8 will be the best
    assert s.ask() is None                      # still one missing
    s.tell(8, 1, 0.5)
    promoted = {s.ask().trial for _ in range(3)}
    assert promoted == {8, 7, 6}                 # the top floor(9/3) = 3
    assert s.ask() is None


def test_hyperband_starts_next_bracket_instead_of_idling():
    s = make(Hyperband, 1, 9, max_trials=100)   # s_max = 2: brackets of 9, 5, 3
    started = [s.ask() for _ in range(12)]      # 12 workers: bracket 0 (9) is waiting
    assert [d.trial for d in started] == list(range(12))
    assert [d.budget for d in started[:9]] == [1] * 9
    assert [d.budget for d in started[9:]] == [3] * 3   # bracket 1 starts at budget 3


def test_hyperband_truncated_by_trial_limit_still_finishes():
    s = make(Hyperband, 1, 27, max_trials=10)
    simulate(s, quadratic, workers=4)
    assert s.finished() and len(s.configs) == 10


# ---- stop-based ASHA and the median rule --------------------------------------------

def test_stop_asha_stops_losers_at_milestones():
    s = make(StopASHA, 1, 9, max_trials=10)
    assert s.milestones == [1, 3]
    for t in range(3):
        assert s.ask().budget == 9
    assert s.report(0, 1, 1.0) is True          # alone in the rung
    assert s.report(1, 1, 2.0) is False         # 2nd of 2: not in top ceil(2/3)=1
    assert s.report(2, 1, 0.5) is True          # best of 3
    assert s.report(0, 2, 0.9) is True          # between milestones: no decision
    assert s.report(0, 3, 0.8) is True
    assert s.report(2, 3, 0.9) is False


def test_median_rule():
    s = make(MedianStop, 1, 10, max_trials=10, minTrials=2)
    for _ in range(4):
        s.ask()
    for t, base in [(0, 1.0), (1, 2.0)]:
        for step in range(1, 6):
            assert s.report(t, step, base) is True or t == 1
    assert s.report(2, 1, 0.5) is True          # better than the median of 1.0, 2.0
    assert s.report(3, 1, 3.0) is False         # worse than the median 1.5
    assert s.report(3, 2, 3.0) is False
    grace = make(MedianStop, 1, 10, max_trials=10, minTrials=1, graceSteps=3)
    grace.ask(), grace.ask()
    grace.report(0, 1, 1.0), grace.report(0, 2, 1.0), grace.report(0, 3, 1.0)
    assert grace.report(1, 2, 5.0) is True      # inside the grace period
    assert grace.report(1, 3, 5.0) is False


# ---- rebuild from records -----------------------------------------------------------

def _records(s, running, done_events):
    """Trial records as a runtime would persist them."""
    recs = {}
    for t, config in s.configs.items():
        recs[t] = TrialRecord(t, f"s-{t}", config)
    for e in done_events:
        recs[e[0]].segments.append(SegmentRecord(budget=e[1], status=SegmentStatus.COMPLETED, loss=e[2],
                                                 reached=e[1]))
    for t, budget in running.items():
        recs[t].segments.append(SegmentRecord(budget=budget))
    return list(recs.values())


def continue_alike(s, rebuilt, tell, steps=200):
    """Drive a scheduler and its rebuilt copy side by side: each ask must give the same
    decision; when nothing starts, the lowest running trial ends in both (`tell(x, t, budget)`)."""
    for _ in range(steps):
        a, b = s.ask(), rebuilt.ask()
        assert a == b
        if a is None:
            if not s.running:
                break
            t = min(s.running)
            budget = s.running[t]
            for x in (s, rebuilt):
                tell(x, t, budget)


@pytest.mark.parametrize("cls,kw", [(ASHA, {}), (Hyperband, {}), (SHA, {}), (FullBudget, {}),
                                    (ASHA, {"reductionFactor": 2}), (StopASHA, {})])
def test_rebuilt_scheduler_makes_the_same_next_decisions(cls, kw):
    rng = random.Random(1)
    s = make(cls, 1, 27, max_trials=60, seed=3, **kw)
    running, log = {}, []
    for _ in range(40):                          # a partial, out-of-order parallel history
        while len(running) < 5:
            d = s.ask()
            if d is None:
                break
            running[d.trial] = d.budget
        t = rng.choice(sorted(running))
        b = running.pop(t)
        loss = quadratic(t, s.configs[t], b)
        s.tell(t, b, loss)
        log.append((t, b, loss))
    assert running and not s.finished()
    rebuilt = make(cls, 1, 27, max_trials=60, seed=3, **kw).restore(_records(s, running, log))
    assert rebuilt.running == s.running
    continue_alike(s, rebuilt, lambda x, t, budget: x.tell(t, budget, quadratic(t, x.configs[t], budget)))
    assert s.finished() == rebuilt.finished()


def new_trials_until_finished(s) -> list[int]:
    """Drive a scheduler to its end (when nothing starts, the lowest running trial ends);
    returns the numbers of the new trials it gave, in order."""
    given = []
    for _ in range(500):
        if s.finished():
            return given
        d = s.ask()
        if d is None:
            t = min(s.running)
            s.tell(t, s.running[t], quadratic(t, s.configs[t], s.running[t]))
        elif d.resume_from is None:
            given.append(d.trial)
    raise AssertionError("the scheduler stalls")


@pytest.mark.parametrize("cls", [ASHA, Hyperband, SHA, FullBudget])
def test_deleted_records_keep_their_numbers_and_never_stall_the_scheduler(cls):
    """Trials deleted with their records (kubectl delete trial): their numbers are never
    given again, they count as trials without a result, and the Study still finishes."""
    s = make(cls, 1, 9, max_trials=12, seed=2)
    running, log = {}, []
    while len(running) < 6:
        d = s.ask()
        running[d.trial] = d.budget
    for t in sorted(running)[:4]:
        b = running.pop(t)
        s.tell(t, b, quadratic(t, s.configs[t], b))
        log.append((t, b, quadratic(t, s.configs[t], b)))
    records = [r for r in _records(s, running, log) if r.index not in (1, 5)]   # 5 was the newest
    rebuilt = make(cls, 1, 9, max_trials=12, seed=2).restore(records, next_index=6)
    assert 1 not in rebuilt.running and 5 not in rebuilt.running
    given = new_trials_until_finished(rebuilt)
    assert given == list(range(6, 12))                        # 1 and 5 are never given again


@pytest.mark.parametrize("cls", [ASHA, Hyperband, SHA, FullBudget])
def test_numbers_never_recorded_above_the_bound_are_given_again_first(cls):
    """A step decided 4..9 side by side and the creates of 5 and 8 failed: they never were
    trials. Restored with the bound at 4, they are given again first, lowest first, each
    to the budget it was first decided at (8 in Hyperband's first bracket, though 9 opened
    the second); neither counts as a trial without a result, and every number runs once."""
    s = make(cls, 1, 9, max_trials=14, seed=2)
    decided = {d.trial: d for d in (s.ask() for _ in range(10))}
    assert sorted(decided) == list(range(10))
    running, log = {t: d.budget for t, d in decided.items()}, []
    for t in range(2):   # too few results for a promotion yet
        b = running.pop(t)
        s.tell(t, b, quadratic(t, s.configs[t], b))
        log.append((t, b, quadratic(t, s.configs[t], b)))
    records = [r for r in _records(s, running, log) if r.index not in (5, 8)]
    rebuilt = make(cls, 1, 9, max_trials=14, seed=2).restore(records, next_index=4)
    assert rebuilt.free == {5, 8} and not any(o.trial in (5, 8) for o in rebuilt.observations)
    again = [rebuilt.ask() for _ in range(2)]
    assert [(d.trial, d.budget, d.config) for d in again] == [(t, decided[t].budget, decided[t].config) for t in (5, 8)]
    given = new_trials_until_finished(rebuilt)
    assert given == [10, 11, 12, 13] and sorted(rebuilt.configs) == list(range(14))


@pytest.mark.parametrize("cls", [ASHA, Hyperband, FullBudget, StopASHA])
def test_a_record_without_segments_runs_again_towards_its_first_budget(cls):
    s = make(cls, 1, 9, max_trials=5, seed=2)
    first = s.ask()
    rebuilt = make(cls, 1, 9, max_trials=5, seed=2).restore([TrialRecord(first.trial, "s-0", first.config)])
    assert rebuilt.running == {first.trial: first.budget}
    assert rebuilt.configs[first.trial] == first.config and rebuilt.ask().trial == first.trial + 1
