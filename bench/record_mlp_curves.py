"""Record validation-loss learning curves of scikit-learn's MLPClassifier on digits.

Random configurations of the mlp-digits search space (examples/asha-mlp-digits.yaml: lr,
hidden, activation; the trainable's defaults for batch size 32, momentum 0.9, no weight
decay), each trained epoch by epoch with `partial_fit` (SGD) on the trainable's own
train/validation split, its validation log-loss recorded after every epoch. The curves
are what bench/curve_stop.py replays, so stopping rules are compared on real curves
without training anything again. A diverged epoch (non-finite loss) is stored as null.

Run once (about 5 minutes on one core):
  flock /tmp/rung-cpu.lock python bench/record_mlp_curves.py [--configs 200] [--epochs 40]
Writes bench/data/mlp_digits_curves.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

# First: it keeps BLAS to one thread, which must be set before numpy loads.
from rung_trainables.mlp_digits import load_data  # isort: skip

import numpy as np
import yaml

from rung.api.study import Study
from rung.search.random import RandomSampler
from rung.space import SearchSpace

MANIFEST = Path("examples/asha-mlp-digits.yaml")
OUT = Path("bench/data/mlp_digits_curves.json")


def search_space() -> SearchSpace:
    study = Study.model_validate(yaml.safe_load(MANIFEST.read_text()))
    return SearchSpace.from_spec(study.spec.search_space)


def curve(config: dict, epochs: int, data, seed: int) -> list[float | None]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier

    (xt, yt), (xv, yv) = data
    model = MLPClassifier(hidden_layer_sizes=(int(config["hidden"]),), activation=config["activation"],
                          solver="sgd", learning_rate_init=float(config["lr"]), momentum=0.9,
                          batch_size=32, alpha=0.0, random_state=seed)
    classes = np.arange(10)
    losses: list[float | None] = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(epochs):
            model.partial_fit(xt, yt, classes=classes)
            proba = model.predict_proba(xv)
            loss = log_loss(yv, proba, labels=classes) if np.all(np.isfinite(proba)) else math.inf
            losses.append(round(loss, 5) if math.isfinite(loss) else None)
    return losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sampler = RandomSampler(search_space(), args.seed)
    data = load_data()
    configs, curves, t0 = [], [], time.time()
    for i in range(args.configs):
        config = sampler.propose(i, [])
        configs.append({**config, "lr": round(config["lr"], 6)})
        curves.append(curve(configs[-1], args.epochs, data, seed=args.seed + i))
        if (i + 1) % 20 == 0:
            print(f"{i + 1} configurations, {time.time() - t0:.0f} s", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "about": "validation log-loss per epoch of sklearn MLPClassifier (sgd, momentum 0.9, batch 32) "
                 "on digits (rung_trainables.mlp_digits split); null = diverged",
        "command": "python bench/record_mlp_curves.py "
                   f"--configs {args.configs} --epochs {args.epochs} --seed {args.seed}",
        "epochs": args.epochs, "configs": configs, "curves": curves}, separators=(",", ":")))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
