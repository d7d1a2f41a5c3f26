"""rung.sim: event order and accounting, fair share over time, the oracle, determinism."""

import pytest

from rung.schedulers.asha import ASHA
from rung.schedulers.full import FullBudget
from rung.search import SAMPLERS
from rung.sim import SimStudy, simulate
from rung.sim.objectives import CountingOnes
from rung.sizing import RingAllReduce

pytestmark = pytest.mark.unit

LINEAR = RingAllReduce(1.0, 0.0, 1.0, 0.0)  # t(n) = 1/n exactly: E(n) = 1
# t(1) = 1, t(2) = 0.5 + 0.1 + 0.1 = 0.7 (E = 0.714), t(3) = 0.667 (E = 0.5), t(8) = 1.0:
# the fastest and the only efficient multi-GPU count is 2.
BEST_AT_2 = RingAllReduce(1.0, 1e8, 1.0, 0.05)


class Fixed(CountingOnes):
    """Counting ones at one budget of 10 (one segment per trial)."""
    budget_min = budget_max = 10


def full_study(name, trials, curve=LINEAR, budget=10, **kw):
    obj = Fixed()
    return SimStudy(name, lambda: FullBudget(SAMPLERS["random"](obj.space(), 0), budget, budget, trials),
                    obj, curve, **kw)


def test_two_trials_on_two_gpus_finish_at_hand_computed_times():
    # One GPU each: 5 s start-up + 10 steps * 1 s, both from t = 0.
    run = simulate([full_study("a", 2, gpus_min=1, gpus_max=1, parallelism=2)], 2, "one", startup_seconds=5)
    assert [(s.trial, s.gpus, s.start, s.end) for s in run.segments] == [(0, 1, 0, 15), (1, 1, 0, 15)]
    assert run.end == 15 and run.studies["a"].gpu_seconds == 30 and run.utilisation() == 1.0
    # Both GPUs per segment (max): trial 0 in 5 + 10 * 0.5 = 10 s, then trial 1 until 20.
    run = simulate([full_study("a", 2, gpus_min=1, gpus_max=2, parallelism=2)], 2, "max", startup_seconds=5)
    assert [(s.trial, s.gpus, s.start, s.end) for s in run.segments] == [(0, 2, 0, 10), (1, 2, 10, 20)]
    assert run.studies["a"].gpu_seconds == 40 and run.studies["a"].end == 20
    assert run.usage == [(0.0, {}), (0.0, {"a": 2}), (20.0, {})]


def test_a_promoted_segment_pays_only_the_steps_it_adds():
    obj = CountingOnes()  # resumable, rungs 9, 27, 81, 243, 729
    st = SimStudy("a", lambda: ASHA(SAMPLERS["random"](obj.space(), 0), 9, 729, 10), obj, LINEAR,
                  gpus_min=1, gpus_max=1)
    run = simulate([st], 1, "one", startup_seconds=0)
    for s in run.segments:
        assert s.end - s.start == pytest.approx(s.budget - (s.resume_from or 0))
    assert sum(s.end - s.start for s in run.segments) == pytest.approx(run.end)  # one GPU, never idle


def test_fair_share_1_to_3_on_8_gpus_without_preemption():
    # Each wants all 8 GPUs for every segment (perfect scaling, gpus 1..8, one trial at a time).
    a = full_study("a", 6, gpus_min=1, gpus_max=8, weight=1)
    b = full_study("b", 3, gpus_min=1, gpus_max=8, weight=3, arrival=1.0)
    run = simulate([a, b], 8, "oracle", startup_seconds=0)
    segs = run.segments
    # Every segment ran its full length: nothing was cut short when b arrived.
    for s in segs:
        assert s.end - s.start == pytest.approx(10 / s.gpus)
    # a alone takes all 8; b waits for a's running segment (ends at 1.25) instead of preempting it.
    assert (segs[0].study, segs[0].gpus, segs[0].start) == ("a", 8, 0)
    b_starts = [s.start for s in segs if s.study == "b"]
    assert b_starts[0] == pytest.approx(1.25)
    # While both run, they hold 2:6; never more than 8 in all.
    both = [use for t, use in run.usage if len(use) == 2]
    assert both and all(use == {"a": 2, "b": 6} for use in both)
    assert all(sum(use.values()) <= 8 for _, use in run.usage)
    # Once b has ended, a's next segments get all 8 again.
    b_end = run.studies["b"].end
    after = [s for s in segs if s.study == "a" and s.start >= b_end]
    assert after and all(s.gpus == 8 for s in after)


