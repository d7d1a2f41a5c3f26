"""`rung report`: the summary table of a Study's records, the top trials, and PNG plots.

The incumbent (the "best" everywhere in Rung's output) is the best loss among results at
the highest budget any result reached: a low-fidelity loss is not comparable with a
full-budget one, so a cheap lucky segment never displaces a fully trained trial.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rung.api import Study
from rung.records import DIVERGED, SegmentRecord, SegmentStatus, TrialRecord

STATES = (SegmentStatus.COMPLETED, SegmentStatus.STOPPED, SegmentStatus.FAILED, SegmentStatus.RUNNING)


@dataclass(frozen=True)
class Point:
    """The incumbent after a segment ended."""

    elapsed: float      # the Study's wall time when it ended
    spent: float        # cumulative budget trained by every ended segment so far
    budget: float
    loss: float
    trial: TrialRecord


@dataclass(frozen=True)
class Summary:
    study: Study
    trials: list[TrialRecord]
    state: str
    reason: str
    elapsed: float
    counts: Counter
    spent: float
    trajectory: list[Point]

    @property
    def best(self) -> Point | None:
        return self.trajectory[-1] if self.trajectory else None

    def metric(self, loss: float) -> float:
        """A loss back in the user's terms (maximised metrics were negated)."""
        return loss if self.study.minimize else -loss

    def metrics(self, losses: list[float]) -> list[float]:
        return objective_values(self.study, losses)

    def front(self, k: int | None = None) -> list[tuple[TrialRecord, float, list[float]]]:
        return pareto_front_of(self.trials, k)


def objective_values(study: Study, losses: list[float]) -> list[float]:
    """Each objective's loss back in the user's terms."""
    return [x if o.goal == "minimize" else -x for o, x in zip(study.objectives, losses)]


def pareto_front_of(trials: Iterable[TrialRecord], k: int | None = None) -> list[tuple[TrialRecord, float, list[float]]]:
    """A multi-objective Study's Pareto front, (trial, budget, losses) by the first
    objective: among results at the highest budget any result reached (as the
    incumbent), at most k of them spread along the front (None: all)."""
    from rung import pareto

    results = {}
    for trial in trials:
        for seg in trial.segments:
            if seg.objectives and seg.reached is not None:
                results[trial.index] = (trial, seg.reached, seg.objectives)
    top = max((b for _, b, _ in results.values()), default=None)
    at_top = [r for r in results.values() if r[1] == top]
    losses = [r[2] for r in at_top]
    keep = pareto.pareto_front(losses) if k is None else pareto.front_subset(losses, k)
    return sorted((at_top[i] for i in keep), key=lambda r: (r[2], r[0].index))


def _ended(trials: list[TrialRecord]) -> list[tuple[SegmentRecord, TrialRecord]]:
    ended = [(s, t) for t in trials for s in t.segments if not s.running]
    return sorted(ended, key=lambda st: (st[0].elapsed or 0.0, st[0].ended or 0.0))


def _beats(budget: float, loss: float, best: Point | None) -> bool:
    return best is None or budget > best.budget or (budget == best.budget and loss < best.loss)


def summarize(study: Study, trials: list[TrialRecord], status: dict | None = None) -> Summary:
    status = status or {}
    trajectory: list[Point] = []
    spent = 0.0
    for seg, trial in _ended(trials):
        spent += seg.used()
        if seg.loss is not None and math.isfinite(seg.loss) and seg.reached is not None:
            best = trajectory[-1] if trajectory else None
            if _beats(seg.reached, seg.loss, best):
                trajectory.append(Point(seg.elapsed or 0.0, spent, seg.reached, seg.loss, trial))
    spent += sum(s.used() for t in trials for s in t.segments if s.running)
    return Summary(study, trials, status.get("state", "running"), status.get("reason", ""),
                   float(status.get("elapsed", 0.0)), Counter(t.state for t in trials), spent, trajectory)


# ---- text --------------------------------------------------------------------------------

def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"


def _num(x: float) -> str:
    return f"{x:.6g}"


