"""What many test modules share: the `item` table (its Storm class, its schema, units
writing to it), the two deliberate failures, the strategy groups, and reading a database
file through a connection of its own."""

from __future__ import annotations

from typing import Any, Callable

import pysqlite3.dbapi2 as dbapi
from storm.locals import Int, Unicode

from sqlite_storemgr.uri import STRATEGIES

# Where writes run: on a writer thread (`queue`, `single`) or in the caller's thread.
WRITER_THREAD_STRATEGIES = tuple(s for s in STRATEGIES if s in ("queue", "single"))
CALLER_THREAD_STRATEGIES = tuple(s for s in STRATEGIES if s not in WRITER_THREAD_STRATEGIES)

ITEM_TABLE = "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"


class Item:
    __storm_table__ = "item"
    id = Int(primary=True)
    name = Unicode()


class Boom(Exception):
    """The deliberate failure of a test unit."""


class WriterKiller(BaseException):
    """Not an Exception: raised by a unit, it ends the writer thread (or any thread)."""


def create_items(store: Any) -> None:
    """A unit creating the `item` table."""
    store.execute(ITEM_TABLE)


def create_unique_items(store: Any) -> None:
    """A unit creating the `item` table with unique names (a second one: IntegrityError)."""
    store.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")


def insert(name: str) -> Callable[[Any], str]:
    """A unit that inserts one item named ``name`` and returns the name."""
    def unit(store: Any) -> str:
        store.execute("INSERT INTO item (name) VALUES (?)", (name,))
        return name
    return unit


def failing(name: str) -> Callable[[Any], None]:
    """A unit that inserts one item named ``name``, then raises Boom(name)."""
    def unit(store: Any) -> None:
        store.execute("INSERT INTO item (name) VALUES (?)", (name,))
        raise Boom(name)
    return unit


def rows(path, sql: str, params: tuple = ()) -> list[tuple]:
    """Query the file through a pysqlite3 connection of its own (not the manager's)."""
    connection = dbapi.connect(str(path), timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def names(path) -> list[str]:
    """The names of the items committed to the file, in id order."""
    return [name for (name,) in rows(path, "SELECT name FROM item ORDER BY id")]


def integrity(path) -> list[tuple]:
    """What ``PRAGMA integrity_check`` says of the file."""
    return rows(path, "PRAGMA integrity_check")
