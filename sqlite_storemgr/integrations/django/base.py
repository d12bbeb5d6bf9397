"""Django's database engine on the store manager: ``ENGINE: "sqlite_storemgr.django"``.

Django's ORM and Storm share one connection and one transaction: every
Django statement runs on the store connection the caller should use now
(`statements`), and Django's transactions are the manager's units:

- the outermost ``transaction.atomic()`` is a unit (``manager.write()``):
  ``BEGIN IMMEDIATE`` under the strategy (the mutex, a lease of the writer,
  the thread's own store) and the lock policy's deadline; inside a unit that
  Django does not own (a ``submit_write`` function, a ``write()`` block, a
  request's transaction) Django sees a transaction under way, so ``atomic()``
  is a savepoint and ``atomic(savepoint=False)`` joins, its failure dooming
  the unit;
- a write outside any unit is its own unit (``submit_write``, so it is
  retried as units are); under ``queue``/``single`` inside an HTTP request
  it is refused unless the request's writes have a unit (``ATOMIC_REQUESTS``,
  or a transaction middleware);
- reads use the thread's store (read-only under ``queue``; under ``single``
  a read unit on the worker), never keeping a snapshot between statements.

See docs/django.md for the whole contract.
"""

from __future__ import annotations

import datetime
import decimal
import threading
from typing import Any, Callable

import pysqlite3.dbapi2 as dbapi
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished, request_started
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3 import base as sqlite3_base
from django.db.backends.utils import debug_transaction  # type: ignore[attr-defined]  # private Django API, not in django-stubs
from django.db.utils import DatabaseError as DjangoDatabaseError

import sqlite_storemgr as sm

from ...backends.dialect import busy_phase
from ...backends.sqlite import RowIteration
from ...errors import StrategyError, TransactionControlError, TransactionDoomedError
from ...scopes import before_write_unit
from ...stores import ManagedStore
from ...strategies import Strategy
from .atomic import install_retrying_atomic
from .commit_hooks import after_commit
from .config import DatabaseSpec, database_spec, ensure_database
from .creation import DatabaseCreation
from .features import DatabaseFeatures
from .statements import changes_data, convert_query, materialize, run_statement

__all__ = ["DatabaseWrapper", "StoreConnection", "StoreCursor", "in_request"]

# Django's own adapters, on the SQLite library this engine uses (Django sets them on sqlite3;
# they are private, so django-stubs lacks them).
dbapi.register_adapter(decimal.Decimal, str)
dbapi.register_adapter(datetime.date, sqlite3_base.adapt_date)  # type: ignore[attr-defined]
dbapi.register_adapter(datetime.datetime, sqlite3_base.adapt_datetime)  # type: ignore[attr-defined]

_requests = threading.local()


def in_request() -> bool:
    """Whether the calling thread is serving an HTTP request (between Django's signals)."""
    return getattr(_requests, "depth", 0) > 0


def _request_started(**kwargs: Any) -> None:
    _requests.depth = getattr(_requests, "depth", 0) + 1


def _request_finished(**kwargs: Any) -> None:
    _requests.depth = max(0, getattr(_requests, "depth", 0) - 1)


request_started.connect(_request_started, dispatch_uid="sqlite_storemgr.django.request_started")
request_finished.connect(_request_finished, dispatch_uid="sqlite_storemgr.django.request_finished")
install_retrying_atomic()


class _Rollback(Exception):
    """Internal: ends the wrapper's own unit with a rollback."""


