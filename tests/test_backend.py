"""The pysqlite3 backend for Storm: driver, pragmas, BEGIN modes, busy errors, read-only
connections, the shared in-memory database and `register()`.

The "other connection" in these tests is always a pysqlite3 connection: two
different SQLite libraries in one process (pysqlite3's and the stdlib's) do not
see each other's locks on the same file.
"""

import ctypes
import threading
import time

import pysqlite3
import pysqlite3.dbapi2 as dbapi
import pytest
import storm.database
import storm.exceptions
from storm.databases.sqlite import SQLite as StormSQLite
from storm.store import Store

from sqlite_storemgr import ConfigError, ReadOnlyStoreError, StoreManager
from sqlite_storemgr.backends import sqlite as backend
from sqlite_storemgr.backends.sqlite import (
    BUSY_BEGIN, BUSY_COMMIT, BUSY_TRANSACTION, SQLiteConnection, SQLiteDatabase, busy_phase)


def raw(path, timeout=0.0):
    """An independent pysqlite3 connection in autocommit mode."""
    return dbapi.connect(str(path), timeout=timeout, isolation_level=None,
                         check_same_thread=False)


def make_table(path, rows=0, journal_mode="wal"):
    connection = raw(path)
    connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
    connection.executemany("INSERT INTO t (x) VALUES (?)", [(i,) for i in range(rows)])
    connection.close()


def count(path):
    connection = raw(path, timeout=5)
    try:
        return connection.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture
def closing():
    """Collects connections, stores and databases and closes them after the test."""
    things = []
    yield things.append
    for thing in reversed(things):
        try:
            if isinstance(thing, SQLiteDatabase):
                thing.dispose()
            else:
                thing.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- driver


def test_sqlite_version_is_pysqlite3s_bundled_one(closing):
    database = SQLiteDatabase("sqlite:")
    closing(database)
    store = Store(database)
    closing(store)
    (version,) = store.execute("SELECT sqlite_version()").get_one()
    assert version == dbapi.sqlite_version
    assert tuple(int(part) for part in version.split(".")) >= (3, 36)
    connection = store._connection
    assert isinstance(connection, SQLiteConnection)
    assert isinstance(connection._raw_connection, dbapi.Connection)
    assert type(connection._raw_connection).__module__.startswith("pysqlite3")
    assert SQLiteDatabase._exception_module is dbapi
    assert pysqlite3.dbapi2 is dbapi


def test_driver_errors_are_storm_and_pysqlite3_types_at_once(closing):
    database = SQLiteDatabase("sqlite:")
    closing(database)
    connection = database.connect()
    closing(connection)
    with pytest.raises(storm.exceptions.OperationalError) as info:
        connection.execute("SELECT * FROM no_such_table")
    assert isinstance(info.value, dbapi.OperationalError)
    assert "no such table: no_such_table" in str(info.value)
    assert busy_phase(info.value) is None


# --------------------------------------------------------------------------- pragmas


def read_pragmas(store):
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    return {name: store.execute(f"PRAGMA {name}").get_one()[0] for name in names}


def pragmas(store):
    values = read_pragmas(store)
    store.rollback()
    return values


