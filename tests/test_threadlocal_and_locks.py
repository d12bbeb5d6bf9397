"""Per-thread stores and lock policies under the `mutex` and `threadlocal` strategies.

Real files, real threads, a real second process holding the lock, and a real
`os.fork()`.  Every "other connection" inside this process is a pysqlite3 one:
the stdlib's sqlite3 is a different SQLite library and would not see (and on
close would drop) pysqlite3's POSIX locks on the same file.
"""

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

import pysqlite3.dbapi2 as dbapi
import pytest
import storm.exceptions

from sqlite_storemgr import (
    ConfigError, DatabaseLockedError, ManagerClosedError, StoreManager,
    WrongThreadError)
from sqlite_storemgr.backends import sqlite as backend
from _items import CALLER_THREAD_STRATEGIES, Item, insert, rows
from _items import names as names_in_id_order
from _threads import in_thread

def raw(path, timeout=5.0):
    return dbapi.connect(str(path), timeout=timeout, isolation_level=None,
                         check_same_thread=False)


def names(path):
    """The committed names, sorted: which thread committed first is not the point here."""
    return sorted(names_in_id_order(path))


def counter_value(path):
    return rows(path, "SELECT n FROM counter WHERE id = 1")[0][0]


def create_schema(store):
    store.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")
    store.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
    store.execute("INSERT INTO counter VALUES (1, 0)")


@pytest.fixture(params=CALLER_THREAD_STRATEGIES)
def strategy(request):
    return request.param


@pytest.fixture
def open_manager(make_manager, strategy, db_path):
    """open_manager(**options) -> (manager, path): 'main' on a fresh file, schema created."""
    def make(**options):
        options.setdefault("timeout", 2)
        return make_manager(strategy, schema=create_schema, **options), db_path
    return make


