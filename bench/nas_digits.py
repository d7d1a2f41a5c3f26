"""DARTS vs ASAP on the built-in digits task, and each searched cell vs a random one.

For every seed: a DARTS search (second order by default) and an ASAP search with the same
network, data split and epoch budget (ASAP stops once one op per edge is left); each
derived genotype, and random genotypes from the same space, trained from scratch the same
way and scored on the held-out test split. A genotype's accuracy is the mean of
--train-seeds trainings (a single training of a cell this small moves by a few test
images); the random baseline is the mean of --randoms genotypes. Prints a markdown table
and the ratios (ASAP search time / DARTS search time; searched vs random accuracy).

    PYTHONPATH=operator python bench/nas_digits.py            # ~10 min on 2 busy CPU cores
    PYTHONPATH=operator python bench/nas_digits.py --seeds 0 --epochs 2 --eval-epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rung.nas import Search, evaluate, load_data, random_genotype, resolve_settings


def arguments():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5, help="search epochs (ASAP: at most)")
    p.add_argument("--order", type=int, default=2, help="DARTS order")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--cells", type=int, default=3)
    p.add_argument("--channels", type=int, default=4, help="search network width")
    p.add_argument("--beta", type=float, default=0.25, help="ASAP temperature factor per epoch")
    p.add_argument("--arch-lr", type=float, default=None, help="architecture learning rate (default: the search's)")
    p.add_argument("--warmup", type=int, default=0, help="DARTS epochs that train weights alone first")
    p.add_argument("--eval-epochs", type=int, default=5)
    p.add_argument("--eval-channels", type=int, default=8)
    p.add_argument("--train-seeds", type=int, default=3, help="trainings averaged per genotype")
    p.add_argument("--randoms", type=int, default=3, help="random genotypes per seed")
    p.add_argument("--json", help="also write every measurement to this file")
    return p.parse_args()


def accuracy(genotype, data, seed: int, trainings: int, train: dict) -> float:
    """Test accuracy of `genotype` trained from scratch (`train`: epochs, cells, channels),
    the mean of `trainings` trainings seeded from `seed`."""
    return statistics.mean(evaluate(genotype, data, seed=100 * seed + k, **train)["test_accuracy"]
                           for k in range(trainings))


def main():
    args = arguments()
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give, and runs repeat exactly
    common = {"epochs": args.epochs, "nodes": args.nodes, "cells": args.cells, "channels": args.channels,
              **({"arch_lr": args.arch_lr} if args.arch_lr is not None else {})}
    settings = {"darts": {**common, "order": args.order, "warmup_epochs": args.warmup},
                "asap": {**common, "beta": args.beta}}
    train = {"epochs": args.eval_epochs, "cells": args.cells, "channels": args.eval_channels}
    rows = []
    for seed in args.seeds:
        data = load_data("digits", seed)
        ops = resolve_settings("darts", settings["darts"])["ops"]
        baseline = statistics.mean(accuracy(random_genotype(ops, args.nodes, seed=1000 * (seed + 1) + r),
                                            data, seed, args.train_seeds, train) for r in range(args.randoms))
        for method in ("darts", "asap"):
            search = Search(method, settings[method], seed, data=data)
            start = time.perf_counter()
            search.run()
            seconds = time.perf_counter() - start
            genotype = search.genotype()
            searched = accuracy(genotype, data, seed, args.train_seeds, train)
            rows.append({"seed": seed, "method": method, "search_s": seconds, "epochs": search.epoch,
                         "ops_left": sum(sum(v) for v in search.history()[-1]["ops_left"].values()),
                         "searched_acc": searched, "random_acc": baseline,
                         "genotype": genotype})
            print(f"seed {seed} {method}: search {seconds:.1f} s over {search.epoch} epochs, "
                  f"test accuracy {searched:.4f} (random {baseline:.4f})",
                  flush=True)
    report(rows, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


def report(rows, args):
    print(f"\nDigits, seeds {args.seeds}; search {args.cells} cells x {args.nodes} nodes, {args.channels} channels, "
          f"{args.epochs} epochs, arch_lr {args.arch_lr or 'default'} (DARTS order {args.order}, "
          f"{args.warmup} warm-up epochs; ASAP beta {args.beta}, stops at one op per edge); "
          f"evaluation {args.cells} cells, {args.eval_channels} channels, {args.eval_epochs} epochs from scratch, "
          f"mean of {args.train_seeds} trainings; random: mean of {args.randoms} genotypes.\n")
    print("| seed | method | search s | epochs | ops left | searched test acc | random test acc |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['method']} | {r['search_s']:.1f} | {r['epochs']} | {r['ops_left']} | "
              f"{r['searched_acc']:.4f} | {r['random_acc']:.4f} |")
    mean = {m: {k: statistics.mean(r[k] for r in rows if r["method"] == m)
                for k in ("search_s", "searched_acc", "random_acc")} for m in ("darts", "asap")}
    for m in ("darts", "asap"):
        print(f"| mean | {m} | {mean[m]['search_s']:.1f} | | | {mean[m]['searched_acc']:.4f} | "
              f"{mean[m]['random_acc']:.4f} |")
    ratio = mean["asap"]["search_s"] / mean["darts"]["search_s"]
    print(f"\nASAP search time / DARTS search time: {ratio:.2f} (target <= 0.5)")
    print(f"ASAP - DARTS test accuracy: {mean['asap']['searched_acc'] - mean['darts']['searched_acc']:+.4f} "
          f"(target >= 0)")
    for m in ("darts", "asap"):
        wins = sum(r["searched_acc"] > r["random_acc"] for r in rows if r["method"] == m)
        print(f"{m} searched - random test accuracy: {mean[m]['searched_acc'] - mean[m]['random_acc']:+.4f} "
              f"(searched better in {wins} of {len(args.seeds)} seeds)")


if __name__ == "__main__":
    main()
