"""What several test modules share: the small `item` table (its Storm class and a unit
writing to it) and reading a database file through a connection of its own."""

import pysqlite3.dbapi2 as dbapi
from storm.locals import Int, Unicode


class Item:
    __storm_table__ = "item"
    id = Int(primary=True)
    name = Unicode()


class Boom(Exception):
    """The deliberate failure of a test unit."""


def insert(name):
    """A unit that inserts one item named ``name`` and returns the name."""
    def unit(store):
        store.execute("INSERT INTO item (name) VALUES (?)", (name,))
        return name
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
