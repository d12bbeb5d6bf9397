"""Callbacks run after the real COMMIT of a store connection's transaction.

Django's ``on_commit()`` called inside a unit that Django does not own (a
``submit_write`` function, a ``write()`` block) must wait for that unit's
COMMIT, which the store manager runs (under ``queue``, on the writer, for a
whole batch).  The store's connection reports its commits and rollbacks to
Storm's tracers; a tracer is installed only while callbacks wait, so
statements pay for it only then.

Which callbacks survive is SQLite's to say: each one leaves a row in a TEMP
table inside the unit's transaction, so a unit rolled back alone (to its
savepoint, as the writer isolates a failing unit of a batch) takes its rows
with it, and after the COMMIT only the callbacks whose rows remain run.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import Any, Callable

from storm.tracer import install_tracer, remove_tracer

__all__ = ["after_commit"]

log = logging.getLogger("sqlite_storemgr.integrations.django")

Callback = Callable[[], None]
_MARKS = "temp.storemgr_on_commit"
_tokens = itertools.count(1)


class _CommitTracer:
    """A Storm tracer holding, per connection, the callbacks its transaction's end runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[int, tuple[Any, dict[int, Callback]]] = {}
        self.installed = False

    def add(self, connection: Any, token: int, callback: Callback) -> None:
        with self.lock:
            self.waiting.setdefault(id(connection), (connection, {}))[1][token] = callback
            if not self.installed:
                install_tracer(self)
                self.installed = True

    def connection_commit(self, connection: Any, xid: Any = None) -> None:
        if not connection.in_transaction:  # still in it: COMMIT failed, a rollback follows
            self._end(connection, True)

    def connection_rollback(self, connection: Any, xid: Any = None) -> None:
        self._end(connection, False)

    def _end(self, connection: Any, committed: bool) -> None:
        with self.lock:
            entry = self.waiting.pop(id(connection), None)
            if not self.waiting and self.installed:
                remove_tracer(self)
                self.installed = False
        if entry is None or not committed:
            return
        callbacks = entry[1]
        cursor = connection.shared_cursor()
        try:
            kept = [token for (token,) in cursor.execute(f"SELECT token FROM {_MARKS}").fetchall()]
            cursor.execute(f"DELETE FROM {_MARKS}")
        finally:
            cursor.close()
        for token in sorted(kept):
            callback = callbacks.get(token)
            if callback is None:
                continue
            try:
                callback()
            except Exception:  # the COMMIT is done; an error here must not undo the caller
                log.exception("an on_commit() callback failed after the commit")

    def reset(self) -> None:
        """After a fork in the child: the parent's transactions are not the child's."""
        self.lock = threading.Lock()
        self.waiting.clear()


_tracer = _CommitTracer()
os.register_at_fork(after_in_child=_tracer.reset)


def after_commit(connection: Any, callback: Callback) -> None:
    """Call ``callback()`` after the COMMIT of ``connection``'s open transaction, if that
    commits the work done so far (not if it, or the savepoint now open, rolls back)."""
    token = next(_tokens)
    cursor = connection.shared_cursor()
    try:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS storemgr_on_commit "
                       "(token INTEGER PRIMARY KEY)")
        cursor.execute(f"INSERT INTO {_MARKS} (token) VALUES (?)", (token,))
    finally:
        cursor.close()
    _tracer.add(connection, token, callback)
