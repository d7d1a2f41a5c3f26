"""One resumable architecture search, DARTS or ASAP, advanced an epoch at a time.

    search = Search("asap", {"epochs": 20}, seed=0)
    while not search.done:
        progress = search.run_epoch()        # epoch, losses, genotype, ops_left, done, ...
        torch.save(search.state_dict(), path)  # resume: Search(...).load_state_dict(torch.load(path))
    search.genotype()                        # JSON-ready, see rung.nas.genotype

Settings (all optional; unknown keys are rejected):
  dataset            "digits"   `digits` or a local .npz path (rung.nas.data)
  cells              3          cells in the search network (>= 2; reductions at 1/3, 2/3)
  nodes              4          intermediate nodes per cell
  ops                all        subset of CANDIDATE_OPS; needs one op besides zero
  channels           8          channels of the first cell (doubled at each reduction)
  batch_size         64
  epochs             10         search epochs (ASAP: at most; it stops once decided)
  lr, lr_min         0.025, 0.001  weight SGD learning rate, cosine-annealed per epoch
  momentum           0.9
  weight_decay       3e-4
  arch_lr            3e-3       Adam on alphas, betas (0.5, 0.999) as in DARTS
  arch_weight_decay  1e-3
  order              2          darts: 1 (first order) or 2 (unrolled, finite differences)
  warmup_epochs      0          darts: epochs that train weights only, alphas held, before the search
  t0                 1.0        asap: initial temperature
  beta               0.5        asap: temperature factor per epoch
  grace_temperature  0.8        asap: alphas are trained and ops pruned once T is below it
  prune_threshold    0.05       asap: live ops whose softmax weight is below it are removed

Weights train on the train split, alphas on the val split, one batch of each per step.
Weight gradients are clipped to norm 5. Everything random (the data split, initialisation, alphas,
batch order) follows `seed`; on CPU with a fixed thread count a resumed search computes exactly
what an uninterrupted one would, epoch for epoch.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from rung.api.nas import METHODS, resolve_settings  # noqa: F401 (METHODS: rung.nas re-exports it)
from rung.errors import InputError
from rung.nas import asap, darts
from rung.nas.data import Data, load_data
from rung.nas.genotype import derive
from rung.nas.space import CELL_TYPES, SearchNetwork

STATE_FORMAT = 1
GRAD_CLIP = 5.0


class Search:
    """A DARTS or ASAP search with its whole state: `state_dict()` / `load_state_dict()`."""

    def __init__(self, method: str, settings: dict | None = None, seed: int = 0, *,
                 data: Data | None = None, device: str | torch.device = "cpu"):
        self.method, self.seed = method, int(seed)
        self.settings = resolve_settings(method, settings)
        self.device = torch.device(device)
        self.data = (data if data is not None else load_data(self.settings["dataset"], self.seed)).to(self.device)
        s = self.settings
        with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
            torch.manual_seed(self.seed)
            # ASAP starts from uniform alphas (Algorithm 1); DARTS from small random ones.
            self.model = SearchNetwork(s["ops"], s["nodes"], s["cells"], s["channels"], self.data.channels,
                                       self.data.classes, "zeros" if method == "asap" else "random")
        self.model.to(self.device)
        self.weight_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=s["lr"],
                                                momentum=s["momentum"], weight_decay=s["weight_decay"])
        self.arch_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=s["arch_lr"], betas=(0.5, 0.999),
                                               weight_decay=s["arch_weight_decay"])
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch, self.done, self.seconds = 0, False, 0.0
        self.model.temperature = s["t0"] if method == "asap" else 1.0
        self._history: list[dict] = []

    # -- the search ---------------------------------------------------------------------------

    def run_epoch(self) -> dict:
        """Advances one epoch (ASAP may stop inside it) and returns its progress."""
        if self.done:
            return self._progress(self._history[-1] if self._history else {}, 0.0)
        start = time.perf_counter()
        s, d = self.settings, self.data
        self.model.train()
        lr = self._lr()
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr
        train_order = torch.randperm(len(d.x_train), generator=self.generator)
        val_order = torch.randperm(len(d.x_val), generator=self.generator)
        steps = max(1, len(train_order) // s["batch_size"])
        val_steps = max(1, len(val_order) // s["batch_size"])
        loss_sum = correct = seen = 0.0
        for step in range(steps):
            xt, yt = self._batch(d.x_train, d.y_train, train_order, step)
            xv, yv = self._batch(d.x_val, d.y_val, val_order, step % val_steps)
            if self.method == "darts":
                if self.epoch >= s["warmup_epochs"]:   # untrained convolutions lose to pools and skips
                    self._darts_arch_step(lr, xt, yt, xv, yv)
                loss, hits = self._weight_step(xt, yt)
            else:
                self.model.temperature = asap.temperature(s["t0"], s["beta"], self.epoch + step / steps)
                loss, hits = self._weight_step(xt, yt)
                if self.model.temperature < s["grace_temperature"]:
                    darts.apply_gradient(self.model, self.arch_optimizer,
                                         darts.first_order_gradient(self.model, xv, yv))
                    asap.prune(self.model, s["prune_threshold"])
            loss_sum, correct, seen = loss_sum + loss * len(yt), correct + hits, seen + len(yt)
            if self.method == "asap" and asap.decided(self.model):
                self.done = True
                break
        self.epoch += 1
        self.done = self.done or self.epoch >= s["epochs"]
        val_loss, val_accuracy = self._evaluate(d.x_val, d.y_val)
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        record = {"epoch": self.epoch, "temperature": self.model.temperature, "lr": lr,
                  "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "alphas": {t: self.model.alphas[t].detach().cpu().tolist() for t in CELL_TYPES},
                  "weights": self._weights(), "ops_left": asap.ops_left(self.model)}
        self._history.append(record)
        return self._progress(record, elapsed)

    def run(self) -> dict:
        """Runs epochs until done; returns the last progress."""
        progress = self.run_epoch()
        while not self.done:
            progress = self.run_epoch()
        return progress

    def genotype(self) -> dict:
        alphas = {t: self.model.alphas[t].detach().cpu().tolist() for t in CELL_TYPES}
        return derive(self._weights(), self.settings["ops"], self.settings["nodes"], alphas)

    def history(self) -> list[dict]:
        """Per epoch: epoch, temperature, lr, train/val loss and accuracy, `alphas` and op
        `weights` (softmax(alpha / T) over live ops), each {"normal": [edges][ops],
        "reduction": ...} with columns in settings["ops"] order, and `ops_left` per edge
        {"normal": [edges], "reduction": [edges]}."""
        return copy.deepcopy(self._history)

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed search needs (tensors and plain values; torch.save-able and
        loadable with weights_only=True)."""
        return {"format": STATE_FORMAT, "method": self.method, "seed": self.seed,
                "settings": copy.deepcopy(self.settings), "epoch": self.epoch, "done": self.done,
                "seconds": self.seconds, "temperature": self.model.temperature,
                "model": self.model.state_dict(),  # weights, alphas, alive masks (pruning)
                "weight_optimizer": self.weight_optimizer.state_dict(),
                "arch_optimizer": self.arch_optimizer.state_dict(),
                "generator": self.generator.get_state(), "history": copy.deepcopy(self._history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise InputError("checkpoint", f"format {state.get('format')!r} is not {STATE_FORMAT}",
                             "start the search afresh")
        if (state["method"], state["seed"]) != (self.method, self.seed):
            raise InputError("checkpoint", f"is of a {state['method']} search with seed {state['seed']}, "
                             f"not {self.method} with seed {self.seed}", "resume with the same method and seed")
        # A resumed search may run longer; anything else changed would compute something else.
        changed = sorted(k for k in self.settings if k != "epochs" and state["settings"].get(k) != self.settings[k])
        if changed:
            raise InputError(f"settings.{changed[0]}", "differs from the checkpoint's", "keep the search's settings")
        self.model.load_state_dict(state["model"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch, self.seconds = state["epoch"], state["seconds"]
        self.model.temperature = state["temperature"]
        self._history = copy.deepcopy(state["history"])
        decided = self.method == "asap" and asap.decided(self.model)
        self.done = decided or self.epoch >= self.settings["epochs"]

    # -- steps ----------------------------------------------------------------------------------

    def _lr(self) -> float:
        s = self.settings
        return s["lr_min"] + 0.5 * (s["lr"] - s["lr_min"]) * (1 + math.cos(math.pi * self.epoch / s["epochs"]))

    def _batch(self, x, y, order, step):
        index = order[step * self.settings["batch_size"]:(step + 1) * self.settings["batch_size"]].to(self.device)
        return x[index], y[index]

    def _darts_arch_step(self, lr, xt, yt, xv, yv):
        if self.settings["order"] == 1:
            grads = darts.first_order_gradient(self.model, xv, yv)
        else:
            grads = darts.second_order_gradient(self.model, self.weight_optimizer, lr, xt, yt, xv, yv)
        darts.apply_gradient(self.model, self.arch_optimizer, grads)

    def _weight_step(self, x, y) -> tuple[float, float]:
        self.weight_optimizer.zero_grad(set_to_none=True)
        with _frozen(self.model.arch_parameters()):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.weight_parameters(), GRAD_CLIP)
        self.weight_optimizer.step()
        return float(loss.detach()), float((logits.argmax(dim=1) == y).sum())

    @torch.no_grad()
    def _evaluate(self, x, y, chunk: int = 512) -> tuple[float, float]:
        self.model.eval()
        loss = correct = 0.0
        for i in range(0, len(x), chunk):
            logits = self.model(x[i:i + chunk])
            loss += float(F.cross_entropy(logits, y[i:i + chunk], reduction="sum"))
            correct += float((logits.argmax(dim=1) == y[i:i + chunk]).sum())
        self.model.train()
        return loss / max(1, len(x)), correct / max(1, len(x))

    @torch.no_grad()
    def _weights(self) -> dict[str, list[list[float]]]:
        return {t: self.model.op_weights(t).cpu().tolist() for t in CELL_TYPES}

    def _progress(self, record: dict, elapsed: float) -> dict:
        keep = ("epoch", "temperature", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "ops_left")
        return {"method": self.method, **{k: record.get(k) for k in keep}, "genotype": self.genotype(),
                "done": self.done, "seconds": elapsed, "search_seconds": self.seconds}


@contextlib.contextmanager
def _frozen(params):
    """No gradient for these (alphas during a weight step: it is neither needed nor wanted)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
