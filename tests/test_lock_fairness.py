"""Fair turns at the write lock under ``threadlocal`` (sqlite_storemgr.backends.lock_wait).

With SQLite's own busy handler a thread that has waited a while polls only every
100 ms and almost always finds the lock taken again by a thread that just
committed, so under steady load one unit could wait out its whole deadline while
the other threads kept committing.  These tests keep the lock busy with units
from several threads and check that every thread still gets its turn soon, and
that the turns keep the contract: one deadline, another process waited for,
SQLite's busy wait back in place afterwards.
"""

import subprocess
import sys
import threading
import time

import pytest

from sqlite_storemgr import DatabaseLockedError
from _items import insert, names, rows
from _threads import run_threads

THREADS = 8
HOLD = 0.001      # each unit keeps the write lock this long
DURATION = 4.0    # seconds the threads keep taking the lock back-to-back
TIMEOUT = 10      # the deadline: generous, so that a slow machine fails no unit
LONGEST = 2.0     # "well under the deadline": a starved thread waits about DURATION


@pytest.fixture
def manager_on(make_manager, tmp_path):
    """manager_on(**options): `threadlocal` on fair.db, timeout TIMEOUT unless given."""
    def make(**options):
        return make_manager("threadlocal", path=tmp_path / "fair.db",
                            **{"timeout": TIMEOUT, **options})
    return make


@pytest.mark.timeout(60)
def test_no_thread_starves_while_the_others_keep_taking_the_lock(manager_on, tmp_path):
    manager = manager_on(synchronous="off")

    def unit(store, index):
        store.execute("INSERT INTO item (name) VALUES (?)", (str(index),))
        time.sleep(HOLD)  # the lock stays taken: every other thread is waiting

    waits = [[] for _ in range(THREADS)]
    errors = []
    start = threading.Barrier(THREADS)

    def worker(index):
        start.wait()
        stop = time.monotonic() + DURATION
        while time.monotonic() < stop:
            began = time.monotonic()
            error = manager.submit_write(unit, index).exception()
            waits[index].append(time.monotonic() - began)
            if error is not None:
                errors.append(error)

    try:
        run_threads(worker, THREADS)
    finally:
        manager.close()
    longest = max(max(mine) for mine in waits)
    done = [len(mine) for mine in waits]
    assert errors == []
    # SQLite's busy handler alone: some threads get 1 unit in, after waiting ~DURATION.
    assert longest < LONGEST, f"a unit waited {longest:.2f}s; units per thread: {done}"
    assert min(done) >= sum(done) / THREADS / 4, f"units per thread: {done}"


@pytest.mark.timeout(30)
def test_threads_in_line_give_up_at_their_own_deadline(manager_on, tmp_path):
    manager = manager_on(timeout=0.3)
    holding = threading.Event()
    calls = []
    outcomes = [None] * 3

    def holder():
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('holder')")
            holding.set()
            time.sleep(1.2)

    def unit(store):
        calls.append(1)

    def waiter(index):
        holding.wait(5)
        began = time.monotonic()
        error = manager.submit_write(unit).exception()
        outcomes[index] = (error, time.monotonic() - began)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        run_threads(waiter, 3)
    finally:
        thread.join(10)
        manager.close()
    for error, elapsed in outcomes:
        assert isinstance(error, DatabaseLockedError), repr(error)
        assert 0.25 <= elapsed < 1.0, elapsed
        message = str(error)
        assert message.startswith("database is locked: no write lock on ")
        assert "within timeout=0.3s (on_locked=retry); waited " in message
    assert calls == []
    assert names(tmp_path / "fair.db") == ["holder"]


HOLDER = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "c.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
    "c.execute('COMMIT')\n")


@pytest.mark.timeout(30)
def test_threads_in_line_wait_for_another_process(manager_on, tmp_path):
    manager = manager_on(timeout=3)
    path = tmp_path / "fair.db"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    outcomes = [None] * 4
    try:
        assert process.stdout.readline() == "locked\n"
        release = threading.Timer(0.4, lambda: (process.stdin.write("\n"),
                                                process.stdin.flush()))
        began = time.monotonic()
        release.start()

        def waiter(index):
            outcomes[index] = manager.submit_write(insert(f"t{index}")).result()

        run_threads(waiter, 4)
        elapsed = time.monotonic() - began
        release.join()
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        manager.close()
    assert sorted(outcomes) == ["t0", "t1", "t2", "t3"]
    assert 0.35 <= elapsed < 2.5, elapsed
    assert sorted(names(path)) == ["t0", "t1", "t2", "t3"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timeout, busy_ms", [(2, 2000), (0.3, 300)])
def test_sqlites_own_busy_wait_is_back_after_a_unit(manager_on, tmp_path, timeout, busy_ms):
    """Waiting in line switches SQLite's busy wait off; it is set back afterwards."""
    manager = manager_on(timeout=timeout)
    try:
        def other(index):
            manager.submit_write(insert(f"o{index}")).result()

        run_threads(other, 4)
        store = manager.get_store("main")
        manager.submit_write(insert("mine")).result()
        assert store.execute("PRAGMA busy_timeout").get_one() == (busy_ms,)
    finally:
        manager.close()
    assert len(rows(tmp_path / "fair.db", "SELECT id FROM item")) == 5


@pytest.mark.timeout(30)
def test_a_write_outside_units_still_waits_in_sqlites_busy_handler(manager_on, tmp_path):
    manager = manager_on(timeout=3)
    path = tmp_path / "fair.db"
    manager.submit_write(insert("unit")).result()  # this thread has waited in line once
    store = manager.get_store("main")
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n"
        release = threading.Timer(0.3, lambda: (process.stdin.write("\n"),
                                                process.stdin.flush()))
        began = time.monotonic()
        release.start()
        store.execute("INSERT INTO item (name) VALUES ('direct')")  # BEGIN IMMEDIATE waits
        store.commit()
        elapsed = time.monotonic() - began
        release.join()
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        manager.close()
    assert 0.25 <= elapsed < 2.5, elapsed
    assert names(path) == ["unit", "direct"]
