"""The writer thread: one per database, owning the only write connection.

Callers enqueue units of work and get a ``concurrent.futures.Future``.  The
writer takes up to ``batch`` units into one transaction (group commit: one
fsync serves many callers) and resolves the futures only after COMMIT.  A
unit that raises is undone alone: the batch runs without a savepoint per unit
until a unit fails, then is rolled back and re-run with one per unit.  A busy
error from another process rolls the whole batch back and re-runs it under
the lock policy.  The queue is bounded; ``close()`` drains it.

If the writer dies (a unit raising ``BaseException``, a connection that cannot
be opened), every pending future fails (the culprit with its own exception,
the others with `WriterBrokenError` caused by it) and the next submit starts
a fresh writer with a fresh connection.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from storm.exceptions import DisconnectionError

from .backends.dialect import busy_phase
from .errors import (
    DatabaseLockedError, ManagerClosedError, QueueFullError, StrategyError, WriterBrokenError)
from .futures import UnitFuture, finish_in_turn
from .retry import LockPolicy
from .stores import ManagedStore, refuse_store_bound
from .threadlocal import close_store
from .units import (
    begin_write, joined_block, outermost_block, resolved_future, run_joined, run_user_code)

_live_queues: "weakref.WeakSet[WriterQueue]" = weakref.WeakSet()
EXIT_DRAIN_SECONDS = 10.0
LINGER_SECONDS = 0.0005
# The parent's writer stores, kept referenced in a forked child so no destructor closes them.
_abandoned_after_fork: list = []


class _Unit:
    __slots__ = ("fn", "args", "kwargs", "future", "enqueued", "reads")

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, future: Future,
                 reads: bool = False):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.enqueued = time.monotonic()
        self.reads = reads  # a read unit (single's submit_read): it may not write


class _Lease:
    """A ``write()`` block under the writer: the caller borrows the writer's store."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.done = threading.Event()
        self.store: ManagedStore | None = None
        self.succeeded = False


class _BlockFailed(Exception):
    """Internal: the borrowed ``write()`` block raised, so the writer rolled back."""


class _Isolate(Exception):
    """Internal: a unit failed in a batch run without savepoints; it was rolled back.

    Batches run without a savepoint per unit (two statements saved per unit);
    the first failure rolls the batch back and re-runs it with savepoints, so
    the units before the failing one run twice (units may run more than once).
    """


class _BatchAborted(Exception):
    """Internal: a unit's error made SQLite roll back the batch's whole transaction."""

    def __init__(self, unit: "_Unit", error: Exception):
        super().__init__(repr(error))
        self.unit = unit
        self.error = error


class _WriterDied(Exception):
    """Internal: carries the BaseException that killed the writer and its unit."""

    def __init__(self, unit: _Unit, cause: BaseException):
        super().__init__(repr(cause))
        self.unit = unit
        self.cause = cause
        self.batch: list[_Unit] = []


