"""Units of work on one store: a write function, a ``write()`` block, a ``read()`` block.

Shared by the strategies that run units in the calling thread and by the
writer thread (for ``write()`` blocks it lends out).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from .errors import DatabaseLockedError, NestedWriteError
from .retry import LockPolicy
from .stores import ManagedStore

T = TypeVar("T")


def run_user_code(store: ManagedStore, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a unit's own code, during which the store refuses commit() and rollback()."""
    store.in_unit_body = True
    try:
        return fn(*args, **kwargs)
    finally:
        store.in_unit_body = False


def _enter_unit(store: ManagedStore) -> None:
    """Refuse nesting; end a read-only transaction the store still has open."""
    if store.unit_depth:
        raise NestedWriteError(
            f"a write unit is already running on this thread's store {store.name!r}; "
            "nested units are not supported yet: use the store the outer unit was given")
    if store.has_uncommitted_changes():
        raise NestedWriteError(
            f"this thread's store {store.name!r} holds uncommitted changes made outside "
            "a write unit; commit or roll them back before starting one")
    if store.connection.in_transaction:
        store.rollback()
    store.unit_depth += 1


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
    """Run ``fn(store)`` in one ``BEGIN IMMEDIATE`` transaction under the lock policy."""
    _enter_unit(store)
    started = time.monotonic()
    connection = store.connection
    try:
        _acquire(mutex, policy, started)
        try:
            def body() -> T:
                policy.begin(connection)
                result = run_user_code(store, fn, store)
                store.flush()
                return result
            return policy.run(body, commit=store.commit, rollback=store.rollback,
                              set_wait=connection.set_busy_timeout, started=started)
        finally:
            if mutex is not None:
                mutex.release()
    finally:
        store.unit_depth -= 1


@contextmanager
def write_block(store: ManagedStore, policy: LockPolicy,
                mutex: threading.Lock | None = None, nested_check: bool = True
                ) -> Iterator[ManagedStore]:
    """One write transaction around a ``with`` block: committed on exit, rolled back on error.

    The block cannot be re-run, so only getting the lock and the COMMIT follow
    the policy (a refused COMMIT is retried, never the block).
    """
    if nested_check:
        _enter_unit(store)
    else:
        store.unit_depth += 1
    started = time.monotonic()
    connection = store.connection
    try:
        _acquire(mutex, policy, started)
        try:
            policy.run(lambda: policy.begin(connection), commit=_nothing, rollback=store.rollback,
                       set_wait=connection.set_busy_timeout, started=started)
            store.in_unit_body = True
            try:
                yield store
            except BaseException:
                store.in_unit_body = False
                store.rollback()
                raise
            store.in_unit_body = False
            policy.for_commit().run(store.flush, commit=store.commit, rollback=store.rollback)
        finally:
            if mutex is not None:
                mutex.release()
    finally:
        store.unit_depth -= 1


def _nothing() -> None:
    return None


@contextmanager
def read_block(store: ManagedStore) -> Iterator[ManagedStore]:
    """One consistent snapshot for the block, ended on exit; inside a write unit, joins it."""
    if store.unit_depth or store.has_uncommitted_changes():
        yield store
        return
    if store.connection.in_transaction:
        store.rollback()
    store.connection.begin_read()
    try:
        yield store
    finally:
        store.rollback()


def run_read(store: ManagedStore, fn: Callable[..., T], args: tuple, kwargs: dict[str, Any]) -> T:
    with read_block(store):
        return fn(store, *args, **kwargs)