def format_table(s: Summary) -> str:
    spec = s.study.spec
    unit = spec.budget.unit
    lines = [f"Study {s.study.name}: {s.state}" + (f" ({s.reason})" if s.reason else "")]
    best = s.best
    if best is None:
        lines.append(f"  best {s.study.objective.metric:<14} none yet")
    else:
        lines.append(f"  best {s.study.objective.metric:<14} {_num(s.metric(best.loss))}  "
                     f"(trial {best.trial.name}, {unit} {_num(best.budget)})")
        lines += [f"    {k} = {v!r}" if isinstance(v, str) else f"    {k} = {_num(v) if isinstance(v, float) else v}"
                  for k, v in best.trial.config.items()]
    by_state = ", ".join(f"{s.counts.get(state, 0)} {state}" for state in STATES)
    lines.append(f"  {'trials':<19} {len(s.trials)} of {spec.limits.max_trials}: {by_state}")
    lines.append(f"  {'budget used':<19} {_num(s.spent)} {unit}")
    lines.append(f"  {'wall time':<19} {format_duration(s.elapsed)}")
    return "\n".join(lines)


def _trial_best(trial: TrialRecord) -> tuple[float, float] | None:
    """(budget, loss) of a trial's best result at the highest budget it reached."""
    results = [(s.reached, s.loss) for s in trial.segments
               if s.loss is not None and math.isfinite(s.loss) and s.reached is not None]
    return max(results, key=lambda r: (r[0], -r[1])) if results else None


def _rank(trial: TrialRecord) -> tuple[float, float, int] | None:
    """Where a trial ranks (lower is better): its best result's budget (higher first), loss, index."""
    best = _trial_best(trial)
    return None if best is None else (-best[0], best[1], trial.index)


def top_trials(s: Summary, k: int = 10) -> list[tuple[TrialRecord, float, float]]:
    ranked = sorted((r, t) for t in s.trials if (r := _rank(t)) is not None)
    return [(t, -budget, loss) for (budget, loss, _), t in ranked[:k]]


class Standings:
    """Trials counted by state and ranked as top_trials ranks them, kept up to date one
    changed trial at a time: O(log n) per change instead of a pass over every trial, so a
    Study's status costs the same at its ten-thousandth trial as at its tenth. The first
    of `top()` is the incumbent (on an exact tie, the lower trial number rather than the
    earlier result)."""

    def __init__(self, trials: Iterable[TrialRecord] = ()):
        self.counts: Counter = Counter()
        self._trials: dict[int, TrialRecord] = {}
        self._state: dict[int, SegmentStatus] = {}
        self._rank: dict[int, tuple[float, float, int]] = {}
        self._ranked: list[tuple[float, float, int]] = []
        for trial in trials:
            self.set(trial)

    def __len__(self) -> int:
        return len(self._trials)

    def set(self, trial: TrialRecord) -> None:
        """The trial as it is now (new, or changed since it was last set)."""
        i = trial.index
        if i in self._state:
            self.counts[self._state[i]] -= 1
        self._trials[i], self._state[i] = trial, trial.state
        self.counts[trial.state] += 1
        old, new = self._rank.pop(i, None), _rank(trial)
        if old != new:
            if old is not None:
                del self._ranked[bisect.bisect_left(self._ranked, old)]
            if new is not None:
                bisect.insort(self._ranked, new)
        if new is not None:
            self._rank[i] = new

    def top(self, k: int) -> list[tuple[TrialRecord, float, float]]:
        return [(self._trials[i], -budget, loss) for budget, loss, i in self._ranked[:k]]


def format_top(s: Summary, k: int = 10) -> str:
    """The top k trials; for a multi-objective Study, its Pareto front (k spread along it)."""
    if s.study.multi_objective:
        return format_front(s, k)
    rows = [(str(i + 1), t.name, t.state, str(len(t.segments)), _num(b), _num(s.metric(loss)),
             " ".join(f"{n}={_num(v) if isinstance(v, float) else v}" for n, v in t.config.items()))
            for i, (t, b, loss) in enumerate(top_trials(s, k))]
    head = ("#", "trial", "state", "segments", s.study.spec.budget.unit, s.study.objective.metric, "params")
    if not rows:
        return "no trial has a result yet"
    return _columns(head, rows)


def format_front(s: Summary, k: int = 10) -> str:
    front = s.front(k)
    if not front:
        return "no trial has a result for every objective yet"
    rows = [(str(i + 1), t.name, _num(b), *(_num(v) for v in s.metrics(losses)),
             " ".join(f"{n}={_num(v) if isinstance(v, float) else v}" for n, v in t.config.items()))
            for i, (t, b, losses) in enumerate(front)]
    head = ("#", "trial", s.study.spec.budget.unit, *(o.metric for o in s.study.objectives), "params")
    return f"Pareto front ({len(s.front())} trials; {len(front)} shown):\n" + _columns(head, rows)


