"""The operator's threads for the API calls steps make side by side, in two lanes: a step's
records and pods first; finished pods' labels and deletes (the `background` lane) only
while the steps' calls leave at least half the threads free, and a few at a time.

After a restart, hundreds of labels and deletes wait beside the backlog of records and
pods. On a loaded API server every call in flight slows the others down, so the calls that
start the next pods get the server first; the labels and deletes follow once the steps
have caught up (until then a finished pod only stays in the watch a little longer).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Executor, Future


class ApiPool(Executor):
    def __init__(self, threads: int, background_limit: int, name: str = "rung-api"):
        self.threads, self.background_limit = threads, background_limit
        self.background = _BackgroundLane(self)
        self._first: deque = deque()
        self._later: deque = deque()
        self._running = {False: 0, True: 0}   # calls running, by lane (True: background)
        self._changed = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for worker in self._workers:
            worker.start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._put(self._first, fn, args, kwargs)

    def _put(self, lane: deque, fn, args, kwargs) -> Future:
        future: Future = Future()
        with self._changed:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            lane.append((future, fn, args, kwargs))
            self._changed.notify()
        return future

    def _next(self):
        """(call, its lane) to run now, or None (under the lock)."""
        if self._first:
            return self._first.popleft(), False
        if (self._later and self._running[True] < self.background_limit
                and self._running[False] < max(1, self.threads // 2)):
            return self._later.popleft(), True
        return None

    def _work(self) -> None:
        while True:
            with self._changed:
                while (taken := self._next()) is None:
                    if self._closed:
                        return
                    self._changed.wait()
                (future, fn, args, kwargs), background = taken
                self._running[background] += 1
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as e:
                        future.set_exception(e)
            finally:
                with self._changed:
                    self._running[background] -= 1
                    self._changed.notify()   # a background call may be due now

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._changed:
            self._closed = True
            if cancel_futures:
                for lane in (self._first, self._later):
                    while lane:
                        lane.popleft()[0].cancel()
            self._changed.notify_all()
        if wait:
            for worker in self._workers:
                worker.join()


class _BackgroundLane(Executor):
    """The pool's background lane, as an Executor (its threads are the pool's)."""

    def __init__(self, pool: ApiPool):
        self.pool = pool

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.pool._put(self.pool._later, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The pool's to shut down."""
