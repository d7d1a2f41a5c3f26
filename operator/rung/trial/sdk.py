"""What trial code calls. Inputs come from the environment (see rung.trial.contract), so
the same trainable runs under `rung run`, in a pod, and by hand with no variables set.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
from typing import Any

from rung.errors import InputError
from rung.trial import contract as C

STATE_FILE = "state.pkl"
RESULT_LIMIT = 4096  # a pod's termination message is cut at 4 KiB
CURVE_POINTS = 64    # learning-curve points the result file carries (a pod's logs may be gone)

# Per-process bookkeeping: the step resumed from, and the last checkpoint (for periodic ones).
_loaded_step: float | None = None
_last_saved_step: float | None = None
_last_saved_time = time.monotonic()
_last_report: dict = {}     # the latest {"step", "metrics"}, repeated when an error is recorded
_curve: list[list] = []     # [n, step, objective] of every `_curve_every`-th report (n counts them)
_curve_every = 1
_hook_installed = False
_swept: set[str] = set()    # checkpoint URIs whose cut-off uploads this process aborted


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _record_errors() -> None:
    """Once trial code uses the SDK, an uncaught exception also lands in the result file as
    "error" (in a pod: the termination message), so the Trial says why it failed."""
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed, previous = True, sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            try:
                _write_result({**_last_report, "error": f"{kind.__name__}: {value}"[:1000]})
            except Exception:  # never hide the original error behind our own
                pass
        previous(kind, value, tb)

    sys.excepthook = hook


def params() -> dict:
    """This trial's parameters ({} when RUNG_PARAMS is unset)."""
    _record_errors()
    raw = _env(C.ENV_PARAMS)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise InputError(C.ENV_PARAMS, f"is not JSON ({e})", 'set it to a JSON object like {"lr": 0.1}')
    if not isinstance(value, dict):
        raise InputError(C.ENV_PARAMS, f"is a {type(value).__name__}, not an object",
                         'set it to a JSON object like {"lr": 0.1}')
    return value


def budget() -> float:
    """The budget this segment must reach (1 when RUNG_BUDGET is unset)."""
    raw = _env(C.ENV_BUDGET)
    if raw is None:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError(C.ENV_BUDGET, f"{raw!r} is not a number >= 0", "set it like RUNG_BUDGET=9")
    return value


def gpus() -> int:
    """The GPUs this segment's pod got (RUNG_GPUS; 0 when unset: run on CPU)."""
    raw = _env(C.ENV_GPUS)
    try:
        value = int(raw) if raw is not None else 0
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(C.ENV_GPUS, f"{raw!r} is not a whole number >= 0", "set it like RUNG_GPUS=2 (0: CPU)")
    return value


def _store():
    uri = _env(C.ENV_CHECKPOINT_URI)
    if uri is None:
        return None
    from rung.storage import split_trial_uri  # only trials that checkpoint pay for it
    return split_trial_uri(uri)


def load_checkpoint() -> Any:
    """The state saved by the latest intact checkpoint at a step <= budget(), or None.
    A trial with none of its own that starts from another's weights (PBT) gets that
    trial's latest checkpoint at a step <= RUNG_PARENT_STEP."""
    global _loaded_step, _last_saved_step
    _loaded_step = None
    where = _store()
    if where is None:
        return None
    store, prefix = where
    found = store.load_latest(prefix, max_step=budget(), owner=_owner(), skipped=_warn_skipped)
    if found is None and _env(C.ENV_PARENT_CHECKPOINT_URI) is not None:
        found = _load_parent()
    if found is None or STATE_FILE not in found[1]:
        return None
    step, files = found
    state = pickle.loads(files[STATE_FILE])
    _loaded_step = _last_saved_step = step
    return state