def format_lineage(s: Summary) -> str:
    """PBT: each live member's chain of trials, where its weights came from ("" otherwise)."""
    if s.study.spec.algorithm.name != "pbt":
        return ""
    from rung.schedulers.pbt import lineage

    lines = ["lineage (per member, the trials that trained its weights, oldest first: #trial [from-to step]):"]
    for member, links in sorted(lineage(s.trials).items()):
        lines.append(f"  {member}: " + " -> ".join(_link(link) for link in links))
    return "\n".join(lines)


def _link(link) -> str:
    params = " ".join(f"{n}={_num(v) if isinstance(v, float) else v}" for n, v in link.config.items())
    return f"#{link.trial} [{_num(link.start)}-{_num(link.end)}] ({params})"


def _columns(head: tuple, rows: list[tuple]) -> str:
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head) - 1)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    return "\n".join(fmt.format(*r) for r in [head, *rows])


def _unsuccessful(trial: TrialRecord) -> bool:
    seg = trial.current
    return trial.state == SegmentStatus.FAILED or seg.reason.startswith(DIVERGED)


def format_failed(s: Summary, k: int = 10) -> str:
    """The failed and diverged trials with the reason of their last segment, newest first
    ("" if none)."""
    failed = sorted((t for t in s.trials if t.segments and _unsuccessful(t)),
                    key=lambda t: t.current.ended or 0.0, reverse=True)
    if not failed:
        return ""
    width = max(len(t.name) for t in failed[:k])
    lines = [f"failed or diverged trials ({len(failed)}):"]
    lines += [f"  {t.name:<{width}}  {t.current.reason or 'no reason recorded'}" for t in failed[:k]]
    if len(failed) > k:
        lines.append(f"  ... and {len(failed) - k} more")
    return "\n".join(lines)


# ---- plots -------------------------------------------------------------------------------

def write_plots(s: Summary, out: Path) -> list[Path]:
    """best_vs_time.png, best_vs_budget.png, learning_curves.png in `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    metric, unit = s.study.objective.metric, s.study.spec.budget.unit
    paths = []
    ys = [s.metric(p.loss) for p in s.trajectory]
    ys_end = ys + ys[-1:]   # the incumbent holds until the end of the Study
    for name, xs, end, xlabel in (
            ("best_vs_time.png", [p.elapsed for p in s.trajectory], s.elapsed, "wall time (s)"),
            ("best_vs_budget.png", [p.spent for p in s.trajectory], s.spent, f"cumulative budget ({unit})")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.step(xs + [max(xs[-1], end)] if xs else [], ys_end, where="post")
        ax.plot(xs, ys, "o", markersize=3)
        ax.set(xlabel=xlabel, ylabel=f"incumbent {metric}",
               title=f"{s.study.name}: incumbent (best {metric} at the highest {unit} reached)")
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out / name))

    fig, ax = plt.subplots(figsize=(6, 4))
    levels = sorted({len(t.segments) for t in s.trials}) or [1]
    cmap = plt.get_cmap("viridis", max(2, len(levels)))
    for trial in s.trials:
        points = [p for seg in trial.segments for p in seg.curve]
        if points:
            colour = cmap(levels.index(len(trial.segments)))
            ax.plot([p[0] for p in points], [s.metric(p[1]) for p in points], color=colour, alpha=0.7, lw=1,
                    marker="o", markersize=2)   # a one-report trial is a dot, not an invisible line
    for n in levels:
        ax.plot([], [], color=cmap(levels.index(n)), label=f"{n} segment{'s' if n > 1 else ''}")
    ax.legend(title="reached", fontsize="small")
    ax.set(xlabel=f"step ({unit})", ylabel=metric, title=f"{s.study.name}: learning curves")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "learning_curves.png"))
    if s.study.multi_objective:
        paths.append(_pareto_plot(s, out / "pareto.png"))
    return paths


def _pareto_plot(s: Summary, path: Path) -> Path:
    """The first two objectives of every result at the front's budget, the front joined."""
    import matplotlib.pyplot as plt

    front = s.front()
    budget = front[0][1] if front else None
    everything = [s.metrics(seg.objectives) for t in s.trials for seg in t.segments
                  if seg.objectives and seg.reached == budget]
    first, second = (o.metric for o in s.study.objectives[:2])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in everything], [p[1] for p in everything], "o", color="0.7", markersize=3,
            label="results")
    line = sorted(s.metrics(losses)[:2] for _, _, losses in front)
    ax.step([p[0] for p in line], [p[1] for p in line], "o-", where="post", color="C3", markersize=4,
            label="Pareto front")
    ax.set(xlabel=first, ylabel=second,
           title=f"{s.study.name}: Pareto front at {s.study.spec.budget.unit} {_num(budget or 0)}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
