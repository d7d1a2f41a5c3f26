"""One segment per trial at the full budget: plain (non multi-fidelity) search."""

from rung.schedulers.base import Scheduler


class FullBudget(Scheduler):
    def _next(self):
        return self._new_trial()

    def finished(self):
        return not self.running and self.n_trials >= self.max_trials
