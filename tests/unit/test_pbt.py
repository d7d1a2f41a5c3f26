"""PBT against hand-worked toy populations: exploit/explore, intervals, the trial cap,
rebuild from records and lineage; and the shifting-lr trainable it is benchmarked on."""

import math
import random
from collections import Counter

import numpy as np
import pytest

from rung.errors import InputError
from rung.records import SegmentRecord, SegmentStatus, TrialRecord
from rung.schedulers.pbt import PBT, Link, lineage
from rung.search.base import Sampler
from rung.search.random import RandomSampler
from rung.space import Param, SearchSpace
from rung_trainables.shifting_lr import ShiftingLR
from test_schedulers import continue_alike
from test_sdk import run as run_trainable

pytestmark = pytest.mark.unit

SPACE = SearchSpace([Param("lr", "float", 1e-3, 1.0, log=True), Param("units", "int", 1, 100),
                     Param("act", "categorical", choices=("relu", "tanh", "gelu")),
                     Param("batch", "ordinal", choices=(16, 32, 64))])


def cfg(lr, units=10, act="relu", batch=32):
    return {"lr": lr, "units": units, "act": act, "batch": batch}


class Fixed(Sampler):
    """Proposes configs[index]: a population written by hand."""

    def __init__(self, configs, seed=0):
        super().__init__(SPACE, seed)
        self.configs = configs

    def propose(self, index, observations):
        return self.configs[index]


TOY = [cfg(0.1, 10), cfg(0.2, 20, "tanh", 64), cfg(0.3, 30), cfg(0.4, 40)]


def toy(bmin=2, bmax=6, max_trials=100, configs=TOY, **settings):
    """A hand-written population; explore is deterministic (factor 1.2, never resample)."""
    settings = {"population": len(configs), "resampleProbability": 0.0, "perturbFactors": [1.2], **settings}
    return PBT(Fixed(configs), bmin, bmax, max_trials, **settings)


def key(d):
    return None if d is None else (d.trial, d.budget, d.resume_from, d.parent, d.replaces)


def asks(s, n):
    return [key(s.ask()) for _ in range(n)]


def tell_all(s, budget, losses):
    for t, loss in losses.items():
        s.tell(t, budget, loss)


# ---- exploit / explore -------------------------------------------------------------

def test_the_bottom_member_copies_the_top_one_hand_worked():
    s = toy()
    assert asks(s, 5) == [(t, 2, None, None, None) for t in range(4)] + [None]   # all four train
    tell_all(s, 2, {0: 0.4, 1: 0.1, 2: 0.3, 3: 0.2})
    # 4 ranked, quantile 0.25: one at each end. 0 (worst) takes 1's (best) weights at step 2;
    # lr and units x1.2, the ordinal one value up, the categorical as it was
    d = s.ask()
    assert key(d) == (4, 4, 2, 1, 0)
    assert d.config == {"lr": pytest.approx(0.24), "units": 24, "act": "tanh", "batch": 64}
    assert s.replaced == {0: 4} and s.parents == {4: 1} and s.members() == [1, 2, 3, 4]
    # 1 (best) continues; the copy holds 0's result until it has its own: it stays the bottom one
    assert asks(s, 4) == [(1, 4, 2, None, None), (2, 4, 2, None, None), (3, 4, 2, None, None), None]
    tell_all(s, 4, {2: 0.25, 4: 0.05, 1: 0.08, 3: 0.5})
    # all at step 4, judged by index: 1, 2 continue; 3 (worst) takes 4's weights; 4 continues
    assert key(s.ask()) == (1, 6, 4, None, None)
    assert key(s.ask()) == (2, 6, 4, None, None)
    d = s.ask()
    assert key(d) == (5, 6, 4, 4, 3)
    assert d.config == {"lr": pytest.approx(0.288), "units": 29, "act": "tanh", "batch": 64}  # 64 is the top
    assert key(s.ask()) == (4, 6, 4, None, None)
    assert s.ask() is None and not s.finished()
    tell_all(s, 6, {1: 0.07, 2: 0.2, 5: 0.01, 4: 0.04})
    assert s.ask() is None and s.finished() and s.members() == [1, 2, 4, 5]


def test_the_donor_is_drawn_from_the_top_quantile_and_only_the_bottom_is_replaced():
    parents = set()
    for seed in range(12):
        s = PBT(RandomSampler(SPACE, seed), 1, 9, 100, population=8)
        for d in [s.ask() for _ in range(8)]:
            s.tell(d.trial, d.budget, [0.5, 0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.4][d.trial])
        decisions = [key(s.ask()) for _ in range(9)]
        # 8 ranked: the top two are 1 (0.1) and 5 (0.2), the bottom two 2 (0.9) and 4 (0.8);
        # 2's copy holds its 0.9 until it reports, so 4 is still in the bottom and 6 (0.7) is not
        assert [d and d[0] for d in decisions] == [0, 1, 8, 3, 9, 5, 6, 7, None]
        for d, replaced in ((decisions[2], 2), (decisions[4], 4)):
            assert d[:3] == (d[0], 2, 1) and d[3] in (1, 5) and d[4] == replaced
            parents.add(d[3])
    assert parents == {1, 5}


