"""Thread-safe Storm stores on SQLite: per-thread stores, a writer queue, lock policies.

The module-level functions act on one default `StoreManager`::

    import sqlite_storemgr as sm
    sm.configure("main", "sqlite:app.db?strategy=queue&timeout=0.3")
    sm.submit_write(lambda store: store.execute("INSERT ...")).result()
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from contextlib import AbstractContextManager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from storm.store import Store

from .backends.sqlite import ConnectHook
from .errors import (
    ConfigError, DatabaseLockedError, DatabaseMovedError, ForkLockedError,
    InheritedConnectionError, ManagerClosedError, QueueFullError, ReadOnlyStoreError,
    StoreManagerError, StrategyError, TransactionControlError, TransactionDoomedError,
    WriterBrokenError, WrongThreadError)
from .handle import Database, KeepsSignature
from .manager import StoreManager
from .shutdown import drain_on_sigterm
from .uri import PostgresConfig, SQLiteConfig, parse_uri

__all__ = [
    "__version__", "StoreManager", "Database", "SQLiteConfig", "PostgresConfig", "parse_uri",
    "configure", "database", "get_store", "submit_write", "submit_many", "submit_read", "write", "read",
    "retrying",
    "awrite", "aread",
    "stats", "close", "default_manager", "drain_on_sigterm",
    "ConfigError", "DatabaseLockedError", "DatabaseMovedError", "ForkLockedError",
    "InheritedConnectionError", "ManagerClosedError",
    "QueueFullError", "ReadOnlyStoreError", "StoreManagerError", "StrategyError",
    "TransactionControlError", "TransactionDoomedError",
    "WriterBrokenError", "WrongThreadError",
]

try:
    __version__ = metadata.version("sqlite_storemgr")
except metadata.PackageNotFoundError:  # a source tree never installed: pyproject's [project]
    __version__ = re.search(r'(?ms)^\[project\]$.*?^version\s*=\s*"([^"]+)"',  # type: ignore[index]  # it has one
                            (Path(__file__).parent.parent / "pyproject.toml").read_text())[1]

T = TypeVar("T")

_default = StoreManager()


def default_manager() -> StoreManager:
    """The manager behind the module-level functions."""
    return _default


def configure(name: str, uri: str, on_connect: ConnectHook | None = None) -> None:
    _default.configure(name, uri, on_connect)


def get_store(name: str | None = None) -> Store:
    return _default.get_store(name)


def database(name: str | None = None) -> Database:
    return _default.database(name)


# The default manager's own methods, so their overloads (a call without ``name=`` is
# checked against ``fn``'s signature) hold for the module-level calls too.
submit_write = _default.submit_write
submit_read = _default.submit_read
awrite = _default.awrite
aread = _default.aread


def submit_many(fn: Callable[..., T], args_list: Iterable[tuple[Any, ...]],
                name: str | None = None) -> "list[Future[T]]":
    return _default.submit_many(fn, args_list, name)


def write(name: str | None = None, savepoint: bool = False) -> AbstractContextManager[Store]:
    return _default.write(name, savepoint)


def read(name: str | None = None) -> AbstractContextManager[Store]:
    return _default.read(name)


def retrying(name: str | None = None) -> KeepsSignature:
    return _default.retrying(name)


def stats(name: str | None = None) -> dict[str, Any]:
    return _default.stats(name)


def close(timeout: float | None = None) -> bool:
    return _default.close(timeout)

