"""ASHA ask/tell throughput: 100,000 pairs, 8 segments in flight, results in random order.

Peer in the same run (when installed): Optuna's ask/tell with its SuccessiveHalvingPruner
(eta 3), each trial reporting at its rungs, on fewer pairs (it is much slower), scaled
per pair. Run: python bench/asha_throughput.py [--pairs N] [--optuna-pairs N]
"""

from __future__ import annotations

import argparse
import random
import time

from rung.schedulers.asha import ASHA
from rung.search.random import RandomSampler
from rung.space import Param, SearchSpace


def rung_asha(pairs: int, in_flight: int = 8) -> float:
    space = SearchSpace([Param(f"x{i}", "float", 0.0, 1.0) for i in range(4)])
    scheduler = ASHA(RandomSampler(space, 0), 1, 81, 10**9, reductionFactor=3)
    rnd = random.Random(0)
    running = []
    start = time.perf_counter()
    for _ in range(pairs):
        running.append(scheduler.ask())
        if len(running) >= in_flight:
            d = running.pop(rnd.randrange(len(running)))
            scheduler.tell(d.trial, d.budget, rnd.random())
    return time.perf_counter() - start


def optuna_sha(pairs: int) -> float | None:
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    rnd = random.Random(0)
    done = 0
    start = time.perf_counter()
    while done < pairs:  # one pair = one rung decision (report + should_prune), as in ASHA
        t = study.ask()
        for x in range(4):
            t.suggest_float(f"x{x}", 0.0, 1.0)
        pruned = False
        for step in (1, 3, 9, 27, 81):
            t.report(rnd.random(), step)
            done += 1
            if t.should_prune():
                pruned = True
                break
        study.tell(t, state=optuna.trial.TrialState.PRUNED if pruned else None,
                   values=None if pruned else rnd.random())
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--optuna-pairs", type=int, default=5_000)
    args = ap.parse_args()
    ours = rung_asha(args.pairs)
    print(f"rung ASHA: {args.pairs} ask/tell pairs in {ours:.2f} s ({ours / args.pairs * 1e6:.1f} us/pair)")
    peer = optuna_sha(args.optuna_pairs)
    if peer is not None:
        per_pair = peer / args.optuna_pairs
        print(f"optuna SHA pruner: {args.optuna_pairs} decisions in {peer:.2f} s ({per_pair * 1e6:.1f} us/decision)")
        print(f"ratio (optuna / rung, per decision): {per_pair / (ours / args.pairs):.1f}x")


if __name__ == "__main__":
    main()
