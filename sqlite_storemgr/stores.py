"""The Storm Store the manager hands out, and the transaction steps it needs.

`ManagedStore` adds to Storm's Store what a store shared over time needs:

- a read-only store reads in autocommit mode, so Storm's object cache could
  serve data another connection has since changed; it checks SQLite's
  ``PRAGMA data_version`` before each query and drops its cache when the
  database changed (read-your-writes across the writer thread);
- a unit that fails inside a savepoint must leave no trace in Storm's cache
  either: `discard_unflushed()` is the object half of ``Store.rollback()``.
"""

from __future__ import annotations

import threading
from typing import Any

from storm.store import PENDING_ADD, PENDING_REMOVE, Store

from .backend import SQLiteConnection, SQLiteDatabase
from .errors import TransactionControlError, TransactionDoomedError, WrongThreadError


def _doomed(name: str, cause: BaseException) -> TransactionDoomedError:
    return TransactionDoomedError(
        f"the transaction on {name!r} is doomed: an inner unit failed with {cause!r}; "
        "it was rolled back and nothing of it is committed")


class _ReadOnlyConnector:
    """Lets Store.__init__ open a read-only connection in the first place."""

    def __init__(self, database: SQLiteDatabase):
        self._database = database

    def connect(self, event: Any) -> SQLiteConnection:
        return self._database.connect(event, read_only=True)


class ManagedStore(Store):
    """A Storm Store owned by one thread, on the pysqlite3 backend."""

    _seen_version: int | None = None
    name = ""

    def __init__(self, database: SQLiteDatabase, name: str = "", read_only: bool = False):
        super().__init__(_ReadOnlyConnector(database) if read_only else database)
        self._database = database
        self.name = name
        self.owner = threading.get_ident()
        self.unit_depth = 0
        self.in_unit_body = False  # user code of a unit is running: it must not end the transaction
        # One slot per scope that can fail on its own (the transaction, each savepoint):
        # the exception of an inner unit that failed in it, which dooms it.
        self._doom: list[BaseException | None] = [None]

    @property
    def connection(self) -> SQLiteConnection:
        return self._connection

    def check_thread(self) -> None:
        """Refuse use from a thread other than the owner."""
        if threading.get_ident() != self.owner:
            raise WrongThreadError(
                f"store {self.name!r} belongs to another thread; "
                f"call get_store({self.name!r}) in this thread to get its own store")

    def hook_register_transaction(self, callback: Any, *data: Any) -> None:
        """Call ``callback(store, *data)`` on Storm's next ``register-transaction`` event (zope joins so)."""
        self._event.hook("register-transaction", callback, *data)

    def unhook_register_transaction(self, callback: Any, *data: Any) -> None:
        """Undo `hook_register_transaction` with the same arguments."""
        self._event.unhook("register-transaction", callback, *data)

    def emit_register_transaction(self) -> None:
        """Fire ``register-transaction`` as Storm does before a statement, so a zope transaction joins."""
        self._event.emit("register-transaction")

    def has_uncommitted_changes(self) -> bool:
        return bool(self._dirty) or self._connection.has_uncommitted_writes

    def _refresh(self) -> None:
        """Drop the object cache if another connection committed since the last look."""
        self.check_thread()
        connection = self._connection
        if not connection.read_only or connection.in_transaction:
            return
        version = connection.data_version()
        if version != self._seen_version:
            self._seen_version = version
            self.invalidate()

    def get(self, cls: Any, key: Any) -> Any:
        self._refresh()
        return super().get(cls, key)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        self._refresh()
        return super().find(*args, **kwargs)

    def using(self, *tables: Any) -> Any:
        self._refresh()
        return super().using(*tables)

    def execute(self, statement: Any, params: Any = None, noresult: bool = False) -> Any:
        self.check_thread()  # raw SQL does not use the object cache: no freshness check
        return super().execute(statement, params, noresult)

    def flush(self) -> None:
        self.check_thread()
        super().flush()

    def commit(self) -> None:
        self.check_thread()
        self._refuse_inside_unit("commit")
        cause = self._doom[0]
        if cause is not None:
            self.rollback()
            raise _doomed(self.name, cause) from cause
        super().commit()

    def rollback(self) -> None:
        self._refuse_inside_unit("rollback")
        super().rollback()
        self._doom = [None]

    def doom(self, cause: BaseException) -> None:
        """Mark the innermost scope doomed: an inner unit in it failed."""
        if self._doom[-1] is None:
            self._doom[-1] = cause

    def raise_if_doomed(self) -> None:
        cause = self._doom[-1]
        if cause is not None:
            raise _doomed(self.name, cause) from cause

    def open_savepoint(self) -> str:
        """Flush, then open a savepoint scope of its own; returns its name."""
        self.flush()
        name = f"storemgr_sp{len(self._doom)}"
        self._connection.savepoint(name)
        self._doom.append(None)
        return name

    def release_savepoint(self, name: str) -> None:
        self._connection.release_savepoint(name)
        self._doom.pop()

    def rollback_savepoint(self, name: str) -> None:
        """Undo the scope in SQLite and in Storm's cache, which knows nothing of savepoints."""
        self._connection.rollback_to_savepoint(name)
        self._doom.pop()
        self.discard_unflushed()

    def _refuse_inside_unit(self, what: str) -> None:
        if self.in_unit_body:
            raise TransactionControlError(
                f"store.{what}() inside a unit of work on {self.name!r}: the unit commits "
                "when it returns; raise an exception to roll it back")

    def discard_unflushed(self) -> None:
        """Forget pending adds/removes and cached state, without ending the transaction."""
        for obj_info in self._dirty:
            pending = obj_info.pop("pending", None)
            if pending is PENDING_ADD:
                del obj_info["store"]
            elif pending is PENDING_REMOVE:
                self._enable_lazy_resolving(obj_info)
        self._dirty.clear()
        self.invalidate()
