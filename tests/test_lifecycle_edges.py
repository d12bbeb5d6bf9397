"""Edges found in review: close() racing a thread's own commit, close() inside a write()
block, close() while other threads read through their stores, statements that only look
like reads or writes, a writer restarted mid-death."""

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from storm.exceptions import ClosedError

from _items import CALLER_THREAD_STRATEGIES, WRITER_THREAD_STRATEGIES, WriterKiller, insert, names
from sqlite_storemgr import ConfigError, ReadOnlyStoreError
from sqlite_storemgr.backends.dialect import is_write_statement


@pytest.mark.timeout(20)
@pytest.mark.parametrize("strategy", CALLER_THREAD_STRATEGIES)
def test_a_commit_after_close_raises_instead_of_reporting_success(make_manager, db_path, strategy):
    manager = make_manager(strategy)
    store = manager.get_store("main")
    store.execute("INSERT INTO item (name) VALUES ('pending')")
    manager.close()  # closes every thread's stores, rolling this one back
    with pytest.raises(ClosedError, match="nothing was committed"):
        store.commit()
    assert names(db_path) == []


@pytest.mark.timeout(20)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_close_inside_a_write_block_does_not_hang(make_manager, db_path, strategy):
    manager = make_manager(strategy)
    with manager.write("main") as store:
        store.execute("INSERT INTO item (name) VALUES ('in block')")
        manager.close()  # the writer waits for this block: close() must not wait for it
    assert names(db_path) == ["in block"]


