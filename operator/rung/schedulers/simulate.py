"""Drive a scheduler against an in-process objective with simulated workers.

Used by tests and benchmarks: no processes, no clock. A segment costs its budget minus
the budget it resumed from (promoted trials continue, they do not retrain) and finishes
after that much simulated time; `workers` segments run at once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Sequence

from rung.schedulers.base import Scheduler


@dataclass(frozen=True)
class SimulatedSegment:
    time: float          # simulated time at which the segment finished
    spent: float         # cumulative budget spent by all finished segments so far
    trial: int
    config: dict
    budget: float
    loss: float
    losses: tuple[float, ...] | None = None   # multi-objective: every objective's loss (loss is the first)


def simulate(scheduler: Scheduler, evaluate: Callable[[int, dict, float], float | Sequence[float]], workers: int = 1,
             max_events: int | None = None, max_spent: float | None = None,
             resumable: bool = True) -> list[SimulatedSegment]:
    """Run until the scheduler is finished, or `max_events` segments have finished, or
    `max_spent` budget has been spent.

    `evaluate(trial, config, budget)` returns the loss of that configuration at that budget,
    or a tuple of losses (one per objective, all minimised; the first is the loss).
    `resumable=False` charges a promoted segment its whole budget (nothing to continue from).
    """
    now, spent, heap, done = 0.0, 0.0, [], []
    while True:
        while len(heap) < workers:
            d = scheduler.ask()
            if d is None:
                break
            cost = d.budget - (d.resume_from or 0.0) if resumable else d.budget
            heapq.heappush(heap, (now + cost, d.trial, d.config, d.budget, cost))
        if (not heap or (max_events is not None and len(done) >= max_events)
                or (max_spent is not None and spent >= max_spent)):
            return done
        now, trial, config, budget, cost = heapq.heappop(heap)
        outcome = evaluate(trial, config, budget)
        losses = tuple(float(x) for x in outcome) if isinstance(outcome, (tuple, list)) else None
        loss = losses[0] if losses else outcome
        scheduler.tell(trial, budget, loss, losses)
        spent += cost
        done.append(SimulatedSegment(now, spent, trial, config, budget, loss, losses))
