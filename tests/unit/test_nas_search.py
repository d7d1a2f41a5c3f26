"""rung.nas: DARTS' architecture gradients, ASAP's anneal-and-prune, and resumable searches."""

import importlib.util
import io

import pytest

from rung.errors import InputError

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (pip install 'rung[torch]')")]

if importlib.util.find_spec("torch") is not None:
    import torch

    from rung.nas import Data, Search
    from rung.nas import darts
    from rung.nas.search import resolve_settings

    torch.set_num_threads(1)

TINY = {"cells": 2, "nodes": 2, "channels": 2, "batch_size": 8}
ASAP_FAST = {**TINY, "t0": 1.0, "beta": 0.1, "grace_temperature": 0.9, "prune_threshold": 0.1,
             "arch_lr": 0.05, "epochs": 12}


def tiny_data(n=24, classes=3):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3 * n) % classes
    x = torch.randn(3 * n, 1, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    return Data(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:], classes)


def batches(data):
    return data.x_train[:8], data.y_train[:8], data.x_val[:8], data.y_val[:8]


def test_alphas_get_first_and_second_order_gradients_and_they_differ():
    data = tiny_data()
    search = Search("darts", {**TINY, "order": 2}, seed=1, data=data)
    search.run_epoch()  # momentum buffers exist, as they do mid-search
    xt, yt, xv, yv = batches(data)
    first = darts.first_order_gradient(search.model, xv, yv)
    second = darts.second_order_gradient(search.model, search.weight_optimizer, 0.1, xt, yt, xv, yv)
    for f, s, a in zip(first, second, search.model.arch_parameters()):
        assert f.shape == s.shape == a.shape
        assert f.abs().sum() > 0 and s.abs().sum() > 0
        assert not torch.allclose(f, s)
    before = [a.detach().clone() for a in search.model.arch_parameters()]
    darts.apply_gradient(search.model, search.arch_optimizer, second)
    assert all(not torch.equal(b, a) for b, a in zip(before, search.model.arch_parameters()))


def test_second_order_gradient_matches_the_exact_unrolled_gradient():
    """DARTS' finite-difference Hessian-vector product (eps = 0.01 / ||grad||) against
    autograd's double backward, in float64 and with ReLUs made smooth: a finite difference
    across a ReLU's kink measures the kink, not the curvature."""
    torch.set_default_dtype(torch.float64)
    try:
        data = tiny_data()
        data = Data(*(t.double() if t.is_floating_point() else t for t in
                      (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)), 3)
        search = Search("darts", {**TINY, "ops": ["sep_conv_3x3", "avg_pool_3x3", "skip_connect", "zero"]},
                        seed=2, data=data)
        model, opt = search.model, search.weight_optimizer
        for module in list(model.modules()):
            for name, child in module.named_children():
                if isinstance(child, torch.nn.ReLU):
                    module._modules[name] = torch.nn.Softplus()
        xt, yt, xv, yv = batches(data)
        lr = 0.5
        decay = opt.param_groups[0]["weight_decay"]
        alphas, weights = model.arch_parameters(), model.weight_parameters()
        saved = [w.detach().clone() for w in weights]
        approx = darts.second_order_gradient(model, opt, lr, xt, yt, xv, yv)
        first_order = darts.first_order_gradient(model, xv, yv)
        g = torch.autograd.grad(model.loss(xt, yt), weights, create_graph=True, allow_unused=True)
        unrolled = [w - lr * ((gi if gi is not None else 0) + decay * w) for w, gi in zip(weights, g)]
        originals = {name: p for name, p in model.named_parameters()}
        names = [n for n in originals if not n.startswith("alphas.")]
        params = {**{n: originals[n] for n in originals if n.startswith("alphas.")}, **dict(zip(names, unrolled))}
        logits = torch.func.functional_call(model, params, (xv,))
        exact = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, yv), alphas)
        assert all(torch.equal(w, s) for w, s in zip(weights, saved))  # weights restored
        for a, e, f in zip(approx, exact, first_order):
            assert torch.allclose(a, e, rtol=1e-2, atol=1e-3)
            assert not torch.allclose(a, f, atol=1e-2)  # the Hessian term matters here
    finally:
        torch.set_default_dtype(torch.float32)


def test_asap_prunes_as_the_temperature_falls_and_stops_at_one_op_per_edge():
    search = Search("asap", ASAP_FAST, seed=0, data=tiny_data())
    full = len(search.settings["ops"])
    calls = []
    first_edge = search.model.cells[0].mixed[0]
    for i, op in enumerate(first_edge.ops):
        op.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
    progress = []
    while not search.done:
        progress.append(search.run_epoch())
    temps = [p["temperature"] for p in progress]
    left = [sum(p["ops_left"]["normal"]) + sum(p["ops_left"]["reduction"]) for p in progress]
    assert temps == sorted(temps, reverse=True) and temps[0] > temps[-1]
    assert left == sorted(left, reverse=True) and left[0] < 2 * 5 * full  # pruning started early
    assert progress[-1]["done"] and len(progress) < ASAP_FAST["epochs"]  # stopped, not ran out
    assert all(n == 1 for t in ("normal", "reduction") for n in progress[-1]["ops_left"][t])
    assert search.run_epoch()["epoch"] == progress[-1]["epoch"]  # a finished search stays finished
    # The survivor is the only op of the first edge that still runs.
    survivor = int(search.model.alive("normal")[0].nonzero())
    calls.clear()
    search.model(torch.randn(2, 1, 6, 6))
    assert calls in ([], [survivor])  # [] when the survivor is the zero op
    genotype = search.genotype()
    assert all(op != "zero" for node in genotype["normal"] + genotype["reduction"] for op, _ in node)
    history = search.history()
    assert [h["epoch"] for h in history] == [p["epoch"] for p in progress]
    assert history[-1]["ops_left"] == progress[-1]["ops_left"]


