"""The writer's bounded FIFO of work items, and how it hands them out in batches.

Callers wait for room up to ``timeout`` (backpressure).  The writer takes a run
of units as one batch; since the callers whose units were just committed come
back with their next unit within microseconds, when fewer units are queued than
the last round had callers it lingers up to `LINGER_SECONDS` for them (woken
early once they are all there).  `STOP`, queued by `close`, ends the writer
once everything before it ran.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Union

from .errors import ManagerClosedError, QueueFullError
from .writer_batch import Batch, LeaseRequest, WriteUnit

LINGER_SECONDS = 0.0005
STOP = None
WorkItem = Union[WriteUnit, LeaseRequest, None]


class WorkItems:
    """A bounded deque of work items under one lock that the writer queue shares."""

    def __init__(self, size: int, batch_size: int, timeout: float, name: str):
        self.size = size
        self.batch_size = batch_size
        self.timeout = timeout
        self.name = name
        self.closing = False
        self.reset()

    def reset(self) -> None:
        """Empty, with fresh locks: the state at start and in a forked child."""
        self.items: deque[WorkItem] = deque()
        self.lock = threading.Lock()
        self._not_empty = threading.Condition(self.lock)
        self._not_full = threading.Condition(self.lock)
        self._writer_waiting = False
        self._wanted = self._expected = 1

    def put(self, item: WorkItem, before_append: Callable[[], None]) -> None:
        """Queue ``item``, waiting for room; ``before_append()`` runs under the lock
        just before (the writer queue starts a writer there if none runs)."""
        with self.lock:
            self._refuse_if_closing()
            if len(self.items) >= self.size:
                self._wait_for_room()
            before_append()
            self.items.append(item)
            if self._writer_waiting and len(self.items) >= self._wanted:
                self._writer_waiting = False  # one wake-up is enough: the others skip notify()
                self._not_empty.notify()

    def _refuse_if_closing(self) -> None:
        if self.closing:
            raise ManagerClosedError(f"the writer of {self.name!r} is closed")

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + self.timeout
        while len(self.items) >= self.size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._not_full.wait(remaining):
                if len(self.items) < self.size:
                    break
                raise QueueFullError(
                    f"the write queue of {self.name!r} stayed full ({self.size} units) for "
                    f"timeout={self.timeout:g}s: the writer cannot keep up; raise queue_size "
                    "or timeout, or submit less")
            self._refuse_if_closing()

    def take(self) -> Batch | LeaseRequest | None:
        """The next work item for the writer: a batch of units, a lease request, or `STOP`."""
        with self.lock:
            items = self.items
            while not items:
                self._wait_for(1, None)
            if len(items) < self._expected and not self.closing:
                self._wait_for(self._expected, LINGER_SECONDS)
            was_full = len(items) >= self.size
            first = items.popleft()
            taken: Batch | LeaseRequest | None = first
            if isinstance(first, WriteUnit):
                units = [first]
                while items and len(units) < self.batch_size and isinstance(items[0], WriteUnit):
                    units.append(items.popleft())  # type: ignore[arg-type]
                self._expected = min(self.batch_size, len(units) + len(items))
                taken = Batch(units)
            if was_full:
                self._not_full.notify_all()
        return taken

    def _wait_for(self, count: int, timeout: float | None) -> None:
        """Wait (lock held) until ``count`` items are queued, or ``timeout``."""
        self._wanted = count
        self._writer_waiting = True
        self._not_empty.wait(timeout)
        self._writer_waiting = False

    def close(self, writer_running: bool) -> None:
        """(Lock held.) Refuse new items; queue `STOP` behind the others for a running writer."""
        if self.closing:
            return
        self.closing = True
        if writer_running:
            self.items.append(STOP)
            self._not_empty.notify_all()
        self._not_full.notify_all()

    def clear(self) -> list[Any]:
        """(Lock held.) Remove and return every queued item but `STOP`: a writer died."""
        pending = [item for item in self.items if item is not STOP]
        self.items.clear()
        self._not_full.notify_all()
        return pending