@pytest.fixture
def lock_holder(tmp_path):
    """hold(path) -> process holding BEGIN EXCLUSIVE on path until release(process)."""
    processes = []
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.execute('COMMIT')\n"
        "print('released', flush=True)\n")

    def hold(path):
        process = subprocess.Popen([sys.executable, "-c", script, str(path)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline() == "locked\n"
        return process

    def release(process):
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.stdout.readline() == "released\n"
        assert process.wait(5) == 0

    hold.release = release
    yield hold
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- per-thread stores


@pytest.mark.timeout(20)
def test_get_store_is_per_thread(open_manager):
    manager, _ = open_manager()
    mine = manager.get_store("main")
    assert manager.get_store("main") is mine
    assert manager.get_store() is mine  # the only configured database

    def theirs():
        first = manager.get_store("main")
        assert manager.get_store("main") is first
        return first

    others = [in_thread(theirs) for _ in range(3)]
    assert all(other is not mine for other in others)
    assert len({id(other) for other in others}) == 3


@pytest.mark.timeout(20)
def test_a_store_used_from_another_thread_raises_wrong_thread_error(open_manager):
    manager, _ = open_manager()
    store = manager.get_store("main")
    store.execute("INSERT INTO item (name) VALUES ('x')")
    store.commit()
    attempts = {
        "execute": lambda: store.execute("SELECT count(*) FROM item"),
        "find": lambda: store.find(Item).count(),
        "get": lambda: store.get(Item, 1),
    }
    for label, attempt in attempts.items():
        with pytest.raises(WrongThreadError) as info:
            in_thread(attempt)
        assert "get_store('main')" in str(info.value), label
        assert "another thread" in str(info.value), label
    # The owner still uses it.
    assert store.find(Item).one().name == "x"


@pytest.mark.timeout(20)
def test_a_thread_that_exits_inside_a_write_does_not_block_the_next_writer(open_manager):
    manager, path = open_manager(timeout=1)

    def abandon():
        store = manager.get_store("main")
        store.execute("INSERT INTO item (name) VALUES ('uncommitted')")
        assert store.connection.has_uncommitted_writes

    in_thread(abandon)
    started = time.monotonic()
    assert manager.submit_write(insert("next")).result() == "next"
    assert time.monotonic() - started < 0.5
    assert names(path) == ["next"]


@pytest.mark.timeout(30)
def test_short_lived_threads_leave_no_open_files(open_manager):
    before_manager = len(os.listdir("/proc/self/fd"))
    manager, _ = open_manager()
    manager.get_store("main").execute("SELECT count(*) FROM item").get_one()
    baseline = len(os.listdir("/proc/self/fd"))

    def short():
        store = manager.get_store("main")
        assert store.execute("SELECT count(*) FROM item").get_one() == (0,)

    for _ in range(10):
        threads = [threading.Thread(target=short) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # 200 stores were opened (3 files each in WAL mode).  SQLite keeps the file
    # descriptor of a closed connection while another connection of the process
    # holds a lock on the file, and reuses it; so at most one batch's worth remain.
    assert len(os.listdir("/proc/self/fd")) <= baseline + 20
    manager.close()
    assert len(os.listdir("/proc/self/fd")) <= before_manager


@pytest.mark.timeout(60)
def test_read_then_write_counter_has_no_lost_update(open_manager):
    manager, path = open_manager(timeout=20)
    errors = []
    start = threading.Barrier(16)

    def increment(store):
        (n,) = store.execute("SELECT n FROM counter WHERE id = 1").get_one()
        store.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))

    def worker():
        start.wait()
        for _ in range(100):
            error = manager.submit_write(increment).exception()
            if error is not None:
                errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counter_value(path) == 1600
    assert manager.get_store("main").execute(
        "SELECT n FROM counter WHERE id = 1").get_one() == (1600,)


# --------------------------------------------------------------------------- another process


@pytest.mark.timeout(20)
def test_a_writer_waits_for_another_process_within_timeout(open_manager, lock_holder):
    manager, path = open_manager(timeout=3)
    manager.get_store("main")  # connection open before the lock is taken
    process = lock_holder(path)
    releaser = threading.Timer(0.4, lock_holder.release, (process,))
    started = time.monotonic()
    releaser.start()
    try:
        future = manager.submit_write(insert("waited"))
    finally:
        releaser.join()
    elapsed = time.monotonic() - started
    assert future.result() == "waited"
    assert 0.35 <= elapsed < 2.5, elapsed
    assert names(path) == ["waited"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("on_locked", ["retry", "retry_commit", "rollback"])
def test_database_locked_error_after_timeout(open_manager, lock_holder, on_locked):
    manager, path = open_manager(timeout=0.3, on_locked=on_locked)
    process = lock_holder(path)

    calls = []

    def fn(store):
        calls.append(1)
        return insert("late")(store)

    started = time.monotonic()
    future = manager.submit_write(fn)
    elapsed = time.monotonic() - started
    error = future.exception()
    assert isinstance(error, DatabaseLockedError), repr(error)
    assert isinstance(error, storm.exceptions.OperationalError)
    assert 0.25 <= elapsed < 0.9, elapsed
    message = str(error)
    assert "database is locked" in message
    assert "timeout=0.3s" in message
    assert error.attempts >= 1
    assert 0.25 <= error.waited < 0.9, error.waited
    assert calls == []  # the lock was never had, so fn never ran
    with pytest.raises(DatabaseLockedError):
        future.result()

    started = time.monotonic()
    with pytest.raises(DatabaseLockedError) as info:
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('block')")
    assert 0.25 <= time.monotonic() - started < 0.9
    assert "timeout=0.3s" in str(info.value)

    lock_holder.release(process)
    assert manager.submit_write(fn).result() == "late"
    assert names(path) == ["late"]


# --------------------------------------------------------------------------- lock policies


@pytest.mark.timeout(20)
@pytest.mark.parametrize("on_locked", ["retry", "retry_commit", "rollback"])
def test_retrying_decorator_holds_the_write_lock_from_its_start(open_manager, on_locked):
    """retrying() begins BEGIN IMMEDIATE: what it read cannot go stale before it writes."""
    manager, path = open_manager(on_locked=on_locked)
    calls = []

    def write_elsewhere():
        other = raw(path, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()

    @manager.retrying("main")
    def increment():
        calls.append(1)
        store = manager.get_store("main")
        (n,) = store.execute("SELECT n FROM counter WHERE id = 1").get_one()
        with pytest.raises(dbapi.OperationalError, match="locked"):
            write_elsewhere()  # no other connection can commit between the read and the write
        store.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))
        return n + 1

    assert increment() == 1
    assert len(calls) == 1
    assert counter_value(path) == 1
    store = manager.get_store("main")
    assert not store.connection.in_transaction  # committed, and no snapshot kept after it
    assert store.execute("SELECT n FROM counter WHERE id = 1").get_one()[0] == 1


def test_retrying_read_then_write_from_many_threads_loses_no_update(open_manager):
    manager, path = open_manager(on_locked="retry")

    @manager.retrying("main")
    def increment():
        store = manager.get_store("main")
        (n,) = store.execute("SELECT n FROM counter WHERE id = 1").get_one()
        store.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))

    def worker():
        for _ in range(25):
            increment()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert counter_value(path) == 100


