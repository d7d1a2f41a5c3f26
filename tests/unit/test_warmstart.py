"""Warm start: meta-features, task similarity, priors mapped across search spaces, and a
KDE sampler seeded with them (rung.warmstart, KDESampler.warm_start, rung meta-features)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from rung.errors import InputError
from rung.meta_features_cli import main as meta_features_main
from rung.search import KDESampler, Observation
from rung.space import Param, SearchSpace
from rung.warmstart import load_dataset, meta_features, prior_from, similarity

pytestmark = pytest.mark.unit

PLANE = SearchSpace([Param("x", "float", 0.0, 1.0), Param("y", "float", 0.0, 1.0)])
GOOD = np.array([0.8, 0.2])   # where the earlier task's optimum is


def bowl(space: SearchSpace, n: int, centre=GOOD, seed: int = 3, budget: float = 1.0) -> list[Observation]:
    """n random configurations of `space`, loss = squared distance of (x, y) to `centre`."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        c = space.sample(rng)
        out.append(Observation(t, c, budget, float((c["x"] - centre[0]) ** 2 + (c["y"] - centre[1]) ** 2)))
    return out


def near(configs: list[dict], centre=GOOD, radius: float = 0.2) -> float:
    """Share of configurations within `radius` of `centre` in (x, y)."""
    return float(np.mean([math.hypot(c["x"] - centre[0], c["y"] - centre[1]) < radius for c in configs]))


# ---- meta-features ---------------------------------------------------------------------

def labelled() -> tuple[np.ndarray, np.ndarray]:
    """8 rows, 3 features (2 cells missing), 6 'a' and 2 'b': feature 0 separates them, the
    others are constant once their missing cells take the column median."""
    X = np.array([[-3.0, 0.5, 4.0], [-2.5, 0.5, math.nan], [-2.0, 0.5, 4.0], [-1.5, 0.5, 4.0],
                  [-1.0, 0.5, 4.0], [-0.5, math.nan, 4.0], [2.0, 0.5, 4.0], [3.0, 0.5, 4.0]])
    return X, np.array(list("aaaaaabb"), dtype=object)


