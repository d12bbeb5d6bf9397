"""Calls a type checker must reject (`tests/test_typing.py`): each marked line is one mistake."""

from __future__ import annotations

from storm.store import Store

import sqlite_storemgr as sm


def add_note(store: Store, text: str) -> int:
    return 1


async def main(mgr: sm.StoreManager) -> None:
    notes = mgr.database("notes")
    notes.submit_write(add_note, 42)  # mistake: int for text
    notes.submit_write(add_note)  # mistake: text missing
    notes.submit_read(add_note, "a", extra=1)  # mistake: no parameter extra
    await notes.awrite(add_note, b"bytes")  # mistake: bytes for text
    await notes.aread(add_note, "a", "b")  # mistake: one argument too many
    mgr.submit_write(add_note, 42)  # mistake: int for text, without name=
    sm.submit_write(add_note)  # mistake: text missing, without name=
    sm.submit_read(add_note, 42)  # mistake: int for text, without name=
    await sm.awrite(add_note, 42)  # mistake: int for text, without name=
    count: str = notes.submit_write(add_note, "a").result()  # mistake: the unit returns int

    @notes.retrying()
    def rename(note_id: int, text: str) -> str:
        return text

    rename("7", "x")  # mistake: str for note_id
    rename(7)  # mistake: text missing
    mgr.submit_write(add_note, 42, name="notes")  # accepted: with name= nothing is checked
