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
from typing import Any, Callable, TypeVar

from storm.store import Store

from .backends.sqlite import ConnectHook
from .errors import (
    ConfigError, DatabaseLockedError, DatabaseMovedError, ForkLockedError,
    InheritedConnectionError, ManagerClosedError, QueueFullError, ReadOnlyStoreError,
    StoreManagerError, StrategyError, TransactionControlError, TransactionDoomedError,
    WriterBrokenError, WrongThreadError)
from .manager import StoreManager
from .shutdown import drain_on_sigterm
from .uri import PostgresConfig, SQLiteConfig, parse_uri

__all__ = [
    "__version__", "StoreManager", "SQLiteConfig", "PostgresConfig", "parse_uri",
    "configure", "get_store", "submit_write", "submit_read", "write", "read", "retrying",
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
    __version__ = re.search(r'(?ms)^\[project\]$.*?^version\s*=\s*"([^"]+)"',
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


def submit_write(fn: Callable[..., T], *args: Any, name: str | None = None,
                 **kwargs: Any) -> "Future[T]":
    return _default.submit_write(fn, *args, name=name, **kwargs)


def submit_read(fn: Callable[..., T], *args: Any, name: str | None = None,
                **kwargs: Any) -> "Future[T]":
    return _default.submit_read(fn, *args, name=name, **kwargs)


def write(name: str | None = None, savepoint: bool = False) -> AbstractContextManager[Store]:
    return _default.write(name, savepoint)


def read(name: str | None = None) -> AbstractContextManager[Store]:
    return _default.read(name)


def retrying(name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    return _default.retrying(name)


def stats(name: str | None = None) -> dict[str, Any]:
    return _default.stats(name)


def close(timeout: float | None = None) -> bool:
    return _default.close(timeout)


async def awrite(fn: Callable[..., T], *args: Any, name: str | None = None, **kwargs: Any) -> T:
    return await _default.awrite(fn, *args, name=name, **kwargs)


async def aread(fn: Callable[..., T], *args: Any, name: str | None = None, **kwargs: Any) -> T:
    return await _default.aread(fn, *args, name=name, **kwargs)
