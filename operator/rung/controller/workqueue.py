"""A work queue of keys (Studies), in the manner of controller-runtime's: a key is queued
once however often it is added, never handed to two workers at once, handed out again if
it was added while a worker had it, and can be added after a delay."""

from __future__ import annotations

import collections
import heapq
import threading
import time
from typing import Hashable


class WorkQueue:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._queued: set = set()
        self._busy: set = set()
        self._again: set = set()                          # added while busy
        self._due: dict[Hashable, float] = {}             # key -> earliest time it was asked for
        self._timers: list[tuple[float, int, Hashable]] = []
        self._seq = 0

    def add(self, key: Hashable) -> None:
        with self._cond:
            self._add(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            return self.add(key)
        with self._cond:
            when = self.clock() + delay
            if self._due.get(key, float("inf")) <= when:
                return   # it is due earlier already
            self._due[key] = when
            self._seq += 1
            heapq.heappush(self._timers, (when, self._seq, key))
            self._cond.notify()

    def get(self, timeout: float) -> Hashable | None:
        """The next key to work on (call done() after), or None after `timeout` seconds."""
        deadline = self.clock() + timeout
        with self._cond:
            while True:
                now = self.clock()
                while self._timers and self._timers[0][0] <= now:
                    when, _, key = heapq.heappop(self._timers)
                    if self._due.get(key) == when:
                        del self._due[key]
                        self._add(key)
                if self._queue:
                    key = self._queue.popleft()
                    self._queued.discard(key)
                    self._busy.add(key)
                    return key
                if now >= deadline:
                    return None
                wait = deadline - now
                if self._timers:
                    wait = min(wait, self._timers[0][0] - now)
                self._cond.wait(max(wait, 0.001))

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._add(key)

    def _add(self, key: Hashable) -> None:
        if key in self._busy:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._cond.notify()
