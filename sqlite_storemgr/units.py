"""Units of work on one store: the one unit body, the one commit step, and their frames.

Every write goes through here, whichever thread runs it: a caller-thread unit
(`run_write_unit`), each unit of the writer's batches (`run_unit_body` inside
the writer's transaction), a ``write()`` block or the writer's lease of one
(`begin_block` then `commit_step`), and a request scope's loose writes
(`commit_step`).  Units compose: one started while another runs on the same
store (or while it holds uncommitted changes) joins that transaction instead
of committing it early; an inner unit that fails dooms the scope it joined,
and an inner ``write(savepoint=True)`` block can fail alone.  See docs/architecture.md.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from .backends.lock_wait import unit_ended, unit_started
from .errors import DatabaseLockedError
from .futures import UnitFuture
from .retry import LockPolicy
from .stores import ManagedStore, refuse_store_bound

T = TypeVar("T")

log = logging.getLogger(__name__)


def resolved_future(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> UnitFuture:
    """A future already holding ``fn(*args, **kwargs)``'s result or exception."""
    future = UnitFuture()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(fn(*args, **kwargs))
    except Exception as error:
        future.set_exception(error)
    return future


def begin_write(store: ManagedStore, policy: LockPolicy) -> None:
    """Begin a unit's write transaction, then drop Storm's cache if the database changed."""
    policy.begin(store.connection)
    store.revalidate()


def run_unit_body(store: ManagedStore, fn: Callable[..., T], args: tuple[Any, ...] = (),
                  kwargs: dict[str, Any] | None = None) -> T:
    """The one unit body, inside a transaction already begun: the unit's own code
    ``fn(store, ...)``, the vote before COMMIT, and a result that may leave the unit."""
    started = time.perf_counter()
    result = store.run_user_code(fn, store, *args, **(kwargs or {}))
    store.prepare_commit()
    refuse_store_bound(result)
    if time.perf_counter() - started > store.slow_unit:
        note_slow(store, fn, started)
    return result


def note_slow(store: ManagedStore, what: Any, started: float) -> None:
    """Log a unit (or block) that ran longer than the database's ``slow_unit`` seconds."""
    log.warning("slow unit on %r: %s ran %.3f s (slow_unit=%g)", store.name,
                getattr(what, "__qualname__", what), time.perf_counter() - started,
                store.slow_unit)


def commit_step(store: ManagedStore, policy: LockPolicy, started: float | None = None) -> None:
    """The one COMMIT of work that cannot be re-run (a block, a request's writes):
    the vote, then COMMIT, a refused COMMIT retried as the policy allows."""
    policy.for_commit().run(store.prepare_commit, commit=store.commit, rollback=store.rollback,
                            started=started)


def run_write_unit(store: ManagedStore, policy: LockPolicy, fn: Callable[..., T],
                   args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                   mutex: threading.Lock | None = None) -> T:
    """``fn(store, *args, **kwargs)`` in one ``BEGIN IMMEDIATE`` transaction, re-run
    whole under the lock policy; inside a running unit it joins instead."""
    if store.is_nested():
        return run_joined(store, fn, args, kwargs)

    def attempt() -> T:
        begin_write(store, policy)
        return run_unit_body(store, fn, args, kwargs)

    with unit_frame(store, policy, mutex) as started:
        return policy.run(attempt, commit=store.commit, rollback=store.rollback,
                          set_wait=store.connection.set_busy_timeout, started=started)


def run_retrying(store: ManagedStore, policy: LockPolicy, fn: Callable[[], T]) -> T:
    """``fn()``, which writes through ``store`` on its own (``retrying()``), re-run whole
    under the lock policy, each attempt begun ``BEGIN IMMEDIATE`` and committed after."""
    def attempt() -> T:
        begin_write(store, policy)
        return fn()

    with unit_frame(store, policy, None) as started:
        return policy.run(attempt, commit=store.commit, rollback=store.rollback,
                          set_wait=store.connection.set_busy_timeout, started=started)