@pytest.mark.parametrize("strategy", ["threadlocal", "mutex", "queue"])
def test_pragmas_in_effect_with_the_manager_defaults(tmp_path, strategy):
    path = tmp_path / "app.db"
    with StoreManager() as manager:
        manager.configure("main", f"sqlite:{path}?strategy={strategy}&timeout=2.5")
        on_writer = manager.submit_write(read_pragmas).result(timeout=10)
        on_reader = pragmas(manager.get_store("main"))
    for values in (on_writer, on_reader):
        assert values == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                          "busy_timeout": 2500}, values
    connection = raw(path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_pragmas_set_through_options(tmp_path):
    path = tmp_path / "app.db"
    with StoreManager() as manager:
        manager.configure("main", f"sqlite:{path}?strategy=threadlocal&timeout=0"
                                  "&journal_mode=DELETE&synchronous=Off&foreign_keys=off")
        values = pragmas(manager.get_store("main"))
    assert values == {"journal_mode": "delete", "synchronous": 0, "foreign_keys": 0,
                      "busy_timeout": 0}


@pytest.mark.parametrize("mode", ["wal", "delete", "truncate", "persist", "memory", "off"])
def test_every_journal_mode(tmp_path, mode, closing):
    database = SQLiteDatabase(f"sqlite:{tmp_path / 'x.db'}?journal_mode={mode}")
    closing(database)
    store = Store(database)
    closing(store)
    assert store.execute("PRAGMA journal_mode").get_one() == (mode,)


@pytest.mark.parametrize("level, number", [("off", 0), ("normal", 1), ("full", 2), ("extra", 3)])
def test_every_synchronous_level(tmp_path, level, number, closing):
    database = SQLiteDatabase(f"sqlite:{tmp_path / 'x.db'}?synchronous={level}")
    closing(database)
    store = Store(database)
    closing(store)
    assert store.execute("PRAGMA synchronous").get_one() == (number,)


def test_a_plain_storm_uri_keeps_sqlites_own_defaults(tmp_path, closing):
    database = SQLiteDatabase(f"sqlite:{tmp_path / 'x.db'}")
    closing(database)
    store = Store(database)
    closing(store)
    assert store.execute("PRAGMA journal_mode").get_one() == ("delete",)
    assert store.execute("PRAGMA foreign_keys").get_one() == (0,)
    assert store.execute("PRAGMA busy_timeout").get_one() == (5000,)


def test_foreign_keys_are_enforced_by_default_through_the_manager(tmp_path):
    with StoreManager() as manager:
        manager.configure("main", f"sqlite:{tmp_path / 'fk.db'}?strategy=threadlocal")
        manager.submit_write(lambda store: (
            store.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)"),
            store.execute("CREATE TABLE child (id INTEGER PRIMARY KEY,"
                          " parent_id INTEGER REFERENCES parent(id))"))).result()
        future = manager.submit_write(
            lambda store: store.execute("INSERT INTO child (parent_id) VALUES (42)"))
        error = future.exception()
        assert isinstance(error, storm.exceptions.IntegrityError)
        assert "FOREIGN KEY constraint failed" in str(error)
        store = manager.get_store("main")
        assert store.execute("SELECT count(*) FROM child").get_one() == (0,)


@pytest.mark.parametrize("uri_tail", ["journal_mode=wal;DROP TABLE x",
                                      "journal_mode=wal%3BDROP%20TABLE%20x",
                                      "synchronous=full;DROP TABLE x",
                                      "foreign_keys=on;DROP TABLE x"])
def test_pragma_injection_is_rejected_and_the_table_survives(tmp_path, monkeypatch, uri_tail):
    path = tmp_path / "victim.db"
    connection = raw(path)
    connection.execute("CREATE TABLE x (id INTEGER)")
    connection.execute("INSERT INTO x VALUES (1)")
    connection.close()
    uri = f"sqlite:{path}?{uri_tail}"
    option = uri_tail.split("=")[0]

    with pytest.raises(ConfigError) as info:
        SQLiteDatabase(uri)
    assert option in str(info.value) and "DROP TABLE x" in str(info.value)

    manager = StoreManager()
    with pytest.raises(ConfigError) as info:
        manager.configure("main", uri)
    assert option in str(info.value) and "DROP TABLE x" in str(info.value)
    manager.close()

    monkeypatch.delitem(storm.database._database_schemes, "sqlite", raising=False)
    backend.register()
    with pytest.raises(ConfigError):
        storm.database.create_database(uri)

    connection = raw(path)
    assert connection.execute("SELECT id FROM x").fetchall() == [(1,)]
    connection.close()


# --------------------------------------------------------------------------- BEGIN modes