def test_explore_perturbs_by_a_factor_clips_and_moves_ints_and_ordinals():
    s = toy(perturbFactors=[0.8])
    rng = np.random.default_rng(0)
    assert s.explore(cfg(0.5, 10, "gelu", 32), rng) == {"lr": 0.4, "units": 8, "act": "gelu", "batch": 16}
    assert s.explore(cfg(0.001, 1, "relu", 16), rng) == cfg(0.001, 1, "relu", 16)   # at the bottom already
    s = toy(perturbFactors=[1.2])
    assert s.explore(cfg(0.9, 2, "tanh", 64), rng) == cfg(1.0, 3, "tanh", 64)      # 2.4 rounds back: 3
    assert s.explore({**cfg(0.5), "fixed": "kept"}, rng)["fixed"] == "kept"


# seed 1: lr up, units and act resampled, batch up; seed 27: lr down, units resampled, act kept, batch down
@pytest.mark.parametrize("seed", [1, 27])
def test_explore_picks_a_factor_per_parameter_with_a_seeded_generator(seed):
    s = toy(perturbFactors=[0.8, 1.2], resampleProbability=0.5)
    got = s.explore(cfg(0.5, 50, "tanh", 32), np.random.default_rng(seed))
    # by hand, the draws of the generator in space order: per parameter one uniform (< 0.5:
    # resample, with a second uniform), else the index of the factor (numeric only)
    g = np.random.default_rng(seed)
    want = {}
    for name, value in cfg(0.5, 50, "tanh", 32).items():
        if g.random() < 0.5:
            u = g.random()
            want[name] = {"lr": math.exp(math.log(1e-3) * (1 - u)), "units": round(0.5 + u * 100),
                          "act": ("relu", "tanh", "gelu")[math.floor(u * 3)],
                          "batch": (16, 32, 64)[round(u * 3 - 0.5)]}[name]
        elif name != "act":
            up = g.integers(2) == 1
            want[name] = {"lr": value * (1.2 if up else 0.8), "units": round(value * (1.2 if up else 0.8)),
                          "batch": 64 if up else 16}[name]
        else:
            want[name] = value
    assert got["act"] == want.pop("act") and {k: got[k] for k in want} == pytest.approx(want)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_resample_probability_zero_never_and_one_always_draws_from_the_space(p):
    s = toy(perturbFactors=[0.8, 1.2], resampleProbability=p)
    parent = cfg(0.1, 50, "tanh", 32)
    draws = [s.explore(parent, np.random.default_rng(i)) for i in range(300)]
    acts = Counter(d["act"] for d in draws)
    perturbed = [d["lr"] == pytest.approx(0.08) or d["lr"] == pytest.approx(0.12) for d in draws]
    if p == 0.0:
        assert acts == {"tanh": 300} and all(perturbed)
        assert {d["units"] for d in draws} == {40, 60} and {d["batch"] for d in draws} == {16, 64}
    else:
        assert set(acts) == {"relu", "tanh", "gelu"} and min(acts.values()) > 75 and not any(perturbed)  # uniform
        lrs = [d["lr"] for d in draws]                      # log-uniform over [1e-3, 1]
        assert 1e-3 <= min(lrs) < 0.01 and 0.1 < max(lrs) <= 1.0
        assert {d["batch"] for d in draws} == {16, 32, 64}


# ---- intervals, budgets, failures, the trial cap -----------------------------------

def test_segments_are_intervals_capped_at_the_maximum_budget():
    s = toy(1, 5, configs=TOY[:2], interval=2)
    assert asks(s, 3) == [(0, 2, None, None, None), (1, 2, None, None, None), None]
    tell_all(s, 2, {0: 0.2, 1: 0.1})
    assert asks(s, 3) == [(0, 4, 2, None, None), (1, 4, 2, None, None), None]   # 2 ranked: no quantile
    tell_all(s, 4, {0: 0.1, 1: 0.05})
    assert asks(s, 3) == [(0, 5, 4, None, None), (1, 5, 4, None, None), None]
    s.tell(0, 5, 0.1)
    assert s.ask() is None and not s.finished()   # 0 is done; 1 still trains
    s.tell(1, 5, 0.2)
    assert s.ask() is None and s.finished()
    assert PBT(RandomSampler(SPACE), 3, 9, 10).interval == 3.0  # the default: the budget's minimum


