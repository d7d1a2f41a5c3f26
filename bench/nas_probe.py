"""Probes behind bench/RESULTS.md "Why the searches pick pools": one search with given
settings (its genotype, how many of its ops are parameter-free, its cell's test accuracy
averaged over 3 trainings), or fixed cells (every edge one op) against random ones.

    PYTHONPATH=operator python bench/nas_probe.py search asap 0 '{"epochs": 10, "beta": 0.25, "arch_lr": 0.03}'
    PYTHONPATH=operator python bench/nas_probe.py search darts 0 '{"epochs": 10, "order": 1, "arch_lr": 0.03, "warmup_epochs": 4}'
    PYTHONPATH=operator python bench/nas_probe.py cells
"""

from __future__ import annotations

import json
import sys
import time

import torch

from nas_digits import accuracy
from rung.nas import Search, load_data, random_genotype, resolve_settings

NODES = 3
TRAIN = {"epochs": 5, "cells": 3, "channels": 8}   # as bench/nas_digits.py evaluates
PARAMETER_FREE = ("avg_pool_3x3", "max_pool_3x3", "skip_connect")


def search(method, seed, settings):
    data = load_data("digits", seed)
    s = Search(method, {"nodes": NODES, "cells": 3, "channels": 4, **settings}, seed, data=data)
    start = time.perf_counter()
    s.run()
    g = s.genotype()
    ops = [op for node in g["normal"] + g["reduction"] for op, _ in node]
    print(json.dumps({"method": method, "seed": seed, "settings": settings,
                      "search_s": round(time.perf_counter() - start, 1), "epochs": s.epoch,
                      "parameter_free": f"{sum(o in PARAMETER_FREE for o in ops)}/{len(ops)}",
                      "acc": round(accuracy(g, data, seed, 3, TRAIN), 4), "genotype": g}), flush=True)


def cells():
    ops = resolve_settings("darts", {"nodes": NODES})["ops"]

    def uniform(op):
        cell = [[[op, 0], [op, 1]] for _ in range(NODES)]
        return {"normal": cell, "normal_concat": [2, 3, 4], "reduction": cell, "reduction_concat": [2, 3, 4]}
    candidates = {op: uniform(op) for op in ("sep_conv_3x3", "dil_conv_3x3", "avg_pool_3x3", "skip_connect")}
    candidates.update({f"random{r}": random_genotype(ops, NODES, seed=1000 + r) for r in range(4)})
    for seed in (0, 1):
        data = load_data("digits", seed)
        for name, g in candidates.items():
            print(seed, name, round(accuracy(g, data, seed, 2, TRAIN), 4), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "search":
        search(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))
    else:
        cells()
