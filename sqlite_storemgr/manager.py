"""StoreManager: named databases, each with its strategy, and their lifecycle."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from contextlib import AbstractContextManager
from typing import Any, Callable, Concatenate, Iterable, ParamSpec, TypeVar, cast, overload

from storm.store import Store

from . import awaitable, lifecycle
from .backends.sqlite import ConnectHook, SQLiteDatabase
from .errors import ConfigError, ManagerClosedError
from .handle import Database, KeepsSignature
from .scopes import before_write_unit
from .strategies import Strategy, create_strategy
from .uri import PostgresConfig, SQLiteConfig, parse_uri

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

def open_database(config: SQLiteConfig | PostgresConfig,
                  on_connect: ConnectHook | None = None) -> Any:
    """The Storm database for a config; nothing is created on disk by it."""
    if isinstance(config, PostgresConfig):
        if on_connect is not None:
            raise ConfigError("on_connect= is for SQLite databases; a PostgreSQL database "
                              "takes its settings from the server, the role or the URI")
        from .backends.postgres import PostgresDatabase  # psycopg2 is an optional extra
        return PostgresDatabase(config)
    if config.path is not None:
        parent = os.path.dirname(os.path.abspath(config.path))
        if not os.path.isdir(parent):
            raise ConfigError(
                f"cannot open {config.path!r}: its directory {parent!r} does not exist")
    return SQLiteDatabase(config, on_connect)


def _close_strategy(strategy: Strategy, timeout: float | None) -> bool:
    """Close one database; log how long it took, or what it could not drain in time."""
    started = time.monotonic()
    try:
        drained = strategy.close(timeout)
    finally:
        strategy.database.dispose()
    if drained:
        log.info("closed %r in %.3f s", strategy.name, time.monotonic() - started)
    else:
        log.warning("closing %r did not drain within %.3f s: %d queued unit(s) left, or a "
                    "unit still running", strategy.name, time.monotonic() - started,
                    strategy.stats().get("queue_depth", 0))
    return drained


class StoreManager:
    """Configures named SQLite databases and hands out stores and write units for them."""

    def __init__(self) -> None:
        self._strategies: dict[str, Strategy] = {}
        self._only: Strategy | None = None
        self._lock = threading.Lock()
        self._closed = False
        lifecycle.add_manager(self)
        lifecycle.track(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def configure(self, name: str, uri: str, on_connect: ConnectHook | None = None) -> None:
        """Add database ``name`` from ``uri``; checks everything before opening anything.

        ``on_connect(raw_connection, read_only)`` runs on every new SQLite connection.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a database name must be a non-empty string, not {name!r}")
        config = parse_uri(uri)
        if isinstance(config, SQLiteConfig) and config.path is not None:
            # Resolved once, here: a later os.chdir() must not lead a new thread to another file.
            config = replace(config, path=os.path.abspath(config.path))
        with self._lock:
            self._check_open()
            if name in self._strategies:
                raise ConfigError(f"a database named {name!r} is configured already")
            strategy = create_strategy(name, config, open_database(config, on_connect))
            self._strategies[name] = strategy
            self._only = strategy if len(self._strategies) == 1 else None

    def _check_open(self) -> None:
        if self._closed:
            raise ManagerClosedError("this store manager is closed")

    def strategy(self, name: str | None = None) -> Strategy:
        """The strategy serving ``name``, for integrations that work below the manager's API."""
        if name is None:
            strategy = self._only
            if strategy is not None and not self._closed:
                return strategy
            self._check_open()
            if not self._strategies:
                raise ConfigError("no database is configured; call configure(name, uri) first")
            raise ConfigError(
                f"several databases are configured ({', '.join(self._strategies)}); "
                "pass name=")
        strategy = self._strategies.get(name)
        if strategy is None or self._closed:
            self._check_open()
            raise ConfigError(
                f"no database named {name!r} is configured; configured: "
                f"{', '.join(self._strategies) or 'none'}")
        return strategy

    def names(self) -> list[str]:
        return list(self._strategies)

    def get_store(self, name: str | None = None) -> Store:
        """This thread's Store for ``name``, created on first use."""
        return self.strategy(name).get_store()

    def database(self, name: str | None = None) -> Database:
        """Database ``name`` (the only one if None) as a handle whose units a type checker checks."""
        return Database(self, self.strategy(name).name)

    # Without ``name=`` a call is checked against ``fn``'s signature; with it, it cannot be
    # (PEP 612): the first overload takes those calls, the second the others.  mypy flags
    # each implementation (ignore[misc]) since the second overload's ``**kwargs`` could
    # hold ``name``; such a call matches the first overload, as at run time.
    @overload
    def submit_write(self, fn: Callable[..., T], *args: Any, name: str | None,
                     **kwargs: Any) -> Future[T]: ...
    @overload
    def submit_write(self, fn: Callable[Concatenate[Store, P], T],
                     *args: P.args, **kwargs: P.kwargs) -> Future[T]: ...
    def submit_write(self, fn: Callable[..., T], *args: Any, name: str | None = None,  # type: ignore[misc]
                     **kwargs: Any) -> "Future[T]":
        """Run ``fn(store, *args, **kwargs)`` in one write transaction; the future resolves after COMMIT."""
        return Database(self, name).submit_write(fn, *args, **kwargs)

    def submit_many(self, fn: Callable[..., T], args_list: Iterable[tuple[Any, ...]],
                    name: str | None = None) -> "list[Future[T]]":
        """Run ``fn(store, *args)`` as one write unit per ``args`` tuple, in order.

        One future per unit, each resolved after its own COMMIT, a failing unit
        failing alone.  Under ``queue`` and ``single`` they are queued at once,
        so the writer is woken once per batch rather than per unit (see README).
        """
        args_list = list(args_list)
        for args in args_list:
            if not isinstance(args, tuple):
                raise TypeError(f"submit_many() wants a tuple of arguments per unit, "
                                f"got a {type(args).__name__}: {args!r}")
        strategy = self.strategy(name)
        before_write_unit(self, strategy)  # an outer scope (WSGI request, zope) may begin first
        return cast("list[Future[T]]", strategy.submit_many(fn, args_list))

    @overload
    def submit_read(self, fn: Callable[..., T], *args: Any, name: str | None,
                    **kwargs: Any) -> Future[T]: ...
    @overload
    def submit_read(self, fn: Callable[Concatenate[Store, P], T],
                    *args: P.args, **kwargs: P.kwargs) -> Future[T]: ...
    def submit_read(self, fn: Callable[..., T], *args: Any, name: str | None = None,  # type: ignore[misc]
                    **kwargs: Any) -> "Future[T]":
        """Run ``fn(store, *args, **kwargs)`` in one read snapshot.

        Under ``single`` it runs on the worker, inside its next write batch.
        """
        return Database(self, name).submit_read(fn, *args, **kwargs)

    def write(self, name: str | None = None, savepoint: bool = False
              ) -> AbstractContextManager[Store]:
        """A write transaction around a ``with`` block: committed on exit, rolled back on error.

        Inside a running unit it joins that unit; ``savepoint=True`` lets it fail alone.
        """
        strategy = self.strategy(name)
        before_write_unit(self, strategy)  # an outer scope (WSGI request, zope) may begin first
        return strategy.write(savepoint)

    def read(self, name: str | None = None) -> AbstractContextManager[Store]:
        """One consistent read snapshot around a ``with`` block."""
        return self.strategy(name).read()

    def retrying(self, name: str | None = None) -> KeepsSignature:
        """Decorator applying the lock policy to code that writes through ``get_store``."""
        return self.strategy(name).retrying()

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """Figures for ``name``: units, batches, queue depth, retries, lock waits."""
        return self.strategy(name).stats()

    def close(self, timeout: float | None = None) -> bool:
        """Drain queued writes, close every store; later calls raise ManagerClosedError.

        Returns whether everything drained within ``timeout`` (a writer or a
        unit in another thread still running past it: False).
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            strategies = list(self._strategies.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        errors = []
        drained = awaitable.close_pool(self, timeout)  # units awaited through its pool run first
        if not drained:
            log.warning("closing the manager: units awaited through its thread pool were "
                        "still running after timeout=%s s", timeout)
        for strategy in strategies:  # one failing database does not keep the others open
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                drained = _close_strategy(strategy, left) and drained
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]
        return drained

    def remove(self, name: str, timeout: float | None = None) -> bool:
        """Close database ``name`` (drain its writes, close its stores) and forget it, so
        the name can be configured again; returns whether it drained within ``timeout``."""
        with self._lock:
            self._check_open()
            strategy = self.strategy(name)
            del self._strategies[name]
            remaining = list(self._strategies.values())
            self._only = remaining[0] if len(remaining) == 1 else None
        return _close_strategy(strategy, timeout)

    def __enter__(self) -> "StoreManager":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @overload
    async def awrite(self, fn: Callable[..., T], *args: Any, name: str | None,
                     **kwargs: Any) -> T: ...
    @overload
    async def awrite(self, fn: Callable[Concatenate[Store, P], T],
                     *args: P.args, **kwargs: P.kwargs) -> T: ...
    async def awrite(self, fn: Callable[..., T], *args: Any, name: str | None = None,  # type: ignore[misc]
                     **kwargs: Any) -> T:
        """`submit_write` awaited; the event loop never blocks (`sqlite_storemgr.awaitable`)."""
        return await awaitable.awrite(self, fn, args, kwargs, name)

    @overload
    async def aread(self, fn: Callable[..., T], *args: Any, name: str | None,
                    **kwargs: Any) -> T: ...
    @overload
    async def aread(self, fn: Callable[Concatenate[Store, P], T],
                    *args: P.args, **kwargs: P.kwargs) -> T: ...
    async def aread(self, fn: Callable[..., T], *args: Any, name: str | None = None,  # type: ignore[misc]
                    **kwargs: Any) -> T:
        """`submit_read` awaited: ``fn(store)`` on a read store (under ``single``, the worker)."""
        return await awaitable.aread(self, fn, args, kwargs, name)
