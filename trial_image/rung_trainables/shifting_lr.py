"""A trainable whose best learning rate falls as it trains: minibatch SGD on least squares.

The problem is fixed: 512 samples of 10 features whose scales give curvatures from 1 down
to 0.02, and labels with noise 2. One step is 8 SGD updates on minibatches of 4, from
w = 0. Early on, the distance to the optimum dominates the loss and a large learning rate
shrinks it fastest; later the minibatch noise floor, which grows with the learning rate,
dominates and a small one wins (the best constant rate is about 0.2 at step 2, 0.05 at
step 54), so a decaying schedule beats every constant one.

Params: lr (float); optional seed (0), which orders the minibatches. budget = steps.
Reports `loss`: the excess training loss, 0.5 * mean squared error minus that of the
least-squares solution (>= 0), after every step. The checkpoint holds the weights, the
step and the minibatch RNG's state, so a resumed run (or one that took over another
trial's checkpoint) computes exactly what an uninterrupted one would have.

`ShiftingLR` gives the same dynamics in-process (bench/pbt.py steps it).
"""

from __future__ import annotations

import math

import numpy as np

from rung import trial
from rung_trainables._params import number

N_SAMPLES, N_FEATURES, LABEL_NOISE = 512, 10, 2.0
MIN_CURVATURE = 0.02
BATCH, UPDATES_PER_STEP = 4, 8


class ShiftingLR:
    """The dynamics: a state is {"step", "w", "rng"} (the minibatch generator's state)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        scales = np.sqrt(np.geomspace(1.0, MIN_CURVATURE, N_FEATURES))
        self.x = rng.standard_normal((N_SAMPLES, N_FEATURES)) * scales
        self.y = self.x @ rng.standard_normal(N_FEATURES) + LABEL_NOISE * rng.standard_normal(N_SAMPLES)
        w_best = np.linalg.lstsq(self.x, self.y, rcond=None)[0]
        self.min_loss = self._mse(w_best)

    def start(self, seed: int = 0) -> dict:
        return {"step": 0, "w": np.zeros(N_FEATURES), "rng": np.random.default_rng(seed).bit_generator.state}

    def train(self, state: dict, lr: float, steps: int) -> dict:
        """The state `steps` steps later at learning rate `lr` (`state` is left as it was)."""
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        w = state["w"].copy()
        with np.errstate(all="ignore"):  # a diverging lr ends in an inf loss, not warnings
            for _ in range(steps * UPDATES_PER_STEP):
                idx = rng.integers(0, N_SAMPLES, BATCH)
                xb = self.x[idx]
                w -= lr * (xb.T @ (xb @ w - self.y[idx])) / BATCH
        return {"step": state["step"] + steps, "w": w, "rng": rng.bit_generator.state}

    def loss(self, state: dict) -> float:
        with np.errstate(all="ignore"):
            excess = self._mse(state["w"]) - self.min_loss
        return max(excess, 0.0) if math.isfinite(excess) else math.inf

    def _mse(self, w: np.ndarray) -> float:
        return float(0.5 * np.mean((self.x @ w - self.y) ** 2))


def main() -> None:
    p = trial.params()
    lr = number(p, "lr", float, 0.1)
    seed = number(p, "seed", int, 0)
    target = math.ceil(trial.budget() - 1e-9)
    problem = ShiftingLR()

    state = trial.load_checkpoint() or problem.start(seed)
    start = state["step"]
    for step in range(start + 1, target + 1):
        state = problem.train(state, lr, 1)
        trial.report(step, loss=problem.loss(state))
        if step < target and trial.should_checkpoint(step):
            trial.save_checkpoint(state, step)
    if state["step"] > start:
        trial.save_checkpoint(state, state["step"])
    else:  # resumed at (or past) the budget: nothing to train, report where it stands
        trial.report(start, loss=problem.loss(state))


if __name__ == "__main__":
    main()
