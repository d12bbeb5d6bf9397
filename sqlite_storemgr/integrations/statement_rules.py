"""The store's transaction rules for a statement that code beside Storm runs on its connection.

SQLAlchemy's engine and Django's engine send their own SQL down a store's
connection; before it runs, the store's rules apply as for Storm's own
statements (thread check, zope join, read-only refusal, Storm's pending
changes flushed, a transaction begun where the store would begin one), and
after a statement that changed data Storm's object cache is invalidated.
"""

from __future__ import annotations

from ..backends.dialect import is_write_statement
from ..errors import ReadOnlyStoreError
from ..stores import ManagedStore

__all__ = ["changes_data", "before_statement", "after_statement"]


def _head(statement: str, length: int) -> str:
    return statement.lstrip(" \t\r\n(")[:length].upper()


def changes_data(statement: str) -> bool:
    """Whether a statement writes data; ``PRAGMA x = y`` sets the connection, it writes none."""
    return is_write_statement(statement) and _head(statement, 6) != "PRAGMA"


def before_statement(store: ManagedStore, statement: str, writes: bool,
                     where_to_write: str) -> None:
    """Apply the store's rules before ``statement`` runs on ``store``'s connection.

    ``writes``: whether the caller counts it as a write; a write on a store
    that is read-only here is refused with `ReadOnlyStoreError`, whose message
    ends with ``where_to_write`` (where such writes belong).  A PRAGMA never
    opens a read transaction: SQLite ignores some pragmas inside one.
    """
    store.check_thread()
    store.emit_register_transaction()  # a zope transaction joins, as for Storm's statements
    connection = store.connection
    if writes and (connection.read_only or connection.refuse_writes):
        raise ReadOnlyStoreError(f"store {store.name!r} is read-only here: {where_to_write}")
    if store._dirty:
        store.flush()
    if not connection.in_transaction and not connection.read_only:
        if writes:
            connection.begin_write()
        elif connection.reads_begin_transaction and _head(statement, 6) != "PRAGMA":
            connection.begin_read()  # inside a unit; outside, reads autocommit
    connection.note_statement(statement)  # has_uncommitted_writes: the nesting rules see it


def after_statement(store: ManagedStore, statement: str, writes: bool) -> None:
    """Invalidate Storm's cache after a write or a ``ROLLBACK TO``: its objects may be stale."""
    if writes or _head(statement, 11) == "ROLLBACK TO":
        store.invalidate()