def test_a_transaction_whose_first_statement_writes_begins_immediate(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path)
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=0")
    closing(database)
    store = Store(database)
    closing(store)
    statements = []
    store._connection._raw_connection.set_trace_callback(statements.append)
    store.execute("INSERT INTO t (x) VALUES (1)")  # held open, not committed
    assert statements == ["BEGIN IMMEDIATE", "INSERT INTO t (x) VALUES (1)"]

    other = raw(path, timeout=0)
    closing(other)
    started = time.monotonic()
    with pytest.raises(dbapi.OperationalError) as info:
        other.execute("BEGIN IMMEDIATE")
    assert "database is locked" in str(info.value)
    assert time.monotonic() - started < 0.1
    store.rollback()
    other.execute("BEGIN IMMEDIATE")  # free again once the first one ended
    other.execute("ROLLBACK")
    assert count(path) == 0


def test_a_transaction_whose_first_statement_reads_begins_deferred(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path, rows=3)
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=0")
    closing(database)
    store = Store(database)
    closing(store)
    statements = []
    store._connection._raw_connection.set_trace_callback(statements.append)
    assert store.execute("SELECT count(*) FROM t").get_one() == (3,)
    assert statements == ["BEGIN", "SELECT count(*) FROM t"]
    other = raw(path, timeout=0)
    closing(other)
    other.execute("BEGIN IMMEDIATE")  # a reader holds no write lock
    other.execute("ROLLBACK")


def test_begin_write_opens_an_immediate_transaction_now(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path)
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=0")
    closing(database)
    connection = database.connect()
    closing(connection)
    connection.begin_write()
    assert connection.in_transaction
    assert connection._raw_connection.in_transaction
    other = raw(path, timeout=0)
    closing(other)
    with pytest.raises(dbapi.OperationalError, match="database is locked"):
        other.execute("BEGIN IMMEDIATE")
    connection.rollback()
    assert not connection.in_transaction
    assert not connection._raw_connection.in_transaction


# --------------------------------------------------------------------------- busy errors


def test_busy_at_begin(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path)
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=0")
    closing(database)
    holder, writer = database.connect(), database.connect()
    closing(holder)
    closing(writer)
    holder.execute("INSERT INTO t (x) VALUES (1)")

    for attempt in (lambda: writer.execute("INSERT INTO t (x) VALUES (2)"), writer.begin_write):
        started = time.monotonic()
        with pytest.raises(storm.exceptions.OperationalError) as info:
            attempt()
        elapsed = time.monotonic() - started
        assert "database is locked" in str(info.value)
        assert isinstance(info.value, dbapi.OperationalError)
        assert busy_phase(info.value) == BUSY_BEGIN == "begin"
        assert info.value.sqlite_errorcode == 5
        # Storm's own loop would sleep 0.1 s per try; this one fails at once.
        assert elapsed < 0.08, elapsed
        assert not writer._raw_connection.in_transaction
        writer.rollback()
    holder.commit()
    writer.execute("INSERT INTO t (x) VALUES (2)")
    writer.commit()
    assert count(path) == 2


def test_busy_at_commit_and_the_commit_can_be_repeated(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path, rows=1, journal_mode="delete")
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=delete&timeout=0")
    closing(database)
    reader, writer = database.connect(), database.connect()
    closing(reader)
    closing(writer)
    assert reader.execute("SELECT count(*) FROM t").get_one() == (1,)  # holds SHARED
    writer.execute("INSERT INTO t (x) VALUES (2)")
    with pytest.raises(storm.exceptions.OperationalError) as info:
        writer.commit()
    assert "database is locked" in str(info.value)
    assert busy_phase(info.value) == BUSY_COMMIT == "commit"
    # The write transaction is still open and intact: a later COMMIT goes through.
    assert writer.in_transaction and writer.has_uncommitted_writes
    reader.rollback()
    writer.commit()
    assert not writer.in_transaction
    assert count(path) == 2


