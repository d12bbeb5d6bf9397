"""Units of work on one store: a write function, a ``write()`` block, a ``read()`` block.

Shared by the strategies that run units in the calling thread and by the
writer thread.  Units compose: one started while another runs on the same
store (or while the store holds uncommitted changes) joins that transaction
instead of committing it early.  An inner unit that fails dooms the scope it
joined, so the outer commit raises `TransactionDoomedError` and rolls back;
an inner ``write(savepoint=True)`` block has a scope of its own and can fail
alone.  This is what nested ``commit_on_success`` decorators get wrong.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from .errors import DatabaseLockedError
from .futures import UnitFuture
from .backends.lock_wait import unit_ended, unit_started
from .retry import LockPolicy
from .stores import ManagedStore, refuse_store_bound

T = TypeVar("T")


def resolved_future(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """A future already holding ``fn(*args, **kwargs)``'s result or exception."""
    future: Future = UnitFuture()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(fn(*args, **kwargs))
    except Exception as error:
        future.set_exception(error)
    return future


def run_user_code(store: ManagedStore, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a unit's own code, during which the store refuses commit() and rollback()."""
    outer = store.in_unit_body
    store.in_unit_body = True
    try:
        return fn(*args, **kwargs)
    finally:
        store.in_unit_body = outer


def is_nested(store: ManagedStore) -> bool:
    """Whether a unit started now would join a transaction already under way."""
    return store.unit_depth > 0 or store.has_uncommitted_changes()


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


def run_joined(store: ManagedStore, fn: Callable[..., T], args: tuple = (),
               kwargs: dict[str, Any] | None = None) -> T:
    """``fn(store, *args, **kwargs)`` as an inner unit of the running transaction."""
    with joined_block(store):
        return run_user_code(store, fn, store, *args, **(kwargs or {}))


def _acquire(mutex: threading.Lock | None, policy: LockPolicy, started: float) -> None:
    """Take the per-database write mutex within the deadline; the wait counts as lock wait."""
    if mutex is None:
        return
    acquired = mutex.acquire(timeout=policy.timeout)
    waited = time.monotonic() - started
    policy.stats.lock_wait += waited
    if not acquired:
        raise DatabaseLockedError(
            f"database is locked: the write mutex of {policy.where} was not free within "
            f"timeout={policy.timeout:g}s", waited=waited, attempts=1)


def run_write_unit(store: ManagedStore, policy: LockPolicy, fn: Callable[[ManagedStore], T],
                   mutex: threading.Lock | None = None) -> T:
    """Run ``fn(store)`` in one ``BEGIN IMMEDIATE`` transaction under the lock policy.

    Inside a running unit (or uncommitted changes) it joins instead.  An
    outermost unit's result may hold nothing bound to the store.
    """
    if is_nested(store):
        return run_joined(store, fn)
    connection = store.connection

    def body() -> T:
        begin_write(store, policy)
        result = run_user_code(store, fn, store)
        store.flush()
        store.raise_if_doomed()
        refuse_store_bound(result)
        return result

    with _outermost(store, policy, mutex) as started:
        return policy.run(body, commit=store.commit, rollback=store.rollback,
                          set_wait=connection.set_busy_timeout, started=started)


def run_retrying(store: ManagedStore, policy: LockPolicy, fn: Callable[[], T]) -> T:
    """``fn()``, which writes through ``store`` on its own, re-run under the lock policy.

    For code that uses ``get_store`` directly (``retrying()``): each attempt
    begins ``BEGIN IMMEDIATE`` on the store, one deadline bounds every attempt,
    and the store is committed when ``fn`` returns.
    """
    def body() -> T:
        begin_write(store, policy)
        return fn()

    with _outermost(store, policy, None) as started:
        return policy.run(body, commit=store.commit, rollback=store.rollback,
                          set_wait=store.connection.set_busy_timeout, started=started)


def begin_write(store: ManagedStore, policy: LockPolicy) -> None:
    """Begin a unit's write transaction, then drop Storm's cache if the database changed."""
    policy.begin(store.connection)
    store.revalidate()


@contextmanager
def write_block(store: ManagedStore, policy: LockPolicy, mutex: threading.Lock | None = None,
                savepoint: bool = False) -> Iterator[ManagedStore]:
    """One write transaction around a ``with`` block: committed on exit, rolled back on error.

    The block cannot be re-run, so only getting the lock and the COMMIT follow
    the policy (a refused COMMIT is retried, never the block).  Inside a running
    unit it joins instead (see `joined_block`).
    """
    if is_nested(store):
        with joined_block(store, savepoint):
            yield store
        return
    with outermost_block(store, policy, mutex):
        yield store


@contextmanager
def outermost_block(store: ManagedStore, policy: LockPolicy,
                    mutex: threading.Lock | None = None) -> Iterator[ManagedStore]:
    """The transaction of a ``write()`` block that is not inside another unit."""
    connection = store.connection
    with _outermost(store, policy, mutex) as started:
        policy.run(lambda: begin_write(store, policy), commit=_nothing, rollback=store.rollback,
                   set_wait=connection.set_busy_timeout, started=started)
        outer = store.in_unit_body
        store.in_unit_body = True
        try:
            yield store
        except BaseException:
            store.in_unit_body = outer
            store.rollback()
            raise
        store.in_unit_body = outer
        policy.for_commit().run(lambda: (store.flush(), store.raise_if_doomed()),
                                commit=store.commit, rollback=store.rollback,
                                started=started)  # one deadline for the whole block


@contextmanager
def _outermost(store: ManagedStore, policy: LockPolicy,
               mutex: threading.Lock | None) -> Iterator[float]:
    """The frame of an outermost unit: a fresh transaction, the mutex, the unit counted.

    Yields when the unit started: its deadline runs from there.
    """
    connection = store.connection
    if connection.in_transaction:
        store.rollback()  # a read snapshot still open (a read() block): end it first
    reading, connection.refuse_writes = connection.refuse_writes, False
    store.enter_unit()
    started = time.monotonic()
    unit_started(connection)  # its transaction's end wakes the next thread in line at once
    try:
        _acquire(mutex, policy, started)
        try:
            yield started
        finally:
            if mutex is not None:
                mutex.release()
    finally:
        unit_ended(connection)
        store.leave_unit()
        connection.refuse_writes = reading


def _nothing() -> None:
    return None


def is_reading(store: ManagedStore) -> bool:
    """Whether a read would join a unit or a ``read()`` block under way on ``store``."""
    return store.reading or is_nested(store)


@contextmanager
def read_block(store: ManagedStore) -> Iterator[ManagedStore]:
    """One consistent snapshot for the block, ended on exit; inside a unit or read, joins it.

    The block may not write (`ReadOnlyStoreError`), whatever the strategy:
    its work is rolled back at the end.
    """
    if is_reading(store):
        yield store
        return
    connection = store.connection
    if connection.in_transaction:
        store.rollback()
    connection.begin_read()
    store.reading = connection.refuse_writes = True
    try:
        store.revalidate()
        yield store
    finally:
        store.reading = connection.refuse_writes = False
        store.rollback()


def run_read(store: ManagedStore, fn: Callable[..., T], args: tuple, kwargs: dict[str, Any]) -> T:
    """``fn(store, ...)`` in a read snapshot; its result may not leave bound to the store
    (unless it joins a unit or read of the same call stack)."""
    outermost = not is_reading(store)
    with read_block(store):
        result = fn(store, *args, **kwargs)
    if outermost:
        refuse_store_bound(result)
    return result