def _load_parent():
    from rung.storage import split_trial_uri
    from rung.storage.base import owner_of
    store, prefix = split_trial_uri(_env(C.ENV_PARENT_CHECKPOINT_URI))
    step = float(_env(C.ENV_PARENT_STEP) or 0)
    owner = owner_of(json.loads(_env(C.ENV_PARENT_PARAMS) or "{}"))
    return store.load_latest(prefix, max_step=step, owner=owner, skipped=_warn_skipped)


def _owner() -> str | None:
    """Binds checkpoints to this trial's configuration (none when run by hand)."""
    from rung.storage.base import owner_of
    return owner_of(params()) if _env(C.ENV_PARAMS) is not None else None


def _warn_skipped(where: str, why: str) -> None:
    sys.stderr.write(f"rung: warning: skipped checkpoint {where}: {why}\n")
    sys.stderr.flush()


def checkpoint_step() -> float:
    """The step of the checkpoint load_checkpoint() returned (0 when it returned None)."""
    return _loaded_step if _loaded_step is not None else 0


def save_checkpoint(state: Any, step: float, files: dict[str, bytes] | None = None) -> None:
    """Pickle `state` as this trial's checkpoint at `step`, sealed (no-op without a URI).
    `files` ({name: bytes}) are artefacts sealed with it, e.g. a model in a portable format
    or JSON others read without unpickling the state. The manifest keeps the metrics
    reported at this same step; then retention runs."""
    global _last_saved_step, _last_saved_time
    where = _store()
    if where is None:
        return
    store, prefix = where
    uri = _env(C.ENV_CHECKPOINT_URI)
    if uri not in _swept:  # no other writer of this prefix runs while this segment does
        _swept.add(uri)
        _housekeeping("aborting cut-off uploads", lambda: store.abort_incomplete(prefix))
    reported = _last_report.get("metrics") if _last_report.get("step") == _number(step) else None
    if files and STATE_FILE in files:
        raise InputError("save_checkpoint", f"files may not be named {STATE_FILE}", "rename the artefact")
    store.save(prefix, step, {**(files or {}), STATE_FILE: pickle.dumps(state, protocol=5)}, metrics=reported,
               owner=_owner())
    _last_saved_step, _last_saved_time = float(step), time.monotonic()
    _housekeeping("checkpoint retention", lambda: _prune(store, prefix))


def _prune(store, prefix: str) -> None:
    """Keep the latest checkpoint and the RUNG_KEEP_BEST best; unset keeps every one."""
    raw = _env(C.ENV_KEEP_BEST)
    if raw is None:
        return
    try:
        keep_best = int(raw)
    except ValueError:
        keep_best = -1
    if keep_best < 0:
        raise InputError(C.ENV_KEEP_BEST, f"{raw!r} is not a whole number >= 0",
                         "unset it (keep every checkpoint) or set e.g. 1")
    store.prune(prefix, keep_best, _env(C.ENV_OBJECTIVE), _env(C.ENV_OBJECTIVE_GOAL) or "minimize")


def _housekeeping(what: str, work) -> None:
    """Housekeeping never fails a trial: a failure is one warning line on stderr."""
    try:
        work()
    except Exception as e:
        text = e.line() if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        sys.stderr.write(f"rung: warning: {what} failed, going on: {' '.join(text.split())[:500]}\n")
        sys.stderr.flush()


def _every(name: str) -> float:
    raw = _env(name)
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        raise InputError(name, f"{raw!r} is not a number", "set it to 0 (off) or a positive number") from None
    return value if value > 0 else 0.0