class StoreCursor(RowIteration):
    """A DB-API cursor whose statements go where the wrapper routes them.

    ``django_style``: parameters in Django's ``%s`` style (Django's cursors);
    else in SQLite's ``?`` style (code using ``connection.connection`` directly).
    """

    arraysize = 100

    def __init__(self, wrapper: "DatabaseWrapper", django_style: bool = True):
        self._wrapper = wrapper
        self._django_style = django_style
        self._result: Any = None
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise dbapi.ProgrammingError("Cannot operate on a closed cursor.")

    def execute(self, query: str, params: Any = None) -> "StoreCursor":
        self._check_open()
        if self._django_style:
            query = convert_query(query, params)
        self._close_result()
        self._result = self._wrapper.route(query, params, many=False)
        return self

    def executemany(self, query: str, param_list: Any) -> "StoreCursor":
        self._check_open()
        param_list = materialize(param_list)
        if self._django_style:
            query = convert_query(query, param_list[0] if param_list else ())
        self._close_result()
        self._result = self._wrapper.route(query, param_list, many=True)
        return self

    def _close_result(self) -> None:
        if self._result is not None:
            self._result.close()
            self._result = None

    def _current(self) -> Any:
        if self._result is None:
            raise dbapi.ProgrammingError("no statement was executed on this cursor")
        return self._result

    def fetchone(self) -> Any:
        return self._current().fetchone()

    def fetchmany(self, size: int | None = None) -> Any:
        return self._current().fetchmany(size or self.arraysize)

    def fetchall(self) -> Any:
        return self._current().fetchall()

    @property
    def description(self) -> Any:
        return None if self._result is None else self._result.description

    @property
    def rowcount(self) -> int:
        return -1 if self._result is None else self._result.rowcount

    @property
    def lastrowid(self) -> Any:
        return None if self._result is None else self._result.lastrowid

    def close(self) -> None:
        self._close_result()
        self._closed = True


