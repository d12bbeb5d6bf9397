"""Running one Django statement on the right store's connection, under the store's rules.

Every statement Django sends goes to the store the caller should use now
(the unit's store inside a unit, else the thread's store) and through the
same transaction rules as the store's own statements (as the SQLAlchemy
engine does): Storm's pending changes are flushed first, a write on a
read-only store is refused before SQLite sees it, a write's statement is
noted for the nesting rules, and Storm's object cache is invalidated after
a write (Django keeps no cache; Storm does).  Outside a transaction the rows
are fetched at once, so no read keeps a snapshot between statements.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any, Iterable

import pysqlite3.dbapi2 as dbapi

from ...backends.dialect import BUSY_READ, BUSY_TRANSACTION, is_write_statement
from ...backends.sqlite import shared_attribute
from ...errors import ReadOnlyStoreError
from ...stores import ManagedStore

__all__ = ["Rows", "changes_data", "run_statement", "convert_query"]

_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_prepared: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


class Rows:
    """The whole result of a finished statement, served like a DB-API cursor."""

    arraysize = 100

    def __init__(self, cursor: Any):
        self.description = cursor.description
        self._rows = cursor.fetchall() if self.description is not None else []
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid
        self._position = 0

    def fetchone(self) -> Any:
        if self._position < len(self._rows):
            self._position += 1
            return self._rows[self._position - 1]
        return None

    def fetchmany(self, size: int | None = None) -> list:
        start = self._position
        self._position = min(len(self._rows), start + (size or self.arraysize))
        return self._rows[start:self._position]

    def fetchall(self) -> list:
        start, self._position = self._position, len(self._rows)
        return self._rows[start:]

    def close(self) -> None:
        self._rows = []

    def __iter__(self) -> "Rows":
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row


def changes_data(statement: str) -> bool:
    """Whether a statement writes data; ``PRAGMA x = y`` sets the connection, it writes none."""
    return is_write_statement(statement) and not statement.lstrip(" \t\r\n(")[:6].upper() == "PRAGMA"


def convert_query(query: str, params: Any) -> str:
    """Django's ``%s`` (format) and ``%(name)s`` (pyformat) to SQLite's ``?`` and ``:name``."""
    from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX
    if params is None:
        return query
    if isinstance(params, Mapping):
        return query % {name: f":{name}" for name in params}
    return FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


class _GuardedConnection:
    """The store connection's pysqlite3 methods, each called under its use lock."""

    def __init__(self, connection: Any):
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return shared_attribute(self._connection, name)


def prepare_connection(connection: Any) -> None:
    """Register Django's SQL functions on the connection's pysqlite3 connection, once each."""
    from django.db.backends.sqlite3._functions import register
    raw = connection.raw
    with _prepared_lock:
        if _prepared.get(connection) is raw:
            return
        register(_GuardedConnection(connection))
        _prepared[connection] = raw


def _annotate_busy(error: dbapi.Error, in_transaction: bool) -> None:
    """Say where a "database is locked" happened, as the store's own errors do."""
    if getattr(error, "sqlite_errorcode", None) in _BUSY_CODES:
        error.busy_phase = BUSY_TRANSACTION if in_transaction else BUSY_READ


def run_statement(store: ManagedStore, statement: str, params: Any = None,
                  many: bool = False, fetch: bool = False) -> Any:
    """Run ``statement`` on ``store``'s connection as if Storm had run it.

    Returns a cursor, or `Rows` when no transaction is open afterwards (or
    ``fetch``: the caller leaves the unit before reading).
    """
    store.check_thread()
    store.emit_register_transaction()  # a zope transaction joins, as for Storm's statements
    connection = store.connection
    writes = changes_data(statement)
    if writes and (connection.read_only or connection.refuse_writes):
        raise ReadOnlyStoreError(
            f"store {store.name!r} is read-only here: run Django writes in a unit "
            "(transaction.atomic(), submit_write(fn), a write() block)")
    if store._dirty:
        store.flush()
    if not connection.in_transaction and not connection.read_only:
        if writes:
            connection.begin_write()
        elif connection.reads_begin_transaction and not statement.lstrip()[:6].upper() == "PRAGMA":
            connection.begin_read()
    connection.note_statement(statement)
    prepare_connection(connection)
    cursor = connection.shared_cursor()
    try:
        if many:
            cursor.executemany(statement, params)
        elif params is None:
            cursor.execute(statement)
        else:
            cursor.execute(statement, params)
    except dbapi.Error as error:
        cursor.close()
        _annotate_busy(error, connection.in_transaction)
        raise
    if writes or statement.lstrip()[:11].upper() == "ROLLBACK TO":
        store.invalidate()  # Storm's cached objects may hold what this changed or undid
    if fetch or not connection.in_transaction:
        try:
            return Rows(cursor)
        finally:
            cursor.close()
    return cursor


def materialize(params: Iterable[Any]) -> list:
    """``executemany`` parameters as a list: a unit may run its statement more than once."""
    return list(params)
