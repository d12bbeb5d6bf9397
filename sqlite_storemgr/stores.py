"""The Storm Store the manager hands out, and the transaction steps it needs.

`ManagedStore` adds to Storm's Store what a store shared over time needs:

- outside a unit every store reads in autocommit mode (no snapshot is held
  between calls), so Storm's object cache could serve data another connection
  has since changed: the store checks SQLite's ``PRAGMA data_version`` before
  each query and at the start of every transaction, and drops its cache when
  the database changed (read-your-writes across threads and connections);
- it owns its nesting state, which only its own methods change: units enter
  and leave it (`enter_unit`), user code runs through it (`run_user_code`) and
  may not end the transaction meanwhile, a read snapshot is one of its blocks
  (`snapshot`), and the writer lends it to a thread for a ``write()`` block (`lent`);
- a unit that fails inside a savepoint must leave no trace in Storm's cache
  either: `discard_unflushed()` is the object half of ``Store.rollback()``.
"""

from __future__ import annotations

import math
from typing import Any

from storm.database import Result
from storm.references import BoundReferenceSetBase
from storm.store import PENDING_ADD, PENDING_REMOVE, ResultSet, Store

from .backends.sqlite import SQLiteConnection, SQLiteDatabase
from .errors import StoreManagerError, TransactionControlError, TransactionDoomedError
from .nesting import UnitNesting

_PLAIN = (type(None), bool, int, float, str, bytes)
_CONTAINERS = (list, tuple, set, frozenset, dict)
_STORE_BOUND = (Store, ResultSet, Result, BoundReferenceSetBase)


def refuse_store_bound(value: Any) -> None:
    """Raise if ``value`` holds anything bound to a store: it must not leave its unit.

    Storm objects, result sets, query results, reference sets and stores are
    found through lists, tuples, sets and dicts (keys and values) to any depth,
    since ``return [store.get(...)]`` leaks as surely as the object itself.  The
    `Result` of a statement that returns no rows (``store.execute("INSERT ...")``)
    has nothing to read from the connection and may be returned.
    """
    if type(value) in _PLAIN:
        return
    pending = [value]
    seen: set[int] = set()
    while pending:
        item = pending.pop()
        kind = type(item)
        if isinstance(item, Result) and not _has_rows(item):
            continue
        if hasattr(kind, "__storm_table__") or isinstance(item, _STORE_BOUND):
            raise StoreManagerError(
                f"the unit returned a {kind.__name__} (in its {type(value).__name__} result), "
                "which is bound to the unit's store and may not leave the unit; "
                "return plain values (e.g. ids, or rows as tuples) instead")
        if kind in _CONTAINERS and id(item) not in seen:  # every one is alive in value
            seen.add(id(item))
            if kind is dict:
                pending.extend(item.keys())
                pending.extend(item.values())
            else:
                pending.extend(item)


def _doomed(name: str, cause: BaseException) -> TransactionDoomedError:
    return TransactionDoomedError(
        f"the transaction on {name!r} is doomed: an inner unit failed with {cause!r}; "
        "it was rolled back and nothing of it is committed")


def _has_rows(result: Result) -> bool:
    """Whether reading ``result`` would fetch rows through its connection's cursor."""
    cursor = result._raw_cursor
    return cursor is not None and cursor.description is not None


class _ReadOnlyConnector:
    """Lets Store.__init__ open a read-only connection in the first place."""

    def __init__(self, database: SQLiteDatabase):
        self._database = database

    def connect(self, event: Any) -> SQLiteConnection:
        return self._database.connect(event, read_only=True)


class ManagedStore(UnitNesting, Store):
    """A Storm Store owned by one thread, on the pysqlite3 backend."""

    _seen_version: int | None = None
    name = ""

    def __init__(self, database: SQLiteDatabase, name: str = "", read_only: bool = False):
        super().__init__(_ReadOnlyConnector(database) if read_only else database)
        self._database = database
        self.name = name
        self._start_nesting()
        # A unit running longer than this is logged (`units.note_slow`); 0 in the URI: never.
        self.slow_unit = database.config.slow_unit or math.inf
        # Outside units, reads run in autocommit mode: no snapshot held between calls.
        self._connection.reads_begin_transaction = False
        # One slot per scope that can fail on its own (the transaction, each savepoint):
        # the exception of an inner unit that failed in it, which dooms it.
        self._doom: list[BaseException | None] = [None]

    @property
    def connection(self) -> SQLiteConnection:
        return self._connection

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
        """Outside a transaction: drop the object cache if the database changed since the last look."""
        self.check_thread()
        if not self._connection.in_transaction:
            self.revalidate()

    def revalidate(self) -> None:
        """Drop the object cache if another connection committed since this store last looked.

        Run at the start of every transaction too (the check then starts its
        snapshot), so a unit never computes from an object cached before it.
        """
        version = self._connection.data_version()
        if version != self._seen_version:
            self._seen_version = version
            self.invalidate()

    def acknowledge_write(self) -> None:
        """This thread saw a unit of another store commit: serve its cached objects afresh.

        A read snapshot the store holds (a ``read()`` block) ends too, as a write
        unit in the caller's own store would end it; later reads see the write.
        """
        if self._connection.in_transaction:
            if self.is_nested():
                return  # a transaction of the caller's: not ours to end
            super().rollback()
        else:
            self.invalidate()
        self._seen_version = None

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

    def prepare_commit(self) -> None:
        """The vote before COMMIT: pending objects flushed, no inner unit failed."""
        self.flush()
        self.raise_if_doomed()

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
        if self._in_user_code:
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