class StoreConnection:
    """What Django holds as its DB-API connection: no connection of its own.

    Cursors find the store to use at each statement; ``close()`` ends the
    wrapper's own unit, if any, and leaves the stores alone (they are the
    manager's).
    """

    def __init__(self, wrapper: "DatabaseWrapper"):
        self._wrapper = wrapper

    def cursor(self, factory: Any = None) -> StoreCursor:
        return StoreCursor(self._wrapper, django_style=False)

    def commit(self) -> None:
        self._wrapper._commit()

    def rollback(self) -> None:
        self._wrapper._rollback()

    def close(self) -> None:
        self._wrapper._end_unit(commit=False)


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    """Django's SQLite backend with the store manager's connections and units."""

    Database = dbapi
    # Django 5 keeps (savepoint ids, callback, robust); django-stubs still says pairs.
    run_on_commit: list[tuple[set[str], Callable[[], Any], bool]]  # type: ignore[assignment]
    creation_class = DatabaseCreation
    features_class = DatabaseFeatures

    def __init__(self, settings_dict: dict[str, Any], alias: str = "default"):
        self._needs_rollback = False
        self._doomed_store: ManagedStore | None = None
        self._unit: Any = None  # the context manager of the unit this wrapper opened
        self._foreign_keys_off = False
        self.manager = sm.default_manager()
        super().__init__(settings_dict, alias)
        self.spec: DatabaseSpec = database_spec(self.settings_dict, self.alias)

    # -- the database ---------------------------------------------------------

    @property
    def store_name(self) -> str:
        return self.spec.store

    def strategy(self) -> Strategy:
        """The strategy serving this database now (the test runner may switch databases)."""
        self.ensure_connection()  # the first connection configures the manager's database
        return self.manager.strategy(self.spec.store)

    def get_connection_params(self) -> dict[str, Any]:
        if self.settings_dict.get("NAME") is None:
            raise ImproperlyConfigured(
                "settings.DATABASES is improperly configured. Please supply the NAME value.")
        self.spec = database_spec(self.settings_dict, self.alias)
        self.transaction_mode = None
        self.init_commands: list[str] = []
        return {}

    def get_new_connection(self, conn_params: dict[str, Any]) -> StoreConnection:
        ensure_database(self.manager, self.spec)
        return StoreConnection(self)

    def create_cursor(self, name: str | None = None) -> StoreCursor:
        return StoreCursor(self)

    def close(self) -> None:
        BaseDatabaseWrapper.close(self)  # the manager keeps an in-memory database alive

    def is_usable(self) -> bool:
        return True

    # -- where a statement runs -------------------------------------------------

    def route(self, statement: str, params: Any, many: bool) -> Any:
        """Run a statement on the store the caller should use now (see the module docstring)."""
        strategy = self.strategy()
        store = strategy.unit_store()
        if store is None and not self.autocommit:
            self._open_unit()  # set_autocommit(False): each transaction begins at its first statement
            store = strategy.unit_store()
        if store is not None:
            return run_statement(store, statement, params, many)
        if changes_data(statement):
            return self._loose_write(strategy, statement, params, many)
        if strategy.config.strategy == "single":  # all access on the worker thread
            return strategy.submit_read(
                lambda worker_store: run_statement(worker_store, statement, params, many,
                                                   fetch=True), (), {}).result()
        return run_statement(strategy.get_store(), statement, params, many)

    def _loose_write(self, strategy: Strategy, statement: str, params: Any, many: bool) -> Any:
        """A write outside any unit: its own unit, or the request's transaction, or refused."""
        if not strategy.joins_foreign_transaction and in_request():
            before_write_unit(self.manager, strategy)  # a request's scope may begin its unit
            store = strategy.unit_store()
            if store is None:
                raise StrategyError(
                    f"Django wrote to {self.store_name!r} outside a transaction while serving "
                    f"a request, under strategy={strategy.config.strategy}, where only the "
                    "writer writes; nothing was written. Put the write in transaction.atomic(), "
                    "set ATOMIC_REQUESTS, add sqlite_storemgr.django.middleware."
                    "TransactionMiddleware (or wrap the WSGI application in sqlite_storemgr."
                    "integrations.wsgi.TransactionMiddleware), or run it with "
                    f"sqlite_storemgr.submit_write(fn, name={self.store_name!r})")
            return run_statement(store, statement, params, many)
        return self.manager.submit_write(
            lambda store: run_statement(store, statement, params, many, fetch=True),
            name=self.store_name).result()

    # -- transactions -------------------------------------------------------------

    def in_foreign_unit(self) -> bool:
        """Whether the caller runs inside a unit that this wrapper did not open."""
        return self._unit is None and self.strategy().unit_store() is not None

    def get_autocommit(self) -> bool:
        """False inside a unit Django does not own: Django then nests in it (savepoints)."""
        self.ensure_connection()
        return self.autocommit and not self.in_foreign_unit()

    def _start_transaction_under_autocommit(self) -> None:
        with debug_transaction(self, "BEGIN"):
            self._open_unit()

    def _set_autocommit(self, autocommit: bool) -> None:
        if autocommit:
            self._end_unit(commit=True)  # as sqlite3 does when autocommit is switched on

    def _open_unit(self) -> None:
        block = self.manager.write(self.store_name, savepoint=True)
        store = block.__enter__()
        self._unit = block
        if self._foreign_keys_off and not store.connection.has_uncommitted_writes:
            self._switch_foreign_keys(store, on=False)

    def _end_unit(self, commit: bool) -> None:
        block, self._unit = self._unit, None
        if block is None:
            return
        if commit:
            block.__exit__(None, None, None)
            return
        try:
            block.__exit__(_Rollback, _Rollback("Django rolled the transaction back"), None)
        except _Rollback:
            pass

    def _commit(self) -> None:
        self._refuse_in_foreign_unit("commit")
        with debug_transaction(self, "COMMIT"), self.wrap_database_errors:
            self._end_unit(commit=True)

    def _rollback(self) -> None:
        self._refuse_in_foreign_unit("rollback")
        with debug_transaction(self, "ROLLBACK"), self.wrap_database_errors:
            self._end_unit(commit=False)

    def _refuse_in_foreign_unit(self, what: str) -> None:
        if self.in_foreign_unit():
            raise TransactionControlError(
                f"transaction.{what}() inside a unit of work on {self.store_name!r} "
                "(submit_write, a write() block, a request's transaction): the unit ends its "
                "transaction; raise an exception to roll it back")

    @property
    def needs_rollback(self) -> bool:
        """Django's flag; set inside a unit Django does not own, it dooms that unit."""
        if self._needs_rollback and self._doomed_store is not None and not self.in_atomic_block:
            try:
                self._doomed_store.raise_if_doomed()
            except TransactionDoomedError:
                return True
            self._needs_rollback, self._doomed_store = False, None  # that unit has ended
        return self._needs_rollback

    @needs_rollback.setter
    def needs_rollback(self, value: bool) -> None:
        self._needs_rollback = value
        if value and self._unit is None and self.connection is not None:
            store = self.strategy().unit_store()
            if store is not None:
                store.doom(TransactionDoomedError(
                    "a Django atomic block joined to this unit failed "
                    "(atomic(savepoint=False), or transaction.set_rollback(True))"))
                self._doomed_store = store

    def on_commit(self, func: Callable[[], Any], robust: bool = False) -> None:
        """Django's ``on_commit``; inside a unit Django does not own, after that unit's COMMIT."""
        if not callable(func):
            raise TypeError("on_commit()'s callback must be a callable.")
        store = self.strategy().unit_store() if self._unit is None else None
        if store is None:
            super().on_commit(func, robust)
            return
        entry = (set(self.savepoint_ids), func, robust)
        nested = self.in_atomic_block
        if nested:
            self.run_on_commit.append(entry)  # Django drops it if its savepoint rolls back

        def at_commit() -> None:
            if nested:
                if entry not in self.run_on_commit:
                    return
                self.run_on_commit.remove(entry)
            func()

        after_commit(store.connection, at_commit)

    def retrying_call(self, run: Callable[[], Any]) -> Any:
        """``run()`` (an outermost ``atomic`` block) re-run on a lock conflict, as units are."""
        self.ensure_connection()
        strategy = self.strategy()
        if self.in_atomic_block or strategy.unit_store() is not None:
            return run()

        def body() -> Any:
            try:
                return run()
            except DjangoDatabaseError as error:
                cause = error.__cause__
                if cause is not None and busy_phase(cause) is not None:
                    raise cause from None
                raise

        return strategy.policy.run(body, commit=_nothing, rollback=_nothing)

    # -- schema changes ---------------------------------------------------------------

    def disable_constraint_checking(self) -> bool:
        """Foreign keys off for a schema change; under queue/single on the writer's connection.

        Outside a unit the writer's connection is not this thread's: the wish is
        kept and applied when this wrapper's next unit begins on the writer.
        Inside a transaction SQLite ignores the pragma, as with Django's backend.
        """
        strategy = self.strategy()
        if strategy.joins_foreign_transaction or strategy.unit_store() is not None:
            return super().disable_constraint_checking()
        self._foreign_keys_off = True
        return True

    def enable_constraint_checking(self) -> None:
        strategy = self.strategy()
        if not self._foreign_keys_off or strategy.unit_store() is not None:
            super().enable_constraint_checking()  # inside a transaction: ignored, as by SQLite
            return
        self._foreign_keys_off = False
        with self.manager.write(self.store_name) as store:
            self._switch_foreign_keys(store, on=True)

    def _switch_foreign_keys(self, store: ManagedStore, on: bool) -> None:
        """Set ``foreign_keys`` on the writer's connection at the start of a unit.

        SQLite ignores the pragma inside a transaction, and a unit on the
        writer has begun one already; an empty one is ended and begun again
        around the pragma.  See docs/django.md (a core hook would avoid it).
        """
        connection = store.connection
        config = self.strategy().config  # a SQLiteConfig: the engine's databases are files
        wanted = "ON" if on and config.foreign_keys != "off" else "OFF"  # type: ignore[union-attr]
        cursor = connection.shared_cursor()
        try:
            cursor.execute("COMMIT")
            cursor.execute(f"PRAGMA foreign_keys = {wanted}")
            cursor.execute("BEGIN IMMEDIATE")
        finally:
            cursor.close()


def _nothing() -> None:
    return None
