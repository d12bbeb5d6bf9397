"""The awaitable API (`StoreManager.awrite`, `StoreManager.aread`): the event loop never blocks.

Under ``queue`` and ``single`` a unit runs on the writer thread already, so its
future is awaited as it is (`asyncio.wrap_future`).  Under ``mutex`` and
``threadlocal`` a unit runs in the thread that submits it, so it is submitted
from a thread of the manager's own bounded pool, never from the loop; reads go
to that pool too (under ``single`` to the worker).  A submit that would wait for
room in a full queue waits in the pool as well.

Cancelling the awaiting task cancels a unit that has not started: under
``queue``/``single`` one still queued; in the pool one whose ``fn`` has not been
called yet (it may be waiting for the write lock).  A unit that has started
commits or rolls back as a whole; only the awaiting task stops waiting.
An awaited unit joins no outer scope (a WSGI request's or a zope transaction):
it is a transaction of its own.  The manager's ``close()`` first runs the calls
already handed to its pool, as it drains a writer's queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import lifecycle
from .errors import ManagerClosedError

if TYPE_CHECKING:
    from .manager import StoreManager
    from .strategies import Strategy

T = TypeVar("T")

POOL_THREADS = 8  # a manager's pool: units and reads of mutex/threadlocal databases
_WRITER_STRATEGIES = ("queue", "single")

_runners: "weakref.WeakKeyDictionary[StoreManager, AsyncPool]" = weakref.WeakKeyDictionary()
_runners_lock = threading.Lock()
_pool_thread = threading.local()  # .pool: the AsyncPool whose thread this is


class _CancelledBeforeStart(Exception):
    """Internal: the awaiting task was cancelled before the unit's ``fn`` started."""


class _StartOnce:
    """Lets a unit's ``fn`` start unless the awaiting task was cancelled first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self._cancelled = False

    def start(self) -> bool:
        """True if ``fn`` may run (again, when the lock policy re-runs the unit)."""
        with self._lock:
            self._started = self._started or not self._cancelled
            return self._started

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = not self._started


class AsyncPool:
    """A manager's bounded thread pool, created on first use, drained by the manager's close()."""

    def __init__(self) -> None:
        self._reset()
        lifecycle.track(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[Any]] = set()
        self._closed = False

    def submit(self, call: Callable[[], T]) -> "Future[T]":
        with self._lock:
            if self._closed:
                raise ManagerClosedError("this store manager is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="storemgr-async",
                                                initializer=self._mark_thread)
            future = self._pool.submit(call)
            self._pending.add(future)
        future.add_done_callback(self._forget)  # outside the lock: it may run at once
        return future

    def _mark_thread(self) -> None:
        _pool_thread.pool = self

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new calls, finish those handed over within ``timeout``, let the threads end.

        A thread that ends closes its stores (`sqlite_storemgr.threadlocal`).
        False if calls were still under way at the deadline.  Called from one of
        the pool's own calls (a unit closing its manager), it cannot wait for them.
        """
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            pending = list(self._pending)
        if pool is None:
            return True
        if getattr(_pool_thread, "pool", None) is self:
            pool.shutdown(wait=False)
            return len(pending) <= 1
        unfinished = concurrent.futures.wait(pending, timeout).not_done
        pool.shutdown(wait=not unfinished)
        return not unfinished

    def after_fork_in_child(self) -> None:
        """The parent's pool threads do not exist in the child: start a new pool there."""
        closed = self._closed
        self._reset()
        self._closed = closed


def pool_of(manager: StoreManager) -> AsyncPool:
    with _runners_lock:
        pool = _runners.get(manager)
        if pool is None:
            pool = _runners[manager] = AsyncPool()
        return pool


def close_pool(manager: StoreManager, timeout: float | None = None) -> bool:
    """Drain and stop ``manager``'s pool, if it has one (`StoreManager.close`); False if
    calls were still under way at the deadline."""
    with _runners_lock:
        pool = _runners.get(manager)
    return pool is None or pool.close(timeout)


def _on_writer(strategy: Strategy) -> bool:
    """Whether a unit goes to the writer thread and its queue has room now (no wait)."""
    if strategy.config.strategy not in _WRITER_STRATEGIES:
        return False
    depth: int = strategy.stats().get("queue_depth", 0)
    return depth < strategy.config.queue_size


async def awrite(manager: StoreManager, fn: Callable[..., T], args: tuple[Any, ...],
                 kwargs: dict[str, Any], name: str | None) -> T:
    """`StoreManager.submit_write` awaited without blocking the loop."""
    strategy = manager.strategy(name)
    if _on_writer(strategy):
        return await asyncio.wrap_future(strategy.submit_write(fn, args, kwargs))
    once = _StartOnce()

    def unit(store: Any, *unit_args: Any, **unit_kwargs: Any) -> T:
        if not once.start():
            raise _CancelledBeforeStart("the awaiting task was cancelled before the unit started")
        return fn(store, *unit_args, **unit_kwargs)

    future = pool_of(manager).submit(lambda: strategy.submit_write(unit, args, kwargs).result())
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        once.cancel()
        raise


async def aread(manager: StoreManager, fn: Callable[..., T], args: tuple[Any, ...],
                kwargs: dict[str, Any], name: str | None) -> T:
    """`StoreManager.submit_read` awaited without blocking the loop."""
    strategy = manager.strategy(name)
    if strategy.config.strategy == "single" and _on_writer(strategy):
        return await asyncio.wrap_future(strategy.submit_read(fn, args, kwargs))
    return await asyncio.wrap_future(pool_of(manager).submit(
        lambda: strategy.submit_read(fn, args, kwargs).result()))
