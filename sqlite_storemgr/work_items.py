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
        self._parked = False  # the writer is in take() and has taken nothing yet
        self._lent = False  # a waiting caller runs a batch on the writer's store (`lend`)
        self._returned: Batch | None = None  # a lent batch a unit of which killed its runner

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

    def put_many(self, units: list[WriteUnit], before_append: Callable[[], None]
                 ) -> tuple[int, QueueFullError | ManagerClosedError | None]:
        """Queue ``units`` in order, as many at a time as there is room for, waking the
        writer once per run appended.  Returns how many were queued, and the error
        that stopped the rest (the queue stayed full, or it closed) or None."""
        queued = 0
        with self.lock:
            try:
                while queued < len(units):
                    self._refuse_if_closing()
                    if len(self.items) >= self.size:
                        self._wait_for_room()
                    room = self.size - len(self.items)
                    before_append()
                    self.items.extend(units[queued:queued + room])
                    queued = min(len(units), queued + room)
                    if self._writer_waiting:
                        self._writer_waiting = False
                        self._not_empty.notify()
            except (QueueFullError, ManagerClosedError) as error:
                return queued, error
        return queued, None

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
        """The next work item for the writer: a batch of units, a lease request, or `STOP`.

        While a waiting caller runs a batch on the writer's store (`lend`), the
        writer takes nothing; a lent batch handed back dead comes first.
        """
        with self.lock:
            items = self.items
            self._parked = True
            try:
                while True:
                    while (not items or self._lent) and self._returned is None:
                        self._wait_for(1, None)
                    if self._returned is not None:
                        returned, self._returned = self._returned, None
                        return returned
                    if len(items) >= self._expected or self.closing:
                        break
                    self._wait_for(self._expected, LINGER_SECONDS)
                    if items and not self._lent and self._returned is None:
                        break
                return self._take_head()
            finally:
                self._parked = False

    def _take_head(self) -> Batch | LeaseRequest | None:
        """(Lock held, items queued.) The first item; a unit with the units behind it, as a batch."""
        items = self.items
        was_full = len(items) >= self.size
        first = items.popleft()
        taken: Batch | LeaseRequest | None = first  # type: ignore[assignment]  # a unit becomes a Batch below
        if isinstance(first, WriteUnit):
            units = [first]
            while items and len(units) < self.batch_size and isinstance(items[0], WriteUnit):
                units.append(items.popleft())  # type: ignore[arg-type]  # a WriteUnit: checked
            self._expected = min(self.batch_size, len(units) + len(items))
            taken = Batch(units)
        if was_full:
            self._not_full.notify_all()
        return taken

    def lend(self) -> Batch | None:
        """The queued units as a batch for a caller about to wait for one of them, if the
        writer is parked (nothing under way), a unit heads the queue and the last batch
        had one unit (a lone caller: no group to commit together); else None.

        Until `give_back`, the writer takes nothing: the caller runs the batch on the
        writer's store, sparing the two thread switches of a handoff.
        """
        with self.lock:
            if (not self._parked or self._lent or self.closing or self._returned is not None
                    or self._expected > 1  # callers come in groups: the writer batches them
                    or not self.items or not isinstance(self.items[0], WriteUnit)):
                return None
            batch = self._take_head()
            self._lent = True
            return batch  # type: ignore[return-value]  # a WriteUnit heads: a Batch

    def give_back(self, dead: Batch | None = None) -> None:
        """The lent batch ran; ``dead``: a unit of it raised a BaseException, and the
        writer takes the batch back to die of it as if it had run it (`WriterQueue._die`)."""
        with self.lock:
            self._lent = False
            self._returned = dead
            if self._writer_waiting and (self.items or dead is not None):
                self._writer_waiting = False
                self._not_empty.notify()

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
