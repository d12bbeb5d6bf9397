"""The four strategies of the Storm manual's "SQLite and threads", one class each family.

- `CallerThreadStrategy` (``threadlocal``, ``mutex``): every thread reads and
  writes through its own store; units run in the calling thread, under a
  per-database mutex for ``mutex``.
- `WriterThreadStrategy` (``queue``, ``single``): one writer thread owns the
  only write connection; ``queue`` gives every thread a read-only store,
  ``single`` runs reads on the writer too.
"""

from __future__ import annotations

import functools
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Iterator, Sequence

from . import lifecycle
from .backends.sqlite import SQLiteDatabase
from .errors import StrategyError
from .gate import UnitGate
from .retry import LockPolicy
from .stores import ManagedStore
from .threadlocal import ThreadStores
from .units import (
    read_block, resolved_future, run_read, run_retrying, run_write_unit, write_block)
from .uri import PostgresConfig, SQLiteConfig
from .writer_queue import WriterQueue


class Strategy(ABC):
    """What every strategy offers; the manager dispatches to it by name."""

    # Whether an outer transaction (a zope transaction, a request's loose writes) may run
    # on a thread's own store: only where each thread writes through its own store.
    joins_foreign_transaction = True
    stores: ThreadStores  # the per-thread stores, set by each strategy

    def __init__(self, name: str, config: SQLiteConfig | PostgresConfig,
                 database: SQLiteDatabase):
        self.name = name
        self.config = config
        self.database = database
        self.policy = LockPolicy(config.on_locked, config.timeout,
                                 where=f"{name!r} ({config.describe()})")
        # Units and read blocks under way in callers' threads: close() waits for them
        # before it closes their stores (closing a connection another thread is using
        # can crash the driver).
        self.gate = UnitGate(name)

    @abstractmethod
    def get_store(self) -> ManagedStore:
        """The calling thread's store, created on first use."""

    @abstractmethod
    def submit_write(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> Future[Any]:
        """``fn(store, *args, **kwargs)`` as one write unit; the future resolves after COMMIT."""

    def submit_many(self, fn: Callable[..., Any], args_list: list[tuple[Any, ...]]
                    ) -> Sequence[Future[Any]]:
        """``fn(store, *args)`` as one write unit per ``args``, in order; one future each."""
        return [self.submit_write(fn, args, {}) for args in args_list]

    @abstractmethod
    def write(self, savepoint: bool = False) -> AbstractContextManager[ManagedStore]:
        """One write transaction around a ``with`` block."""

    @abstractmethod
    def close(self, timeout: float | None = None) -> bool:
        """Drain, wait for units under way, close the stores; False if ``timeout`` ran out first."""

    def current_store(self) -> ManagedStore | None:
        """The calling thread's own store if it has one already; none is created."""
        return self.stores.current(self.name)

    def unit_store(self) -> ManagedStore | None:
        """The store of the unit the caller runs inside (on this database), else None."""
        store = self.current_store()
        return store if store is not None and store.in_unit else None

    def writable_store(self) -> ManagedStore:
        """The store a write made here goes to: the unit's inside one, else the thread's own.

        Raises `StrategyError` where a thread has no writable store of its own
        (``queue``, ``single`` outside a unit).
        """
        return self.get_store()

    def submit_read(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> Future[Any]:
        """``fn(store, *args, **kwargs)`` in one snapshot of the calling thread's store."""
        with self.gate.unit():
            return resolved_future(lambda: run_read(self.get_store(), fn, args, kwargs))

    @contextmanager
    def read(self) -> Iterator[ManagedStore]:
        """One snapshot of the calling thread's store around a ``with`` block."""
        with self.gate.unit(), read_block(self.get_store()) as store:
            yield store

    def stats(self) -> dict[str, Any]:
        lock = self.policy.stats
        return {"strategy": self.config.strategy, "retries": lock.retries,
                "lock_wait_seconds": lock.lock_wait, "locked_errors": lock.locked_errors}

    def retrying(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: the lock policy for code that writes through ``get_store``."""
        raise StrategyError(
            f"strategy={self.config.strategy} has no writable per-thread store; "
            "use submit_write(fn), which applies the lock policy itself")


class CallerThreadStrategy(Strategy):
    """``threadlocal`` and ``mutex``: units run in the calling thread on its own store."""

    def __init__(self, name: str, config: SQLiteConfig | PostgresConfig,
                 database: SQLiteDatabase):
        super().__init__(name, config, database)
        self.stores = ThreadStores(lambda store_name: ManagedStore(database, store_name))
        self.mutex = threading.Lock() if config.strategy == "mutex" else None
        # Outermost submit_write units, counted from many threads, hence under a lock.
        self.count_lock = threading.Lock()
        self.committed = 0
        self.failed = 0
        lifecycle.track(self)

    def after_fork_in_child(self) -> None:
        self.count_lock = threading.Lock()  # another thread may have held a lock at the fork
        if self.mutex is not None:
            self.mutex = threading.Lock()

    def get_store(self) -> ManagedStore:
        return self.stores.get(self.name)

    def submit_write(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> Future[Any]:
        outermost = True  # a unit joining one under way is counted by that one

        def unit() -> Any:
            nonlocal outermost
            store = self.get_store()
            outermost = not store.is_nested()
            return run_write_unit(store, self.policy, fn, args, kwargs, self.mutex)

        with self.gate.unit():
            # get_store() inside the future: a database that cannot be opened fails the
            # future, as under queue, instead of raising from submit_write.
            future = resolved_future(unit)
        if outermost:
            self._count(future.exception() is None)
        return future

    def _count(self, committed: bool) -> None:
        """Count one outermost unit or ``write()`` block (units joining one count with it)."""
        with self.count_lock:
            if committed:
                self.committed += 1
            else:
                self.failed += 1

    @contextmanager
    def write(self, savepoint: bool = False) -> Iterator[ManagedStore]:
        with self.gate.unit():
            store = self.get_store()
            outermost = not store.is_nested()
            try:
                with write_block(store, self.policy, self.mutex, savepoint):
                    yield store
            except BaseException:
                if outermost:
                    self._count(False)
                raise
            if outermost:
                self._count(True)

    def retrying(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.gate.unit():  # the mutex stays for submit_write and write()
                    return run_retrying(self.get_store(), self.policy,
                                        lambda: fn(*args, **kwargs))
            return wrapper
        return decorator

    def stats(self) -> dict[str, Any]:
        """Read without ``count_lock``: a signal handler may ask while its thread holds it."""
        return {**super().stats(), "units_committed": self.committed,
                "units_failed": self.failed}

    def close(self, timeout: float | None = None) -> bool:
        drained = self.gate.close(timeout)  # units under way in other threads finish first
        self.stores.close()
        return drained


class WriterThreadStrategy(Strategy):
    """``queue`` and ``single``: writes (and for ``single`` reads) go to the writer thread."""

    joins_foreign_transaction = False

    def __init__(self, name: str, config: SQLiteConfig | PostgresConfig,
                 database: SQLiteDatabase):
        super().__init__(name, config, database)
        self.queue = WriterQueue(lambda: ManagedStore(database, name), self.policy,
                                 config.batch, config.queue_size, config.timeout, name)
        self.reads_on_writer = config.strategy == "single"
        self.stores = ThreadStores(
            lambda store_name: ManagedStore(database, store_name, read_only=True))

    def get_store(self) -> ManagedStore:
        """Inside a unit of this database, the unit's store; else this thread's read store."""
        store = self.queue.unit_store()
        if store is not None:
            return store
        if self.reads_on_writer:
            raise StrategyError(
                f"get_store({self.name!r}) is refused under strategy=single: all access "
                "runs on the worker thread; use submit_read(fn) and submit_write(fn)")
        return self.stores.get(self.name)

    def submit_write(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> Future[Any]:
        future = self.queue.submit(fn, args, kwargs)
        future.on_result = self._acknowledge
        return future

    def submit_many(self, fn: Callable[..., Any], args_list: list[tuple[Any, ...]]
                    ) -> Sequence[Future[Any]]:
        """Every unit queued at once (`WriterQueue.submit_many`): one wake-up per batch."""
        futures = self.queue.submit_many(fn, args_list)
        for future in futures:
            future.on_result = self._acknowledge
        return futures

    def _acknowledge(self) -> None:
        """The calling thread learnt a write committed: its store serves nothing cached from before."""
        store = self.stores.current(self.name)
        if store is not None:
            store.acknowledge_write()

    def unit_store(self) -> ManagedStore | None:
        return self.queue.unit_store()

    def writable_store(self) -> ManagedStore:
        store = self.queue.unit_store()
        if store is None:
            raise StrategyError(
                f"no writable store here: under strategy={self.config.strategy} only the "
                f"writer of {self.name!r} writes; run the write in submit_write(fn) or a "
                "write() block")
        return store

    def submit_read(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> Future[Any]:
        store = self.queue.unit_store()
        if store is not None:  # inside a unit: the read joins it and sees its writes
            return resolved_future(run_read, store, fn, args, kwargs)
        if self.reads_on_writer:
            return self.queue.submit(fn, args, kwargs, reads=True)
        return super().submit_read(fn, args, kwargs)

    def read(self) -> AbstractContextManager[ManagedStore]:  # type: ignore[override]  # a context manager as the base's
        store = self.queue.unit_store()
        if store is not None:  # inside a unit: the block joins it and sees its writes
            return read_block(store)
        return super().read()

    @contextmanager
    def write(self, savepoint: bool = False) -> Iterator[ManagedStore]:
        """A ``write()`` block on the writer's store; once it committed, this thread's store
        serves nothing cached from before (read-your-writes, as for `submit_write`)."""
        with self.queue.lease(savepoint) as store:
            yield store
        self._acknowledge()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), **self.queue.stats()}

    def close(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = self.queue.close(timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        drained = self.gate.close(left) and drained  # reads under way elsewhere finish first
        self.stores.close()
        return drained


def create_strategy(name: str, config: SQLiteConfig | PostgresConfig,
                    database: SQLiteDatabase) -> Strategy:
    if config.strategy in ("queue", "single"):
        return WriterThreadStrategy(name, config, database)
    return CallerThreadStrategy(name, config, database)