def test_a_member_at_the_maximum_budget_is_no_donor():
    s = toy(2, 4)
    asks(s, 4)
    s.tell(1, 2, 0.1)
    assert key(s.ask()) == (1, 4, 2, None, None)       # alone among results: it continues
    s.tell(1, 4, 0.01)                                  # the best, and done
    tell_all(s, 2, {0: 0.4, 2: 0.3, 3: 0.2})
    # 4 ranked: 0 is the bottom, 1 the top, but 1 has nothing left to train: 0 continues
    assert asks(s, 4) == [(0, 4, 2, None, None), (2, 4, 2, None, None), (3, 4, 2, None, None), None]


def test_a_failed_member_is_replaced_by_the_best_or_retires():
    s = toy(configs=TOY[:2])
    asks(s, 2)
    s.tell(0, 2, 0.5)
    s.tell_failed(1, 2)                        # 2 ranked: no quantile, but a failure never continues
    assert asks(s, 3) == [(0, 4, 2, None, None), (2, 4, 2, 0, 1), None]
    capped = toy(configs=TOY[:2], max_trials=2)
    asks(capped, 2)
    capped.tell(0, 2, 0.5)
    capped.tell(1, 2, math.nan)                # a nan loss is a failure too
    assert asks(capped, 2) == [(0, 4, 2, None, None), None]   # 1 retires: no trial left for a copy
    capped.tell(0, 4, 0.2)
    assert asks(capped, 2) == [(0, 6, 4, None, None), None]
    capped.tell(0, 6, 0.1)
    assert capped.finished() and capped.members() == [0, 1]


def test_max_trials_caps_exploits_then_members_only_continue():
    s = toy(max_trials=5)
    asks(s, 4)
    tell_all(s, 2, {0: 0.4, 1: 0.1, 2: 0.3, 3: 0.2})
    assert key(s.ask()) == (4, 4, 2, 1, 0)
    asks(s, 3)
    tell_all(s, 4, {1: 0.08, 2: 0.25, 3: 0.5, 4: 0.05})
    # 3 is the worst again, but the fifth trial was the last one allowed
    assert asks(s, 5) == [(t, 6, 4, None, None) for t in (1, 2, 3, 4)] + [None]
    assert s.n_trials == 5


def test_a_population_larger_than_max_trials_is_cut_to_it():
    s = PBT(RandomSampler(SPACE), 1, 3, 3, population=8)
    assert [k and k[0] for k in asks(s, 4)] == [0, 1, 2, None]


@pytest.mark.parametrize("setting,value", [("population", 0), ("quantile", 0.0), ("quantile", 0.6),
                                           ("interval", 0), ("resampleProbability", 1.5),
                                           ("perturbFactors", []), ("perturbFactors", [0.8, 0]),
                                           ("perturbFactors", 1.2), ("perturbFactors", [True])])
def test_bad_settings_name_the_field(setting, value):
    with pytest.raises(InputError, match=f"spec.algorithm.settings.{setting}"):
        PBT(RandomSampler(SPACE), 1, 9, 10, **{setting: value})


# ---- rebuild from records ----------------------------------------------------------

def toy_loss(config, budget):
    return (math.log10(config["lr"]) + 1.5) ** 2 + abs(config["units"] - 60) / 100 + 1 / budget


def make_restorable():
    return PBT(RandomSampler(SPACE, 3), 1, 12, 40, population=6, resampleProbability=0.3)


def shuffled_history(seed, events):
    """A PBT after `events` results from 4 workers, arrived in a shuffled order, and its
    records as a runtime would persist them."""
    rng, s = random.Random(seed), make_restorable()
    records, running = {}, {}
    for _ in range(events):
        while len(running) < 4 and (d := s.ask()) is not None:
            rec = records.setdefault(d.trial, TrialRecord(d.trial, f"s-{d.trial}", d.config, parent=d.parent,
                                                          replaces=d.replaces))
            rec.segments.append(SegmentRecord(d.budget, d.resume_from))
            running[d.trial] = d.budget
        t = rng.choice(sorted(running))
        budget = running.pop(t)
        loss = toy_loss(s.configs[t], budget)
        seg = records[t].segments[-1]
        seg.status, seg.reached, seg.loss = SegmentStatus.COMPLETED, budget, loss
        s.tell(t, budget, loss)
    return s, sorted(records.values(), key=lambda r: r.index)


@pytest.mark.parametrize("seed", [4, 5])
def test_a_restored_scheduler_makes_the_same_next_decisions(seed):
    for events in range(14, 62, 6):      # each cut leaves different members waiting for a decision
        s, records = shuffled_history(seed, events)
        assert s.replaced and s.running
        rebuilt = make_restorable().restore(records)
        assert rebuilt.running == s.running and rebuilt.replaced == s.replaced and rebuilt.parents == s.parents
        continue_alike(s, rebuilt, lambda x, t, budget: x.tell(t, budget, toy_loss(x.configs[t], budget)), steps=300)
        assert s.finished() and rebuilt.finished()