def _shared_reader(path):
    """A pysqlite3 connection holding a SHARED lock (rollback journal) until released."""
    reader = raw(path, timeout=0)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM item").fetchall()
    return reader


@pytest.mark.timeout(20)
@pytest.mark.parametrize("on_locked", ["retry", "retry_commit", "rollback"])
def test_policies_when_commit_is_refused(open_manager, on_locked):
    manager, path = open_manager(on_locked=on_locked, journal_mode="delete")
    calls = []

    def fn(store):
        calls.append(1)
        # No busy wait at COMMIT, so the refusal comes at once and the policy decides.
        store.connection.set_busy_timeout(0)
        store.execute("INSERT INTO item (name) VALUES ('unit')")
        return len(calls)

    reader = _shared_reader(path)
    releaser = threading.Timer(0.3, reader.execute, ("ROLLBACK",))
    started = time.monotonic()
    releaser.start()
    try:
        future = manager.submit_write(fn)
        elapsed = time.monotonic() - started
    finally:
        releaser.join()
        reader.close()
    if on_locked == "retry":  # the whole unit is re-run until COMMIT goes through
        assert future.result() >= 2
        assert len(calls) >= 2
        assert elapsed >= 0.25
    elif on_locked == "retry_commit":  # only COMMIT is repeated; fn ran once
        assert future.result() == 1
        assert len(calls) == 1
        assert elapsed >= 0.25
    else:  # rollback: give up at once
        error = future.exception()
        assert isinstance(error, DatabaseLockedError), repr(error)
        assert "on_locked=rollback" in str(error)
        assert error.attempts == 1
        assert len(calls) == 1
        assert elapsed < 0.25
    assert elapsed < 1.5
    # Never committed twice, and nothing at all when rolled back.
    assert names(path) == ([] if on_locked == "rollback" else ["unit"])
    if on_locked != "rollback":  # the busy wait cut for the retries is restored
        busy_ms = manager.get_store("main").execute("PRAGMA busy_timeout").get_one()[0]
        assert busy_ms == 2000
    assert manager.submit_write(insert("after")).result() == "after"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("on_locked", ["retry", "retry_commit", "rollback"])
def test_write_block_when_commit_is_refused(open_manager, on_locked):
    manager, path = open_manager(on_locked=on_locked, journal_mode="delete")
    reader = _shared_reader(path)
    releaser = threading.Timer(0.3, reader.execute, ("ROLLBACK",))
    started = time.monotonic()
    releaser.start()
    try:
        if on_locked == "rollback":
            with pytest.raises(DatabaseLockedError) as info:
                with manager.write("main") as store:
                    store.connection.set_busy_timeout(0)
                    store.execute("INSERT INTO item (name) VALUES ('block')")
            assert "on_locked=rollback" in str(info.value)
            assert time.monotonic() - started < 0.25
        else:  # a block cannot be re-run: its COMMIT is retried
            with manager.write("main") as store:
                store.connection.set_busy_timeout(0)
                store.execute("INSERT INTO item (name) VALUES ('block')")
            assert 0.25 <= time.monotonic() - started < 1.5
    finally:
        releaser.join()
        reader.close()
    assert names(path) == ([] if on_locked == "rollback" else ["block"])
    assert not manager.get_store("main").connection.in_transaction


@pytest.mark.timeout(20)
def test_a_write_block_has_one_deadline_through_its_commit(open_manager):
    manager, path = open_manager(on_locked="retry", timeout=0.5, journal_mode="delete")
    reader = _shared_reader(path)
    # Released after the block's deadline, but within a deadline restarted at COMMIT.
    releaser = threading.Timer(0.9, reader.execute, ("ROLLBACK",))
    releaser.start()
    try:
        with pytest.raises(DatabaseLockedError):
            with manager.write("main") as store:
                store.connection.set_busy_timeout(0)
                store.execute("INSERT INTO item (name) VALUES ('late')")
                time.sleep(0.6)  # the block uses up its timeout before COMMIT
    finally:
        releaser.join()
        reader.close()
    assert names(path) == []
    assert not manager.get_store("main").connection.in_transaction


# --------------------------------------------------------------------------- units of work


@pytest.mark.timeout(20)
def test_stats_count_outermost_units_only_and_from_every_thread(open_manager):
    manager, path = open_manager()  # the schema unit: one committed

    def outer(store):
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        inner = manager.submit_write(insert("inner"))  # joins the outer unit
        assert inner.result() == "inner"

    assert manager.submit_write(outer).exception() is None

    def fails(store):
        raise ValueError("fails")

    def worker():
        for _ in range(50):
            manager.submit_write(fails)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = manager.stats("main")
    assert (stats["units_committed"], stats["units_failed"]) == (2, 400)
    assert names(path) == ["inner", "outer"]


