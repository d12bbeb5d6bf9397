"""SQLAlchemy Core on the calling thread's store connection: one connection, one transaction.

``engine_for(manager, name)`` returns a SQLAlchemy 2.x ``Engine`` whose
connections are the calling thread's Storm store connection (the "SharingPool"
idea of borrowing another framework's connection, built only on SQLAlchemy's
documented APIs)::

    from sqlite_storemgr.integrations.sqlalchemy import engine_for

    engine = engine_for(manager, "main")       # once; share it between threads
    with manager.write("main") as store:       # one transaction for both ORMs
        store.add(Item(name="from Storm"))
        with engine.connect() as conn:
            conn.execute(item_table.insert().values(name="from SQLAlchemy"))
    # both rows committed together, or (the block raised) neither

How it is built:

- ``create_engine("sqlite+pysqlite://", module=pysqlite3.dbapi2, creator=...,
  poolclass=NullPool, pool_reset_on_return=None)``: the dialect is SQLAlchemy's
  pysqlite dialect pointed at pysqlite3, the same SQLite library as the stores
  (a second SQLite copy in the process, e.g. stdlib ``sqlite3``, on the same file
  would break SQLite's POSIX locks).  ``NullPool`` asks the creator on every
  checkout, so nothing is pooled: each ``engine.connect()`` gets the store
  connection of the thread that calls it.
- The creator returns `SharedConnection`, a DB-API connection that hands out
  cursors on the store's pysqlite3 connection and reads its attributes
  (``create_function``, ``isolation_level``: SQLAlchemy's dialect uses them
  when it connects), each call guarded as Storm's are: the manager's
  ``close()`` from another thread waits for it, and once the store's
  connection is closed every such call raises Storm's ``ClosedError`` naming
  the file.  Its ``commit()``, ``rollback()`` and ``close()`` do nothing:
  SQLAlchemy's transaction calls (``engine.begin()``, ``conn.commit()``, the
  rollback when a connection is closed) never end the store's transaction.
  The store's unit decides: a ``write()`` block commits both ORMs' work when
  it ends, or rolls both back when it raises.  To undo work, raise inside the
  unit; ``conn.rollback()`` does not undo anything.
- A ``before_cursor_execute`` event routes each SQLAlchemy statement through
  the store's transaction rules, as if Storm had run it: Storm's pending
  changes are flushed first (so SQLAlchemy sees them); outside a transaction a
  writing statement begins ``BEGIN IMMEDIATE`` and the transaction stays open
  until the store commits, exactly like a write through ``get_store`` (so a
  WSGI request scope or a zope transaction owns it too); a reading one runs on
  its own outside a unit (no snapshot kept between calls) and joins the
  unit's transaction inside one; a write through a read-only store (``queue``
  outside a unit, or a ``read()`` block) raises `ReadOnlyStoreError` before
  SQLite sees it.
- An ``after_cursor_execute`` event invalidates the store's whole Storm cache
  after every SQLAlchemy statement that writes, so no Storm object serves a
  value that SQLAlchemy changed (objects reload lazily on next access).  This
  is coarse on purpose: SQLAlchemy's SQL is not parsed for the tables it
  touches.  SQLAlchemy Core keeps no cache; the SQLAlchemy ORM's ``Session``
  does, and it is not told about Storm's writes (use Core, or expire the
  session yourself).
- A ``handle_error`` event lets the store's own errors (``ClosedError``,
  ``WrongThreadError``, ...) through as they are: SQLAlchemy would wrap one
  raised while it makes a statement's cursor in its ``StatementError``.

Which store is "the calling thread's": under ``mutex``/``threadlocal`` the
thread's own store; under ``queue``/``single`` the writer's store while the
caller runs inside a write unit (a ``write()`` block, or a ``submit_write``
function, which runs on the writer thread), and otherwise, under ``queue``, the
thread's read-only store (reads only).  Under ``single`` outside a unit there
is no store for the thread, and connecting raises `StrategyError`.

A connection must not cross threads (the store checks, `WrongThreadError`),
and must not outlive the unit it was opened in under ``queue``/``single``.
"""

from __future__ import annotations

import copy
from typing import Any

import pysqlite3.dbapi2 as dbapi
from storm.exceptions import ClosedError

from ..backends.sqlite import shared_attribute
from ..backends.dialect import is_write_statement
from ..errors import ReadOnlyStoreError, StoreManagerError, StrategyError
from ..stores import ManagedStore
from ..uri import SQLiteConfig

try:
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import NullPool
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sqlite_storemgr.integrations.sqlalchemy needs SQLAlchemy 2.x: "
        "pip install 'sqlite_storemgr[sqlalchemy]'") from error

