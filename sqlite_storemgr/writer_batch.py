"""What the writer thread does with one work item: a batch of units, or a ``write()`` lease.

A batch runs its units in one transaction (group commit: one fsync for many
callers) and resolves their futures only after COMMIT.  It runs without a
savepoint per unit until a unit fails; then it is rolled back and run again
with one per unit, so the failing unit is undone alone (the units before it
run twice).  A busy error rolls the whole batch back and re-runs it under the
lock policy; units whose own deadline passed fail with `DatabaseLockedError`.
A ``BaseException`` from a unit's code leaves `Batch.running` naming the unit
that killed the writer.  See docs/architecture.md.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from storm.exceptions import DisconnectionError

from .backends.dialect import busy_phase
from .errors import DatabaseLockedError
from .futures import UnitFuture, finish_in_turn
from .retry import LockPolicy
from .stores import ManagedStore
from .units import begin_block, begin_write, commit_step, note_slow, run_unit_body, unit_frame


class WriteUnit:
    """A unit of work queued for the writer: ``fn(store, *args, **kwargs)`` and its future."""

    __slots__ = ("fn", "args", "kwargs", "future", "enqueued", "reads")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 future: UnitFuture, reads: bool = False):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.enqueued = time.monotonic()  # the unit's deadline for the lock runs from here
        self.reads = reads  # a read unit (single's submit_read): it may not write


class LeaseRequest:
    """A ``write()`` block under the writer: the caller borrows the writer's store."""

    __slots__ = ("future", "enqueued", "ready", "done", "store", "succeeded")

    def __init__(self, future: UnitFuture):
        self.future = future
        self.enqueued = time.monotonic()
        self.ready = threading.Event()  # the transaction began (store set), or it could not
        self.done = threading.Event()  # the caller's block ended
        self.store: ManagedStore | None = None
        self.succeeded = False

    @contextmanager
    def borrowed(self) -> Iterator[ManagedStore]:
        """The caller's side, once queued: wait for the transaction, lend the store to the
        block, then wait for the writer's COMMIT (raising its error) or rollback."""
        self.ready.wait()
        if self.store is None:
            self.future.result()  # raises what stopped the writer from beginning
        try:
            with self.store.lent() as store:  # type: ignore[union-attr]  # None: result() raised
                yield store
            self.succeeded = True
        finally:
            self.done.set()
            if self.succeeded:
                self.future.result()
            else:
                self.future.exception()  # the rollback is done; the block's error propagates


class WriterFigures:
    """The writer's counters, for `stats()`: written by the writer thread only."""

    __slots__ = ("committed", "failed", "batches", "batched_units", "largest_batch", "restarts")

    def __init__(self) -> None:
        self.committed = self.failed = self.batches = self.batched_units = 0
        self.largest_batch = self.restarts = 0

    def report(self, items: Sequence[Any]) -> dict[str, Any]:
        """The figures with the queue's depth and its oldest item's wait, for `stats()`."""
        depth = len(items)
        try:
            if depth and items[-1] is None:  # the stop item close() queued last
                depth -= 1
            oldest = time.monotonic() - items[0].enqueued if depth and items[0] else 0.0
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

    def count_batch(self, units: list[WriteUnit], outcomes: list[tuple[Any, bool, Any]]) -> None:
        """One committed batch; read units (``single``'s reads) are not units committed."""
        self.batches += 1
        self.batched_units += len(units)
        self.largest_batch = max(self.largest_batch, len(units))
        for unit, (_, succeeded, _) in zip(units, outcomes):
            if not unit.reads:
                self.committed += succeeded
                self.failed += not succeeded


def fail_all(units: list[WriteUnit], error: BaseException, figures: WriterFigures) -> None:
    figures.failed += sum(not unit.reads for unit in units)
    for unit in units:
        unit.future.set_exception(error)


