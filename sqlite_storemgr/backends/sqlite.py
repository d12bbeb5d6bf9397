"""Storm's SQLite backend, rebuilt on pysqlite3 for concurrent use.

Unlike `storm.databases.sqlite`: a write begins ``BEGIN IMMEDIATE``, a busy
error is raised at once with a ``busy_phase`` for the lock policy, reads
outside a transaction keep no snapshot, and every call into SQLite runs under
the connection's use lock.  See docs/sqlite-backend.md.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from typing import Any, Callable, cast

import pysqlite3.dbapi2 as dbapi
import storm.exceptions as storm_errors
from storm.exceptions import ClosedError
from storm.database import Database, register_scheme
from storm.databases.sqlite import SQLiteConnection as StormSQLiteConnection
from storm.databases.sqlite import SQLiteResult
from storm.tracer import _tracers, trace
from storm.uri import URI

from . import forking
from .dialect import (
    BUSY_BEGIN, BUSY_COMMIT, BUSY_READ, BUSY_TRANSACTION, WriteTracking, busy_phase,
    is_write_statement)
from .lookaside import connect_without_lookaside
from ..errors import READ_ONLY_MESSAGE, ConfigError, DatabaseMovedError, ReadOnlyStoreError
from ..uri import SQLiteConfig, config_from_storm_uri

__all__ = ["SQLiteDatabase", "SQLiteConnection", "ConnectHook", "register", "connections_opened",
           "FetchedCursor", "RowIteration",
           "busy_phase", "BUSY_BEGIN", "BUSY_COMMIT", "BUSY_TRANSACTION", "BUSY_READ"]

_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_READONLY_CODE = 8    # SQLITE_READONLY (query_only)
# Errors about the file itself (READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB): their
# messages name the file, which SQLite's own text does not.
_FILE_CODES = (8, 10, 11, 13, 14, 26)
# A read-only store's page cache, in pages: an idle reader per thread must not keep
# megabytes after one scan, and 8 pages hold a B-tree's upper levels for point reads (a
# transaction's pages are dropped anyway when another connection commits).  An on_connect
# hook may set another.
READER_CACHE_PAGES = 8
_opened = itertools.count(1)
_last_opened = 0

ConnectHook = Callable[[Any, bool], None]  # on_connect(raw pysqlite3 connection, read_only)
# What an on_connect hook may not change: the URI's options and the manager's own settings.
# Within this long after a COMMIT found the file in place, BEGIN IMMEDIATE skips its check.
FILE_RECHECK_SECONDS = 0.001
_GUARDED_PRAGMAS = ("journal_mode", "synchronous", "foreign_keys", "query_only", "locking_mode")


def _guarded_pragmas(raw: Any) -> dict[str, Any]:
    return {pragma: raw.execute(f"PRAGMA {pragma}").fetchone()[0] for pragma in _GUARDED_PRAGMAS}


def run_connect_hook(hook: ConnectHook, raw: Any, read_only: bool, where: str) -> None:
    """Run ``hook(raw, read_only)`` on a new connection; if it fails, close it, raise `ConfigError`.

    A hook that changes a pragma the strategy's guarantees rest on (durability,
    the journal, read-only readers) is refused: the connection is not handed out.
    """
    kind = "read-only" if read_only else "write"
    name = getattr(hook, "__qualname__", type(hook).__qualname__)
    try:
        before = _guarded_pragmas(raw)
        hook(raw, read_only)
        after = _guarded_pragmas(raw)
    except Exception as error:
        raw.close()
        raise ConfigError(
            f"on_connect={name} failed on a new {kind} connection to {where}: "
            f"{error!r}; that connection was closed, and the next one runs the hook again"
        ) from error
    except BaseException:
        raw.close()
        raise
    changed = [pragma for pragma in _GUARDED_PRAGMAS if before[pragma] != after[pragma]]
    refusal = (f"PRAGMA {changed[0]} changed from {before[changed[0]]!r} to "
               f"{after[changed[0]]!r}" if changed else
               "a transaction left open" if raw.in_transaction else None)
    if refusal is not None:
        raw.close()
        raise ConfigError(
            f"on_connect={name} is refused on a new {kind} connection to {where}: "
            f"{refusal} (the connection was closed); journal_mode, synchronous and "
            "foreign_keys are set in the URI, query_only, locking_mode and transactions by "
            "the manager")


def connections_opened() -> int:
    """How many raw connections this backend has opened in this process."""
    return _last_opened


class RowIteration(ABC):
    """DB-API cursor iteration: ``for row in cursor`` calls ``fetchone()`` until None."""

    @abstractmethod
    def fetchone(self) -> Any:
        """The next row, or None after the last."""

    def __iter__(self) -> "RowIteration":
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row


class FetchedCursor(RowIteration):
    """The rows of a finished statement, served like a DB-API cursor."""

    arraysize = 10

    def __init__(self, cursor: Any):
        self._rows: list[Any] = cursor.fetchall()
        self._position = 0
        self.description = cursor.description
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid

    def fetchone(self) -> Any:
        if self._position < len(self._rows):
            self._position += 1
            return self._rows[self._position - 1]
        return None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        start = self._position
        self._position = min(len(self._rows), start + (size or self.arraysize))
        return self._rows[start:self._position]

    def fetchall(self) -> list[Any]:
        start, self._position = self._position, len(self._rows)
        return self._rows[start:]

    def close(self) -> None:
        self._rows = []


class _GuardedResult(SQLiteResult):
    """Storm's result, closing its cursor under the connection's use lock."""

    _closed: bool
    _raw_cursor: Any

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._connection.close_cursor(self._raw_cursor)
            self._raw_cursor = None


class _GuardedMethod:
    """A method of a store connection's pysqlite3 connection or cursor, called as Storm's calls are.

    Each call looks the method up again under the connection's use lock, once
    the connection is checked open: a close() from another thread between the
    lookup and the call gives ClosedError, never a call into a closed connection.
    """

    __slots__ = ("_connection", "_cursor", "_name")

    def __init__(self, connection: "SQLiteConnection", cursor: Any, name: str):
        self._connection = connection
        self._cursor = cursor
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._connection._use:
            raw = self._connection._live_raw()
            target = raw if self._cursor is None else self._cursor
            return getattr(target, self._name)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<guarded {self._name} of {self._connection._database.config.describe()}>"


def shared_attribute(connection: "SQLiteConnection", name: str, cursor: Any = None) -> Any:
    """Attribute ``name`` of the connection's pysqlite3 connection (or of ``cursor``, one of its cursors).

    Read under the use lock; ClosedError naming the file once the connection
    was closed.  A method comes back as a `_GuardedMethod`, checked again at
    each call.  For code beside Storm (``SharedCursor``, SQLAlchemy's
    ``SharedConnection``): never the raw connection's attributes unguarded.
    """
    if name.startswith("_"):  # private and special names are the wrapper's own business
        raise AttributeError(name)
    with connection._use:
        raw = connection._live_raw()
        target = raw if cursor is None else cursor
        value = getattr(target, name)
    if getattr(value, "__self__", None) is target:  # a bound method of the target
        return _GuardedMethod(connection, cursor, name)
    return value


class SharedCursor(RowIteration):
    """A DB-API cursor on a store's connection for code beside Storm (SQLAlchemy).

    Each call runs under the connection's use lock, as Storm's own do, so a
    ``close()`` from another thread cannot pull the connection from under it;
    once it was closed, every call and attribute (but ``close()``, which stays
    quiet for cleanup) raises ClosedError naming the file.
    """

    def __init__(self, connection: "SQLiteConnection"):
        self._connection = connection
        with connection._use:
            self._cursor = connection._live_raw().cursor()

    def _call(self, method: str, *args: Any) -> Any:
        with self._connection._use:
            self._connection._live_raw()
            return getattr(self._cursor, method)(*args)

    def execute(self, *args: Any) -> "SharedCursor":
        self._call("execute", *args)
        return self

    def executemany(self, *args: Any) -> "SharedCursor":
        self._call("executemany", *args)
        return self

    def fetchone(self) -> Any:
        return self._call("fetchone")

    def fetchmany(self, *args: Any) -> Any:
        return self._call("fetchmany", *args)

    def fetchall(self) -> Any:
        return self._call("fetchall")

    def close(self) -> None:
        self._connection.close_cursor(self._cursor)

    def __getattr__(self, name: str) -> Any:  # description, rowcount, lastrowid, arraysize
        if name.startswith("_"):  # e.g. _cursor itself, if __init__ raised
            raise AttributeError(name)
        return shared_attribute(self._connection, name, self._cursor)


class GuardedConnection(StormSQLiteConnection):
    """A Storm connection whose every call into pysqlite3 runs under one use lock.

    pysqlite3 lets go of the GIL inside SQLite, and a ``close()`` from another
    thread (the manager's, at shutdown) in that window frees what the call still
    uses and crashes the process.  With ``_use``, such a close waits for the call
    to return, and the owner's next call gets `ClosedError`.  Errors become
    Storm's types, with a ``busy_phase`` when the database was busy.
    """

    _in_transaction = False
    _reopen_pending = False
    _unmoved_at = -1.0  # time.monotonic() when a COMMIT's check last found the file unmoved
    result_factory = _GuardedResult

    def __init__(self, database: "SQLiteDatabase", event: Any = None, read_only: bool = False):
        self.read_only = read_only
        self._database = database
        self._event = event
        self._use = threading.RLock()
        forking.register(self)  # held back while a fork is pending
        with self._use:  # opening runs inside SQLite: a fork waits for it (see forking)
            self._raw_connection = database.raw_connect(read_only=read_only)
        # The file as SQLite resolved it at open (a relative path: from the cwd of now).
        self._file_path = database.absolute_path()
        self._file_identity = database.file_identity(self._file_path)

    def _live_raw(self) -> Any:
        """The pysqlite3 connection (call under ``_use``); ClosedError once it was closed."""
        raw = self._raw_connection
        if raw is None or self._closed:
            raise self._closed_error()
        return raw

    def _closed_error(self) -> ClosedError:
        return ClosedError(
            f"{self._database.config.describe()}: this store's connection was closed "
            "(the store manager was closed, or the store itself)")

    def execute(self, statement: Any, params: Any = None, noresult: bool = False) -> Any:
        if self._closed:  # Storm's own check would not name the file
            raise self._closed_error()
        return super().execute(statement, params, noresult)

    def shared_cursor(self) -> SharedCursor:
        """A cursor for code beside Storm on this connection, guarded like Storm's calls."""
        return SharedCursor(self)

    def _run(self, statement: str, params: Any, args: tuple[Any, ...]) -> Any:
        """Execute (under the use lock), through Storm's tracers if any are installed."""
        if _tracers:
            return self._traced_execute(statement, params, args)
        return self._execute_raw(statement, args)

    def _execute_raw(self, statement: str, args: tuple[Any, ...]) -> Any:
        with self._use:
            cursor = self._live_raw().cursor()
            try:
                cursor.execute(statement, args)
            except dbapi.Error as error:
                raise self._translate(error, statement) from None
            return cursor

    def _traced_execute(self, statement: str, params: Any, args: tuple[Any, ...]) -> Any:
        with self._use:
            cursor = self._live_raw().cursor()
            trace("connection_raw_execute", self, cursor, statement, params or ())
            try:
                cursor.execute(statement, args)
            except dbapi.Error as error:
                trace("connection_raw_execute_error", self, cursor, statement, params or (), error)
                raise self._translate(error, statement) from None
            trace("connection_raw_execute_success", self, cursor, statement, params or ())
            return cursor

    def close_cursor(self, cursor: Any) -> None:
        """Close a cursor of this connection; once the connection is closed, SQLite freed it."""
        with self._use:
            if not self._closed:
                cursor.close()

    def close(self) -> None:
        """Close now, or as soon as a call another thread has under way returns."""
        if forking.inherited(self):
            return  # a forked child never closes its parent's connection (see forking)
        with self._use:
            try:
                super().close()
            finally:
                forking.closed(self)

    def _reopen(self) -> None:
        """Open the file again: one found read-only at open stays so for the connection."""
        with self._use:
            if self._raw_connection is None:
                return
            try:
                fresh = self._database.raw_connect(read_only=self.read_only)
            except Exception:  # noqa: BLE001 - still not writable: keep the old, try next time
                return
            self._reopen_pending = False
            old, self._raw_connection = self._raw_connection, fresh
            self._file_identity = self._database.file_identity(self._file_path)
            old.close()

    def _check_disconnect(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("extra_disconnection_errors", None)
        with self._use:
            self._live_raw()  # a closed connection's cursors fail with ClosedError too
            try:
                return function(*args, **kwargs)
            except dbapi.Error as error:
                raise self._translate(error, "") from None

    def _translate(self, error: dbapi.Error, statement: str) -> Exception:
        """Storm's exception type for a DB-API error, with ``busy_phase`` when busy."""
        code = getattr(error, "sqlite_errorcode", None)
        if code == _READONLY_CODE and self.read_only:
            return ReadOnlyStoreError(READ_ONLY_MESSAGE)
        if code == _READONLY_CODE:
            if self._file_moved():  # SQLITE_READONLY_DBMOVED
                return self._database.moved_error(self._file_path)
            self._reopen_pending = True  # the file may be writable by the next transaction
        prefix = f"{self._database.config.describe()}: " if code in _FILE_CODES else ""
        wrapped: Any = self._database.wrap_dbapi_error(error, prefix)  # a Storm error type
        if code in _BUSY_CODES:
            head = statement.lstrip()[:8].upper()
            if head.startswith("BEGIN"):
                wrapped.busy_phase = BUSY_BEGIN
            elif head.startswith(("COMMIT", "END")):
                wrapped.busy_phase = BUSY_COMMIT
            elif self._in_transaction:
                wrapped.busy_phase = BUSY_TRANSACTION
            else:
                wrapped.busy_phase = BUSY_READ
        return cast(Exception, wrapped)

    def _file_moved(self) -> bool:
        """Whether the path no longer leads to the file this connection opened."""
        identity = self._file_identity
        return identity is not None and self._database.file_identity(self._file_path) != identity

    def _check_file_unmoved(self) -> None:
        """After a COMMIT: in WAL mode SQLite commits to a deleted file without a word."""
        if self._file_moved():
            raise self._database.moved_error(self._file_path)
        self._unmoved_at = time.monotonic()


class SQLiteConnection(WriteTracking, GuardedConnection):
    """The manager's transactions on a guarded connection: ``BEGIN IMMEDIATE`` for
    writes (in turn under ``threadlocal``), read snapshots, savepoints, COMMIT."""

    # Storm's rule: a read begins a transaction that lasts until commit or rollback.
    # The manager's stores turn it off outside units (autocommit reads, no snapshot held).
    reads_begin_transaction = True

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    def begin_write(self) -> None:
        """Open a write transaction now (``BEGIN IMMEDIATE``), waiting for the lock.

        The wait is bounded by the busy timeout (`set_busy_timeout`).  Under
        ``threadlocal`` this process's threads wait for the lock in turn, not
        in SQLite's busy handler, which lets one of them starve (`lock_wait`).
        """
        self.check_writable()
        if self._database.config.strategy != "threadlocal":
            self._begin("BEGIN IMMEDIATE")
            return
        turns = self.__dict__.get("_write_turns")
        if turns is None:
            from .lock_wait import WriteTurns
            turns = self._write_turns = WriteTurns(
                self._file_identity or self._file_path or self._database._target)
        turns.begin(self._begin, self.set_busy_timeout,
                    self.__dict__.get("_busy_wait", self._database.config.timeout))

    def begin_read(self) -> None:
        """Open a deferred transaction: one consistent snapshot from its first read."""
        self._begin("BEGIN")

    def _begin(self, statement: str) -> None:
        forking.began(self, statement == "BEGIN IMMEDIATE")  # held back while a fork is pending
        try:
            self._begin_now(statement)
        except BaseException:
            if not self._in_transaction:
                forking.ended(self)  # it never began
            raise

    def _begin_now(self, statement: str) -> None:
        self._ensure_connected()
        if statement == "BEGIN IMMEDIATE":
            # Not again when a COMMIT found the file in place a moment ago (back-to-back
            # transactions): one stat per transaction, the COMMIT's check still catches a move.
            if (time.monotonic() - self._unmoved_at > FILE_RECHECK_SECONDS
                    and self._file_moved()):
                raise self._database.moved_error(self._file_path)  # before the old file's WAL
            if self._reopen_pending:
                self._reopen()
        self._execute_raw(statement, ())
        self._in_transaction = True
        self._wrote = False

    def savepoint(self, name: str) -> None:
        """Open a savepoint; ``name`` is one of the manager's own, never user text."""
        self._execute_raw(f"SAVEPOINT {name}", ())

    def release_savepoint(self, name: str) -> None:
        self._execute_raw(f"RELEASE {name}", ())

    def rollback_to_savepoint(self, name: str) -> None:
        """Undo the statements since the savepoint and close it."""
        self._execute_raw(f"ROLLBACK TO {name}", ())
        self._execute_raw(f"RELEASE {name}", ())

    def data_version(self) -> int:
        """SQLite's counter that changes when another connection commits."""
        with self._use:
            version: int = self._execute_raw("PRAGMA data_version", ()).fetchall()[0][0]
            return version

    def set_busy_timeout(self, seconds: float, remember: bool = True) -> None:
        """How long SQLite waits for a lock in the next statements (`begin_write` too).

        ``remember=False`` only sets SQLite's wait, for a while (`lock_wait`).
        """
        ms = max(0, int(seconds * 1000))
        with self._use:
            raw = self._live_raw()
            if ms % 1000 == 0 and hasattr(raw, "set_busy_timeout"):
                raw.set_busy_timeout(ms // 1000)  # pysqlite3: whole seconds, no statement
            else:
                self._execute_raw("PRAGMA busy_timeout = %d" % ms, ())
        if remember:
            self._busy_wait = max(0.0, seconds)

    def raw_execute(self, statement: str, params: Any = None) -> Any:
        if not (self._wrote and self._in_transaction) or self.refuse_writes:
            writes = is_write_statement(statement)
            if writes:
                self.check_writable()
            if not self._in_transaction and (
                    writes or (self.reads_begin_transaction and not self.read_only)):
                self._begin("BEGIN IMMEDIATE" if writes else "BEGIN")
            if writes:
                self._wrote = True
        args = tuple(self.to_database(params)) if params else ()
        if not self._in_transaction:  # an autocommit read: it must not keep a snapshot
            with self._use:  # run and fetch in one hold: no close() comes in between
                return FetchedCursor(self._run(statement, params, args))
        return self._run(statement, params, args)

    def commit(self, xid: Any = None) -> None:
        if self._closed:  # e.g. close() ran meanwhile: its rollback must not pass as a commit
            raise ClosedError("the connection is closed; nothing was committed")
        try:
            self._ensure_connected()
            if self._in_transaction:
                wrote = self._wrote
                self._execute_raw("COMMIT", ())
                self._in_transaction = False
                forking.ended(self)
                self._wrote = False
                if wrote:
                    self._check_file_unmoved()
        finally:
            trace("connection_commit", self, xid)

    def rollback(self, xid: Any = None) -> None:
        try:
            with self._use:
                if self._in_transaction and self._raw_connection is not None:
                    self._in_transaction = False
                    self._wrote = False
                    forking.ended(self)  # a fork waits for _use, so for this ROLLBACK too
                    if self._raw_connection.in_transaction:
                        self._execute_raw("ROLLBACK", ())
        finally:
            trace("connection_rollback", self, xid)


class SQLiteDatabase(Database):
    """A SQLite database for Storm on pysqlite3; see docs/sqlite-backend.md."""

    connection_factory = SQLiteConnection
    _exception_module = dbapi
    on_connect: ConnectHook | None = None  # run on every new connection (`run_connect_hook`)

    def __init__(self, uri: URI | SQLiteConfig | str | None = None,
                 on_connect: ConnectHook | None = None):
        if on_connect is not None and not callable(on_connect):
            raise ConfigError(f"on_connect must be a function (connection, read_only), "
                              f"not {on_connect!r}")
        if isinstance(uri, str):
            uri = URI(uri)
        config = uri if isinstance(uri, SQLiteConfig) else config_from_storm_uri(uri)
        super().__init__(uri if isinstance(uri, URI) else None)
        self.config = config
        self._filename = config.path or ":memory:"
        self._wrapper_types: dict[type, type] = {}
        self._memory_keeper: Any = None
        if config.in_memory:
            self._target: str | None = f"file:/storemgr-{uuid.uuid4().hex}?vfs=memdb"
            self._memory_keeper = self.raw_connect()
        else:
            self._target = config.path
        self.on_connect = on_connect  # after the in-memory keeper: it is never handed out

    def absolute_path(self) -> str | None:
        """The file's absolute path as a connection opened now resolves it; None in memory."""
        return None if self.config.path is None else os.path.abspath(self.config.path)

    @staticmethod
    def file_identity(path: str | None) -> tuple[int, int] | None:
        """(device, inode) of the file ``path`` leads to now; None in memory or if none."""
        if path is None:
            return None
        try:
            status = os.stat(path)
        except OSError:
            return None
        return status.st_dev, status.st_ino

    def moved_error(self, path: str | None) -> DatabaseMovedError:
        return DatabaseMovedError(
            f"the database file {path!r} was deleted, moved or replaced while this "
            f"connection had it open, so its writes do not reach {path!r} (this one is not "
            "acknowledged); close the manager and configure it again")

    def connect(self, event: Any = None, read_only: bool = False) -> SQLiteConnection:
        return SQLiteConnection(self, event, read_only=read_only)

    def raw_connect(self, read_only: bool = False) -> Any:
        """A configured pysqlite3 connection (autocommit mode: we issue BEGIN ourselves)."""
        global _last_opened
        config = self.config
        try:
            def open_raw() -> Any:
                return dbapi.connect(self._target, timeout=config.timeout, isolation_level=None,
                                     check_same_thread=False, uri=config.in_memory)
            # An idle reader per thread: SQLite's small-allocation pool is most of its heap.
            raw = connect_without_lookaside(open_raw) if read_only else open_raw()
            # Values below come from the validated config (fixed word lists), never raw URI text.
            if config.journal_mode is not None and not read_only:
                raw.execute("PRAGMA journal_mode = %s" % config.journal_mode).fetchall()
            if config.synchronous is not None:
                raw.execute("PRAGMA synchronous = %s" % config.synchronous)
            if config.foreign_keys is not None:
                raw.execute("PRAGMA foreign_keys = %s" % config.foreign_keys)
            if read_only:
                raw.execute("PRAGMA query_only = 1")
                # Reading the schema for the first PRAGMA allocated a 20-page block at the
                # default size; an empty cache frees it, and the next block is our size.
                raw.execute("PRAGMA cache_size = 0")
                raw.execute("PRAGMA cache_size = %d" % READER_CACHE_PAGES)
        except dbapi.Error as error:
            raise self.wrap_dbapi_error(error, f"cannot open {config.describe()}: ") from None
        if self.on_connect is not None:
            run_connect_hook(self.on_connect, raw, read_only, config.describe())
        _last_opened = next(_opened)
        return raw

    def wrap_dbapi_error(self, error: dbapi.Error, prefix: str = "") -> Exception:
        """The Storm exception (DB-API type and Storm type combined) for ``error``."""
        error_type = type(error)
        wrapper = self._wrapper_types.get(error_type)
        if wrapper is None:
            wrapper = next((storm_type for storm_type in storm_errors._wrapped_exception_types
                            if issubclass(error_type, getattr(dbapi, storm_type.__name__))),
                           storm_errors.Error)
            self._wrapper_types[error_type] = wrapper
        wrapped: Exception = self._wrap_exception(wrapper, error)
        if prefix:
            wrapped.args = (prefix + str(error),)
        for name in ("sqlite_errorcode", "sqlite_errorname"):
            setattr(wrapped, name, getattr(error, name, None))
        return wrapped

    def dispose(self) -> None:
        """Release the in-memory database (a no-op for a file)."""
        if self._memory_keeper is not None:
            self._memory_keeper.close()
            self._memory_keeper = None


def register() -> None:
    """Make this backend Storm's handler for ``sqlite:`` URIs."""
    register_scheme("sqlite", SQLiteDatabase)