def test_a_copy_whose_create_failed_is_decided_again_under_its_own_number():
    """Members 0 and 1 are the bottom two: copies 8 and 9 take their places, and only 9 is
    created. Restored, 0 is still a member waiting to be judged, and its copy is decided
    again as 8, from the same donor with the same explored config."""
    s = toy(configs=[cfg(0.1 + 0.05 * i, 10 + i) for i in range(8)])
    records = {}

    def record(d):
        rec = records.setdefault(d.trial, TrialRecord(d.trial, f"s-{d.trial}", d.config, parent=d.parent,
                                                      replaces=d.replaces))
        rec.segments.append(SegmentRecord(d.budget, d.resume_from))

    for d in (s.ask() for _ in range(8)):
        record(d)
    tell_all(s, 2, {t: 0.9 - 0.1 * t for t in range(8)})   # 0 worst, 7 best
    for t in range(8):
        seg = records[t].segments[-1]
        seg.status, seg.reached, seg.loss = SegmentStatus.COMPLETED, 2, 0.9 - 0.1 * t
    copies = [s.ask(), s.ask()]
    assert [(d.trial, d.replaces) for d in copies] == [(8, 0), (9, 1)]
    record(copies[1])
    rebuilt = toy(configs=[cfg(0.1 + 0.05 * i, 10 + i) for i in range(8)]).restore(
        sorted(records.values(), key=lambda r: r.index), next_index=8)
    assert rebuilt.free == {8} and rebuilt.members() == [0, 2, 3, 4, 5, 6, 7, 9]
    again = rebuilt.ask()
    assert key(again) == key(copies[0]) and again.config == copies[0].config


# ---- lineage -----------------------------------------------------------------------

def seg(budget, resume_from=None, loss=0.1, running=False, curve=()):
    if running:
        return SegmentRecord(budget, resume_from, curve=[list(p) for p in curve])
    return SegmentRecord(budget, resume_from, SegmentStatus.COMPLETED, loss, reached=budget)


def test_lineage_follows_the_weights_back_through_the_copies():
    c = [cfg(0.1 * (i + 1)) for i in range(4)]
    records = [TrialRecord(0, "s-0", c[0], [seg(2)]),
               TrialRecord(1, "s-1", c[1], [seg(2), seg(4, 2)]),
               TrialRecord(2, "s-2", c[2], [seg(4, 2), seg(6, 4)], parent=1, replaces=0),
               TrialRecord(3, "s-3", c[3], [seg(6, 4, running=True, curve=[(5, 0.2)])], parent=2, replaces=1)]
    assert lineage(records) == {
        2: [Link(1, c[1], 0, 2, None), Link(2, c[2], 2, 6, 1)],
        3: [Link(1, c[1], 0, 2, None), Link(2, c[2], 2, 4, 1), Link(3, c[3], 4, 5, 2)],
    }


# ---- the trainable -----------------------------------------------------------------

def test_shifting_lr_resumes_exactly_and_its_best_lr_falls():
    p = ShiftingLR()
    s0 = p.start(seed=1)
    straight = p.train(s0, 0.1, 6)
    split = p.train(p.train(s0, 0.1, 2), 0.1, 4)
    assert split["step"] == straight["step"] == 6 and p.loss(split) == p.loss(straight)
    assert np.array_equal(s0["w"], np.zeros(10)) and s0["step"] == 0   # train() left its input alone

    def mean_loss(lr, steps):
        return np.mean([p.loss(p.train(p.start(seed), lr, steps)) for seed in range(3)])
    assert mean_loss(0.2, 2) < mean_loss(0.05, 2)            # early, the large rate wins
    assert mean_loss(0.05, 54) < mean_loss(0.2, 54)          # late, the small one


def test_shifting_lr_as_a_process_resumed_equals_uninterrupted(tmp_path):
    rc, straight, _, _ = run_trainable(tmp_path, "shifting_lr", {"lr": 0.1}, 4, "straight")
    rc1, first, _, _ = run_trainable(tmp_path, "shifting_lr", {"lr": 0.1}, 2, "resumed")
    rc2, second, final, _ = run_trainable(tmp_path, "shifting_lr", {"lr": 0.1}, 4, "resumed")
    assert rc == rc1 == rc2 == 0 and [r["step"] for r in straight] == [1, 2, 3, 4]
    assert first + second == straight and final == straight[-1]
    p = ShiftingLR()
    assert straight[-1]["metrics"]["loss"] == p.loss(p.train(p.start(seed=0), 0.1, 4))