def test_busy_in_a_transaction_with_a_stale_snapshot_fails_at_once(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path, rows=1)
    # A long timeout: no busy wait can help here, so none may be spent.
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=3")
    closing(database)
    stale, other = database.connect(), database.connect()
    closing(stale)
    closing(other)
    assert stale.execute("SELECT count(*) FROM t").get_one() == (1,)  # deferred read txn
    other.execute("INSERT INTO t (x) VALUES (2)")
    other.commit()
    started = time.monotonic()
    with pytest.raises(storm.exceptions.OperationalError) as info:
        stale.execute("INSERT INTO t (x) VALUES (3)")
    elapsed = time.monotonic() - started
    assert "database is locked" in str(info.value)
    assert busy_phase(info.value) == BUSY_TRANSACTION == "transaction"
    # Storm's stock backend re-runs the statement every 0.1 s until its timeout (3 s).
    assert elapsed < 0.5, elapsed
    stale.rollback()
    stale.execute("INSERT INTO t (x) VALUES (3)")
    stale.commit()
    assert count(path) == 3


def test_busy_phase_of_other_errors_is_none(tmp_path, closing):
    database = SQLiteDatabase("sqlite:")
    closing(database)
    connection = database.connect()
    closing(connection)
    with pytest.raises(storm.exceptions.OperationalError) as info:
        connection.execute("SELEC 1")
    assert "syntax error" in str(info.value)
    assert busy_phase(info.value) is None
    assert busy_phase(ValueError("database is locked")) is None


def test_a_busy_write_with_timeout_zero_fails_fast(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path)
    holder = raw(path)
    closing(holder)
    holder.execute("BEGIN IMMEDIATE")
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=0")
    closing(database)
    store = Store(database)
    closing(store)
    started = time.monotonic()
    with pytest.raises(storm.exceptions.OperationalError, match="database is locked"):
        store.execute("INSERT INTO t (x) VALUES (1)")
    assert time.monotonic() - started < 0.08
    store.rollback()


def test_a_busy_write_waits_for_sqlites_busy_timeout_only(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path)
    holder = raw(path)
    closing(holder)
    holder.execute("BEGIN IMMEDIATE")
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=0.15")
    closing(database)
    connection = database.connect()
    closing(connection)
    started = time.monotonic()
    with pytest.raises(storm.exceptions.OperationalError) as info:
        connection.execute("INSERT INTO t (x) VALUES (1)")
    elapsed = time.monotonic() - started
    assert busy_phase(info.value) == BUSY_BEGIN
    # Storm's loop would add a 0.1 s sleep and another full wait on top.
    assert 0.12 <= elapsed < 0.3, elapsed


# --------------------------------------------------------------------------- read-only


@pytest.mark.parametrize("statement", [
    "INSERT INTO t (x) VALUES (1)",
    "  update t SET x = 1",
    "DELETE FROM t",
    "CREATE TABLE u (y)",
    "DROP TABLE t",
    "PRAGMA user_version = 3",
    "WITH a AS (SELECT 1) INSERT INTO t (x) SELECT * FROM a",
    "REPLACE INTO t (id, x) VALUES (1, 9)",
])
def test_read_only_connections_refuse_writes(tmp_path, statement, closing):
    path = tmp_path / "x.db"
    make_table(path, rows=2)
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal")
    closing(database)
    connection = database.connect(read_only=True)
    closing(connection)
    with pytest.raises(ReadOnlyStoreError) as info:
        connection.execute(statement)
    assert "read-only" in str(info.value)
    assert "submit_write" in str(info.value)
    assert not connection.in_transaction
    assert not connection._raw_connection.in_transaction
    with pytest.raises(ReadOnlyStoreError):
        connection.begin_write()
    assert connection.execute("SELECT count(*) FROM t").get_one() == (2,)
    assert count(path) == 2
    check = raw(path)
    closing(check)
    assert check.execute("PRAGMA user_version").fetchone() == (0,)
    assert check.execute("SELECT x FROM t ORDER BY id").fetchall() == [(0,), (1,)]


