"""rung.nas: the cell space, the genotype rule, derived networks and the datasets."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from rung.errors import InputError

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (pip install 'rung[torch]')")]

if importlib.util.find_spec("torch") is not None:
    import torch

    from rung.nas import CANDIDATE_OPS, Data, DerivedNetwork, check_genotype, derive, evaluate, random_genotype
    from rung.nas.data import from_npz, load_data
    from rung.nas.space import MixedOp, SearchNetwork, edge_count, edges

    torch.set_num_threads(1)


def test_mixed_op_is_the_softmax_weighted_sum_of_live_ops_and_skips_the_rest():
    torch.manual_seed(0)
    ops = ["sep_conv_3x3", "max_pool_3x3", "skip_connect", "zero"]
    mixed = MixedOp(ops, 4, 1)
    calls = []
    for i, op in enumerate(mixed.ops):
        op.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
    x = torch.randn(3, 4, 6, 6)
    weights = torch.softmax(torch.tensor([0.3, -1.0, 0.5, 2.0]), dim=0)
    expected = sum(weights[i] * mixed.ops[i](x) for i in range(3))
    calls.clear()
    assert torch.allclose(mixed(x, weights, [True] * 4), expected, atol=1e-6)
    assert calls == [0, 1, 2]  # the zero op takes its share of the softmax but never runs
    calls.clear()
    out = mixed(x, weights, [False, True, False, True])
    assert calls == [1] and torch.allclose(out, weights[1] * mixed.ops[1](x), atol=1e-6)
    assert mixed(x, weights, [False, False, False, True]) is None


def test_search_network_has_one_alpha_row_per_edge_and_classifies():
    assert edge_count(4) == 14 and edges(2) == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    net = SearchNetwork(list(CANDIDATE_OPS), nodes=2, cells=3, channels=2, in_channels=1, classes=10)
    assert net.alphas["normal"].shape == net.alphas["reduction"].shape == (5, len(CANDIDATE_OPS))
    assert [c.reduction for c in net.cells] == [False, True, True]
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    alpha_ids = {id(a) for a in net.arch_parameters()}
    assert not alpha_ids & {id(p) for p in net.weight_parameters()}
    net.alive("normal")[:, :-1] = False  # only the zero op left: the cell still has an output
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_temperature_sharpens_and_pruned_ops_weigh_nothing():
    net = SearchNetwork(["sep_conv_3x3", "avg_pool_3x3", "zero"], 2, 2, 2, 1, 10)
    with torch.no_grad():
        net.alphas["normal"][:] = torch.tensor([1.0, 0.5, 0.0])
    warm = net.op_weights("normal")[0]
    net.temperature = 0.1
    cold = net.op_weights("normal")[0]
    assert cold[0] > warm[0] > 1 / 3 and cold[2] < warm[2]
    net.alive("normal")[0, 0] = False
    w = net.op_weights("normal")
    assert w[0, 0] == 0 and torch.isclose(w[0].sum(), torch.tensor(1.0)) and w[0, 1] > w[0, 2]


OPS = ["sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "skip_connect", "zero"]


def test_genotype_rule_keeps_the_two_strongest_non_zero_edges_per_node():
    # nodes=3: edges 0-1 into node 2 (from 0, 1), 2-4 into node 3 (from 0, 1, 2), 5-8 into node 4.
    rows = [
        [0.1, 0.2, 0.1, 0.1, 0.5],    # 2<-0: zero is largest, dil_conv_3x3 (0.2) is what counts
        [0.6, 0.1, 0.1, 0.1, 0.1],    # 2<-1: sep_conv_3x3
        [0.05, 0.05, 0.05, 0.05, 0.8],  # 3<-0: mostly zero; weakest non-zero edge
        [0.1, 0.1, 0.1, 0.6, 0.1],    # 3<-1: skip_connect 0.6
        [0.1, 0.1, 0.5, 0.1, 0.2],    # 3<-2: max_pool_3x3 0.5
        [0.3, 0.1, 0.1, 0.1, 0.4],    # 4<-0: sep 0.3
        [0.1, 0.1, 0.1, 0.1, 0.6],    # 4<-1: strongest op is zero; best non-zero only 0.1
        [0.1, 0.45, 0.1, 0.1, 0.25],  # 4<-2: dil 0.45
        [0.2, 0.1, 0.35, 0.1, 0.25],  # 4<-3: pool 0.35
    ]
    weights = {"normal": rows, "reduction": rows[::-1]}
    g = derive(weights, OPS, nodes=3)
    assert g["normal"] == [[["sep_conv_3x3", 1], ["dil_conv_3x3", 0]],
                           [["skip_connect", 1], ["max_pool_3x3", 2]],
                           [["dil_conv_3x3", 2], ["max_pool_3x3", 3]]]
    assert g["normal_concat"] == g["reduction_concat"] == [2, 3, 4]
    for cell in (g["normal"], g["reduction"]):
        assert all(len(node) == 2 and len({j for _, j in node}) == 2 for node in cell)
        assert all(op != "zero" for node in cell for op, _ in node)
    assert check_genotype(g) == 3


def test_genotype_rule_breaks_ties_of_saturated_weights_by_alpha():
    weights = {t: [[0.0, 0.0, 0.0, 0.0, 1.0]] * 2 for t in ("normal", "reduction")}
    alphas = {t: [[0.1, 0.3, 0.2, 0.0, 9.0], [0.5, 0.1, 0.0, 0.0, 9.0]] for t in ("normal", "reduction")}
    g = derive(weights, OPS, nodes=1, alphas=alphas)
    assert g["normal"] == [[["sep_conv_3x3", 1], ["dil_conv_3x3", 0]]]


def test_random_genotype_is_seeded_valid_and_never_zero():
    a, b = random_genotype(OPS, 4, seed=3), random_genotype(OPS, 4, seed=3)
    assert a == b and a != random_genotype(OPS, 4, seed=4)
    assert check_genotype(a) == 4
    for t in ("normal", "reduction"):
        for i, node in enumerate(a[t]):
            assert len(node) == 2 and node[0][1] < node[1][1] < 2 + i
            assert all(op in OPS and op != "zero" for op, _ in node)
    with pytest.raises(InputError, match="zero"):
        random_genotype(["zero"], 2, 0)


@pytest.mark.parametrize("bad", [
    {"normal": [[["conv_7x7", 0], ["skip_connect", 1]]], "reduction": [[["skip_connect", 0]]]},
    {"normal": [[["skip_connect", 2]]], "reduction": [[["skip_connect", 0]]]},
    {"normal": [[["skip_connect", 0]]]},
    {"normal": [[["skip_connect", 0]]], "reduction": [[["skip_connect", 0]], [["skip_connect", 1]]]},
])
def test_check_genotype_names_the_problem(bad):
    with pytest.raises(InputError, match="genotype"):
        check_genotype(bad)


def tiny_data(n=24, size=8, channels=1, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3 * n) % classes
    x = torch.randn(3 * n, channels, size, size, generator=g) + y.view(-1, 1, 1, 1).float()
    return Data(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:], classes)


def test_derived_network_follows_the_genotype_and_evaluate_trains_it():
    g = random_genotype(list(CANDIDATE_OPS), 2, seed=1)
    net = DerivedNetwork(g, cells=3, channels=4, in_channels=3, classes=5)
    assert net(torch.randn(2, 3, 7, 7)).shape == (2, 5)  # odd sizes reduce too
    assert [len(c.ops) for c in net.cells] == [4, 4, 4]
    result = evaluate(g, tiny_data(), epochs=2, cells=2, channels=4, batch_size=12)
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["parameters"] > 0
    assert result == {**evaluate(g, tiny_data(), epochs=2, cells=2, channels=4, batch_size=12),
                      "seconds": result["seconds"]}  # seeded: the same run twice


def test_digits_split_is_disjoint_standardised_and_seeded():
    d = load_data("digits", seed=0)
    assert (d.classes, d.channels, tuple(d.x_train.shape[2:])) == (10, 1, (8, 8))
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797 and len(d.x_test) == 359
    assert abs(float(d.x_train.mean())) < 1e-4
    assert torch.equal(load_data("digits", 0).y_val, d.y_val)
    assert not torch.equal(load_data("digits", 1).y_val, d.y_val)
    small = d.subset(10, 6, 4)
    assert [len(t) for t in (small.x_train, small.x_val, small.x_test)] == [10, 6, 4]


def test_npz_dataset_is_channels_last_uint8(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar-like.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 5, 5, 3), dtype=np.uint8), y_train=np.arange(20) % 4,
             x_test=rng.integers(0, 256, (6, 5, 5, 3), dtype=np.uint8), y_test=np.arange(6) % 4)
    d = load_data(str(path), seed=2)
    assert d.x_train.shape == (10, 3, 5, 5) and d.x_val.shape == (10, 3, 5, 5) and d.x_test.shape == (6, 3, 5, 5)
    assert d.classes == 4 and d.x_train.dtype == torch.float32
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 5, 5)), y_train=np.zeros(4, dtype=int))
    with pytest.raises(InputError, match="lacks x_test, y_test"):
        from_npz(str(tmp_path / "bad.npz"))
    with pytest.raises(InputError, match="dataset"):
        load_data("s3://bucket/cifar.npz")
    with pytest.raises(InputError, match="dataset"):
        load_data(str(tmp_path / "missing.npz"))


def test_rung_does_not_need_torch_and_rung_nas_says_how_to_get_it():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; sys.modules['torch'] = None\n"
            "import rung, rung.cli, rung.space\n"
            "assert 'rung.nas' not in sys.modules\n"
            "from rung.errors import InputError\n"
            "try:\n    import rung.nas\nexcept InputError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(root, "operator"),
                                                         os.path.join(root, "trial_image")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "rung.nas: needs torch, which is not installed; pip install 'rung[torch]'"
