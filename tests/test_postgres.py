"""The same API on a real PostgreSQL server: only the URI changes.

Needs a server: set STOREMGR_POSTGRES_URI (``.ci/postgres.sh`` installs and starts
one on 127.0.0.1 and prints the URI).  Without it these tests skip, except
under CI=true, where a missing server is a failure.
"""

import os
import threading
import time
import uuid

import pytest

from sqlite_storemgr import (
    ConfigError, DatabaseLockedError, ReadOnlyStoreError, StoreManager, parse_uri)

URI = os.environ.get("STOREMGR_POSTGRES_URI")

if not URI:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true but STOREMGR_POSTGRES_URI is not set: .ci/run must start "
                           "PostgreSQL (.ci/postgres.sh) and export it")
    pytest.skip("no PostgreSQL server: run `eval STOREMGR_POSTGRES_URI=$(bash .ci/postgres.sh)` "
                "as root and export it to run these tests", allow_module_level=True)

psycopg2 = pytest.importorskip("psycopg2")


@pytest.fixture
def table():
    """A fresh table name (tests share one database), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    connection = psycopg2.connect(parse_uri(URI).storm_uri.replace("postgres://", "postgresql://"))
    connection.autocommit = True
    connection.cursor().execute(f"DROP TABLE IF EXISTS {name}")
    connection.close()


def raw_connection():
    return psycopg2.connect(URI.replace("postgres://", "postgresql://", 1))


def make(strategy, table, **options):
    manager = StoreManager()
    query = "&".join(f"{k}={v}" for k, v in {"strategy": strategy, **options}.items())
    manager.configure("pg", f"{URI}?{query}")
    manager.submit_write(lambda store: store.execute(
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER, name TEXT)")).result()
    manager.submit_write(lambda store: store.execute(
        f"INSERT INTO {table} VALUES (1, 0, 'counter')")).result()
    return manager


def rows(table):
    connection = raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(f"SELECT id, n, name FROM {table} ORDER BY id")
        return cursor.fetchall()
    finally:
        connection.close()


@pytest.mark.timeout(120)
def test_counter_invariant_at_the_default_isolation(strategy, table):
    manager = make(strategy, table)
    errors = []

    def increment(store):
        (n,) = store.execute(f"SELECT n FROM {table} WHERE id = 1").get_one()
        store.execute(f"UPDATE {table} SET n = ? WHERE id = 1", (n + 1,))
        return n + 1

    def worker():
        for _ in range(100):
            try:
                manager.submit_write(increment).result()
            except Exception as error:  # counted, and asserted to be none
                errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert rows(table)[0][1] == 1600
    stats = manager.stats("pg")
    assert stats["strategy"] == strategy
    if strategy == "threadlocal":
        assert stats["retries"] > 0  # serialization failures were re-run, not raised
    manager.close()


@pytest.mark.timeout(30)
def test_submit_write_result_exception_and_rollback(strategy, table):
    manager = make(strategy, table)

    def add(store, id_, name):
        store.execute(f"INSERT INTO {table} (id, n, name) VALUES (?, 0, ?)", (id_, name))
        return name

    def add_then_fail(store):
        add(store, 3, "never")
        raise ValueError("refused")

    assert manager.submit_write(add, 2, "two").result() == "two"
    error = manager.submit_write(add_then_fail).exception()
    assert isinstance(error, ValueError) and str(error) == "refused"
    duplicate = manager.submit_write(add, 2, "again").exception()
    assert "duplicate key" in str(duplicate)
    with manager.write("pg") as store:
        add(store, 4, "block")
    with pytest.raises(KeyError):
        with manager.write("pg") as store:
            add(store, 5, "block rolled back")
            raise KeyError("no")
    assert [row[2] for row in rows(table)] == ["counter", "two", "block"]
    manager.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy", ["threadlocal", "queue"])
def test_a_table_lock_held_elsewhere_respects_the_timeout(strategy, table):
    manager = make(strategy, table, timeout=0.3)
    holder = raw_connection()
    holder.cursor().execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    def bump(store):
        store.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")

    started = time.monotonic()
    error = manager.submit_write(bump).exception()
    elapsed = time.monotonic() - started
    assert isinstance(error, DatabaseLockedError), repr(error)
    assert "timeout=0.3s" in str(error)
    assert 0.25 <= elapsed < 1.5, elapsed

    slow = StoreManager()
    slow.configure("pg", f"{URI}?strategy={strategy}&timeout=5")
    threading.Timer(0.5, holder.rollback).start()
    started = time.monotonic()
    assert slow.submit_write(bump).exception() is None
    assert 0.4 <= time.monotonic() - started < 4
    holder.close()
    assert manager.submit_write(bump).exception() is None  # the first manager recovered
    assert rows(table)[0][1] == 2
    slow.close()
    manager.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy", ["threadlocal", "queue"])
def test_a_connection_lost_before_commit_is_retried_once_on_a_fresh_one(strategy, table):
    manager = make(strategy, table)
    attempts = []

    def unit(store):
        attempts.append(1)
        store.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
        if len(attempts) == 1:  # the server drops this session mid-unit
            (pid,) = store.execute("SELECT pg_backend_pid()").get_one()
            killer = raw_connection()
            killer.autocommit = True
            killer.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
            killer.close()
            time.sleep(0.1)
            store.execute("SELECT 1")
        return len(attempts)

    assert manager.submit_write(unit).result() == 2
    assert rows(table)[0][1] == 1  # committed once, by the second attempt
    manager.close()


@pytest.mark.timeout(30)
def test_queue_readers_are_read_only_and_never_idle_in_transaction(table):
    manager = make("queue", table)
    store = manager.get_store("pg")
    with pytest.raises(ReadOnlyStoreError, match="submit_write"):
        store.execute(f"UPDATE {table} SET n = 5")
    assert store.execute(f"SELECT n FROM {table}").get_one() == (0,)
    assert not store.connection.in_transaction  # autocommit reads: no snapshot kept
    manager.submit_write(lambda s: s.execute(f"UPDATE {table} SET n = 7")).result()
    assert store.execute(f"SELECT n FROM {table}").get_one() == (7,)  # read-your-writes
    with manager.read("pg") as snapshot:
        assert snapshot.execute(f"SELECT n FROM {table}").get_one() == (7,)
        other = threading.Thread(target=lambda: manager.submit_write(
            lambda s: s.execute(f"UPDATE {table} SET n = 8")).result())
        other.start()
        other.join(10)
        assert snapshot.execute(f"SELECT n FROM {table}").get_one() == (7,)  # one snapshot
        # This thread's own acknowledged write ends the snapshot (read-your-writes).
        manager.submit_write(lambda s: s.execute(f"UPDATE {table} SET n = 9")).result()
        assert snapshot.execute(f"SELECT n FROM {table}").get_one() == (9,)
    assert store.execute(f"SELECT n FROM {table}").get_one() == (9,)
    manager.close()


def test_uris_validate_like_ours():
    config = parse_uri("postgresql://u:p@127.0.0.1:5432/db?isolation=serializable&timeout=2")
    assert config.storm_uri == "postgres://u:p@127.0.0.1:5432/db?isolation=serializable"
    assert config.strategy == "threadlocal"  # the natural default on a server database
    assert "u:p" not in config.describe()
    for bad, words in [("postgres://u@h/db?isolation=autocommit", "isolation"),
                       ("postgres://u@h/db?journal_mode=wal", "sqlite: URIs only"),
                       ("postgres://u@h/db?sslmode=bogus", "sslmode"),
                       ("postgres://u@h/", "names no database")]:
        with pytest.raises(ConfigError, match=words):
            parse_uri(bad)


@pytest.mark.timeout(30)
def test_the_isolation_option_reaches_the_server(table):
    manager = make("threadlocal", table, isolation="serializable")
    level = manager.submit_write(
        lambda store: store.execute("SHOW transaction_isolation").get_one()[0]).result()
    assert level == "serializable"
    manager.close()


@pytest.mark.timeout(120)
def test_bench_and_info_accept_a_postgres_uri():
    import json
    import subprocess
    import sys

    def storemgr(*args):
        return subprocess.run([sys.executable, "-m", "sqlite_storemgr", *args],
                              capture_output=True, text=True, timeout=100)

    result = storemgr("bench", URI, "--units", "200", "--threads", "4", "--workload", "rmw",
                      "--baselines", "none", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["database"].startswith("postgres database")
    names = [row["name"] for row in report["results"]]
    assert names[0] == "serial ceiling (raw, 1 thread)"
    for row in report["results"][1:]:
        assert row["failed"] == 0 and row["lost_updates"] == 0, row
    info = json.loads(storemgr("info", URI, "--json").stdout)
    assert info["strategy"] == "threadlocal" and info["isolation"] == "repeatable-read"


@pytest.mark.timeout(30)
def test_a_connection_lost_at_commit_fails_clearly(table):
    from storm.exceptions import DisconnectionError
    manager = make("threadlocal", table)

    def unit(store):
        store.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
        (pid,) = store.execute("SELECT pg_backend_pid()").get_one()
        killer = raw_connection()
        killer.autocommit = True
        killer.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
        killer.close()
        time.sleep(0.1)  # the session is gone before COMMIT is sent

    error = manager.submit_write(unit).exception()
    assert isinstance(error, DisconnectionError), repr(error)
    assert "lost during COMMIT" in str(error) and "unknown" in str(error)
    assert rows(table)[0][1] == 0  # here it was not committed; the error could not know
    assert manager.submit_write(lambda s: s.execute(
        f"UPDATE {table} SET n = 5 WHERE id = 1")).exception() is None  # a fresh connection
    assert rows(table)[0][1] == 5
    manager.close()


def _cluster():
    """(version, name) of the local cluster when this process may restart it, else None."""
    import shutil
    import subprocess
    if os.geteuid() != 0 or not shutil.which("pg_lsclusters"):
        return None
    lines = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True,
                           text=True).stdout.split("\n")
    port = str(parse_uri(URI).storm_uri.rsplit(":", 1)[1].split("/")[0])
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[2] == port and fields[3] == "online":
            return fields[0], fields[1]
    return None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["threadlocal", "queue"])
def test_a_server_restart_mid_run(strategy, table):
    """Documented: units under way fail with a clear error or are re-run once; nothing
    acknowledged is lost; once the server is back the same manager writes again."""
    import subprocess
    cluster = _cluster()
    if cluster is None:
        pytest.skip("restarting the server needs root and a local pg_ctlcluster cluster")
    manager = make(strategy, table, timeout=2)
    acknowledged, failures = [], []
    stop = threading.Event()

    def writer(offset):
        for index in range(offset, offset + 100000, 4):
            if stop.is_set():
                return
            future = manager.submit_write(lambda store, i=index: store.execute(
                f"INSERT INTO {table} (id, n, name) VALUES (?, 0, 'w')", (i + 10,)))
            error = future.exception()
            if error is None:
                acknowledged.append(index + 10)
            else:
                failures.append(error)
                time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    subprocess.run(["pg_ctlcluster", *cluster, "restart"], check=True,
                   capture_output=True, timeout=60)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()

    committed = {row[0] for row in rows(table)}
    assert set(acknowledged) <= committed  # nothing acknowledged was lost
    for error in failures:  # each failure says what happened to the connection
        assert any(word in str(error) for word in (
            "terminat", "connection", "server closed", "shutting down", "lost")), repr(error)
    assert manager.submit_write(lambda s: s.execute(
        f"UPDATE {table} SET n = 42 WHERE id = 1")).exception() is None
    assert rows(table)[0][1] == 42
    manager.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", ["threadlocal", "mutex"])
def test_caller_thread_stores_read_outside_units_without_holding_a_transaction(strategy, table):
    """No pooled thread sits idle in a transaction after a read; read() is one snapshot."""
    manager = make(strategy, table)
    store = manager.get_store("pg")
    assert store.execute(f"SELECT n FROM {table}").get_one() == (0,)
    (pid,) = store.execute("SELECT pg_backend_pid()").get_one()
    assert not store.connection.in_transaction
    observer = raw_connection()
    try:
        cursor = observer.cursor()
        cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        assert cursor.fetchone() == ("idle",)
    finally:
        observer.close()

    def write(n):
        thread = threading.Thread(target=lambda: manager.submit_write(
            lambda s: s.execute(f"UPDATE {table} SET n = {n}")).result())
        thread.start()
        thread.join(20)

    write(5)
    assert store.execute(f"SELECT n FROM {table}").get_one() == (5,)  # fresh, no old snapshot
    with manager.read("pg") as snapshot:
        assert snapshot.execute(f"SELECT n FROM {table}").get_one() == (5,)
        write(6)
        assert snapshot.execute(f"SELECT n FROM {table}").get_one() == (5,)  # one snapshot
        with pytest.raises(ReadOnlyStoreError):
            snapshot.execute(f"UPDATE {table} SET n = 99")
    assert store.execute(f"SELECT n FROM {table}").get_one() == (6,)
    assert not store.connection.in_transaction
    manager.close()
