"""A small MLP really trained, in numpy, on scikit-learn's bundled digits (8x8 images).

Params: lr (float), hidden (int), activation (relu | tanh); optional batch_size (32),
weight_decay (0), momentum (0.9), seed (0). budget = epochs. Reports val_loss and
val_accuracy after every epoch. The checkpoint holds weights, momentum buffers, epoch and
the shuffling RNG's state, so a resumed run computes exactly what an uninterrupted one
would have.
"""

from __future__ import annotations

import math
import os

# The matrices are tiny: BLAS threads cost more than they give (10x slower on a busy
# 2-core machine), and one thread keeps results bitwise reproducible. Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from rung import trial
from rung.errors import InputError
from rung_trainables._params import integer, number

N_VAL = 360  # of 1797 images; the split is fixed (seed 0) so every trial sees the same one


def _digits() -> tuple[np.ndarray, np.ndarray]:
    # Read scikit-learn's bundled CSV without importing sklearn: the import alone takes
    # ~2 s, paid by every trial segment. Fall back to load_digits if the file moved.
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "datasets", "data", "digits.csv.gz")
        if os.path.exists(path):
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(int)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


def load_data():
    x, y = _digits()
    x = x / 16.0
    order = np.random.default_rng(0).permutation(len(x))
    val, train = order[:N_VAL], order[N_VAL:]
    mean = x[train].mean(axis=0)
    return (x[train] - mean, y[train]), (x[val] - mean, y[val])


def init(n_in: int, hidden: int, activation: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    gain = 2.0 if activation == "relu" else 1.0  # He for relu, Xavier-like for tanh
    return {"W1": rng.standard_normal((n_in, hidden)) * math.sqrt(gain / n_in),
            "b1": np.zeros(hidden),
            "W2": rng.standard_normal((hidden, 10)) * math.sqrt(1.0 / hidden),
            "b2": np.zeros(10)}


def forward(w: dict, x: np.ndarray, activation: str):
    pre = x @ w["W1"] + w["b1"]
    act = np.maximum(pre, 0.0) if activation == "relu" else np.tanh(pre)
    logits = act @ w["W2"] + w["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return pre, act, log_p


def loss_and_accuracy(w: dict, x, y, activation: str) -> tuple[float, float]:
    _, _, log_p = forward(w, x, activation)
    return float(-log_p[np.arange(len(y)), y].mean()), float((log_p.argmax(axis=1) == y).mean())


def sgd_step(w: dict, v: dict, x, y, activation: str, lr: float, momentum: float, wd: float):
    pre, act, log_p = forward(w, x, activation)
    d_logits = np.exp(log_p)
    d_logits[np.arange(len(y)), y] -= 1.0
    d_logits /= len(y)
    d_act = d_logits @ w["W2"].T
    d_pre = d_act * (pre > 0) if activation == "relu" else d_act * (1.0 - act ** 2)
    grads = {"W2": act.T @ d_logits, "b2": d_logits.sum(axis=0),
             "W1": x.T @ d_pre, "b1": d_pre.sum(axis=0)}
    for k, g in grads.items():
        if wd and k[0] == "W":
            g = g + wd * w[k]
        v[k] = momentum * v[k] + g
        w[k] = w[k] - lr * v[k]


def report(w: dict, xv, yv, activation: str, epoch: int) -> None:
    val_loss, val_acc = loss_and_accuracy(w, xv, yv, activation)
    # `parameters` (the model's size) is a second objective for a multi-objective Study
    trial.report(epoch, val_loss=val_loss if math.isfinite(val_loss) else math.inf,
                 val_accuracy=val_acc, parameters=sum(a.size for a in w.values()))


def main() -> None:
    p = trial.params()
    lr = number(p, "lr", float, 0.05)
    hidden = number(p, "hidden", integer, 64)
    activation = str(p.get("activation", "relu"))
    if activation not in ("relu", "tanh"):
        raise InputError("param activation", f"{activation!r} is unknown", "use relu or tanh")
    batch = number(p, "batch_size", integer, 32)
    if hidden < 1 or batch < 1:
        raise InputError("params hidden, batch_size", f"{hidden}, {batch}: must be >= 1", "raise them")
    wd = number(p, "weight_decay", float, 0.0)
    momentum = number(p, "momentum", float, 0.9)
    seed = number(p, "seed", int, 0)
    epochs = math.ceil(trial.budget() - 1e-9)
    (xt, yt), (xv, yv) = load_data()

    state = trial.load_checkpoint()
    if state is None:
        w = init(xt.shape[1], hidden, activation, seed)
        state = {"epoch": 0, "weights": w, "velocity": {k: np.zeros_like(a) for k, a in w.items()},
                 "rng": np.random.default_rng(seed + 1).bit_generator.state}
    w, v, start = state["weights"], state["velocity"], state["epoch"]
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]

    with np.errstate(all="ignore"):  # a diverging lr reports an inf loss, not warnings
        for epoch in range(start + 1, epochs + 1):
            order = rng.permutation(len(xt))
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                sgd_step(w, v, xt[idx], yt[idx], activation, lr, momentum, wd)
            state = {"epoch": epoch, "weights": w, "velocity": v, "rng": rng.bit_generator.state}
            report(w, xv, yv, activation, epoch)
            if epoch < epochs and trial.should_checkpoint(epoch):
                trial.save_checkpoint(state, epoch)
        if state["epoch"] > start:
            trial.save_checkpoint(state, state["epoch"])
        else:  # resumed at (or past) the budget: nothing to train, report where it stands
            report(w, xv, yv, activation, start)

if __name__ == "__main__":
    main()
