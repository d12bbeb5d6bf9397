"""Durability and cross-process behaviour of the writer queue, with real child processes.

- acknowledged writes survive SIGKILL of the process (repeatedly, on one file);
- queued writes are committed when the interpreter exits without ``close()``;
- another process holding the write lock: waited for within ``timeout``, or
  ``DatabaseLockedError`` after it, and the manager recovers.

Children that hold a lock use the stdlib ``sqlite3`` module in their own
process; this process only ever opens the files with pysqlite3 (two copies of
SQLite in one process break each other's POSIX locks).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from storm.exceptions import OperationalError

from _children import LineReader, child_env, spawn
from _items import rows
from sqlite_storemgr import DatabaseLockedError

NAME = "db"

pytestmark = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning")


# -- SIGKILL ------------------------------------------------------------------

WRITER_CHILD = r"""
import itertools, os, sys, threading
import sqlite_storemgr as sm

path, run = sys.argv[1], sys.argv[2]
sm.configure("main", "sqlite:" + path)          # defaults: queue, WAL, synchronous=full
sm.submit_write(lambda store: store.execute(
    "CREATE TABLE IF NOT EXISTS ack (id TEXT PRIMARY KEY, payload BLOB)")).result()
os.write(1, b"ready\n")

def insert(store, key):
    store.execute("INSERT INTO ack (id, payload) VALUES (?, randomblob(200))", (key,))

def worker(thread):
    for step in itertools.count():
        key = "%s-%d-%d" % (run, thread, step)
        sm.submit_write(insert, key).result()
        os.write(1, (key + "\n").encode())       # one write(2): a whole line or nothing

for thread in range(4):
    threading.Thread(target=worker, args=(thread,), daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.timeout(45)
def test_acknowledged_writes_survive_repeated_sigkill(tmp_path):
    path = tmp_path / "killed.db"
    acknowledged: list[str] = []
    rng = random.Random()
    for run in range(5):
        child = spawn(WRITER_CHILD, path, f"run{run}")
        reader = LineReader(child.stdout)
        try:
            ready = reader.wait_for("ready", 30)
            if not ready:
                child.kill()
                pytest.fail("child never became ready: " + child.stderr.read().decode()[-3000:])
            time.sleep(rng.uniform(0.2, 0.8))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        lines = reader.finish()
        child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        keys = [line for line in lines if line != "ready"]
        assert len(keys) > 10, f"run {run} acknowledged too few writes to prove anything"
        assert all(key.startswith(f"run{run}-") for key in keys)
        acknowledged += keys

    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    stored = {key for (key,) in rows(path, "SELECT id FROM ack")}
    missing = [key for key in acknowledged if key not in stored]
    assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    assert len(set(acknowledged)) == len(acknowledged)


# -- interpreter exit without close() -------------------------------------------

EXIT_CHILD = r"""
import sys
import sqlite_storemgr as sm

path, count = sys.argv[1], int(sys.argv[2])
sm.configure("main", "sqlite:" + path + "?batch=16")
sm.submit_write(lambda store: store.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)"))

def insert(store, key):
    store.execute("INSERT INTO t (k) VALUES (?)", (key,))

futures = [sm.submit_write(insert, key) for key in range(count)]
print(sum(future.done() for future in futures), flush=True)
# no result(), no close(): the interpreter exits now
"""


@pytest.mark.timeout(30)
def test_queued_units_commit_when_the_interpreter_exits_without_close(tmp_path):
    path = tmp_path / "exit.db"
    count = 3000
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-c", EXIT_CHILD, str(path), str(count)],
        capture_output=True, timeout=25, env=child_env())
    elapsed = time.monotonic() - started
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]
    assert finished.stderr == b""
    done_at_exit = int(finished.stdout.decode().strip())
    assert done_at_exit < count  # some were still queued when the script ended
    assert elapsed < 10
    assert rows(path, "SELECT count(*), min(k), max(k) FROM t") == [(count, 0, count - 1)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


# -- another process holds the write lock ---------------------------------------

LOCKER_CHILD = r"""
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
connection.execute("BEGIN EXCLUSIVE")
connection.execute("INSERT INTO t (k, who) VALUES (-1, 'locker')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
print("released", flush=True)
"""


def start_locker(path, hold: float):
    child = spawn(LOCKER_CHILD, path, hold)
    reader = LineReader(child.stdout)
    if not reader.wait_for("locked", 20):
        child.kill()
        pytest.fail("locker never took the lock: " + child.stderr.read().decode()[-3000:])
    return child, reader


def finish_locker(child, reader) -> None:
    assert child.wait(20) == 0, child.stderr.read().decode()[-3000:]
    assert reader.finish() == ["locked", "released"]
    child.stderr.close()


def insert(store, key: int) -> int:
    store.execute("INSERT INTO t (k, who) VALUES (?, 'manager')", (key,))
    return key


def setup_table(store) -> None:
    store.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, who TEXT NOT NULL)")


@pytest.mark.timeout(20)
def test_units_wait_for_another_processes_lock_within_timeout(make_manager, db_path):
    mgr = make_manager("queue", name=NAME, schema=setup_table, timeout=3)
    child, reader = start_locker(db_path, 0.6)
    started = time.monotonic()
    futures = [mgr.submit_write(insert, key) for key in range(20)]
    results = [future.result(timeout=10) for future in futures]
    elapsed = time.monotonic() - started
    finish_locker(child, reader)

    assert results == list(range(20))
    assert elapsed >= 0.4, "the units did not wait for the other process's lock"
    assert rows(db_path, "SELECT k, who FROM t ORDER BY k") == [(-1, "locker")] + [
        (key, "manager") for key in range(20)]
    stats = mgr.stats(NAME)
    assert stats["units_committed"] == 21
    assert stats["units_failed"] == 0
    assert stats["lock_wait_seconds"] >= 0.3


@pytest.mark.timeout(20)
def test_units_fail_with_database_locked_after_timeout_and_the_manager_recovers(
        make_manager, db_path):
    mgr = make_manager("queue", name=NAME, schema=setup_table, timeout=0.2)
    child, reader = start_locker(db_path, 1.0)
    started = time.monotonic()
    futures = [mgr.submit_write(insert, key) for key in range(10)]
    errors = [future.exception(timeout=10) for future in futures]
    elapsed = time.monotonic() - started
    still_locked = not reader.wait_for("released", 0)

    for error in errors:
        assert isinstance(error, DatabaseLockedError), repr(error)
        assert isinstance(error, OperationalError)
        assert "database is locked" in str(error)
        assert "timeout=0.2" in str(error)
        assert error.waited >= 0.15
    assert elapsed < 1.0
    assert still_locked  # they failed while the other process held the lock

    finish_locker(child, reader)
    assert mgr.submit_write(insert, 100).result(timeout=10) == 100
    assert rows(db_path, "SELECT k, who FROM t ORDER BY k") == [
        (-1, "locker"), (100, "manager")]
    stats = mgr.stats(NAME)
    assert stats["units_failed"] == 10
    assert stats["locked_errors"] >= 1
    assert stats["writer_restarts"] == 0