def test_fair_share_off_is_first_come_first_served():
    a = full_study("a", 4, gpus_min=1, gpus_max=8, weight=1)
    b = full_study("b", 1, gpus_min=1, gpus_max=8, weight=3, arrival=1.0)
    run = simulate([a, b], 8, "oracle", fair_share=False, startup_seconds=0)
    assert [s.study for s in run.segments] == ["a", "a", "a", "a", "b"]


@pytest.mark.parametrize("parallelism", [1, 4])
def test_oracle_is_never_slower_than_one_or_max_where_the_answer_is_known(parallelism):
    def run(policy):
        return simulate([full_study("a", 8, BEST_AT_2, gpus_min=1, gpus_max=8, parallelism=parallelism)],
                        8, policy, startup_seconds=0).end

    times = {p: run(p) for p in ("one", "max", "oracle")}
    # 8 trials of 10 steps: oracle 2 GPUs each (7 s a segment), one 10 s, max 8 GPUs at 10 s.
    per_wave = {1: 8, 4: 2}[parallelism]  # segments one after another
    assert times["oracle"] == pytest.approx(per_wave * 7.0)
    assert times["one"] == pytest.approx(per_wave * 10.0)
    assert times["max"] == pytest.approx(8 * 10.0)
    assert times["oracle"] <= min(times["one"], times["max"])


def test_rung_replaces_a_wrong_prediction_by_the_measured_fit():
    # Declares perfect scaling (8 GPUs) but truly only 2 are efficient; segments that got
    # fewer GPUs (only 6 free) give the second GPU count, and the fit takes over.
    declared = RingAllReduce(1.0, 0.0, 1.0, 0.0)
    st = full_study("a", 12, BEST_AT_2, declared=declared, gpus_min=1, gpus_max=8, parallelism=2)
    run = simulate([st], 10, "rung", startup_seconds=0)
    gpus = [s.gpus for s in sorted(run.segments, key=lambda s: (s.start, s.trial))]
    assert gpus[:2] == [8, 2]  # the prediction, then what was left
    assert gpus[-4:] == [2, 2, 2, 2]  # the measured curve's choice


def test_rung_probes_a_second_gpu_count_when_every_segment_would_get_the_same():
    # One trial at a time with GPUs to spare: the wrong prediction (8) always fits, so only
    # a probe at another count lets the measured curve (best at 2) take over.
    declared = RingAllReduce(1.0, 0.0, 1.0, 0.0)
    st = full_study("a", 6, BEST_AT_2, declared=declared, gpus_min=1, gpus_max=8, parallelism=1)
    gpus = [s.gpus for s in sorted(simulate([st], 16, "rung", startup_seconds=0).segments,
                                   key=lambda s: s.start)]
    assert gpus[:2] == [8, 4] and gpus[-3:] == [2, 2, 2]


def test_a_seed_gives_the_same_run():
    obj = CountingOnes()

    def run():
        studies = [SimStudy(n, lambda: ASHA(SAMPLERS["tpe"](obj.space(), 3), 9, 243, 30), obj, BEST_AT_2,
                            declared=LINEAR, parallelism=3, weight=w, arrival=t, target_regret=0.3)
                   for n, w, t in (("a", 1, 0.0), ("b", 2, 50.0))]
        return simulate(studies, 8, "rung", measure_noise=0.1, seed=7)

    one, two = run(), run()
    assert one.segments == two.segments and one.usage == two.usage and one.studies == two.studies
