"""SQLAlchemy Core on the calling thread's store connection: one connection, one transaction.

``engine_for(manager, name)`` returns a SQLAlchemy 2.x ``Engine`` whose
connections are the calling thread's Storm store connection; SQLAlchemy's
commit and rollback leave the store's transaction to the store's unit.
See docs/sqlalchemy.md.
"""

from __future__ import annotations

import copy
from typing import Any

import pysqlite3.dbapi2 as dbapi
from storm.exceptions import ClosedError

from ..backends.sqlite import shared_attribute
from ..backends.dialect import is_write_statement
from ..errors import StoreManagerError, StrategyError
from ..stores import ManagedStore
from ..uri import SQLiteConfig
from .statement_rules import after_statement, before_statement

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
    before_statement(store_of(conn), statement, is_write_statement(statement),
                     "run SQLAlchemy writes inside submit_write(fn) or a write() block")


def _after_cursor_execute(conn: Any, cursor: Any, statement: str, parameters: Any,
                          context: Any, executemany: bool) -> None:
    after_statement(store_of(conn), statement, is_write_statement(statement))


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