def test_read_only_selects_leave_no_transaction_open(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path, rows=500)
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal&timeout=0")
    closing(database)
    reader = database.connect(read_only=True)
    closing(reader)
    writer = raw(path)
    closing(writer)

    result = reader.execute("SELECT x FROM t ORDER BY id")
    assert result.get_one() == (0,)  # one row fetched, 499 left unread
    assert not reader.in_transaction
    assert not reader._raw_connection.in_transaction

    writer.execute("INSERT INTO t (x) VALUES (1000)")
    busy, log, checkpointed = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0, "a reader pinned a snapshot"
    assert (log, checkpointed) == (0, 0)
    # The rest of the result is still served, and the next read sees fresh data.
    rest = result.get_all()
    assert rest[0] == (1,) and len(rest) == 499
    assert reader.execute("SELECT count(*) FROM t").get_one() == (501,)

    # Control: an ordinary connection's deferred read does pin the WAL.
    pinned = database.connect()
    closing(pinned)
    pinned.execute("SELECT x FROM t").get_one()
    writer.execute("INSERT INTO t (x) VALUES (1001)")
    assert writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 1
    pinned.rollback()
    assert writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0


def test_a_read_only_connection_can_hold_an_explicit_snapshot(tmp_path, closing):
    path = tmp_path / "x.db"
    make_table(path, rows=1)
    database = SQLiteDatabase(f"sqlite:{path}?journal_mode=wal")
    closing(database)
    reader = database.connect(read_only=True)
    closing(reader)
    writer = raw(path)
    closing(writer)
    reader.begin_read()
    assert reader.execute("SELECT count(*) FROM t").get_one() == (1,)
    writer.execute("INSERT INTO t (x) VALUES (1)")
    assert reader.execute("SELECT count(*) FROM t").get_one() == (1,)
    reader.rollback()
    assert not reader._raw_connection.in_transaction
    assert reader.execute("SELECT count(*) FROM t").get_one() == (2,)


# --------------------------------------------------------------------------- in memory


def test_in_memory_database_is_shared_by_the_connections_of_one_database(closing):
    first = SQLiteDatabase("sqlite:")
    closing(first)
    one, two = Store(first), Store(first)
    closing(one)
    closing(two)
    one.execute("CREATE TABLE t (x INTEGER)")
    one.execute("INSERT INTO t VALUES (7)")
    one.commit()
    assert two.execute("SELECT x FROM t").get_all() == [(7,)]
    two.rollback()

    second = SQLiteDatabase("sqlite::memory:")
    closing(second)
    three = Store(second)
    closing(three)
    with pytest.raises(storm.exceptions.OperationalError, match="no such table: t"):
        three.execute("SELECT x FROM t")
    three.rollback()
    three.execute("CREATE TABLE t (x INTEGER)")
    three.commit()
    assert three.execute("SELECT count(*) FROM t").get_one() == (0,)
    assert one.execute("SELECT count(*) FROM t").get_one() == (1,)


def test_in_memory_database_locks_like_a_file(closing):
    database = SQLiteDatabase("sqlite:?timeout=0")
    closing(database)
    holder, writer = database.connect(), database.connect()
    closing(holder)
    closing(writer)
    holder.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(storm.exceptions.OperationalError) as info:
        writer.execute("INSERT INTO t VALUES (1)")
    assert busy_phase(info.value) == BUSY_BEGIN
    writer.rollback()
    holder.commit()
    writer.execute("INSERT INTO t VALUES (1)")
    writer.commit()
    assert holder.execute("SELECT x FROM t").get_all() == [(1,)]


def test_in_memory_database_lives_until_dispose(closing):
    database = SQLiteDatabase("sqlite:")
    closing(database)
    connection = database.connect()
    connection.execute("CREATE TABLE t (x INTEGER)")
    connection.commit()
    connection.close()
    later = database.connect()  # no connection was open in between
    assert later.execute("SELECT count(*) FROM t").get_one() == (0,)
    later.rollback()
    later.close()
    database.dispose()
    fresh = database.connect()
    closing(fresh)
    with pytest.raises(storm.exceptions.OperationalError, match="no such table: t"):
        fresh.execute("SELECT count(*) FROM t")


# --------------------------------------------------------------------------- register


