"""Several threads reading and writing one SQLite file through sqlite_storemgr.

Writers add notes and bump a shared counter (a read-then-write unit, the case
that makes plain Storm fail with "database is locked"); readers keep counting
the notes through their own read-only stores meanwhile.  Run:

    python examples/demo.py [strategy]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

from storm.locals import Int, Unicode

import sqlite_storemgr as sm

WRITERS, NOTES_EACH, READERS = 8, 200, 4


class Note:
    __storm_table__ = "note"
    id = Int(primary=True)
    author = Unicode()
    text = Unicode()


def create_schema(store) -> None:
    store.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, author TEXT, text TEXT)")
    store.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
    store.execute("INSERT INTO counter VALUES (1, 0)")


def add_note_and_count(store, author: str, number: int) -> int:
    note = Note()
    note.author, note.text = author, f"note {number} by {author}"
    store.add(note)
    n = store.execute("SELECT n FROM counter WHERE id = 1").get_one()[0] + 1
    store.execute("UPDATE counter SET n = ? WHERE id = 1", (n,))
    return n


def main(strategy: str = "queue") -> int:
    directory = tempfile.mkdtemp(prefix="storemgr-demo-")
    path = os.path.join(directory, "demo.db")
    manager = sm.StoreManager()
    manager.configure("main", f"sqlite:{path}?strategy={strategy}&timeout=5")
    manager.submit_write(create_schema).result()
    print(f"database {path}, strategy={strategy}: {WRITERS} writer threads x {NOTES_EACH} "
          f"notes, {READERS} reader threads")

    errors: list[BaseException] = []
    seen_by_readers: list[int] = []
    done = threading.Event()

    def writer(index: int) -> None:
        author = f"writer-{index}"
        for number in range(NOTES_EACH):
            try:
                manager.submit_write(add_note_and_count, author, number).result()
            except Exception as error:
                errors.append(error)

    def reader() -> None:
        reads = 0
        while not done.is_set():
            if strategy == "single":
                manager.submit_read(lambda store: store.find(Note).count()).result()
            else:
                manager.get_store("main").find(Note).count()
            reads += 1
            time.sleep(0.001)  # a reader that does other work between queries
        seen_by_readers.append(reads)

    started = time.perf_counter()
    readers = [threading.Thread(target=reader) for _ in range(READERS)]
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    seconds = time.perf_counter() - started

    notes, counter = manager.submit_read(
        lambda store: (store.find(Note).count(),
                       store.execute("SELECT n FROM counter").get_one()[0])).result()
    stats = manager.stats("main")
    manager.close()
    expected = WRITERS * NOTES_EACH
    print(f"{expected} units in {seconds:.2f}s ({expected / seconds:.0f} units/s), "
          f"errors: {len(errors)}")
    print(f"notes in the database: {notes} (expected {expected}); counter: {counter} "
          f"(expected {expected}, so no update was lost)")
    print(f"readers completed {sum(seen_by_readers)} reads while the writers ran")
    print("stats:", ", ".join(f"{key}={value:.3g}" if isinstance(value, float)
                               else f"{key}={value}" for key, value in stats.items()))
    ok = not errors and notes == expected and counter == expected
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