@pytest.mark.timeout(20)
def test_submit_write_returns_a_resolved_future(open_manager):
    manager, path = open_manager()
    future = manager.submit_write(insert("a"))
    assert isinstance(future, Future)
    assert future.done()
    assert future.result(timeout=0) == "a"
    assert names(path) == ["a"]

    def args_and_kwargs(store, first, *, second):
        store.execute("INSERT INTO item (name) VALUES (?)", (first + second,))
        return store.execute("SELECT count(*) FROM item").get_one()[0]

    assert manager.submit_write(args_and_kwargs, "b", second="c", name="main").result() == 2
    assert names(path) == ["a", "bc"]


@pytest.mark.timeout(20)
def test_a_failing_unit_commits_nothing(open_manager):
    manager, path = open_manager()

    class Boom(Exception):
        pass

    def fn(store):
        store.execute("INSERT INTO item (name) VALUES ('doomed')")
        store.add(Item()).name = "doomed too"
        store.flush()
        raise Boom("fn failed on purpose")

    future = manager.submit_write(fn)
    assert future.done()
    error = future.exception()
    assert type(error) is Boom and str(error) == "fn failed on purpose"
    with pytest.raises(Boom, match="on purpose"):
        future.result()
    assert names(path) == []
    store = manager.get_store("main")
    assert not store.connection.in_transaction
    assert store.find(Item).count() == 0

    # A SQL error inside the unit: same outcome, Storm's exception type.
    def bad_sql(store):
        store.execute("INSERT INTO item (name) VALUES ('half')")
        store.execute("INSERT INTO no_such_table VALUES (1)")

    error = manager.submit_write(bad_sql).exception()
    assert isinstance(error, storm.exceptions.OperationalError)
    assert "no such table: no_such_table" in str(error)
    assert names(path) == []


@pytest.mark.timeout(20)
def test_write_block_commits_on_exit_and_rolls_back_on_error(open_manager):
    manager, path = open_manager()
    with manager.write("main") as store:
        assert store is manager.get_store("main")
        store.add(Item()).name = "kept"
        store.execute("INSERT INTO item (name) VALUES ('kept too')")
        assert names(path) == []  # not committed before the block ends
    assert names(path) == ["kept", "kept too"]

    with pytest.raises(KeyError, match="stop"):
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('dropped')")
            store.add(Item()).name = "dropped too"
            raise KeyError("stop")
    assert names(path) == ["kept", "kept too"]
    store = manager.get_store("main")
    assert not store.connection.in_transaction
    assert sorted(item.name for item in store.find(Item)) == ["kept", "kept too"]


@pytest.mark.timeout(20)
def test_a_write_block_keeps_other_writers_out_until_it_ends(open_manager):
    manager, path = open_manager(timeout=5)
    done = threading.Event()

    def other_writer():
        manager.submit_write(insert("second")).result()
        done.set()

    with manager.write("main") as store:
        store.execute("INSERT INTO item (name) VALUES ('first')")
        thread = threading.Thread(target=other_writer)
        thread.start()
        assert not done.wait(0.3)
    thread.join(5)
    assert done.is_set()
    connection = raw(path)
    assert [row[0] for row in connection.execute("SELECT name FROM item ORDER BY id")] == [
        "first", "second"]
    connection.close()


@pytest.mark.timeout(20)
def test_read_block_is_one_consistent_snapshot(open_manager):
    manager, path = open_manager()
    manager.submit_write(insert("one")).result()
    with manager.read("main") as store:
        assert store.execute("SELECT count(*) FROM item").get_one() == (1,)
        in_thread(lambda: manager.submit_write(insert("two")).result())
        assert names(path) == ["one", "two"]  # committed...
        assert store.execute("SELECT count(*) FROM item").get_one() == (1,)  # ...not seen
        assert store.find(Item).count() == 1
    assert not store.connection.in_transaction
    assert manager.get_store("main").execute("SELECT count(*) FROM item").get_one() == (2,)


@pytest.mark.timeout(20)
def test_read_your_writes_after_an_open_read(open_manager):
    manager, path = open_manager()
    store = manager.get_store("main")
    assert store.execute("SELECT count(*) FROM item").get_one() == (0,)  # snapshot open
    assert store.find(Item).count() == 0
    manager.submit_write(insert("mine")).result()
    assert store.execute("SELECT count(*) FROM item").get_one() == (1,)
    assert [item.name for item in store.find(Item)] == ["mine"]
    in_thread(lambda: manager.submit_write(insert("theirs")).result())
    store.rollback()  # end this thread's snapshot; the other thread's write shows
    assert sorted(item.name for item in store.find(Item)) == ["mine", "theirs"]