def test_register_makes_storms_create_database_use_the_backend(tmp_path, monkeypatch, closing):
    monkeypatch.delitem(storm.database._database_schemes, "sqlite", raising=False)
    stock = storm.database.create_database("sqlite:")
    assert not isinstance(stock, SQLiteDatabase)
    assert isinstance(stock, StormSQLite)

    backend.register()
    database = storm.database.create_database(f"sqlite:{tmp_path / 'r.db'}?timeout=0.5")
    closing(database)
    assert isinstance(database, SQLiteDatabase)
    assert database.config.path == str(tmp_path / "r.db")
    assert database.config.timeout == 0.5
    store = Store(database)
    closing(store)
    assert store.execute("SELECT sqlite_version()").get_one() == (dbapi.sqlite_version,)
    assert store.execute("PRAGMA busy_timeout").get_one() == (500,)
    assert isinstance(store._connection._raw_connection, dbapi.Connection)

    memory = storm.database.create_database("sqlite:")
    closing(memory)
    assert isinstance(memory, SQLiteDatabase) and memory.config.in_memory

    with pytest.raises(ConfigError) as info:
        storm.database.create_database("sqlite:x.db?bogus=1")
    assert "'bogus'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        storm.database.create_database("sqlite://somehost/x.db")
    assert "somehost" in str(info.value)


def test_read_only_stores_keep_a_small_page_cache_and_the_writer_sqlites_default(tmp_path):
    """An idle reader per thread must not keep megabytes of pages after one scan."""
    with StoreManager() as manager:
        manager.configure("main", f"sqlite:{tmp_path / 'app.db'}?strategy=queue")
        on_writer = manager.submit_write(
            lambda store: store.execute("PRAGMA cache_size").get_one()[0]).result(timeout=10)
        on_reader = manager.get_store("main").execute("PRAGMA cache_size").get_one()[0]
    assert on_reader == backend.READER_CACHE_PAGES == 8
    assert on_writer == -2000  # SQLite's default


def _sqlite_memory_used() -> int:
    current, highest = ctypes.c_int64(), ctypes.c_int64()
    _SQLITE.sqlite3_status64(0, ctypes.byref(current), ctypes.byref(highest), 0)  # MEMORY_USED
    return current.value


def _lookaside_slots_used(store) -> int:
    raw = store._connection._raw_connection
    handle = ctypes.c_void_p.from_address(id(raw) + object.__basicsize__)
    current, highest = ctypes.c_int(), ctypes.c_int()
    _SQLITE.sqlite3_db_status(handle, 0, ctypes.byref(current), ctypes.byref(highest), 0)
    return current.value  # SQLITE_DBSTATUS_LOOKASIDE_USED


_SQLITE = ctypes.CDLL(pysqlite3._sqlite3.__file__)


@pytest.mark.timeout(30)
def test_an_idle_reader_store_holds_little_of_sqlites_heap_and_the_writer_keeps_lookaside(
        tmp_path):
    """Readers run without SQLite's lookaside pool and with an 8-page cache: about 20 KiB
    each after a read, against about 147 KiB with SQLite's defaults; the writer keeps both."""
    stores, held, done = 20, threading.Barrier(21), threading.Event()
    with StoreManager() as manager:
        manager.configure("main", f"sqlite:{tmp_path / 'app.db'}?strategy=queue")
        manager.submit_write(lambda store: store.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")).result(timeout=10)
        lookaside: list[int] = []

        def reader() -> None:
            store = manager.get_store("main")
            store.execute("SELECT count(*) FROM t").get_one()
            lookaside.append(_lookaside_slots_used(store))
            held.wait()
            done.wait()

        threads = [threading.Thread(target=reader) for _ in range(stores)]
        before = _sqlite_memory_used()
        for thread in threads:
            thread.start()
        held.wait()
        per_store = (_sqlite_memory_used() - before) / stores
        done.set()
        for thread in threads:
            thread.join()
        on_writer = manager.submit_write(_lookaside_slots_used).result(timeout=10)
    assert lookaside == [0] * stores
    assert on_writer > 0
    assert per_store < 64 * 1024, per_store