class WriterQueue:
    """A bounded queue of write units served by one writer thread."""

    def __init__(self, open_store: Callable[[], ManagedStore], policy: LockPolicy,
                 batch: int, queue_size: int, timeout: float, name: str):
        self._open_store = open_store
        self._policy = policy
        self._batch = batch
        self._size = queue_size
        self._timeout = timeout
        self.name = name
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._writer_waiting = False
        self._wanted = 1
        self._expected = 1
        self._closing = False
        self._thread: threading.Thread | None = None
        self._store: ManagedStore | None = None
        self._thread_ident: int | None = None
        self.committed = 0
        self.failed = 0
        self.batches = 0
        self.largest_batch = 0
        self.batched_units = 0
        self.restarts = 0
        _live_queues.add(self)

    # -- the caller's side -------------------------------------------------

    def submit(self, fn: Callable, args: tuple = (), kwargs: dict | None = None,
               reads: bool = False) -> UnitFuture:
        """Enqueue ``fn(store, *args, **kwargs)``; waits up to ``timeout`` if the queue is full.

        ``reads``: a read unit, refused any write.  Inside a unit of this
        writer the unit runs at once, joining it (nested).
        """
        if self._inside_unit():
            return resolved_future(run_joined, self._store, fn, args, kwargs)
        future = UnitFuture()
        future.runner = self
        unit = _Unit(fn, args, kwargs or {}, future, reads)
        with self._lock:
            self._check_open()
            if len(self._items) >= self._size:
                self._wait_for_room()
            if self._thread is None:
                self._start_writer()
            self._items.append(unit)
            if self._writer_waiting and len(self._items) >= self._wanted:
                self._writer_waiting = False  # one wake-up is enough: the others skip notify()
                self._not_empty.notify()
        return future

    def _check_open(self) -> None:
        if self._closing:
            raise ManagerClosedError(f"the writer of {self.name!r} is closed")

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + self._timeout
        while len(self._items) >= self._size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._not_full.wait(remaining):
                if len(self._items) < self._size:
                    break
                raise QueueFullError(
                    f"the write queue of {self.name!r} stayed full ({self._size} units) for "
                    f"timeout={self._timeout:g}s: the writer cannot keep up; raise queue_size "
                    "or timeout, or submit less")
            self._check_open()

    def _start_writer(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"storemgr-writer-{self.name}", daemon=True)
        thread.start()  # if this raises, no dead thread is recorded as the writer
        self._thread = thread

    def _inside_unit(self) -> bool:
        """Whether a unit of this writer runs in the caller's call stack.

        Decided by the store, not the thread: the writer thread outside a unit
        (running done-callbacks after COMMIT, say) submits like any caller.
        """
        store = self._store
        return store is not None and store.unit_depth > 0 and store.owner == threading.get_ident()

    def is_writer_thread(self) -> bool:
        """Whether the caller is the writer thread (inside a unit or not)."""
        return threading.get_ident() == self._thread_ident

    def refuse_waiting_on_itself(self) -> None:
        if self.is_writer_thread():
            raise StrategyError(
                f"the writer thread of {self.name!r} would wait for itself: code it runs "
                "outside a unit (a done-callback) may submit_write() but not wait for the "
                "result or open a write() block; wait in another thread")

    def unit_store(self) -> ManagedStore | None:
        """The writer's store if the caller runs inside one of its units (so may use it), else None."""
        return self._store if self._inside_unit() else None

    @contextmanager
    def lease(self, savepoint: bool = False) -> Iterator[ManagedStore]:
        """Borrow the writer's store for one write transaction in the calling thread.

        Inside a unit of this writer it joins that unit instead (see `joined_block`).
        """
        if self._inside_unit():
            with joined_block(self._store, savepoint):
                yield self._store
            return
        self.refuse_waiting_on_itself()
        lease = _Lease()
        future = self.submit(_Lease, (), {"lease": lease})
        lease.ready.wait()
        if lease.store is None:
            future.result()  # raises what stopped the writer from beginning
        store = lease.store
        store.owner = threading.get_ident()
        try:
            yield store
            lease.succeeded = True
        finally:
            store.owner = self._thread_ident
            lease.done.set()
            if lease.succeeded:
                future.result()
            else:
                future.exception()

    # -- the writer's side -------------------------------------------------

    def _run(self) -> None:
        self._thread_ident = threading.get_ident()
        store = None
        try:
            store = self._store = self._open_store()
            while True:
                units = self._take()
                if units is None:
                    break
                if units[0].fn is _Lease:
                    self._serve_lease(store, units[0])
                else:
                    self._run_batch(store, units)
        except _WriterDied as death:
            self._die(death.cause, death.unit, death.batch)
        except BaseException as error:
            self._die(error)
        finally:
            with self._lock:
                if self._store is store:  # not yet a restarted writer's store
                    self._store = None
            if store is not None:
                close_store(store)

    def _take(self) -> list[_Unit] | None:
        """The next batch (a lease always alone), or None once closed and drained.

        Group commit needs batches: the callers whose units were just committed
        come back with their next unit within microseconds, so when fewer units
        are queued than the last round had callers, the writer lingers up to
        ``LINGER_SECONDS`` for them (woken early once they are all there).
        """
        with self._lock:
            items = self._items
            while not items:
                if self._closing:
                    return None
                self._wait_for(1, None)
            if len(items) < self._expected and not self._closing:
                self._wait_for(self._expected, LINGER_SECONDS)
            was_full = len(items) >= self._size
            units = [items.popleft()]
            if units[0].fn is not _Lease:
                limit = self._batch
                while items and len(units) < limit and items[0].fn is not _Lease:
                    units.append(items.popleft())
            self._expected = min(self._batch, len(units) + len(items))
            if was_full:
                self._not_full.notify_all()
        return units

    def _wait_for(self, count: int, timeout: float | None) -> None:
        """Wait (lock held) until ``count`` units are queued, closing, or ``timeout``."""
        self._wanted = count
        self._writer_waiting = True
        self._not_empty.wait(timeout)
        self._writer_waiting = False

    def _run_batch(self, store: ManagedStore, units: list[_Unit]) -> None:
        units = [unit for unit in units if unit.future.set_running_or_notify_cancel()]
        if not units:
            return
        connection = store.connection

        # Savepoints per unit only for a lone unit or once a unit of this batch has failed.
        isolated = len(units) == 1

        def body() -> list[tuple[_Unit, bool, Any]]:
            begin_write(store, self._policy)
            outcomes = []
            for unit in units:
                savepoint = store.open_savepoint() if isolated else None
                store.enter_unit()
                connection.refuse_writes = unit.reads
                try:
                    value = run_user_code(store, unit.fn, store, *unit.args, **unit.kwargs)
                    store.flush()
                    store.raise_if_doomed()
                    refuse_store_bound(value)
                except Exception as error:
                    if busy_phase(error) is not None or isinstance(error, DisconnectionError):
                        raise  # the policy rolls the whole batch back and re-runs it
                    if savepoint is None:
                        raise _Isolate() from error  # rolled back: re-run with savepoints
                    try:
                        store.rollback_savepoint(savepoint)
                    except Exception:
                        # SQLite rolled the whole transaction back (SQLITE_FULL, IOERR, ...),
                        # savepoints and the batch's other units with it.
                        raise _BatchAborted(unit, error) from error
                    outcomes.append((unit, False, error))
                except BaseException as error:
                    raise _WriterDied(unit, error) from error
                else:
                    if savepoint is not None:
                        store.release_savepoint(savepoint)
                    outcomes.append((unit, True, value))
                finally:
                    connection.refuse_writes = False
                    store.leave_unit()
            return outcomes

        while True:
            try:
                # Each unit's deadline for the write lock runs from its submit, so the
                # time it waited in the queue behind a blocked batch counts too.
                outcomes = self._policy.run(body, commit=store.commit, rollback=store.rollback,
                                            set_wait=connection.set_busy_timeout,
                                            started=units[0].enqueued)
            except _WriterDied as death:
                death.batch = units
                raise
            except _Isolate:
                isolated = True
                continue
            except _BatchAborted as aborted:
                self.failed += 1
                aborted.unit.future.set_exception(aborted.error)
                units = [unit for unit in units if unit is not aborted.unit]
                if units:
                    continue  # the others never committed: run them again without it
                return
            except DatabaseLockedError as error:
                units = self._fail_expired(units, error)
                if units:
                    continue  # the younger units still have time: run them again
                return
            except Exception as error:
                self.failed += len(units)
                for unit in units:
                    unit.future.set_exception(error)
                return
            break
        self.batches += 1
        self.batched_units += len(units)
        if len(units) > self.largest_batch:
            self.largest_batch = len(units)
        failed = sum(1 for _, succeeded, _ in outcomes if not succeeded)
        self.committed += len(outcomes) - failed
        self.failed += failed
        finish_in_turn((unit.future, succeeded, value) for unit, succeeded, value in outcomes)

    def _fail_expired(self, units: list[_Unit], error: DatabaseLockedError) -> list[_Unit]:
        """Fail the units whose own deadline passed; return the others (``retry`` only)."""
        if self._policy.on_locked != "retry":
            expired, alive = units, []
        else:
            cutoff = time.monotonic() - self._timeout
            expired = [unit for unit in units if unit.enqueued <= cutoff] or units[:1]
            alive = [unit for unit in units if unit not in expired]
        self.failed += len(expired)
        for unit in expired:
            unit.future.set_exception(error)
        return alive

    def _serve_lease(self, store: ManagedStore, unit: _Unit) -> None:
        lease: _Lease = unit.kwargs["lease"]
        try:
            if not unit.future.set_running_or_notify_cancel():
                return
            with outermost_block(store, self._policy):
                lease.store = store
                lease.ready.set()
                lease.done.wait()
                if not lease.succeeded:
                    raise _BlockFailed()
        except _BlockFailed as failed:
            unit.future.set_exception(failed)
        except Exception as error:
            self.failed += 1
            unit.future.set_exception(error)
        else:
            self.committed += 1
            unit.future.set_result(None)
        finally:
            lease.ready.set()

    def _die(self, cause: BaseException, culprit: _Unit | None = None,
             batch: list[_Unit] = ()) -> None:
        """Fail every pending future and leave the queue ready to restart a writer."""
        broken = WriterBrokenError(
            f"the writer thread of {self.name!r} died: {cause!r}; "
            "pending units failed, the next submit starts a new writer")
        broken.__cause__ = cause
        with self._lock:
            pending = [unit for unit in batch if unit is not culprit] + list(self._items)
            self._items.clear()
            self._thread = None
            self._thread_ident = None
            self._store = None
            self.restarts += 1
            self._not_full.notify_all()
        if culprit is not None and not culprit.future.done():
            culprit.future.set_exception(cause)
        for unit in pending:
            if unit.fn is _Lease:
                unit.kwargs["lease"].ready.set()
            if unit.future.running() or unit.future.set_running_or_notify_cancel():
                unit.future.set_exception(broken)
        self.failed += len(pending) + (culprit is not None)

    # -- lifecycle and figures ---------------------------------------------

    def _reset_after_fork(self) -> None:
        """In a forked child: no writer thread exists; the next submit starts one.

        The parent's queued units are the parent's to run; the old writer's
        store is left untouched (it is the parent's connection).
        """
        _abandoned_after_fork.append(self._store)
        self._store = None
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._items = deque()
        self._writer_waiting = False
        self._thread = None
        self._thread_ident = None

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking units, drain the queue, stop the writer; False if it outlived ``timeout``."""
        with self._lock:
            self._closing = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            thread = self._thread
        if thread is None or self._inside_unit():
            return True  # the writer finishes the unit under way here, then drains and stops
        thread.join(timeout)
        return not thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """The writer's figures, read without its lock: a signal handler may ask for them
        while the thread it interrupted holds that lock (in `submit`, say)."""
        items = self._items
        depth = len(items)
        try:
            oldest = time.monotonic() - items[0].enqueued if depth else 0.0
        except IndexError:  # the writer took the last unit meanwhile
            oldest = 0.0
        return {
            "queue_depth": depth,
            "oldest_wait_seconds": oldest,
            "units_committed": self.committed,
            "units_failed": self.failed,
            "batches": self.batches,
            "mean_batch": self.batched_units / self.batches if self.batches else 0.0,
            "largest_batch": self.largest_batch,
            "writer_restarts": self.restarts,
        }


def _after_fork_in_child() -> None:
    for queue in list(_live_queues):
        queue._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _drain_at_exit() -> None:
    """Interpreter exit without close(): commit what is queued, bounded in time."""
    deadline = time.monotonic() + EXIT_DRAIN_SECONDS
    for queue in list(_live_queues):
        queue.close(max(0.0, deadline - time.monotonic()))
