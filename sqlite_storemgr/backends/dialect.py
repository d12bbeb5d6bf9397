"""The vocabulary every backend shares with the layers above it (backend-neutral).

Where a "database is locked" error happened (`busy_phase`, the ``BUSY_*``
phases), whether a statement writes (`is_write_statement`), and `WriteTracking`,
what the manager needs of any backend's connection.  The SQLite and the
PostgreSQL backend both build on it; the lock policies, the writer and the
integrations read it without importing either backend.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from storm.exceptions import ClosedError

from ..errors import READ_ONLY_MESSAGE, ReadOnlyStoreError

__all__ = ["BUSY_BEGIN", "BUSY_COMMIT", "BUSY_TRANSACTION", "BUSY_READ", "busy_phase",
           "is_write_statement", "WriteTracking"]

BUSY_BEGIN = "begin"              # waiting for the write lock at BEGIN IMMEDIATE
BUSY_COMMIT = "commit"            # COMMIT could not get the lock it needs
BUSY_TRANSACTION = "transaction"  # a statement inside an open transaction (stale snapshot)
BUSY_READ = "read"                # an autocommit statement

# Statements that change no data: queries, and transaction and session control.
_SKIPPED = " \t\r\n("
_WRITE_WORD = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
_NON_WRITING = ("SELECT", "VALUES", "EXPLAIN", "SHOW", "SET", "BEGIN", "COMMIT",
                "END", "ROLLBACK", "SAVEPOINT", "RELEASE")


def busy_phase(error: BaseException) -> str | None:
    """Where a "database is locked" error happened, or None if it is not one."""
    return getattr(error, "busy_phase", None)


def is_write_statement(statement: str) -> bool:
    """True unless the statement changes no data (a query, transaction control, a PRAGMA read).

    Leading comments and parentheses are skipped; a ``WITH`` statement writes
    when its body does (``WITH ... INSERT``).
    """
    text = statement.lstrip(_SKIPPED)
    while text.startswith(("--", "/*")):
        text = text.partition("\n" if text[1] == "-" else "*/")[2].lstrip(_SKIPPED)
    head = text[:9].upper()
    if head.startswith("WITH"):
        return _WRITE_WORD.search(text) is not None
    if head.startswith(_NON_WRITING):
        return False
    if head.startswith("PRAGMA"):
        return "=" in statement
    return True


class WriteTracking:
    """What the manager needs of any backend's connection: read-only refusal, write tracking.

    Mixed into the SQLite and the PostgreSQL connection; each sets ``read_only``,
    ``_wrote`` and ``in_transaction``.
    """

    read_only = False
    refuse_writes = False  # a read() block or read unit on a writable connection
    _wrote = False
    _raw_connection: Any
    _closed: bool
    if TYPE_CHECKING:
        @property
        def in_transaction(self) -> bool: ...

    @property
    def raw(self) -> Any:
        """The DB-API connection underneath; ClosedError (never None) once it was closed.

        Unguarded: a close() from another thread may land right after this
        returns.  Code beside Storm on a SQLite store goes through
        `SharedCursor` and `shared_attribute` instead, which hold the use lock.
        """
        raw = self._raw_connection
        if raw is None or self._closed:
            closed_error = getattr(self, "_closed_error", None)  # SQLite's names the file
            raise closed_error() if closed_error else ClosedError("the connection is closed")
        return raw

    def note_statement(self, statement: str) -> None:
        """Account for ``statement`` run on `raw` past raw_execute, so has_uncommitted_writes sees a write."""
        if is_write_statement(statement):
            self._wrote = True

    @property
    def has_uncommitted_writes(self) -> bool:
        """True when the open transaction has executed a statement that writes."""
        return self._wrote and self.in_transaction

    def check_writable(self) -> None:
        if self.read_only or self.refuse_writes:
            raise ReadOnlyStoreError(READ_ONLY_MESSAGE)
