"""A deterministic trainable for tests: it counts the steps it really trains.

Resumes from its checkpoint {"step": n}, trains steps n+1 .. ceil(budget), reporting
`loss` = sum over numeric params of (v - 0.3)^2 + 1 / (1 + step) at each, and checkpoints
at the end (and when periodic checkpoints are due).

Test hooks (env, or the param of the same meaning):
  COUNT_STEPS_LOG=path       append "<trial> <step>" for every step trained
  COUNT_STEPS_SLEEP=seconds  sleep per step                          (param `sleep`)
  COUNT_STEPS_FAIL_AT=k      raise (exit 1) just before training step k  (param `fail_at`;
                             param `fail: true` fails before any step)
"""

import math
import os
import time

from rung import trial
from rung.trial.contract import ENV_TRIAL

CONTROL = ("sleep", "fail_at", "fail", "seed")


def loss(params: dict, step: int) -> float:
    total = sum((float(v) - 0.3) ** 2 for k, v in sorted(params.items())
                if k not in CONTROL and isinstance(v, (int, float)) and not isinstance(v, bool))
    return total + 1.0 / (1.0 + step)


def _setting(params: dict, key: str, env: str) -> float | None:
    raw = params.get(key, os.environ.get(env) or None)
    return None if raw is None else float(raw)


def main() -> None:
    p = trial.params()
    target = math.ceil(trial.budget() - 1e-9)
    sleep = _setting(p, "sleep", "COUNT_STEPS_SLEEP") or 0.0
    fail_at = 0.0 if p.get("fail") else _setting(p, "fail_at", "COUNT_STEPS_FAIL_AT")
    log = os.environ.get("COUNT_STEPS_LOG")
    name = os.environ.get(ENV_TRIAL, "local")

    state = trial.load_checkpoint()
    start = int(state["step"]) if state else 0
    if fail_at is not None and fail_at <= start + 1:
        raise RuntimeError(f"count_steps: failing before step {start + 1} as asked")
    for step in range(start + 1, target + 1):
        if fail_at is not None and step >= fail_at:
            raise RuntimeError(f"count_steps: failing before step {step} as asked")
        if sleep:
            time.sleep(sleep)
        if log:
            with open(log, "a") as f:  # one short O_APPEND write: safe with parallel trials
                f.write(f"{name} {step}\n")
        trial.report(step, loss=loss(p, step))
        if step < target and trial.should_checkpoint(step):
            trial.save_checkpoint({"step": step}, step)
    if start < target:
        trial.save_checkpoint({"step": target}, target)
    else:  # resumed at (or past) the budget: nothing to train, report where it stands
        trial.report(start, loss=loss(p, start))


if __name__ == "__main__":
    main()
