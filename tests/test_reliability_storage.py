"""Storage faults under every strategy: a full disk, files that are not (sound) databases,
no write permission, and a database file deleted or replaced underneath.

A full disk is simulated with ``PRAGMA max_page_count`` set on the connection
that writes (a unit runs the pragma through its store; the setting lasts as
long as that connection).  Permission tests run in a child process; when the
tests run as root the child drops to ``nobody`` after importing everything, so
that the permissions bite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

import pysqlite3.dbapi2 as dbapi
import pytest
from storm.exceptions import OperationalError

from _children import LineReader, spawn
from _items import WRITER_THREAD_STRATEGIES, integrity, rows
from sqlite_storemgr import ConfigError, StoreManager, WriterBrokenError
from sqlite_storemgr.errors import DatabaseMovedError

pytestmark = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning")

NAME = "db"
FULL = "database or disk is full"


def create_table(store) -> None:
    store.execute("CREATE TABLE IF NOT EXISTS blob (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")


def insert_blob(store, key: int, size: int) -> int:
    store.execute("INSERT INTO blob (id, data) VALUES (?, randomblob(?))", (key, size))
    return key


def set_max_pages(store, pages: int) -> int:
    """Runs in a unit: limits the file of the connection that writes; returns the limit now."""
    store.execute(f"PRAGMA max_page_count = {int(pages)}")
    (limit,) = store.execute("PRAGMA max_page_count").get_one()
    return limit


def page_count(store) -> int:
    return store.execute("PRAGMA page_count").get_one()[0]


def stored_ids(path) -> set[int]:
    return {key for (key,) in rows(path, "SELECT id FROM blob")}


# -- a full disk --------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_a_full_disk_fails_the_units_that_hit_it_clearly_and_writing_resumes(
        make_manager, tmp_path, strategy):
    path = tmp_path / "full.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=create_table, batch=64)
    earlier = [mgr.submit_write(insert_blob, key, 500).result(timeout=10) for key in range(20)]
    pages = mgr.submit_write(page_count).result(timeout=10)
    limit = pages + 6
    # The limit is set on the connection that writes and stays on it, unit after unit.
    assert mgr.submit_write(set_max_pages, limit).result(timeout=10) == limit
    assert mgr.submit_write(lambda store: store.execute(
        "PRAGMA max_page_count").get_one()[0]).result(timeout=10) == limit

    # Units of 3 KB (an overflow page each) from several threads, unawaited, so that
    # under queue/single the ones that hit the limit share batches with ones that fit.
    futures: dict[int, object] = {}
    lock = threading.Lock()

    def submitter(index: int) -> None:
        if strategy in ("mutex", "threadlocal"):  # every thread writes on its own connection
            assert mgr.submit_write(set_max_pages, limit).result() == limit
        for step in range(15):
            key = 1000 + index * 100 + step
            future = mgr.submit_write(insert_blob, key, 3000 if step % 3 else 100)
            with lock:
                futures[key] = future

    threads = [threading.Thread(target=submitter, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    succeeded, failed = set(), set()
    for key, future in futures.items():
        error = future.exception(timeout=20)
        if error is None:
            succeeded.add(key)
        else:
            failed.add(key)
            assert isinstance(error, OperationalError), repr(error)
            assert FULL in str(error), repr(error)  # the unit's own error, nothing vaguer
    assert failed, "the page limit was never reached"
    assert succeeded, "no unit fitted in the space left"
    # Acknowledged units are there, the failed ones left no trace, earlier writes intact.
    assert stored_ids(path) == set(earlier) | succeeded
    assert integrity(path) == [("ok",)]

    # Space is freed (the limit raised on the same connection): writing resumes.
    assert mgr.submit_write(set_max_pages, 1_000_000).result(timeout=10) == 1_000_000
    retried = [mgr.submit_write(insert_blob, key, 3000) for key in sorted(failed)]
    assert [future.result(timeout=10) for future in retried] == sorted(failed)
    assert stored_ids(path) == set(earlier) | succeeded | failed
    assert integrity(path) == [("ok",)]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_a_full_disk_in_a_write_block_rolls_the_block_back(make_manager, tmp_path, strategy):
    path = tmp_path / "full_block.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=create_table)
    mgr.submit_write(insert_blob, 1, 10).result(timeout=10)
    pages = mgr.submit_write(page_count).result(timeout=10)
    mgr.submit_write(set_max_pages, pages + 1).result(timeout=10)
    outcome = {}

    def block() -> None:
        try:
            with mgr.write(NAME) as store:
                insert_blob(store, 2, 10)
                insert_blob(store, 3, 20_000)  # five pages: over the limit
        except Exception as error:  # noqa: BLE001 - checked below
            outcome["error"] = error

    thread = threading.Thread(target=block)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert FULL in str(outcome["error"])
    assert stored_ids(path) == {1}
    assert mgr.submit_write(insert_blob, 4, 10).result(timeout=10) == 4
    assert stored_ids(path) == {1, 4}


# -- files that are not (sound) databases --------------------------------------------

def not_a_database(path) -> bytes:
    data = b"this is certainly not an SQLite database\n" * 200
    path.write_bytes(data)
    return data


def blob_database(path) -> bytearray:
    """A sound WAL-mode database of 300 blobs, written and closed; its bytes."""
    connection = dbapi.connect(str(path))
    connection.execute("PRAGMA journal_mode = wal")  # as the manager would set it
    connection.execute("CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    connection.executemany("INSERT INTO blob (data) VALUES (?)", [(b"x" * 100,)] * 300)
    connection.commit()
    connection.close()
    return bytearray(path.read_bytes())


def corrupt_schema(path) -> bytes:
    data = blob_database(path)
    data[100:4096] = b"\xa5" * (4096 - 100)  # page 1: the schema's b-tree
    path.write_bytes(bytes(data))
    return bytes(data)


def corrupt_table(path) -> bytes:
    data = blob_database(path)
    assert len(data) >= 4 * 4096
    data[2 * 4096:3 * 4096] = b"\xa5" * 4096  # a page of the table
    path.write_bytes(bytes(data))
    return bytes(data)


def outcome_of(call) -> BaseException | None:
    """The error of a submit: raised at once or held by the future."""
    try:
        return call().exception(timeout=10)
    except Exception as error:  # noqa: BLE001
        return error


@pytest.mark.timeout(30)
@pytest.mark.parametrize("spoil", [not_a_database, corrupt_schema, corrupt_table],
                         ids=["not-a-database", "corrupt-schema", "corrupt-table"])
def test_a_bad_file_gives_a_clear_error_naming_it_at_first_use(
        make_manager, tmp_path, strategy, spoil):
    path = tmp_path / "bad.db"
    before = spoil(path)
    mgr = make_manager(strategy, name=NAME, path=path, schema=None, timeout=1)

    def count(store) -> int:
        return store.execute("SELECT count(*), sum(length(data)) FROM blob").get_one()[0]

    # Under every strategy the submit itself returns; its future holds the error.
    write_error = mgr.submit_write(count).exception(timeout=10)
    read_error = mgr.submit_read(count).exception(timeout=10)
    for error in (write_error, read_error):
        assert error is not None, "a bad file was used without an error"
        assert str(path) in str(error), repr(error)
        assert any(words in str(error) for words in (
            "not a database", "malformed", "corrupt")), repr(error)
        if isinstance(error, WriterBrokenError):
            assert str(path) in str(error.__cause__)
    # Again: the same clear error, no hang; and the file was left as it was.
    assert str(path) in str(outcome_of(lambda: mgr.submit_write(count)))
    started = time.monotonic()
    mgr.close(timeout=10)
    assert time.monotonic() - started < 5
    assert path.read_bytes() == before


# -- no permission to write -------------------------------------------------------------

@pytest.mark.timeout(20)
def test_a_path_whose_parent_is_a_regular_file_is_a_config_error(tmp_path):
    parent = tmp_path / "plain-file"
    parent.write_text("not a directory")
    mgr = StoreManager()
    with pytest.raises(ConfigError) as caught:
        mgr.configure(NAME, f"sqlite:{parent}/app.db")
    assert str(parent) in str(caught.value)
    assert parent.read_text() == "not a directory"
    mgr.close()


@pytest.mark.timeout(20)
def test_a_path_that_cannot_be_created_even_by_root_fails_clearly(
        make_manager, tmp_path, strategy):
    # Nobody may create files in /proc/self, root included; and a directory is no file.
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    for path in ("/proc/self/storemgr-test.db", str(directory)):
        mgr = make_manager(strategy, name=NAME, path=path, schema=None, timeout=1)
        error = outcome_of(lambda: mgr.submit_write(create_table))
        assert error is not None
        assert path in str(error), repr(error)
        assert "unable to open database file" in str(error), repr(error)
        assert path in str(outcome_of(lambda: mgr.submit_write(create_table)))
    assert os.listdir(directory) == []


PERMISSION_CHILD = r"""
import os, sys
import sqlite_storemgr
from sqlite_storemgr import StoreManager

