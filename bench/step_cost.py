"""What one Study step costs the operator as the Study grows, without a cluster.

The Study loop runs in-process against a runtime that ends `--ends` random segments per
step (each with a throughput), with the operator's GPU pool as its sizer and the Study
status's summary (counts, best, top 10) computed after every step as the operator's
TrialStore does. Prints the median milliseconds of the 30 steps after each trial count.

    PYTHONPATH=operator python bench/step_cost.py                 # this checkout
    PYTHONPATH=/path/to/older/operator python bench/step_cost.py  # an older one (same API or the one before)
"""

from __future__ import annotations

import argparse
import inspect
import random
import statistics
import time

from rung.api import parse_study
from rung.controller.gpus import GpuPool
from rung.records import MemoryRecords
from rung.runtime.base import Ended, Outcome, Runtime
from rung.runtime.loop import StudyLoop
import rung.report as report


class EndingRuntime(Runtime):
    """Ends `ends` random live segments per poll, each at its budget with a throughput."""

    def __init__(self, ends: int, rng: random.Random):
        self.ends, self.rng, self.live, self.ended = ends, rng, {}, {}

    def start(self, spec):
        self.live[spec.run_name] = spec

    def poll(self, replay=False):
        for name in self.rng.sample(sorted(self.live), min(self.ends, len(self.live))):
            spec = self.live.pop(name)
            loss = (spec.params["x"] - 0.3) ** 2 + 1 / (1 + spec.budget)
            self.ended[name] = Ended(spec.trial, spec.segment, Outcome.SUCCEEDED, 0,
                                     {"step": spec.budget, "metrics": {"loss": loss, "throughput": 100.0},
                                      "curve": [[spec.budget, loss]]}, "", spec.attempt)
        return list(self.ended.values())

    def release(self, run):
        self.ended.pop(run, None)

    def stop(self, name):
        pass

    def running(self):
        return set(self.live) | set(self.ended)

    def close(self):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--parallel", type=int, default=1_000)
    ap.add_argument("--ends", type=int, default=20, help="segments ending per step")
    args = ap.parse_args()
    study = parse_study({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": "s", "uid": "u"},
        "spec": {"objective": {"metric": "loss"}, "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
                 "algorithm": {"name": "asha", "seed": 1, "settings": {"reductionFactor": 3}},
                 "budget": {"min": 1, "max": 27},
                 "limits": {"maxTrials": args.trials, "parallelism": args.parallel, "maxFailedTrials": 0},
                 "trial": {"command": ["t"], "gpus": {"min": 1, "max": 1}}, "checkpoints": {"uri": "file:///c"}}})
    records = MemoryRecords()
    pool = GpuPool(lambda: args.parallel)
    pool.register("s", study)
    loop = StudyLoop(study, EndingRuntime(args.ends, random.Random(1)), records)
    incremental = hasattr(report, "Standings")   # this checkout: the status kept trial by trial
    if incremental:
        standings, save = report.Standings(), records.save
        records.save = lambda trial: (save(trial), standings.set(trial))
        status = lambda: standings.top(10)
    else:
        status = lambda: report.top_trials(report.summarize(study, sorted(loop.trials.values(), key=lambda t: t.index)), 10)
    if "running" in inspect.signature(GpuPool.choose).parameters:   # this checkout
        loop.sizer = lambda running: pool.choose("s", study, running, loop.take_ended())
        after_step = lambda: pool.update("s", loop.running_trials(), loop.done)
    else:
        loop.sizer = lambda: pool.choose("s", study, list(loop.trials.values()))
        after_step = lambda: pool.update("s", list(loop.trials.values()), loop.done)
    marks, window = sorted({2_000, args.trials // 2, int(args.trials * 0.9)}), []
    print(f"{'trials':>8} {'ms / step (median of 30)':>25}   ({args.ends} segments end per step, "
          f"{args.parallel} at once)")
    while True:
        start = time.perf_counter()
        more = loop.step()
        after_step()
        status()
        if marks and len(loop.trials) >= marks[0]:
            window.append(time.perf_counter() - start)
            if len(window) == 30:
                print(f"{marks.pop(0):>8} {1000 * statistics.median(window):>25.1f}", flush=True)
                window = []
        if not more:
            break


if __name__ == "__main__":
    main()