@contextmanager
def write_block(store: ManagedStore, policy: LockPolicy, mutex: threading.Lock | None = None,
                savepoint: bool = False) -> Iterator[ManagedStore]:
    """One write transaction around a ``with`` block: committed on exit, rolled back on error.

    The block cannot be re-run, so only the lock and the COMMIT follow the
    policy.  Inside a running unit it joins instead (see `joined_block`).
    """
    if store.is_nested():
        with joined_block(store, savepoint):
            yield store
        return
    with unit_frame(store, policy, mutex) as started:
        begin_block(store, policy, started)
        began = time.perf_counter()
        try:
            with store.user_code():
                yield store
        except BaseException:
            store.rollback()
            raise
        commit_step(store, policy, started)  # one deadline for the whole block
        if time.perf_counter() - began > store.slow_unit:
            note_slow(store, "a write() block", began)


def begin_block(store: ManagedStore, policy: LockPolicy, started: float) -> None:
    """Begin the transaction of a block under the policy's deadline (nothing to commit yet)."""
    policy.run(lambda: begin_write(store, policy), commit=_nothing, rollback=store.rollback,
               set_wait=store.connection.set_busy_timeout, started=started)


@contextmanager
def unit_frame(store: ManagedStore, policy: LockPolicy,
               mutex: threading.Lock | None) -> Iterator[float]:
    """The frame of an outermost unit (or batch): a fresh transaction, writes allowed,
    the mutex held, the thread's turn at the lock announced.  Yields when it started:
    the deadline runs from there."""
    if store.connection.in_transaction:
        store.rollback()  # a read snapshot still open (a read() block): end it first
    store.enter_unit()
    started = time.monotonic()
    unit_started(store.connection)  # its transaction's end wakes the next thread in line
    try:
        with store.writes_refused(False):
            _acquire(mutex, policy, started)
            try:
                yield started
            finally:
                if mutex is not None:
                    mutex.release()
    finally:
        unit_ended(store.connection)
        store.leave_unit()


def _acquire(mutex: threading.Lock | None, policy: LockPolicy, started: float) -> None:
    """Take the per-database write mutex within the deadline; the wait counts as lock wait."""
    if mutex is None:
        return
    acquired = mutex.acquire(timeout=policy.timeout)
    waited = time.monotonic() - started
    policy.stats.lock_wait += waited
    if not acquired:
        log.warning("DatabaseLockedError: the write mutex of %s was not free within "
                    "timeout=%g s", policy.where, policy.timeout)
        raise DatabaseLockedError(
            f"database is locked: the write mutex of {policy.where} was not free within "
            f"timeout={policy.timeout:g}s", waited=waited, attempts=1)


def _nothing() -> None:
    return None


@contextmanager
def joined_block(store: ManagedStore, savepoint: bool = False) -> Iterator[ManagedStore]:
    """An inner unit in the running transaction: commits nothing; failing dooms its scope.

    With ``savepoint`` it gets a scope of its own (a SQLite SAVEPOINT), so its
    failure rolls back only its own work and dooms nothing.
    """
    store.enter_unit()
    name = store.open_savepoint() if savepoint else None
    try:
        yield store
        store.flush()
        if name is not None:
            store.raise_if_doomed()
    except BaseException as error:
        if name is not None:
            store.rollback_savepoint(name)
        else:
            store.doom(error)
        raise
    else:
        if name is not None:
            store.release_savepoint(name)
    finally:
        store.leave_unit()


def run_joined(store: ManagedStore, fn: Callable[..., T], args: tuple[Any, ...] = (),
               kwargs: dict[str, Any] | None = None) -> T:
    """``fn(store, *args, **kwargs)`` as an inner unit of the running transaction."""
    with joined_block(store):
        return store.run_user_code(fn, store, *args, **(kwargs or {}))


@contextmanager
def read_block(store: ManagedStore) -> Iterator[ManagedStore]:
    """One consistent snapshot for the block, ended on exit; inside a unit or read, joins it.

    The block may not write (`ReadOnlyStoreError`), whatever the strategy.
    """
    if store.joins_reads():
        yield store
        return
    with store.snapshot():
        yield store


def run_read(store: ManagedStore, fn: Callable[..., T], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> T:
    """``fn(store, ...)`` in a read snapshot; its result may not leave bound to the store
    (unless it joins a unit or read of the same call stack)."""
    outermost = not store.joins_reads()
    with read_block(store):
        result = fn(store, *args, **kwargs)
    if outermost:
        refuse_store_bound(result)
    return result
