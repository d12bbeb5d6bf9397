"""Storm's PostgreSQL backend with the interface the manager drives (for scale-out).

The strategies, lock policies and units are the same as on SQLite; what
"locked" means differs: a serialization failure, a deadlock, or a lock not had
within ``lock_timeout`` (set from ``timeout``).  Each is raised with a
``busy_phase`` so the policy rolls back and re-runs the whole unit.  Outside a
unit every connection reads in autocommit mode (read-only ones also with
``default_transaction_read_only``), so a pooled thread never sits idle in a
transaction; a write, a unit or ``read()`` (one snapshot) begins one.
"""

from __future__ import annotations

import itertools
from typing import Any

from storm.database import STATE_RECONNECT
from storm.databases.postgres import Postgres, PostgresConnection
from storm.exceptions import ClosedError, DatabaseModuleError, Error
from storm.uri import URI

from .dialect import BUSY_COMMIT, BUSY_TRANSACTION, WriteTracking, is_write_statement
from ..errors import ConfigError
from ..uri import PostgresConfig

# serialization_failure, deadlock_detected, lock_not_available (lock_timeout)
LOCKED_CODES = ("40001", "40P01", "55P03")
_IDLE = 0  # psycopg2.extensions.TRANSACTION_STATUS_IDLE


class ManagedPostgresConnection(WriteTracking, PostgresConnection):
    """A Storm PostgreSQL connection that classifies "locked" errors and knows read-only mode."""

    reads_begin_transaction = True  # Storm's rule; the manager's stores turn it off outside units
    _begin_next = False  # begin_write()/begin_read() were called: the next statement begins one

    def __init__(self, database: "PostgresDatabase", event: Any = None, read_only: bool = False):
        self.read_only = read_only
        self._versions = itertools.count()
        super().__init__(database, event)
        self._configure_session()

    def _configure_session(self) -> None:
        """Session settings, applied on connect and again after a reconnect."""
        raw = self._raw_connection
        if self.read_only:
            raw.autocommit = True
        cursor = raw.cursor()
        if self.read_only:
            cursor.execute("SET default_transaction_read_only = on")
        cursor.execute("SET lock_timeout = %s", (_milliseconds(self._database.config.timeout),))
        if not self.read_only:
            raw.commit()

    def _ensure_connected(self) -> None:
        reconnecting = self._state == STATE_RECONNECT
        super()._ensure_connected()
        if reconnecting:
            self._configure_session()

    @property
    def in_transaction(self) -> bool:
        raw = self._raw_connection
        return raw is not None and not raw.closed and raw.info.transaction_status != _IDLE

    def begin_write(self) -> None:
        """PostgreSQL opens the transaction at the next statement; nothing to wait for here."""
        self.check_writable()
        self._wrote = False
        self._begin_next = True

    def begin_read(self) -> None:
        if self.read_only:
            self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", noresult=True)
        else:
            self._begin_next = True

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a statement waits for a row or table lock (``lock_timeout``)."""
        idle = not self.in_transaction
        self.execute("SET lock_timeout = %d" % _milliseconds(seconds), noresult=True)
        if idle and not self.read_only:
            self._raw_connection.commit()

    def savepoint(self, name: str) -> None:
        self.execute(f"SAVEPOINT {name}", noresult=True)

    def release_savepoint(self, name: str) -> None:
        self.execute(f"RELEASE SAVEPOINT {name}", noresult=True)

    def rollback_to_savepoint(self, name: str) -> None:
        self.execute(f"ROLLBACK TO SAVEPOINT {name}", noresult=True)
        self.execute(f"RELEASE SAVEPOINT {name}", noresult=True)

    def data_version(self) -> int:
        """No cheap change counter on PostgreSQL: every read looks afresh."""
        return next(self._versions)

    def raw_execute(self, statement: str, params: Any = None) -> Any:
        writes = is_write_statement(statement)
        if writes:
            self.check_writable()
        if not self.in_transaction:
            self._wrote = False
            if not self.read_only:  # psycopg2 begins a transaction at the next statement unless
                self._raw_connection.autocommit = not (
                    writes or self.reads_begin_transaction or self._begin_next)
        try:
            cursor = super().raw_execute(statement, params)
        except Error as error:
            _classify(error, BUSY_TRANSACTION)
            raise
        if writes:
            self._wrote = True
        return cursor

    def commit(self, xid: Any = None) -> None:
        if self._closed:  # e.g. close() ran meanwhile: its rollback must not pass as a commit
            raise ClosedError("the connection is closed; nothing was committed")
        try:
            super().commit(xid)
        except Error as error:
            _classify(error, BUSY_COMMIT)
            raise
        self._wrote = self._begin_next = False

    def rollback(self, xid: Any = None) -> None:
        if self.read_only and self.in_transaction:
            self.execute("ROLLBACK", noresult=True)
        super().rollback(xid)
        self._wrote = self._begin_next = False


def _classify(error: Error, phase: str) -> None:
    # Storm keeps psycopg2's code as ``_pgcode`` (its ``pgcode`` accessor is broken).
    code = getattr(error, "_pgcode", None) or getattr(error.__cause__, "pgcode", None)
    if code in LOCKED_CODES:
        error.busy_phase = phase


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


PSYCOPG2_MISSING = "postgres:// URIs need psycopg2: pip install 'sqlite_storemgr[postgres]'"


def psycopg2_module() -> Any:
    """The psycopg2 module, or `ConfigError` saying how to install it (an optional extra)."""
    try:
        import psycopg2
    except ImportError:
        raise ConfigError(PSYCOPG2_MISSING) from None
    return psycopg2


class PostgresDatabase(Postgres):
    """A PostgreSQL database for the manager, from a validated `PostgresConfig`."""

    connection_factory = ManagedPostgresConnection

    def __init__(self, config: PostgresConfig):
        try:
            super().__init__(URI(config.storm_uri))
        except DatabaseModuleError:
            raise ConfigError(PSYCOPG2_MISSING) from None
        self.config = config

    def connect(self, event: Any = None, read_only: bool = False) -> ManagedPostgresConnection:
        return ManagedPostgresConnection(self, event, read_only=read_only)

    def dispose(self) -> None:
        """Nothing to release: connections close with their stores."""
