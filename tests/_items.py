"""The small `item` table several test modules share: its Storm class and a unit writing to it."""

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