# --------------------------------------------------------------------------- fork


@pytest.mark.timeout(30)
def test_a_forked_child_writes_through_fresh_connections(open_manager):
    manager, path = open_manager()
    manager.submit_write(insert("parent before")).result()
    parent_store = manager.get_store("main")
    assert parent_store.execute("SELECT count(*) FROM item").get_one() == (1,)  # open read

    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            opened = backend.connections_opened()
            child_store = manager.get_store("main")
            if child_store is parent_store:
                code = 2
            elif manager.submit_write(insert("child")).result() != "child":
                code = 3
            elif backend.connections_opened() <= opened:
                code = 4
            elif child_store.execute("SELECT count(*) FROM item").get_one() != (2,):
                code = 5
            else:
                code = 0
        except BaseException:
            code = 6
        finally:
            os._exit(code)

    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0

    assert manager.submit_write(insert("parent after")).result() == "parent after"
    assert names(path) == ["child", "parent after", "parent before"]
    parent_store.rollback()
    assert parent_store.execute("SELECT count(*) FROM item").get_one() == (3,)


# --------------------------------------------------------------------------- lifecycle


@pytest.mark.timeout(20)
def test_every_call_after_close_raises_manager_closed_error(open_manager):
    manager, path = open_manager()
    store = manager.get_store("main")
    manager.close()
    calls = {
        "get_store": lambda: manager.get_store("main"),
        "get_store()": lambda: manager.get_store(),
        "submit_write": lambda: manager.submit_write(insert("late")),
        "submit_write(name)": lambda: manager.submit_write(insert("late"), name="main"),
        "submit_read": lambda: manager.submit_read(lambda s: 1),
        "write": lambda: manager.write("main"),
        "read": lambda: manager.read("main"),
        "retrying": lambda: manager.retrying("main"),
        "stats": lambda: manager.stats("main"),
        "configure": lambda: manager.configure("other", f"sqlite:{path}.2"),
        "unknown name": lambda: manager.get_store("nope"),
    }
    for label, call in calls.items():
        with pytest.raises(ManagerClosedError, match="closed"):
            call()
    manager.close()  # a second close is harmless
    assert not os.path.exists(f"{path}.2")
    with pytest.raises(storm.exceptions.ClosedError, match="closed"):
        store.execute("SELECT 1")  # the thread's store was closed too
    assert names(path) == []


@pytest.mark.timeout(20)
def test_name_is_needed_when_several_databases_are_configured(open_manager, tmp_path, strategy):
    manager, _ = open_manager()
    manager.configure("other", f"sqlite:{tmp_path / 'other.db'}?strategy={strategy}")
    with pytest.raises(ConfigError, match="pass name="):
        manager.submit_write(insert("x"))
    with pytest.raises(ConfigError) as info:
        manager.get_store("nope")
    assert "'nope'" in str(info.value) and "main" in str(info.value)
    assert manager.get_store("main") is not manager.get_store("other")


@pytest.mark.timeout(20)
def test_in_memory_database_is_shared_by_all_threads(strategy):
    with StoreManager() as manager:
        manager.configure("mem", f"sqlite:?strategy={strategy}")
        in_thread(lambda: manager.submit_write(create_schema).result())
        in_thread(lambda: manager.submit_write(insert("from a thread")).result())
        manager.submit_write(insert("from main")).result()
        seen = in_thread(lambda: sorted(
            row[0] for row in manager.get_store("mem").execute("SELECT name FROM item")))
        assert seen == ["from a thread", "from main"]
        assert manager.get_store("mem").find(Item).count() == 2
    with StoreManager() as fresh:
        fresh.configure("mem", f"sqlite:?strategy={strategy}")
        with pytest.raises(storm.exceptions.OperationalError, match="no such table: item"):
            fresh.get_store("mem").execute("SELECT count(*) FROM item")


@pytest.mark.timeout(20)
def test_the_longest_allowed_timeout_works_end_to_end(open_manager):
    from sqlite_storemgr.uri import MAX_TIMEOUT

    manager, path = open_manager(timeout=MAX_TIMEOUT)
    assert manager.submit_write(insert("a")).result() == "a"
    with manager.write("main") as store:
        store.execute("INSERT INTO item (name) VALUES ('b')")
    store = manager.get_store("main")
    assert store.execute("PRAGMA busy_timeout").get_one() == (MAX_TIMEOUT * 1000,)
    assert names(path) == ["a", "b"]
