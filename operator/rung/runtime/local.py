"""Trials as local processes, for `rung run`.

Each segment is one subprocess in its own session (so a Ctrl-C on the terminal reaches
`rung run`, which then stops its children on purpose and keeps the records consistent).
A reader thread per process turns '@rung {json}' stdout lines into Reports; every other
stdout and stderr line goes to <results>/segments/<segment>.log. Each child is
also killed by the kernel when `rung run` dies (PR_SET_PDEATHSIG), so a `kill -9` leaves
no trial running; a pid file per segment lets the next `rung run` kill whatever the
children started that outlived them.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rung.errors import InputError
from rung.runtime.base import (Ended, Event, Outcome, Report, Runtime, SegmentSpec, contract_env, parse_report_line,
                               timed_out)
from rung.runtime.folder import unwritable

_PYTHONS = ("python", "python3")
_PR_SET_PDEATHSIG = 1
_MIN_FREE = 1 << 20   # bytes: a results disk with less free is full for our purposes


def _die_with_us():
    """For Popen(preexec_fn=...): the child gets SIGKILL when this process dies, even by
    kill -9. Resolved here, before any fork: the child only makes the one call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):   # not Linux: the pid files still let the next run reap it
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:   # we died before the call took effect
            os._exit(1)
    return preexec
_LINGER = 2.0   # seconds a finished trial's leftover children may hold its stdout open


def resolve_command(command: list[str], cwd: Path) -> list[str]:
    """The argv to execute. `python` means the interpreter running rung, so that what
    check_command found importable is what runs; a bare name found only in cwd runs from there."""
    first, rest = command[0], list(command[1:])
    if first in _PYTHONS:
        return [sys.executable, *rest]
    if os.sep not in first and shutil.which(first) is None and (cwd / first).is_file():
        return [str(cwd / first), *rest]
    return [first, *rest]


