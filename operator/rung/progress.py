"""The live progress line of `rung run`: redrawn in place on a terminal, a plain line every
`every` seconds otherwise (CI logs), nothing when quiet."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, TextIO

from rung.report import Summary, format_duration


def progress_line(s: Summary) -> str:
    running = s.counts.get("running", 0)
    best = s.best
    metric = s.study.objective.metric
    # The incumbent may get worse when a higher budget is first reached: its budget says why.
    unit = s.study.spec.budget.unit
    best_text = (f"incumbent {metric} {s.metric(best.loss):.4g} at {best.budget:g} {unit}" if best
                 else f"incumbent {metric} -")
    return (f"{s.study.name}: {len(s.trials) - running}/{s.study.spec.limits.max_trials} trials done, "
            f"{running} running, {s.counts.get('failed', 0)} failed, {best_text}, "
            f"{format_duration(s.elapsed)}")


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet, self.every, self.clock = quiet, every, clock
        stream = self.stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._last: float | None = None
        self._drawn = False

    def update(self, line: str) -> None:
        if self.quiet:
            return
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + line[:width] + "\x1b[K")
            self._drawn = True
        elif self._last is None or self.clock() - self._last >= self.every:
            self.stream.write(line + "\n")
            self._last = self.clock()
        self.stream.flush()

    def close(self) -> None:
        """End the in-place line so what follows starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