if os.geteuid() == 0:                       # everything is imported: now let permissions bite
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

def insert(store, key):
    store.execute("INSERT INTO t (k) VALUES (?)", (key,))
    return key

def attempt(label, call):
    try:
        error = call().exception(timeout=10)
    except Exception as raised:
        error = raised
    if isinstance(error, sqlite_storemgr.WriterBrokenError):
        error = error.__cause__
    print("%s %s" % (label, "ok" if error is None else "error " + str(error)), flush=True)

strategy, new_path, readonly_path = sys.argv[1:4]
for label, path in (("newdir", new_path), ("rofile", readonly_path)):
    mgr = StoreManager()
    mgr.configure("db", "sqlite:%s?strategy=%s&timeout=1" % (path, strategy))
    attempt(label + "-write", lambda: mgr.submit_write(lambda store: store.execute(
        "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)") and insert(store, 1)))
    print("waiting", flush=True)
    sys.stdin.readline()                    # the test gives the permission back
    attempt(label + "-again", lambda: mgr.submit_write(lambda store: store.execute(
        "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)") and insert(store, 2)))
    mgr.close()
print("done", flush=True)
"""


@pytest.mark.timeout(30)
def test_no_write_permission_fails_clearly_and_recovers_when_given_back(strategy):
    # A directory every user can reach (pytest's tmp_path is private to its user).
    base = tempfile.mkdtemp(prefix="storemgr-perm-")
    try:
        os.chmod(base, 0o777)
        read_only_dir = os.path.join(base, "read-only-dir")
        os.mkdir(read_only_dir)
        os.chmod(read_only_dir, 0o555)
        new_path = os.path.join(read_only_dir, "new.db")
        readonly_path = os.path.join(base, "read-only.db")
        connection = dbapi.connect(readonly_path)
        connection.execute("PRAGMA journal_mode = wal")
        connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        connection.commit()
        connection.close()
        os.chmod(readonly_path, 0o444)
        if os.geteuid() == 0:
            os.chown(readonly_path, 0, 0)

        child = spawn(PERMISSION_CHILD, strategy, new_path, readonly_path, stdin=True)
        reader = LineReader(child.stdout)
        try:
            seen, line = reader.next_line(0, "newdir-write ", 20)
            assert line.startswith("newdir-write error "), line
            assert new_path in line and "unable to open database file" in line, line
            seen, _ = reader.next_line(seen, "waiting", 10)
            os.chmod(read_only_dir, 0o777)
            child.stdin.write(b"\n")
            child.stdin.flush()
            seen, line = reader.next_line(seen, "newdir-again ", 20)
            assert line == "newdir-again ok", line

            seen, line = reader.next_line(seen, "rofile-write ", 20)
            assert line.startswith("rofile-write error "), line
            assert readonly_path in line and "readonly database" in line, line
            seen, _ = reader.next_line(seen, "waiting", 10)
            # Given back on the file and on the -shm SQLite created with the file's mode.
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(readonly_path + suffix):
                    os.chmod(readonly_path + suffix, 0o666)
            child.stdin.write(b"\n")
            child.stdin.flush()
            seen, line = reader.next_line(seen, "rofile-again ", 20)
            assert line == "rofile-again ok", line
            reader.next_line(seen, "done", 20)
            assert child.wait(10) == 0, child.stderr.read().decode()[-3000:]
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert rows(new_path, "SELECT k FROM t") == [(2,)]
        assert rows(readonly_path, "SELECT k FROM t") == [(2,)]  # the refused write left nothing
    finally:
        for directory, _, _ in os.walk(base):
            os.chmod(directory, 0o777)
        shutil.rmtree(base)


@pytest.mark.timeout(20)
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions in this process; "
                    "test_no_write_permission_fails_clearly_and_recovers_when_given_back "
                    "covers the same path in a child that drops to nobody")
def test_a_read_only_file_in_this_process(make_manager, tmp_path):
    path = tmp_path / "ro.db"
    mgr = make_manager("threadlocal", name=NAME, path=path, schema=None)
    mgr.submit_write(lambda store: store.execute("CREATE TABLE t (k)")).result()
    mgr.close()
    os.chmod(path, 0o444)
    mgr = make_manager("threadlocal", name=NAME, path=path, schema=None)
    error = mgr.submit_write(lambda store: store.execute("INSERT INTO t VALUES (1)")).exception()
    assert str(path) in str(error) and "readonly database" in str(error)


# -- the database file deleted or replaced underneath ------------------------------------

def setup_numbers(store) -> None:
    store.execute("CREATE TABLE IF NOT EXISTS number (n INTEGER PRIMARY KEY)")


def insert_number(store, n: int) -> int:
    store.execute("INSERT INTO number (n) VALUES (?)", (n,))
    return n


@pytest.mark.timeout(30)
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_underneath_is_detected(
        make_manager, tmp_path, strategy, journal_mode, how):
    path = tmp_path / "moved.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=setup_numbers,
                       journal_mode=journal_mode, timeout=1)
    assert mgr.submit_write(insert_number, 1).result(timeout=10) == 1
    if how == "deleted":
        os.unlink(path)
    else:
        other = tmp_path / "other.db"
        connection = dbapi.connect(str(other))
        connection.execute("CREATE TABLE number (n INTEGER PRIMARY KEY)")
        connection.execute("INSERT INTO number VALUES (100)")
        connection.commit()
        connection.close()
        # Replaced the careful way: SQLite's -wal and -shm files belong to the old file
        # (left in place, the -wal's pages would show through in the new one).
        os.replace(other, path)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.unlink(f"{path}{suffix}")

    # Writes through the connection opened before are never acknowledged: they would
    # land in the old file, which is gone from the path.
    for n in (2, 3):
        error = mgr.submit_write(insert_number, n).exception(timeout=10)
        assert isinstance(error, DatabaseMovedError), repr(error)
        assert isinstance(error, OperationalError)
        assert str(path) in str(error)
        assert "deleted, moved or replaced" in str(error)
    mgr.close(timeout=10)
    if how == "replaced":
        assert rows(path, "SELECT n FROM number") == [(100,)]
    # A manager configured afresh works on whatever the path holds now.
    fresh = make_manager(strategy, name=NAME, path=path, schema=setup_numbers,
                         journal_mode=journal_mode)
    assert fresh.submit_write(insert_number, 4).result(timeout=10) == 4
    expected = [(4,)] if how == "deleted" else [(4,), (100,)]
    assert rows(path, "SELECT n FROM number ORDER BY n") == expected


@pytest.mark.timeout(20)
def test_a_relative_path_and_a_later_chdir_is_not_taken_for_a_move(
        make_manager, tmp_path, monkeypatch, strategy):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    mgr = make_manager(strategy, name=NAME, path="relative.db", schema=setup_numbers)
    monkeypatch.chdir(tmp_path / "elsewhere")  # connections opened before keep their file
    assert mgr.submit_write(insert_number, 1).result(timeout=10) == 1
    assert rows(tmp_path / "relative.db", "SELECT n FROM number") == [(1,)]