__all__ = ["engine_for", "SharedConnection", "store_of"]


class SharedConnection:
    """A DB-API connection over a store's raw connection that leaves its transaction alone.

    Everything that reaches the pysqlite3 connection (cursors, attributes,
    methods) runs under the store connection's use lock and raises
    ``ClosedError`` naming the file once the store's connection is closed.
    Attributes SQLAlchemy sets (``isolation_level`` for ``AUTOCOMMIT``) stay on
    this object: the store's connection is never reconfigured.
    """

    def __init__(self, store: ManagedStore):
        self.store = store

    def cursor(self) -> Any:
        """The store connection's `SharedCursor`: a close() from another thread waits for it."""
        self.store.check_thread()
        return self.store.connection.shared_cursor()

    def commit(self) -> None:
        """Nothing: the store's unit commits."""

    def rollback(self) -> None:
        """Nothing: raise inside the store's unit to roll back."""

    def close(self) -> None:
        """Nothing: the connection is the store's."""

    def __getattr__(self, name: str) -> Any:  # create_function, isolation_level, ...
        if name.startswith("_"):  # private and special names are this object's own
            raise AttributeError(name)
        return shared_attribute(self.store.connection, name)


def store_of(connection: Any) -> ManagedStore:
    """The store behind a SQLAlchemy ``Connection`` made by `engine_for`."""
    shared = connection.connection.dbapi_connection
    if not isinstance(shared, SharedConnection):
        raise StrategyError("this connection was not made by sqlite_storemgr.integrations.sqlalchemy.engine_for")
    return shared.store


def _before_cursor_execute(conn: Any, cursor: Any, statement: str, parameters: Any,
                           context: Any, executemany: bool) -> None:
    store = store_of(conn)
    store.check_thread()
    store.emit_register_transaction()  # a zope transaction joins, as for Storm's statements
    connection = store.connection
    writes = is_write_statement(statement)
    if writes and (connection.read_only or connection.refuse_writes):
        raise ReadOnlyStoreError(
            f"store {store.name!r} is read-only here: run SQLAlchemy writes inside "
            "submit_write(fn) or a write() block")
    if store._dirty:
        store.flush()
    if not connection.in_transaction and not connection.read_only:
        if writes:
            connection.begin_write()
        elif connection.reads_begin_transaction:  # inside a unit; outside, reads autocommit
            connection.begin_read()
    connection.note_statement(statement)  # has_uncommitted_writes: the nesting rules see it


def _after_cursor_execute(conn: Any, cursor: Any, statement: str, parameters: Any,
                          context: Any, executemany: bool) -> None:
    if is_write_statement(statement):
        store_of(conn).invalidate()


def _store_errors_as_they_are(context: Any) -> BaseException | None:
    """``handle_error``: the store's error, not SQLAlchemy's ``StatementError`` around it.

    SQLAlchemy wraps any error raised while it makes a statement's cursor
    (``SharedConnection.cursor()``: ``ClosedError`` after a close,
    ``WrongThreadError``); an error of the store must read as it does from
    Storm's own calls.  DB-API errors keep SQLAlchemy's usual wrapping.
    """
    error = context.original_exception
    if (context.sqlalchemy_exception is not None
            and isinstance(error, (ClosedError, StoreManagerError))
            and not isinstance(error, dbapi.Error)):
        return copy.copy(error)  # raised "from" the original, whose traceback stays shown
    return None


def engine_for(manager: Any, name: str | None = None, **engine_options: Any) -> Engine:
    """A SQLAlchemy ``Engine`` whose connections are the calling thread's store connection.

    ``name`` is the database's name in ``manager`` (may be left out when only
    one is configured).  Extra keyword arguments go to ``create_engine`` (e.g.
    ``echo=True``); the pool and the DB-API module cannot be changed.
    """
    strategy = manager.strategy(name)
    if not isinstance(strategy.config, SQLiteConfig):
        raise StrategyError(f"engine_for({name!r}) supports SQLite databases only")
    for option in ("poolclass", "pool", "creator", "module", "pool_reset_on_return"):
        if option in engine_options:
            raise TypeError(f"engine_for() sets {option} itself")

    def creator() -> SharedConnection:  # the manager's strategy again: refused once it closed
        return SharedConnection(manager.strategy(name).get_store())

    engine = create_engine(
        "sqlite+pysqlite://", module=dbapi, creator=creator, poolclass=NullPool,
        pool_reset_on_return=None, **engine_options)
    event.listen(engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(engine, "after_cursor_execute", _after_cursor_execute)
    event.listen(engine, "handle_error", _store_errors_as_they_are)
    return engine