def check_command(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Refuse a trial command that cannot start here, before anything is written."""
    field = "spec.trial.command"
    first = command[0]
    argv = resolve_command(command, cwd)
    exe = argv[0]
    found = (cwd / exe).is_file() if os.sep in exe else shutil.which(exe) is not None
    if not found:
        raise InputError(field, f"{first!r} is neither on PATH nor a file in {cwd}",
                         "install it, or give a path relative to the manifest's folder")
    if first not in _PYTHONS or len(command) < 2:
        return
    if command[1] == "-m" and len(command) > 2:
        if not _importable(command[2], cwd, env):
            raise InputError(field, f"python module {command[2]!r} cannot be imported (from {cwd})",
                             "install it (pip install ...) or fix the module name")
    elif not command[1].startswith("-") and not (cwd / command[1]).is_file():
        raise InputError(field, f"python script {command[1]!r} does not exist in {cwd}",
                         "give a path relative to the manifest's folder")


def _importable(module: str, cwd: Path, env: dict[str, str]) -> bool:
    # `python -m` puts its cwd first on sys.path; the Study's PYTHONPATH comes next.
    extra = [str(cwd)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    saved = list(sys.path)
    sys.path[:0] = extra
    try:
        importlib.invalidate_caches()
        return importlib.util.find_spec(module) is not None
    except Exception:   # a missing parent package, or one that fails to import
        return False
    finally:
        sys.path[:] = saved


@dataclass
class _Segment:
    spec: SegmentSpec
    proc: subprocess.Popen
    reader: threading.Thread
    log: IO[bytes]
    log_path: Path
    result_path: Path
    pid_path: Path
    started: float = 0.0                 # monotonic
    stop_deadline: float | None = None   # SIGKILL after this (monotonic), once stop() was asked
    exited_at: float | None = None
    timed_out: bool = False              # stopped for running past spec.timeout


class LocalRuntime(Runtime):
    def __init__(self, results: str | Path, cwd: str | Path, grace: float = 5.0):
        self.dir = Path(results) / "segments"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cwd = Path(cwd)
        self.grace = grace
        self._segments: dict[str, _Segment] = {}
        self._reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self._ends: dict[str, Ended] = {}   # run name -> its end, until the loop releases it
        reap_orphans(self.dir)
        self._preexec = _die_with_us()

    # ---- the interface ----------------------------------------------------------------
    def start(self, spec: SegmentSpec) -> None:
        name = spec.name
        log_path, result_path, pid_path = (self.dir / f"{name}{ext}" for ext in (".log", ".result.json", ".pid"))
        try:
            result_path.unlink(missing_ok=True)   # a stale result must never pass for this attempt's
            log = open(log_path, "ab")
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {spec.attempt}: "
                      f"budget {spec.budget:g}, params {json.dumps(spec.params)}\n".encode())
            log.flush()
        except OSError as e:   # the results folder is full or read-only: not the trial's fault
            raise unwritable(self.dir, e) from None
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **contract_env(spec, str(result_path))}
        try:
            proc = subprocess.Popen(resolve_command(spec.command, self.cwd), cwd=self.cwd, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                    start_new_session=True, preexec_fn=self._preexec)
        except OSError as e:
            log.close()
            self._ends[spec.run_name] = Ended(spec.trial, spec.segment, Outcome.FAILED, None, None,
                                               f"cannot start {spec.command[0]!r}: {e.strerror or e}",
                                               spec.attempt)
            return
        try:
            pid_path.write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        except OSError as e:   # untracked, it could outlive us: stop it first
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()
            raise unwritable(self.dir, e) from None
        reader = threading.Thread(target=self._read, args=(spec, proc.stdout, log), daemon=True,
                                  name=f"rung-reader-{name}")
        reader.start()
        self._segments[name] = _Segment(spec, proc, reader, log, log_path, result_path, pid_path,
                                        started=time.monotonic())

    def poll(self, replay: bool = False) -> list[Event]:
        now = time.monotonic()
        ended = [s for s in self._segments.values() if self._ended(s, now)]
        # Readers of ended segments are done, so all their reports are queued by now.
        events: list[Event] = []
        while True:
            try:
                events.append(self._reports.get_nowait())
            except queue.Empty:
                break
        for seg in ended:
            self._ends[seg.spec.run_name] = self._finished(seg)
        return events + list(self._ends.values())

    def release(self, run: str) -> None:
        self._ends.pop(run, None)

    def stop(self, name: str) -> None:
        seg = self._segments.get(name)
        if seg is None or seg.stop_deadline is not None or seg.proc.poll() is not None:
            return   # unknown, already stopping, or it ended on its own: its own outcome stands
        seg.stop_deadline = time.monotonic() + self.grace
        _signal_group(seg.proc.pid, signal.SIGTERM)

    def running(self) -> set[str]:
        return {s.spec.run_name for s in self._segments.values()} | set(self._ends)

    def close(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL after the grace period; wait for them."""
        for name in list(self._segments):
            self.stop(name)
        deadline = time.monotonic() + self.grace
        for seg in self._segments.values():
            try:
                seg.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(seg.proc.pid, signal.SIGKILL)
                seg.proc.wait()
        for seg in self._segments.values():
            _signal_group(seg.proc.pid, signal.SIGKILL)   # leftovers of the trial's own children
            seg.reader.join(timeout=_LINGER)
            self._release(seg)
        self._segments.clear()

    # ---- internals --------------------------------------------------------------------
    def _read(self, spec: SegmentSpec, stream: IO[bytes], log: IO[bytes]) -> None:
        for raw in stream:
            parsed = parse_report_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if parsed is not None:
                self._reports.put(Report(spec.trial, spec.segment, *parsed, attempt=spec.attempt))
            else:
                try:
                    log.write(raw)
                    log.flush()
                except (ValueError, OSError):   # closed by close() after a stuck reader timed out
                    pass
        stream.close()

    def _ended(self, seg: _Segment, now: float) -> bool:
        if seg.proc.poll() is None:
            if seg.spec.timeout and seg.stop_deadline is None and now - seg.started > seg.spec.timeout:
                seg.timed_out = True
                self.stop(seg.spec.name)
            elif seg.stop_deadline is not None and now > seg.stop_deadline:
                _signal_group(seg.proc.pid, signal.SIGKILL)
            return False
        if seg.reader.is_alive():   # the trial exited but something it started holds stdout
            seg.exited_at = seg.exited_at or now
            if now - seg.exited_at > _LINGER:
                _signal_group(seg.proc.pid, signal.SIGKILL)
            return False
        return True

    def _finished(self, seg: _Segment) -> Ended:
        spec, rc = seg.spec, seg.proc.returncode
        self._release(seg)
        del self._segments[spec.name]
        if seg.timed_out:
            return Ended(spec.trial, spec.segment, Outcome.FAILED, rc, None, timed_out(spec.timeout), spec.attempt)
        if seg.stop_deadline is not None:
            return Ended(spec.trial, spec.segment, Outcome.STOPPED, rc, attempt=spec.attempt)
        result = _read_json(seg.result_path)
        if rc == 0:
            return Ended(spec.trial, spec.segment, Outcome.SUCCEEDED, rc, result, attempt=spec.attempt)
        self._check_writable()   # a trial that failed on a full results disk is not at fault
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
        last = _last_line(seg.log_path)
        reason = f"{how}: {last} (log: {seg.log_path})" if last else f"{how} (log: {seg.log_path})"
        return Ended(spec.trial, spec.segment, Outcome.FAILED, rc, result, reason, spec.attempt)

    def _check_writable(self) -> None:
        """Raise when the results folder is read-only or (nearly) full: a failure then
        is likely the disk's (the trial could not write its result or log)."""
        probe = self.dir / ".probe"
        try:
            probe.write_bytes(b"\0" * 4096)
            probe.unlink()
            fs = os.statvfs(self.dir)
            if fs.f_bavail * fs.f_frsize < _MIN_FREE:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            probe.unlink(missing_ok=True)
            raise unwritable(self.dir, e) from None

    def _release(self, seg: _Segment) -> None:
        seg.log.close()
        seg.pid_path.unlink(missing_ok=True)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)   # the child leads its own session: its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (tells a live pid from a reused one), Linux only."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def reap_orphans(folder: Path, wait: float = 5.0) -> None:
    """Kill the process groups of segments a killed `rung run` left behind."""
    for pid_path in folder.glob("*.pid"):
        try:
            pid, started = pid_path.read_text().split()
            pid = int(pid)
        except (OSError, ValueError):
            pid, started = 0, None
        if pid and started != "None" and _start_time(pid) == started:
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + wait
            while _start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.02)
        pid_path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _last_line(path: Path, limit: int = 200) -> str:
    """The last non-empty line of a log (usually the exception), cut to `limit` characters."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("--- ")]
    return lines[-1][:limit] if lines else ""
