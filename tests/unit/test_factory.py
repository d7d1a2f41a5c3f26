"""make_scheduler: every algorithm name builds, settings are checked, BOHB wires its KDE."""

import pytest

from rung.api import ALGORITHMS, parse_study
from rung.errors import InputError
from rung.schedulers import PLANS, make_scheduler
from rung.schedulers.asha import ASHA
from rung.schedulers.hyperband import Hyperband
from rung.schedulers.simulate import simulate
from rung.search import KDESampler, SobolSampler

pytestmark = pytest.mark.unit


def study(name="asha", settings=None, max_trials=40, bmin=1, bmax=27):
    return parse_study({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": "s"},
        "spec": {
            "objective": {"metric": "loss"},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1},
                            "c": {"type": "categorical", "choices": ["a", "b", "c"]}},
            "algorithm": {"name": name, "seed": 5, "settings": settings or {}},
            "budget": {"min": bmin, "max": bmax},
            "limits": {"maxTrials": max_trials},
            "trial": {"command": ["true"]},
        },
    })


def loss(trial, config, budget):
    return (config["x"] - 0.7) ** 2 + (0.0 if config["c"] == "b" else 0.5) + 1.0 / budget


def test_every_algorithm_name_has_a_plan():
    assert set(PLANS) == set(ALGORITHMS)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_runs_a_study_to_the_end(name):
    s = make_scheduler(study(name, max_trials=30))
    events = simulate(s, loss, workers=3)
    assert s.finished()
    assert len(s.configs) == (15 if name == "grid" else 30)   # the grid has 5 x 3 points
    assert all(0 <= c["x"] <= 1 and c["c"] in "abc" for c in s.configs.values())
    assert events


def test_settings_are_checked_with_the_field_and_the_fix():
    with pytest.raises(InputError) as e:
        make_scheduler(study("asha", {"reductionFactr": 3}))
    assert e.value.field == "spec.algorithm.settings.reductionFactr" and "reductionFactor" in e.value.fix
    with pytest.raises(InputError) as e:
        make_scheduler(study("asha", {"reductionFactor": 1}))
    assert e.value.field == "spec.algorithm.settings.reductionFactor"
    with pytest.raises(InputError) as e:
        make_scheduler(study("asha", {"sampler": "magic"}))
    assert e.value.field == "spec.algorithm.settings.sampler" and "sobol" in e.value.fix


def test_sampler_setting_swaps_where_new_configs_come_from():
    s = make_scheduler(study("asha", {"sampler": "sobol", "reductionFactor": 2}))
    assert isinstance(s, ASHA) and isinstance(s.sampler, SobolSampler) and s.eta == 2


@pytest.mark.parametrize("name,cls", [("bohb", Hyperband), ("async-bohb", ASHA)])
def test_bohb_fits_a_budget_model_only_with_nmin_plus_2_points(name, cls):
    s = make_scheduler(study(name, {"topPercent": 20}, max_trials=200))
    assert isinstance(s, cls) and isinstance(s.sampler, KDESampler)
    n_min = 2 + 1                                  # dimensions + 1
    seen = []
    for _ in range(120):
        d = s.ask()
        if d is None:
            break
        s.tell(d.trial, d.budget, loss(d.trial, d.config, d.budget))
        by_budget = {}
        for o in s.observations:
            by_budget[o.budget] = by_budget.get(o.budget, 0) + 1
        eligible = [b for b, n in by_budget.items() if n >= n_min + 2]
        seen.append((s.sampler.model_budget(s.observations), max(eligible) if eligible else None))
    assert all(model == expected for model, expected in seen)
    assert seen[0][0] is None and seen[-1][0] is not None
    assert any(m is not None and m > 1 for m, _ in seen)   # moves up to larger budgets