def test_darts_holds_alphas_through_its_warmup_epochs_then_searches():
    search = Search("darts", {**TINY, "order": 1, "epochs": 3, "warmup_epochs": 2}, seed=0, data=tiny_data())
    start = [a.detach().clone() for a in search.model.arch_parameters()]
    weights = [w.detach().clone() for w in search.model.weight_parameters()]
    for _ in range(2):
        search.run_epoch()
        assert all(torch.equal(a, b) for a, b in zip(search.model.arch_parameters(), start))
    assert not all(torch.equal(w, v) for w, v in zip(search.model.weight_parameters(), weights))
    search.run_epoch()
    assert not all(torch.equal(a, b) for a, b in zip(search.model.arch_parameters(), start))


def test_asap_leaves_alphas_alone_above_the_grace_temperature():
    search = Search("asap", {**ASAP_FAST, "beta": 0.9, "grace_temperature": 0.5}, seed=0, data=tiny_data())
    progress = search.run_epoch()
    assert progress["temperature"] > 0.5
    assert all(torch.count_nonzero(a) == 0 for a in search.model.arch_parameters())
    assert progress["ops_left"]["normal"] == [len(search.settings["ops"])] * 5


@pytest.mark.parametrize("method,settings", [("darts", {**TINY, "order": 2, "epochs": 3}),
                                             ("asap", ASAP_FAST)])
def test_a_search_resumed_from_its_checkpoint_computes_what_an_uninterrupted_one_would(method, settings):
    data = tiny_data()
    straight = Search(method, settings, seed=5, data=data)
    straight.run()
    first = Search(method, settings, seed=5, data=data)
    first.run_epoch()
    first.run_epoch()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    del first
    resumed = Search(method, settings, seed=5, data=data)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert resumed.epoch == 2
    resumed.run()
    for a, b in zip(straight.model.arch_parameters(), resumed.model.arch_parameters()):
        assert torch.equal(a, b)
    for t in ("normal", "reduction"):
        assert torch.equal(straight.model.alive(t), resumed.model.alive(t))
    assert straight.genotype() == resumed.genotype()
    assert straight.history() == resumed.history()
    assert resumed.epoch == straight.epoch


def test_a_checkpoint_only_resumes_the_same_search():
    data = tiny_data()
    state = Search("darts", {**TINY, "order": 1}, seed=1, data=data).state_dict()
    with pytest.raises(InputError, match="seed"):
        Search("darts", {**TINY, "order": 1}, seed=2, data=data).load_state_dict(state)
    with pytest.raises(InputError, match="settings.channels"):
        Search("darts", {**TINY, "order": 1, "channels": 3}, seed=1, data=data).load_state_dict(state)
    longer = Search("darts", {**TINY, "order": 1, "epochs": 20}, seed=1, data=data)
    longer.load_state_dict(state)  # more epochs is fine
    assert not longer.done


@pytest.mark.parametrize("method,settings,field", [
    ("enas", {}, "method"),
    ("darts", {"orde": 1}, "settings.orde"),
    ("darts", {"order": 3}, "settings.order"),
    ("darts", {"ops": ["zero"]}, "settings.ops"),
    ("darts", {"ops": ["conv_7x7"]}, "settings.ops"),
    ("darts", {"cells": 1}, "settings.cells"),
    ("asap", {"beta": 1.5}, "settings"),
    ("asap", {"order": 2}, "settings.order"),
    ("darts", {"lr": -1}, "settings.lr"),
    ("darts", {"warmup_epochs": 10}, "settings.warmup_epochs"),   # as many as epochs: no search
    ("darts", {"warmup_epochs": 1.5}, "settings.warmup_epochs"),
    ("asap", {"warmup_epochs": 1}, "settings.warmup_epochs"),     # ASAP has its grace temperature
])
def test_bad_settings_are_rejected_by_name(method, settings, field):
    with pytest.raises(InputError) as error:
        resolve_settings(method, settings)
    assert error.value.field == field


def test_settings_defaults_and_canonical_op_order():
    s = resolve_settings("asap", {"ops": ["zero", "sep_conv_3x3"]})
    assert s["ops"] == ["sep_conv_3x3", "zero"] and s["t0"] > s["grace_temperature"] > 0
    assert resolve_settings("darts", None)["order"] == 2


def test_progress_reports_the_epoch():
    search = Search("darts", {**TINY, "order": 1, "epochs": 2}, seed=0, data=tiny_data())
    p = search.run_epoch()
    assert p["epoch"] == 1 and not p["done"] and p["method"] == "darts" and p["temperature"] == 1.0
    assert 0 <= p["train_accuracy"] <= 1 and 0 <= p["val_accuracy"] <= 1 and p["val_loss"] > 0
    assert set(p["genotype"]) == {"normal", "normal_concat", "reduction", "reduction_concat"}
    assert search.run_epoch()["done"] and search.seconds > 0
    weights = search.history()[-1]["weights"]["normal"]
    assert len(weights) == 5 and all(abs(sum(row) - 1) < 1e-5 for row in weights)