class Batch:
    """Units the writer runs in one write transaction."""

    def __init__(self, units: list[WriteUnit]):
        self.units = units
        self.running: WriteUnit | None = None  # whose code runs now
        self.isolated = False  # a savepoint per unit, once a unit of several has failed
        self.outcomes: list[tuple[UnitFuture, bool, Any]] = []
        self.aborted: tuple[WriteUnit, Exception] | None = None  # SQLite ended the transaction
        self.needs_isolation = False
        self.failed_alone = False  # the attempt's only unit failed: roll it all back
        self.died: BaseException | None = None  # what a unit raised, run by a waiting caller

    def run(self, store: ManagedStore, policy: LockPolicy, timeout: float,
            figures: WriterFigures) -> None:
        """Run the batch to its end: every unit's future resolved (a BaseException aside)."""
        units = [unit for unit in self.units if unit.future.set_running_or_notify_cancel()]
        while units:
            try:
                with unit_frame(store, policy, None):
                    policy.run(lambda: self._attempt(store, policy, units), commit=
                               lambda: self._end_attempt(store), rollback=store.rollback,
                               set_wait=store.connection.set_busy_timeout,
                               started=units[0].enqueued)
            except DatabaseLockedError as error:
                units = self._fail_expired(units, error, policy, timeout, figures)
                continue  # the younger units still have time: run them again
            except Exception as error:
                fail_all(units, error, figures)
                return
            if self.needs_isolation:
                self.isolated = True
            elif self.aborted is not None:
                unit, failure = self.aborted
                fail_all([unit], failure, figures)
                units = [each for each in units if each is not unit]
            else:
                figures.count_batch(units, self.outcomes)
                finish_in_turn(self.outcomes)  # outside the frame: callbacks may submit anew
                return

    def _attempt(self, store: ManagedStore, policy: LockPolicy, units: list[WriteUnit]) -> None:
        """One run of the units in the transaction; stops early if it cannot be committed."""
        self.outcomes, self.aborted, self.needs_isolation = [], None, False
        self.failed_alone = False
        alone = len(units) == 1  # its failure is the transaction's: no savepoint needed
        begin_write(store, policy)
        for unit in units:
            savepoint = store.open_savepoint() if self.isolated and not alone else None
            self.running = unit
            try:
                if unit.reads:
                    with store.writes_refused(True):
                        value = run_unit_body(store, unit.fn, unit.args, unit.kwargs)
                else:  # the batch's frame allows writes already
                    value = run_unit_body(store, unit.fn, unit.args, unit.kwargs)
            except Exception as error:
                if busy_phase(error) is not None or isinstance(error, DisconnectionError):
                    raise  # the policy rolls the whole batch back and re-runs it
                if savepoint is None:
                    if alone:
                        self.outcomes.append((unit.future, False, error))
                        self.failed_alone = True
                    else:
                        self.needs_isolation = True  # rolled back; run again with savepoints
                    return
                try:
                    store.rollback_savepoint(savepoint)
                except Exception:
                    # SQLite rolled the whole transaction back (SQLITE_FULL, IOERR, ...):
                    # the others never committed; they run again without this unit.
                    self.aborted = (unit, error)
                    return
                self.outcomes.append((unit.future, False, error))
            else:
                if savepoint is not None:
                    store.release_savepoint(savepoint)
                self.outcomes.append((unit.future, True, value))
            self.running = None

    def _end_attempt(self, store: ManagedStore) -> None:
        """COMMIT an attempt whose units all ran; roll back one that stopped early."""
        if self.needs_isolation or self.aborted is not None or self.failed_alone:
            store.rollback()
        else:
            store.commit()

    @staticmethod
    def _fail_expired(units: list[WriteUnit], error: DatabaseLockedError, policy: LockPolicy,
                      timeout: float, figures: WriterFigures) -> list[WriteUnit]:
        """Fail the units whose own deadline passed; return the others (``retry`` only)."""
        if policy.on_locked != "retry":
            expired, alive = units, []
        else:
            cutoff = time.monotonic() - timeout
            expired = [unit for unit in units if unit.enqueued <= cutoff] or units[:1]
            alive = [unit for unit in units if unit not in expired]
        fail_all(expired, error, figures)
        return alive


def serve_lease(store: ManagedStore, policy: LockPolicy, request: LeaseRequest,
                figures: WriterFigures) -> None:
    """Begin a transaction, lend the store to the caller's block, then commit or roll back."""
    future = request.future
    try:
        if not future.set_running_or_notify_cancel():
            return
        with unit_frame(store, policy, None) as started:
            begin_block(store, policy, started)
            request.store = store
            request.ready.set()
            lent = time.perf_counter()
            with store.user_code():
                request.done.wait()
            if time.perf_counter() - lent > store.slow_unit:
                note_slow(store, "a write() block (the writer waited for it)", lent)
            if request.succeeded:
                commit_step(store, policy, started)
            else:
                store.rollback()
    except Exception as error:
        figures.failed += 1
        future.set_exception(error)
    else:
        figures.committed += request.succeeded
        figures.failed += not request.succeeded
        future.set_result(None)
    finally:
        request.ready.set()
