"""The trial SDK: `from rung import trial`.

    p = trial.params(); target = trial.budget()
    state = trial.load_checkpoint()            # None on a first segment
    ... train from trial.checkpoint_step() to target, trial.report(step, loss=...) ...
    trial.save_checkpoint(state, target)
"""

from rung.trial.sdk import (budget, checkpoint_step, gpus, load_checkpoint, params, report,
                            save_checkpoint, should_checkpoint)

__all__ = ["params", "budget", "load_checkpoint", "report", "save_checkpoint",
           "checkpoint_step", "should_checkpoint", "gpus"]
