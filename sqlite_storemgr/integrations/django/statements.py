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

from ...backends.dialect import BUSY_READ, BUSY_TRANSACTION
from ...backends.sqlite import FetchedCursor, shared_attribute
from ...stores import ManagedStore
from ..statement_rules import after_statement, before_statement, changes_data

__all__ = ["changes_data", "run_statement", "convert_query"]

_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_prepared: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


def convert_query(query: str, params: Any) -> str:
    """Django's ``%s`` (format) and ``%(name)s`` (pyformat) to SQLite's ``?`` and ``:name``."""
    from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX
    if params is None:
        return query
    if isinstance(params, Mapping):
        return query % {name: f":{name}" for name in params}
    converted: str = FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")
    return converted


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

    Returns a cursor, or a `FetchedCursor` when no transaction is open afterwards (or
    ``fetch``: the caller leaves the unit before reading).
    """
    writes = changes_data(statement)
    before_statement(store, statement, writes,
                     "run Django writes in a unit (transaction.atomic(), submit_write(fn), "
                     "a write() block)")
    connection = store.connection
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
    after_statement(store, statement, writes)
    if fetch or not connection.in_transaction:
        try:
            return FetchedCursor(cursor)
        finally:
            cursor.close()
    return cursor


def materialize(params: Iterable[Any]) -> list[Any]:
    """``executemany`` parameters as a list: a unit may run its statement more than once."""
    return list(params)
