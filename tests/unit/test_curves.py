"""Learning-curve extrapolation: known extrapolations, the predictive, curve-stop and ASHA's curve promotion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from rung.curves import MIN_POINTS, Curve, fit_curve
from rung.errors import InputError
from rung.records import SegmentRecord, SegmentStatus, TrialRecord
from rung.schedulers.asha import ASHA
from rung.schedulers.curve_stop import CurveStop
from rung.search.random import RandomSampler
from rung.space import Param, SearchSpace

pytestmark = pytest.mark.unit

SPACE = SearchSpace([Param("x", "float", 0.0, 1.0)])
STEPS = np.arange(1.0, 21.0)


def power(x):
    return 0.1 + 2.0 * np.asarray(x, dtype=float) ** -0.5        # 0.2 at step 400


def exponential(x):
    return 0.3 + 1.5 * np.exp(-0.25 * np.asarray(x, dtype=float))   # 0.3 (to 1e-11) at step 100


# ---- the ensemble -------------------------------------------------------------------

def test_a_power_law_extrapolates_to_its_value_and_the_power_family_carries_the_weight():
    fit = fit_curve(STEPS, power(STEPS))
    assert fit.mean(400) == pytest.approx(0.2, abs=1e-4)
    assert max(fit.weights, key=fit.weights.get) == "pow3" and fit.weights["pow3"] > 0.5
    assert sum(fit.weights.values()) == pytest.approx(1.0)


def test_an_exponential_extrapolates_to_its_asymptote_and_the_exponential_family_carries_the_weight():
    steps = np.arange(1.0, 17.0)
    fit = fit_curve(steps, exponential(steps))
    assert fit.mean(100) == pytest.approx(0.3, abs=1e-4)
    assert max(fit.weights, key=fit.weights.get) == "exp3"


def test_a_log_linear_curve_keeps_falling_as_log_x():
    steps = np.arange(1.0, 11.0)
    fit = fit_curve(steps, 2.0 - 0.3 * np.log(steps))
    assert fit.mean(1000) == pytest.approx(2.0 - 0.3 * math.log(1000), abs=1e-4)   # -0.0723


def test_the_step_unit_does_not_matter():
    """Steps counted in iterations (x1000) instead of epochs: the same curve, the same forecast."""
    in_epochs = fit_curve(STEPS, power(STEPS))
    in_iterations = fit_curve(STEPS * 1000, power(STEPS))
    assert in_iterations.mean(400_000) == pytest.approx(in_epochs.mean(400), abs=1e-6)


def test_prob_below_rises_with_the_value_and_a_farther_target_is_less_certain():
    noisy = power(np.arange(1.0, 31.0)) + np.random.default_rng(0).normal(0.0, 0.01, 30)
    fit = fit_curve(np.arange(1.0, 31.0), noisy)
    centre = fit.mean(300)
    probs = [fit.prob_below(v, 300) for v in np.linspace(centre - 1.0, centre + 1.0, 101)]
    assert np.all(np.diff(probs) >= 0)
    assert probs[0] < 0.01 and probs[-1] > 0.99 and 0.2 < fit.prob_below(centre, 300) < 0.8
    # 0.03 above the forecast is near-certain just past the data, much less so 30x farther out
    assert fit.prob_below(fit.mean(40) + 0.03, 40) > fit.prob_below(fit.mean(900) + 0.03, 900) + 0.1


def test_the_forecast_is_uncertain_by_the_change_it_still_predicts():
    """Exact data: no residual and no parameter uncertainty, so the spread at step 400 is
    KAPPA (1) times the drop from the last point (0.547 at step 20) to the forecast (0.2)."""
    fit = fit_curve(STEPS, power(STEPS))
    assert fit.prob_below(float(power(20)), 400) == pytest.approx(ndtr(1.0), abs=1e-3)   # 0.841
    assert fit.prob_below(0.2, 400) == pytest.approx(0.5, abs=1e-3)


def test_a_rising_curve_is_forecast_flat_at_its_average():
    """Every family is monotone: a loss that rises (overfitting) is not extrapolated upwards."""
    fit = fit_curve(STEPS, 0.1 + 0.01 * STEPS)
    assert fit.mean(100) == pytest.approx(0.205, abs=1e-9)


def test_a_flat_curve_forecasts_its_level_with_confidence():
    fit = fit_curve(STEPS, np.full(20, 0.5))
    assert fit.mean(1000) == pytest.approx(0.5, abs=1e-9)
    assert fit.prob_below(0.501, 1000) > 0.99 and fit.prob_below(0.499, 1000) < 0.01


def test_too_few_usable_points_give_no_fit():
    assert MIN_POINTS == 5
    assert fit_curve(STEPS[:4], power(STEPS[:4])) is None
    with_gaps = [1.0, math.nan, 0.8, math.inf, 0.7, 0.65]      # 4 finite points
    assert fit_curve(range(1, 7), with_gaps) is None
    assert fit_curve(range(1, 8), with_gaps + [0.62]) is not None


def test_a_long_curve_is_thinned_and_still_extrapolates():
    steps = np.arange(1.0, 2001.0)
    assert fit_curve(steps, power(steps)).mean(40_000) == pytest.approx(0.11, abs=1e-4)


def test_curve_ignores_repeated_steps_and_fits_up_to_a_step():
    curve = Curve()
    for s in STEPS:
        assert curve.add(s, float(power(s)))
    assert not curve.add(20, 9.0) and not curve.add(3, 9.0)   # a restarted segment repeats steps
    for s in range(21, 30):
        curve.add(s, 5.0)                                     # a later jump the early fit must not see
    assert len(curve) == 29
    assert curve.fit(up_to=20).mean(400) == pytest.approx(0.2, abs=1e-4)


# ---- curve-stop ----------------------------------------------------------------------

def incumbent(x):
    return 0.05 + 1.0 / np.asarray(x, dtype=float)          # 0.1 at the full budget, 20


def plateau(x):
    return 0.5 + 0.5 * np.exp(-np.asarray(x, dtype=float))  # levels off at 0.5: cannot beat 0.1


def steep(x):
    return 0.6 * np.asarray(x, dtype=float) ** -0.9        # 0.14 at step 5, 0.04 at 20: can


def make_stop(**settings) -> CurveStop:
    return CurveStop(RandomSampler(SPACE, 0), 1, 20, 10, **settings)


def feed(s: CurveStop, trial: int, f, steps) -> list[bool]:
    return [s.report(trial, float(x), float(f(x))) for x in steps]


def live_history(s: CurveStop) -> None:
    """Trials 0-2 start together; 1 reports before any trial finished, 0 then sets the incumbent."""
    assert [s.ask().trial for _ in range(3)] == [0, 1, 2]
    assert feed(s, 1, plateau, range(1, 7)) == [True] * 6    # hopeless, but nothing to compare with yet
    feed(s, 0, incumbent, range(1, 21))
    s.tell(0, 20, float(incumbent(20)))


def test_curve_stop_stops_a_curve_that_cannot_beat_the_incumbent_and_keeps_one_that_can():
    s = make_stop()
    live_history(s)
    assert s.incumbent == pytest.approx(0.1)
    assert s.report(1, 7, float(plateau(7))) is False
    # worse than the incumbent now (0.14 > 0.1 at step 5), but heading for 0.04
    assert feed(s, 2, steep, range(1, 13)) == [True] * 12


def test_curve_stop_waits_for_min_points_and_grace_steps():
    s = make_stop()
    live_history(s)
    assert s.ask().trial == 3
    assert feed(s, 3, plateau, range(1, 6)) == [True] * 4 + [False]
    patient = make_stop(minPoints=8)
    live_history(patient)
    patient.ask()
    assert feed(patient, 3, plateau, range(1, 9)) == [True] * 7 + [False]
    graced = make_stop(graceSteps=8)
    live_history(graced)
    assert feed(graced, 1, plateau, range(7, 10)) == [True, False, False]


def test_curve_stop_compares_only_with_trials_that_reached_the_full_budget():
    s = make_stop()
    s.ask(), s.ask()
    s.tell(0, 10, 0.01)          # ended short of its budget (stopped at step 10): no incumbent
    assert s.incumbent == math.inf
    assert feed(s, 1, plateau, range(1, 10)) == [True] * 9


def test_curve_stop_is_rebuilt_from_records_with_the_same_decisions():
    s = make_stop()
    live_history(s)
    s.report(1, 7, float(plateau(7)))
    s.tell(1, 7, float(plateau(7)))                      # stopped at step 7
    feed(s, 2, steep, range(1, 9))

    def curve(f, steps):
        return [[float(x), float(f(x))] for x in steps]

    records = [
        TrialRecord(0, "s-0", s.configs[0], [SegmentRecord(20, status=SegmentStatus.COMPLETED, loss=0.1,
                                                           reached=20, curve=curve(incumbent, range(1, 21)))]),
        TrialRecord(1, "s-1", s.configs[1], [SegmentRecord(20, status=SegmentStatus.STOPPED, loss=float(plateau(7)),
                                                           reached=7, curve=curve(plateau, range(1, 8)))]),
        TrialRecord(2, "s-2", s.configs[2], [SegmentRecord(20, curve=curve(steep, range(1, 9)))]),
    ]
    rebuilt = make_stop().restore(records)
    assert rebuilt.running == s.running == {2: 20.0}
    assert rebuilt.incumbent == s.incumbent
    for x in (s, rebuilt):
        assert feed(x, 2, steep, range(9, 13)) == [True] * 4
    a, b = s.ask(), rebuilt.ask()
    assert a == b and a.trial == 3
    assert feed(s, 3, plateau, range(1, 7)) == feed(rebuilt, 3, plateau, range(1, 7)) == [True] * 4 + [False] * 2


def test_curve_stop_rejects_bad_settings_by_name():
    for key, value in [("threshold", 1.5), ("minPoints", 3), ("graceSteps", -1), ("threshold", "low")]:
        with pytest.raises(InputError, match=f"settings.{key}"):
            make_stop(**{key: value})


# ---- ASHA with promotion: curve ------------------------------------------------------

CURVES = {0: lambda x: 0.30 + 0.7 * np.exp(-x),    # levelled off: 0.3001 at the rung (9), 0.30 at 81
          1: lambda x: 0.05 + 2.43 / x,            # still falling: 0.32 at the rung, 0.08 at 81
          2: lambda x: 0.6 + 0.2 / x}              # worst either way


def asha_rung0(promotion: str, reports: bool = True) -> ASHA:
    """Rungs 9, 27, 81 (eta 3): three trials finish rung 0; its top 1 gets promoted."""
    s = ASHA(RandomSampler(SPACE, 0), 9, 81, 10, promotion=promotion)
    for t in range(3):
        assert s.ask().budget == 9
    for t, f in CURVES.items():
        if reports:
            for x in range(1, 10):
                s.report(t, float(x), float(f(x)))
        s.tell(t, 9, float(f(9)))
    return s


def test_asha_curve_promotion_prefers_the_curve_still_falling():
    d = asha_rung0("curve").ask()
    assert (d.trial, d.budget, d.resume_from) == (1, 27, 9)


def test_asha_loss_promotion_prefers_the_better_rung_loss():
    d = asha_rung0("loss").ask()
    assert (d.trial, d.budget, d.resume_from) == (0, 27, 9)


def test_asha_curve_promotion_without_a_curve_ranks_by_the_rung_loss():
    assert asha_rung0("curve", reports=False).ask().trial == 0
    few = ASHA(RandomSampler(SPACE, 0), 1, 9, 10, promotion="curve")   # rung 0 at 1 epoch: one point each
    for t, loss in enumerate([3.0, 1.0, 2.0]):
        few.ask()
        few.report(t, 1.0, loss)
        few.tell(t, 1, loss)
    assert few.ask().trial == 1


def test_asha_curve_promotion_is_rebuilt_from_records_and_needs_no_live_reports():
    s = asha_rung0("curve")
    records = [TrialRecord(t, f"s-{t}", s.configs[t],
                           [SegmentRecord(9, status=SegmentStatus.COMPLETED, loss=float(f(9)), reached=9,
                                          curve=[[float(x), float(f(x))] for x in range(1, 10)])])
               for t, f in CURVES.items()]
    rebuilt = ASHA(RandomSampler(SPACE, 0), 9, 81, 10, promotion="curve").restore(records)
    assert rebuilt.ask() == s.ask()
    assert not s.stops_early   # the curves may arrive with the results


def test_asha_rejects_an_unknown_promotion():
    with pytest.raises(InputError, match="settings.promotion"):
        ASHA(RandomSampler(SPACE, 0), 1, 9, 10, promotion="median")