CLOSE_DURING_READS = textwrap.dedent("""
    import json, sys, threading, time
    from sqlite_storemgr import StoreManager
    path, strategy, via = sys.argv[1], sys.argv[2], sys.argv[3]
    kinds, reads = {}, 0  # error type name (and whether it names the file): first message
    QUERY = "SELECT count(*) FROM item a, item b WHERE a.id < 80"
    for _ in range(15):
        manager = StoreManager()
        manager.configure("main", f"sqlite:{path}?strategy={strategy}")
        manager.submit_write(lambda store: store.execute(
            "CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT)")).result()
        manager.submit_write(lambda store: store.execute(
            "INSERT INTO item (name) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
            "SELECT i + 1 FROM n WHERE i < 500) SELECT 'x' FROM n")).result()
        stop = threading.Event()
        if via == "sqlalchemy":
            from sqlalchemy import text
            from sqlite_storemgr.integrations.sqlalchemy import engine_for
            engine = engine_for(manager, "main")

            def query():
                with engine.connect() as conn:
                    conn.execute(text(QUERY)).fetchall()
        else:
            def query():
                manager.get_store("main").execute(QUERY).get_one()

        def reader():
            global reads
            while not stop.is_set():
                try:  # a slow query: close() lands while SQLite works without the GIL
                    query()
                    reads += 1
                except Exception as error:
                    kind = type(error).__name__
                    if kind == "ClosedError" and path not in str(error):
                        kind += " not naming the file"
                    kinds.setdefault(kind, repr(error)[:300])
                    time.sleep(0.001)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.02)
        manager.close()
        time.sleep(0.005)
        stop.set()
        for thread in threads:
            thread.join()
    print(json.dumps({"kinds": kinds, "reads": reads}))
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy, via", [
    ("queue", "store"), ("threadlocal", "store"), ("mutex", "store"),
    ("queue", "sqlalchemy"), ("threadlocal", "sqlalchemy")])
def test_close_while_other_threads_read_through_their_stores(tmp_path, strategy, via):
    """close() closes other threads' connections while they run queries on them.

    pysqlite3 lets go of the GIL inside SQLite; a connection closed in that
    window used to crash the interpreter (SIGSEGV), so the race runs in a child.
    Readers must instead get a clear error once their store is closed: Storm's
    ClosedError naming the file, whichever way they reach the connection (through
    SQLAlchemy: its connect-time setup too, see test_sqlalchemy_engine.py), or
    ManagerClosedError once the manager refuses them a store.
    """
    child = subprocess.run(
        [sys.executable, "-c", CLOSE_DURING_READS, str(tmp_path / "race.db"), strategy, via],
        capture_output=True, text=True, timeout=50)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    report = json.loads(child.stdout)
    assert report["reads"] > 0
    assert set(report["kinds"]) <= {"ClosedError", "ManagerClosedError"}, report


@pytest.mark.timeout(60)
def test_close_first_frees_the_write_lock_another_thread_waits_for(make_manager, tmp_path):
    """The closing thread's own store goes first: it holds the lock the other one waits on.

    Several rounds, since which thread's stores a close() would reach first
    otherwise depends on set order.
    """
    for round_ in range(6):
        path = tmp_path / f"{round_}.db"
        manager = make_manager("threadlocal", path=path, timeout=3)
        mine = manager.get_store("main")
        mine.execute("INSERT INTO item (name) VALUES ('mine, uncommitted')")
        waiting = threading.Event()

        def other():
            store = manager.get_store("main")
            waiting.set()
            try:
                store.execute("INSERT INTO item (name) VALUES ('other')")  # waits for our lock
            except Exception:  # noqa: BLE001 - closed under it: either outcome is fine here
                pass
        thread = threading.Thread(target=other)
        thread.start()
        assert waiting.wait(5)
        time.sleep(0.1)  # the other thread is in SQLite's busy wait by now
        began = time.monotonic()
        manager.close(timeout=0.2)
        assert time.monotonic() - began < 1.5, round_  # not the other thread's 3 s busy wait
        thread.join(10)
        assert names(path) == []  # neither uncommitted insert survived


@pytest.mark.parametrize("statement, writes", [
    ("-- a tag\nSELECT 1", False),
    ("/* hint */ SELECT 1", False),
    ("(SELECT 1) UNION (SELECT 2)", False),
    ("WITH a AS (SELECT updated_at FROM t) SELECT * FROM a", False),
    ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", True),
    ("with a as (select 1) delete from t", True),
    ("PRAGMA user_version = 3", True),
    ("PRAGMA data_version", False),
    ("UPDATE t SET x = 1", True),
])
def test_statement_classification(statement, writes):
    assert is_write_statement(statement) is writes


@pytest.mark.timeout(20)
def test_commented_reads_work_on_read_only_stores_and_with_writes_are_refused(make_manager):
    manager = make_manager("queue")
    store = manager.get_store("main")
    assert store.execute("-- dashboard\nSELECT count(*) FROM item").get_one() == (0,)
    with pytest.raises(ReadOnlyStoreError):
        store.execute("WITH x AS (SELECT 'w') INSERT INTO item (name) SELECT * FROM x")


@pytest.mark.timeout(20)
def test_a_with_insert_is_not_thrown_away_by_the_next_unit(make_manager, db_path):
    manager = make_manager("threadlocal")
    store = manager.get_store("main")
    store.execute("WITH x AS (SELECT 'loose') INSERT INTO item (name) SELECT * FROM x")
    manager.submit_write(lambda s: s.execute("INSERT INTO item (name) VALUES ('unit')")).result()
    store.commit()  # the unit joined the caller's transaction instead of rolling it back
    assert names(db_path) == ["loose", "unit"]


@pytest.mark.timeout(30)
def test_a_writer_restarted_while_the_old_one_dies_keeps_its_store(make_manager, db_path):
    manager = make_manager("queue")
    release = threading.Event()

    def killer(store):
        release.wait(5)
        raise WriterKiller("writer dies")

    dying = manager.submit_write(killer)
    queued = [manager.submit_write(lambda s: None) for _ in range(2000)]  # a long _die
    release.set()
    assert isinstance(dying.exception(timeout=10), WriterKiller)
    for future in queued:
        future.exception(timeout=10)

    def nested(store):  # needs the new writer's own store, not a wiped one
        manager.submit_write(
            lambda inner: inner.execute("INSERT INTO item (name) VALUES ('after')")).result()
        return "joined"

    assert manager.submit_write(nested).result(timeout=10) == "joined"
    assert names(db_path) == ["after"]


@pytest.mark.timeout(30)
def test_remove_drains_a_database_and_lets_its_name_be_configured_again(make_manager, strategy,
                                                                        tmp_path):
    manager = make_manager(strategy)
    futures = [manager.submit_write(insert(f"n{i}")) for i in range(20)]
    path = manager.strategy("main").config.path
    assert manager.remove("main", timeout=10) is True
    assert [future.result() for future in futures] == [f"n{i}" for i in range(20)]
    with pytest.raises(ConfigError, match="no database named 'main' is configured"):
        manager.get_store("main")
    manager.configure("main", f"sqlite:{tmp_path / 'other.db'}?strategy={strategy}")
    manager.submit_write(lambda store: store.execute("CREATE TABLE t (id INTEGER)")).result()
    assert names(path) == [f"n{i}" for i in range(20)]
    with pytest.raises(ConfigError, match="no database named 'gone'"):
        manager.remove("gone")