def should_checkpoint(step: float) -> bool:
    """True when a periodic checkpoint is due at `step` (RUNG_CHECKPOINT_EVERY_STEPS /
    _SECONDS; both unset or 0 means only the end-of-segment checkpoint the trainable makes)."""
    if _env(C.ENV_CHECKPOINT_URI) is None:
        return False
    steps, seconds = _every(C.ENV_CHECKPOINT_EVERY_STEPS), _every(C.ENV_CHECKPOINT_EVERY_SECONDS)
    if steps:
        last = _last_saved_step if _last_saved_step is not None else 0.0
        # Due when step crosses a multiple of N: the same steps whether or not we resumed.
        if math.floor(float(step) / steps) > math.floor(last / steps):
            return True
    return bool(seconds) and time.monotonic() - _last_saved_time >= seconds


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)  # numpy scalars, 0-d arrays
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def report(step: float, **metrics: Any) -> None:
    """Report metrics at `step`: one `@rung {...}` stdout line, and the result file rewritten.
    Steps must be finite and increase from one report to the next. The reserved metric
    `throughput` (samples per second, > 0) adds "gpus": gpus() to the line and result file."""
    global _last_report
    _record_errors()
    try:
        body = {"step": _number(step), "metrics": {k: _number(v) for k, v in metrics.items()}}
    except (TypeError, ValueError) as e:
        raise InputError("report", f"metrics must be numbers ({e})", "pass floats, e.g. report(3, loss=0.2)")
    if not math.isfinite(body["step"]):
        raise InputError("report", f"step {step} is not a finite number", "report the step (epoch, batch) reached")
    if _last_report and body["step"] <= _last_report["step"]:
        raise InputError("report", f"step {body['step']} does not come after the previous step "
                         f"{_last_report['step']}", "report increasing steps, e.g. the epoch just finished")
    speed = body["metrics"].get(C.THROUGHPUT_METRIC)
    if speed is not None:
        if not (math.isfinite(speed) and speed > 0):
            raise InputError("report", f"{C.THROUGHPUT_METRIC} {speed} is not a finite number > 0",
                             "report samples per second, e.g. report(3, loss=0.2, throughput=812.5)")
        body["gpus"] = gpus()  # a measured efficiency fit needs both
    line = json.dumps(body, separators=(",", ":"))
    sys.stdout.write(C.REPORT_PREFIX + line + "\n")
    sys.stdout.flush()
    _last_report = body
    _add_to_curve(body)
    _write_result(body)


def _add_to_curve(body: dict) -> None:
    """Keep every k-th point of the objective, doubling k whenever more than CURVE_POINTS
    would be kept: a curve spread evenly over the whole run, at most 4 KiB."""
    global _curve_every
    value = body["metrics"].get(_env(C.ENV_OBJECTIVE) or "")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return
    n = _curve[-1][0] + 1 if _curve else 0
    if _curve and _curve[-1][0] % _curve_every:
        _curve.pop()   # the previous point was only kept as the latest one
    _curve.append([n, body["step"], value])
    if sum(p[0] % _curve_every == 0 for p in _curve) >= CURVE_POINTS:   # the latest may be one more
        _curve_every *= 2
        _curve[:-1] = [p for p in _curve[:-1] if p[0] % _curve_every == 0]


def _result_path() -> str | None:
    path = _env(C.ENV_RESULT_FILE)
    if path is not None:
        return path
    # The kubelet creates the default path in a pod; elsewhere (by hand) there is none.
    return C.DEFAULT_RESULT_FILE if os.path.exists(C.DEFAULT_RESULT_FILE) else None


def _write_result(body: dict) -> None:
    path = _result_path()
    if path is None:
        return
    body = {**body, "curve": [p[1:] for p in _curve]} if _curve else dict(body)
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) > RESULT_LIMIT and _curve:   # the final metrics matter more
        body.pop("curve")
        text = json.dumps(body, separators=(",", ":"))
    metrics = dict(body.get("metrics", {}))
    while len(text.encode()) > RESULT_LIMIT and metrics:
        metrics.pop(next(reversed(metrics)))  # keep the first metrics: the objective comes first
        body.update(metrics=metrics, truncated=True)
        if C.THROUGHPUT_METRIC not in metrics:
            body.pop("gpus", None)
        text = json.dumps(body, separators=(",", ":"))
    # Written in place, not renamed: in a pod the path is a file the kubelet mounted.
    with open(path, "w") as f:
        f.write(text)