def test_meta_features_of_a_hand_made_dataset():
    X, y = labelled()
    mf = meta_features(X, y)
    assert mf["logInstances"] == pytest.approx(math.log(8))
    assert mf["logFeatures"] == pytest.approx(math.log(3))
    assert mf["missingFraction"] == pytest.approx(2 / 24)
    assert mf["classes"] == 2
    assert mf["classBalance"] == pytest.approx(2 / 6)
    assert mf["classEntropy"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert mf["accuracyStump"] == 1.0          # one threshold on feature 0 splits the classes
    assert mf["accuracy1NN"] == 1.0            # each 'b' is nearest to the other
    assert 0.0 <= mf["accuracyNaiveBayes"] <= 1.0
    assert meta_features(X, y) == mf           # deterministic


def test_meta_features_of_a_regression_target_have_no_classes():
    rng = np.random.default_rng(0)
    X = rng.random((40, 2))
    mf = meta_features(X, 3 * X[:, 0] + 0.5)   # exactly linear
    assert "classes" not in mf and "classBalance" not in mf
    assert mf["r2Linear"] == pytest.approx(1.0)
    assert -1.0 <= mf["r2NearestNeighbour"] <= 1.0


def test_load_dataset_from_csv_npy_and_npz(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("size,colour,label,weight\n1,red,yes,0.5\n2,,no,NA\n3,blue,yes,1.5\n4,red,,2.0\n")
    X, y = load_dataset(csv, target="label")
    assert list(y) == ["yes", "no", "yes"]            # the row without a label is left out
    np.testing.assert_array_equal(X[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(X[[0, 2], 1], [1, 0])   # text -> codes of sorted values: blue 0, red 1
    assert np.isnan(X[1, 1]) and np.isnan(X[1, 2])
    X, y = load_dataset(csv)                           # default: the last column
    assert list(y) == [0.5, 1.5, 2.0] and X.shape == (3, 3)

    table = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "t.npy", table)
    X, y = load_dataset(tmp_path / "t.npy", target=0)
    np.testing.assert_array_equal(y, table[:, 0])
    np.testing.assert_array_equal(X, table[:, 1:])
    np.savez(tmp_path / "xy.npz", X=table, y=np.array([0, 1, 0, 1]))
    X, y = load_dataset(tmp_path / "xy.npz")
    assert X.shape == (4, 3) and list(y) == [0, 1, 0, 1]
    with pytest.raises(InputError, match="--target"):
        load_dataset(csv, target="height")


# ---- similarity ------------------------------------------------------------------------

def test_similarity_hand_worked():
    a = {"logInstances": 10.0, "classBalance": 0.5, "onlyA": 1.0}
    b = {"logInstances": 8.0, "classBalance": 0.4, "onlyB": 7.0}
    # gaps: |10 - 8| / 10 = 0.2 (relative), |0.5 - 0.4| / 1 = 0.1 (absolute); mean 0.15
    assert similarity(a, b) == pytest.approx(math.exp(-0.15 / 0.1))
    assert similarity(a, a) == 1.0
    assert similarity(a, {"other": 1.0}) == 1.0      # nothing shared: nothing says they differ


def test_similarity_orders_nearer_tasks_first_whatever_the_magnitudes():
    target = {"logInstances": 9.0, "classes": 100.0, "accuracy1NN": 0.80}
    nearer = {"logInstances": 8.8, "classes": 95.0, "accuracy1NN": 0.78}
    farther = {"logInstances": 6.0, "classes": 95.0, "accuracy1NN": 0.78}
    assert 0 < similarity(target, farther) < similarity(target, nearer) < 1
    # the number of classes counts by its relative gap: 10 vs 11 weighs as 100 vs 110
    assert similarity({"classes": 10.0}, {"classes": 11.0}) == pytest.approx(
        similarity({"classes": 100.0}, {"classes": 110.0}))


# ---- priors across search spaces --------------------------------------------------------

EARLIER = SearchSpace([Param("lr", "float", 1e-4, 1.0, log=True), Param("layers", "int", 1, 8),
                       Param("act", "categorical", choices=("relu", "tanh", "sigmoid")),
                       Param("dropout", "float", 0.0, 0.5), Param("batch", "float", 16, 256)])
CURRENT = SearchSpace([Param("lr", "float", 1e-3, 1e-1, log=True), Param("layers", "int", 2, 6),
                       Param("act", "categorical", choices=("relu", "tanh")),
                       Param("batch", "ordinal", choices=(32, 64, 128))])


def test_prior_maps_shared_clips_drops_and_ignores():
    base = {"dropout": 0.1, "batch": 64.0}
    obs = [Observation(0, {"lr": 1e-2, "layers": 4, "act": "tanh", **base}, 9.0, 0.4),
           Observation(1, {"lr": 1e-4, "layers": 8, "act": "relu", **base}, 9.0, 0.2),    # 2 clipped
           Observation(2, {"lr": 1e-2, "layers": 3, "act": "sigmoid", **base}, 9.0, 0.1),  # dropped
           Observation(0, {"lr": 1e-2, "layers": 4, "act": "tanh", **base}, 9.0, 0.5),    # told again: 0.4 counts
           Observation(3, {"lr": 1e-2, "layers": 3, "act": "relu", **base}, 1.0, 9.0),    # a lower budget,
           Observation(4, {"lr": 1e-2, "layers": 5, "act": "relu", **base}, 1.0, 8.0),    # with enough
           Observation(4, {"lr": 0.1, "layers": 2, "act": "relu", **base}, 27.0, 0.3)]   # too few up there
    prior = prior_from(CURRENT, EARLIER, obs, 0.5, min_points=2)
    assert prior.budget == 9.0 and prior.weight == 0.5
    assert prior.used == ("lr", "layers", "act")
    assert prior.marginalised == ("batch",)            # a number earlier, a choice now
    assert prior.ignored == ("dropout", "batch")
    assert (prior.clipped, prior.dropped) == (2, 1)
    np.testing.assert_array_equal(prior.trial, [0, 1])
    np.testing.assert_array_equal(prior.loss, [0.4, 0.2])
    # lr 1e-2 is the log-midpoint of [1e-3, 1e-1]; 1e-4 clips to 1e-3; layers 8 clips to 6,
    # the top of the int cells [1.5, 6.5]; 'tanh' is choice 1; batch is uniform (NaN)
    np.testing.assert_allclose(prior.X[:, :3], [[0.5, 2.5 / 5, 1.0], [0.0, 4.5 / 5, 0.0]])
    assert np.isnan(prior.X[:, 3]).all()
    np.testing.assert_array_equal(prior.missing, [False, False, False, True])
    assert "uniform over batch" in prior.note() and "ignored dropout, batch" in prior.note()


def test_priors_worth_less_than_a_first_model_leave_the_start_random():
    # P = 5 observations make a model; 60 at weight 0.08 are worth 4.8, at 0.09 worth 5.4
    obs = bowl(PLANE, 60)
    cold = [KDESampler(PLANE, 0).propose(i, []) for i in range(20)]
    assert [KDESampler(PLANE, 0).warm_start([prior_from(PLANE, PLANE, obs, 0.08)]).propose(i, [])
            for i in range(20)] == cold
    assert [KDESampler(PLANE, 0).warm_start([prior_from(PLANE, PLANE, obs, 0.09)]).propose(i, [])
            for i in range(20)] != cold


def test_prior_from_gives_nothing_when_there_is_nothing_to_give():
    obs = bowl(PLANE, 20)
    assert prior_from(PLANE, PLANE, obs, 0.0) is None                               # weight 0
    assert prior_from(PLANE, SearchSpace([Param("z", "float", 0, 1)]), obs, 1.0) is None  # nothing shared
    assert prior_from(PLANE, PLANE, obs[:4], 1.0) is None                           # < len(space) + 3
    assert len(prior_from(PLANE, PLANE, obs[:5], 1.0).loss) == 5
    with pytest.raises(InputError, match="spec.warmStart.weight"):
        prior_from(PLANE, PLANE, obs, -1.0)


# ---- the warm-started KDE --------------------------------------------------------------------

def test_warm_kde_without_own_observations_proposes_in_the_priors_good_region():
    prior = prior_from(PLANE, PLANE, bowl(PLANE, 60), 1.0)
    warm = KDESampler(PLANE, 0, randomFraction=0.0).warm_start([prior])
    cold = KDESampler(PLANE, 0, randomFraction=0.0)
    assert near([warm.propose(i, []) for i in range(100)]) > 0.9
    assert near([cold.propose(i, []) for i in range(100)]) < 0.2   # uniform: about pi 0.2^2 = 0.13


def test_prior_of_weight_about_zero_changes_nothing():
    faint = prior_from(PLANE, PLANE, bowl(PLANE, 60), 1e-9)
    # no own model: the proposals of a cold sampler
    assert ([KDESampler(PLANE, 0).warm_start([faint]).propose(i, []) for i in range(20)]
            == [KDESampler(PLANE, 0).propose(i, []) for i in range(20)])
    # with an own model (optimum elsewhere): the same l/g scores as cold
    own = bowl(PLANE, 30, centre=(0.2, 0.8), seed=5)
    warm = KDESampler(PLANE, 0).warm_start([faint])
    cold = KDESampler(PLANE, 0)
    warm.model_budget(own), cold.model_budget(own)
    (wg, wb), (cg, cb) = warm._mix(1.0), cold._fit(1.0)
    x = cg.sample(np.random.default_rng(1), 500, 3.0)   # candidates as propose() draws them
    warm_score, cold_score = wg.logpdf(x) - wb.logpdf(x), cg.logpdf(x) - cb.logpdf(x)
    # the same best candidate, the same scores near the top (far below, where the own KDEs
    # vanish to e^-20 and less, even a 1e-9 share shows, but no proposal comes from there)
    assert np.argmax(warm_score) == np.argmax(cold_score)
    top = cold_score > cold_score.max() - 5
    assert top.sum() > 100
    np.testing.assert_allclose(warm_score[top], cold_score[top], atol=1e-6)


def test_prior_weights_hand_worked_and_own_points_take_over():
    # d = 2: minPoints 3, a first model's worth P = 5. Prior A: 50 observations at weight 0.5,
    # split (7, 43), each counting 0.5 * 5/50 = 0.05: l gets 0.35 and g 2.15.
    # Prior B: 5 observations at weight 1, split (3, 3): 3 and 3.
    a = prior_from(PLANE, PLANE, bowl(PLANE, 50), 0.5)
    b = prior_from(PLANE, PLANE, bowl(PLANE, 5, seed=4), 1.0)
    s = KDESampler(PLANE, 0).warm_start([a, b])
    s.model_budget([])
    good, bad = s._mix(None)                     # no own model: the priors' alone
    np.testing.assert_allclose(np.exp(good.log_w), np.array([0.35, 3]) / 3.35)
    np.testing.assert_allclose(np.exp(bad.log_w), np.array([2.15, 3]) / 5.15)
    own = bowl(PLANE, 20, centre=(0.2, 0.8), seed=5)
    s.model_budget(own)
    good, bad = s._mix(1.0)                      # own first: 20 points split (3, 17)
    np.testing.assert_allclose(np.exp(good.log_w), np.array([3, 0.35, 3]) / 6.35)
    np.testing.assert_allclose(np.exp(bad.log_w), np.array([17, 2.15, 3]) / 22.15)
    s.model_budget(own + bowl(PLANE, 180, centre=(0.2, 0.8), seed=6))
    good, bad = s._mix(1.0)                      # 200 own points split (30, 170)
    np.testing.assert_allclose(np.exp(good.log_w), np.array([30, 0.35, 3]) / 33.35)
    np.testing.assert_allclose(np.exp(bad.log_w), np.array([170, 2.15, 3]) / 175.15)


def test_a_dimension_the_earlier_study_lacked_is_uniform():
    only_x = SearchSpace([Param("x", "float", 0.0, 1.0)])
    rng = np.random.default_rng(2)
    earlier = [Observation(t, {"x": float(v)}, 1.0, float((v - 0.8) ** 2)) for t, v in enumerate(rng.random(40))]
    prior = prior_from(PLANE, only_x, earlier, 1.0)
    s = KDESampler(PLANE, 0).warm_start([prior])
    good, _ = s._mix(None)
    draws = good.sample(np.random.default_rng(0), 2000, 3.0)
    assert np.mean(np.abs(draws[:, 0] - 0.8) < 0.15) > 0.8
    assert abs(draws[:, 1].std() - 12 ** -0.5) < 0.02 and abs(draws[:, 1].mean() - 0.5) < 0.03  # uniform
    at = lambda y: np.array([[0.8, y]])
    assert good.logpdf(at(0.1)) == pytest.approx(good.logpdf(at(0.9)))   # says nothing about y


def test_warm_proposals_are_a_pure_function_of_index_and_observations():
    prior = prior_from(PLANE, PLANE, bowl(PLANE, 60), 0.7)
    own = bowl(PLANE, 12, centre=(0.2, 0.8), seed=5)
    forward = [KDESampler(PLANE, 4).warm_start([prior]).propose(i, own) for i in range(12)]
    s = KDESampler(PLANE, 4).warm_start([prior])
    assert [s.propose(i, own) for i in reversed(range(12))][::-1] == forward
    assert [KDESampler(PLANE, 4).propose(i, own) for i in range(12)] != forward   # the prior counts


# ---- rung meta-features ----------------------------------------------------------------------

def test_meta_features_command_prints_a_map_to_paste(tmp_path, capsys):
    X, y = labelled()
    np.savez(tmp_path / "d.npz", X=X, y=np.array([0, 0, 0, 0, 0, 0, 1, 1]))
    assert meta_features_main([str(tmp_path / "d.npz")]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["classBalance"] == round(1 / 3, 4) and printed["classes"] == 2
    assert meta_features_main([str(tmp_path / "d.npz"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == printed


def test_meta_features_command_reports_bad_input_in_one_line(tmp_path, capsys):
    assert meta_features_main([str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a file" in err and err.count("\n") == 1
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,4\n")
    assert meta_features_main([str(tmp_path / "d.csv"), "--target", "c"]) == 2
    assert "--target: 'c' is not a column; give one of a, b" in capsys.readouterr().err
    assert meta_features_main([str(tmp_path / "d.csv"), "--format", "xml"]) == 2
    assert "invalid choice" in capsys.readouterr().err
