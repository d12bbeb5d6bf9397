"""`Database`: one database of a manager, with units a type checker can check.

``mgr.submit_write(fn, *args, name=None, **kwargs)`` cannot tell a type checker
which arguments go to ``fn``: PEP 612 allows no keyword-only parameter between
``*args: P.args`` and ``**kwargs: P.kwargs``.  A handle knows its database, so
its methods pass every argument to the unit, and a checker compares them with
``fn``'s signature (README, "Typed units").
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Concatenate, ParamSpec, Protocol, TypeVar

from storm.store import Store

from . import awaitable
from .scopes import before_write_unit

if TYPE_CHECKING:
    from .manager import StoreManager

P = ParamSpec("P")
T = TypeVar("T")


class KeepsSignature(Protocol):
    """A decorator that returns a function of the same signature (`retrying()`)."""

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...


class Database:
    """Database ``name`` of a manager: `StoreManager`'s methods without ``name=``.

    The handle holds the name, not the database: it follows a database that was
    removed and configured again under that name.
    """

    __slots__ = ("_manager", "name")

    def __init__(self, manager: StoreManager, name: str | None) -> None:
        self._manager = manager
        self.name = name

    def __repr__(self) -> str:
        return f"<Database {self.name!r} of {self._manager!r}>"

    def submit_write(self, fn: Callable[Concatenate[Store, P], T], /,
                     *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(store, *args, **kwargs)`` in one write transaction; the future resolves after COMMIT."""
        strategy = self._manager.strategy(self.name)
        before_write_unit(self._manager, strategy)  # an outer scope (WSGI request, zope) may begin first
        return strategy.submit_write(fn, args, kwargs)

    def submit_read(self, fn: Callable[Concatenate[Store, P], T], /,
                    *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(store, *args, **kwargs)`` in one read snapshot (under ``single``, on the worker)."""
        return self._manager.strategy(self.name).submit_read(fn, args, kwargs)

    async def awrite(self, fn: Callable[Concatenate[Store, P], T], /,
                     *args: P.args, **kwargs: P.kwargs) -> T:
        """`submit_write` awaited; the event loop never blocks (`sqlite_storemgr.awaitable`)."""
        return await awaitable.awrite(self._manager, fn, args, kwargs, self.name)

    async def aread(self, fn: Callable[Concatenate[Store, P], T], /,
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """`submit_read` awaited: ``fn(store)`` on a read store (under ``single``, the worker)."""
        return await awaitable.aread(self._manager, fn, args, kwargs, self.name)

    def get_store(self) -> Store:
        """This thread's Store, created on first use."""
        return self._manager.get_store(self.name)

    def write(self, savepoint: bool = False) -> AbstractContextManager[Store]:
        """A write transaction around a ``with`` block (`StoreManager.write`)."""
        return self._manager.write(self.name, savepoint)

    def read(self) -> AbstractContextManager[Store]:
        """One consistent read snapshot around a ``with`` block."""
        return self._manager.read(self.name)

    def retrying(self) -> KeepsSignature:
        """Decorator applying the lock policy to code that writes through `get_store`."""
        return self._manager.retrying(self.name)

    def stats(self) -> dict[str, Any]:
        """Figures for this database: units, batches, queue depth, retries, lock waits."""
        return self._manager.stats(self.name)
