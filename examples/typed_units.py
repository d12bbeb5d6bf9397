"""Units a type checker checks: ``mypy --strict examples/typed_units.py`` finds no error.

A small notes service: a Storm model, units with typed arguments, the typed
per-database handle (``sm.database()``), the module-level calls without
``name=``, the awaitable API and ``retrying()``.  Run it::

    python examples/typed_units.py [--strategy mutex]

It prints the starred notes, then every note, and exits 0; a mistake in a call (an argument of the
wrong type, one missing) is reported by mypy before the program runs
(`tests/test_typing.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from concurrent.futures import Future

from storm.locals import Int, Store, Unicode

import sqlite_storemgr as sm


class Note:
    __storm_table__ = "note"
    id = Int(primary=True)
    text = Unicode()
    stars = Int()

    def __init__(self, text: str, stars: int = 0) -> None:
        self.text = text
        self.stars = stars


def create_schema(store: Store) -> None:
    store.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
                  "stars INTEGER NOT NULL DEFAULT 0)")


def add_note(store: Store, text: str, stars: int = 0) -> int:
    """Store a note and return its id (plain values leave a unit, never Storm objects)."""
    note = Note(text, stars)
    store.add(note)
    store.flush()
    note_id: int = note.id
    return note_id


def star(store: Store, note_id: int, *, by: int = 1) -> int:
    note = store.get(Note, note_id)
    note.stars += by
    stars: int = note.stars
    return stars


def texts(store: Store, min_stars: int = 0) -> list[str]:
    return [note.text for note in store.find(Note, Note.stars >= min_stars).order_by(Note.id)]


def run(strategy: str, path: str) -> list[str]:
    """Store and star a few notes; return every note's text."""
    sm.configure("notes", f"sqlite:{path}?strategy={strategy}&timeout=2")
    notes = sm.database("notes")                      # the typed handle
    notes.submit_write(create_schema).result()
    first: Future[int] = notes.submit_write(add_note, "buy milk", stars=1)
    second_id = sm.submit_write(add_note, "call home").result()  # one database: checked too
    notes.submit_write(star, first.result(), by=2).result()

    async def add_and_read() -> list[str]:
        await notes.awrite(add_note, "water plants", 3)
        await sm.awrite(star, second_id)
        return await notes.aread(texts, min_stars=1)

    print("starred:", ", ".join(asyncio.run(add_and_read())))
    if strategy != "single":                           # single runs every read on its worker
        with notes.read() as store:                    # one snapshot in this thread
            count: int = store.find(Note).count()
        assert count == 3, count
    if strategy in ("mutex", "threadlocal"):          # retrying() needs a writable store of its own
        @notes.retrying()
        def rename(note_id: int, text: str) -> str:
            notes.get_store().get(Note, note_id).text = text  # committed by retrying()
            return text

        rename(second_id, "call home tonight")
    print(notes.stats()["units_committed"], "units committed")
    return notes.submit_read(texts).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--strategy", default="mutex",
                        choices=("queue", "single", "mutex", "threadlocal"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        try:
            for line in run(options.strategy, os.path.join(directory, "notes.db")):
                print(line)
        finally:
            sm.close()


if __name__ == "__main__":
    main()
