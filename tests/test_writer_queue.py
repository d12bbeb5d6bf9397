"""The writer queue under strategies ``queue`` and ``single``.

Everything here runs on real SQLite files (or the shared in-memory database)
with real threads; results are checked through an independent pysqlite3
connection, never through the code under test alone.

Note: the stdlib ``sqlite3`` module is never used in this process on a file the
manager has open: it links a different copy of SQLite, and two copies in one
process break each other's POSIX locks (SQLite's "multiple copies" hazard).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

import pysqlite3.dbapi2 as dbapi
import pytest
from storm.locals import Int

from _items import WRITER_THREAD_STRATEGIES, Boom, Item, WriterKiller, rows
from _threads import run_threads
from sqlite_storemgr import (
    ManagerClosedError, QueueFullError, ReadOnlyStoreError, StoreManager,
    StrategyError, WriterBrokenError)

NAME = "db"

pytestmark = pytest.mark.filterwarnings(
    # Nothing may escape a writer thread unhandled.
    "error::pytest.PytestUnhandledThreadExceptionWarning")


# -- helpers -----------------------------------------------------------------

@pytest.fixture(autouse=True)
def release_stalls(make_manager):
    """A failed test must not leave the writer held: every Stall is released before the
    managers close."""
    yield
    for stall in Stall.made:
        stall.gate.set()
    Stall.made.clear()


def create_tables(store) -> None:
    store.execute("CREATE TABLE IF NOT EXISTS entry "
                  "(unit_id INTEGER NOT NULL UNIQUE, note TEXT)")
    store.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT)")


def insert_entry(store, unit_id: int, note: str = "ok") -> int:
    store.execute("INSERT INTO entry (unit_id, note) VALUES (?, ?)", (unit_id, note))
    return unit_id


def entry_ids(path) -> list[int]:
    return [unit_id for (unit_id,) in rows(path, "SELECT unit_id FROM entry ORDER BY unit_id")]


class Stall:
    """A unit that holds the writer (inside its transaction) until released."""

    made: list["Stall"] = []

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        Stall.made.append(self)

    def __call__(self, store) -> str:
        self.entered.set()
        if not self.gate.wait(20):
            raise AssertionError("the stall was never released")
        return "stall released"

    def start(self, mgr: StoreManager):
        future = mgr.submit_write(self)
        assert self.entered.wait(10), "the writer never ran the stalling unit"
        return future


# -- correctness under concurrency -------------------------------------------

@pytest.mark.timeout(20)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_read_then_write_increments_from_16_threads_are_exact(make_manager, tmp_path, strategy):
    path = tmp_path / "counter.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=None)

    def setup(store):
        store.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        store.execute("INSERT INTO counter (id, n) VALUES (1, 0)")
    mgr.submit_write(setup).result(timeout=10)

    def increment(store) -> int:
        (value,) = store.execute("SELECT n FROM counter WHERE id = 1").get_one()
        store.execute("UPDATE counter SET n = ? WHERE id = 1", (value + 1,))
        return value + 1

    seen: list[int] = []
    errors: list[BaseException] = []

    def worker(_index: int) -> None:
        for _ in range(100):
            try:
                seen.append(mgr.submit_write(increment).result(timeout=30))
            except BaseException as error:  # noqa: BLE001 - every error is a failure here
                errors.append(error)

    run_threads(worker, 16)

    assert errors == []
    assert rows(path, "SELECT n FROM counter") == [(1600,)]
    # Every increment read a value no other increment read: no lost update.
    assert sorted(seen) == list(range(1, 1601))
    stats = mgr.stats(NAME)
    assert stats["units_committed"] == 1601
    assert stats["units_failed"] == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_ten_thousand_unawaited_units_all_commit_exactly_once_by_close(
        make_manager, tmp_path, strategy):
    path = tmp_path / "many.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=create_tables)
    futures: dict[int, object] = {}

    def submitter(index: int) -> None:
        mine = {}
        for unit_id in range(index * 2500, (index + 1) * 2500):
            mine[unit_id] = mgr.submit_write(insert_entry, unit_id)
        futures.update(mine)

    run_threads(submitter, 4)
    mgr.close()

    assert len(futures) == 10_000
    assert all(future.done() for future in futures.values())
    for unit_id, future in futures.items():
        assert future.result(timeout=0) == unit_id
    assert rows(path, "SELECT count(*), count(DISTINCT unit_id), min(unit_id), max(unit_id) "
                      "FROM entry") == [(10_000, 10_000, 0, 9_999)]
    with pytest.raises(ManagerClosedError):
        mgr.submit_write(insert_entry, 10_000)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_failing_units_in_one_batch_fail_alone_and_leave_no_trace(
        make_manager, tmp_path, strategy):
    path = tmp_path / "batch.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=create_tables, batch=1000)

    def unit(store, unit_id: int) -> int:
        insert_entry(store, unit_id)
        item = Item()
        item.id = unit_id
        item.name = f"value {unit_id}"
        store.add(item)
        if unit_id % 3 == 0:
            if unit_id % 2:
                store.flush()  # the failing unit's object reached the database too
            raise Boom(f"unit {unit_id} failed on purpose")
        return unit_id

    stall = Stall()
    stalled = stall.start(mgr)
    futures = [mgr.submit_write(unit, unit_id) for unit_id in range(300)]
    stall.gate.set()  # everything is queued now: the writer takes it in batches

    assert stalled.result(timeout=10) == "stall released"
    for unit_id, future in enumerate(futures):
        if unit_id % 3 == 0:
            error = future.exception(timeout=10)
            assert type(error) is Boom
            assert str(error) == f"unit {unit_id} failed on purpose"
        else:
            assert future.result(timeout=10) == unit_id

    good = [unit_id for unit_id in range(300) if unit_id % 3]
    assert entry_ids(path) == good  # UNIQUE unit_id: each committed exactly once
    assert rows(path, "SELECT id, name FROM item ORDER BY id") == [
        (unit_id, f"value {unit_id}") for unit_id in good]
    stats = mgr.stats(NAME)
    assert stats["largest_batch"] > 1, stats
    assert stats["units_failed"] == 100
    assert stats["units_committed"] == 1 + 1 + 200  # setup, stall, the good units
    # The writer is fine afterwards, and its object cache holds nothing of the failures.
    assert mgr.submit_write(lambda store: store.get(Item, 3)).result(timeout=10) is None
    assert mgr.submit_write(lambda store: store.get(Item, 4).name).result(timeout=10) \
        == "value 4"


@pytest.mark.timeout(15)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_a_unit_alone_in_its_batch_runs_once_without_savepoints_and_fails_cleanly(
        make_manager, tmp_path, strategy):
    """A batch of one needs no savepoint: its failure rolls the transaction back, once."""
    path = tmp_path / "alone.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=create_tables)
    statements: list[str] = []
    mgr.submit_write(lambda store: store._connection._raw_connection.set_trace_callback(
        statements.append)).result(timeout=10)
    runs: list[int] = []

    def unit(store, unit_id: int) -> int:
        runs.append(unit_id)
        insert_entry(store, unit_id)
        item = Item()
        item.name = f"value {unit_id}"
        store.add(item)
        store.flush()
        if unit_id == 2:
            raise Boom("unit 2 failed on purpose")
        return unit_id

    outcomes = []
    for unit_id in range(1, 4):  # one at a time: each is a batch of its own
        future = mgr.submit_write(unit, unit_id)
        outcomes.append(future.exception(timeout=10) or future.result(timeout=10))
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert type(outcomes[1]) is Boom and str(outcomes[1]) == "unit 2 failed on purpose"
    assert runs == [1, 2, 3]
    assert not any("SAVEPOINT" in statement for statement in statements), statements
    assert statements.count("ROLLBACK") == 1
    assert entry_ids(path) == [1, 3]
    assert rows(path, "SELECT name FROM item ORDER BY id") == [("value 1",), ("value 3",)]
    stats = mgr.stats(NAME)
    assert (stats["units_committed"], stats["units_failed"]) == (1 + 1 + 2, 1)


@pytest.mark.timeout(15)
def test_args_kwargs_pass_through_and_a_cancelled_unit_never_runs(make_manager, tmp_path):
    path = tmp_path / "cancel.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)
    stall = Stall()
    stalled = stall.start(mgr)
    first = mgr.submit_write(insert_entry, 1, note="keyword", name=NAME)
    cancelled = mgr.submit_write(insert_entry, 2, "cancelled")
    last = mgr.submit_write(insert_entry, 3)
    assert cancelled.cancel()
    stall.gate.set()
    assert stalled.result(timeout=10) == "stall released"
    assert first.result(timeout=10) == 1
    assert last.result(timeout=10) == 3
    assert cancelled.cancelled()
    assert rows(path, "SELECT unit_id, note FROM entry ORDER BY unit_id") == [
        (1, "keyword"), (3, "ok")]
    assert mgr.stats(NAME)["units_committed"] == 4


@pytest.mark.timeout(20)
def test_group_commit_from_16_threads_batches_units(make_manager, tmp_path):
    path = tmp_path / "group.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        for step in range(60):
            try:
                mgr.submit_write(insert_entry, index * 1000 + step).result(timeout=20)
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

    run_threads(worker, 16)
    assert errors == []
    assert len(entry_ids(path)) == 960
    stats = mgr.stats(NAME)
    assert stats["units_committed"] == 961
    assert stats["batches"] < stats["units_committed"]
    assert stats["mean_batch"] > 1, stats
    assert stats["mean_batch"] == pytest.approx(
        (stats["units_committed"] + stats["units_failed"]) / stats["batches"])
    assert stats["largest_batch"] <= 16


@pytest.mark.timeout(30)
def test_callers_woken_in_turn_are_not_held_up_by_units_nobody_waits_for(make_manager, tmp_path):
    """A batch's callers are woken one after another; futures no one waits on are skipped.

    Unawaited units, units awaited from another thread, and awaits with short
    timeouts all share batches with 8 callers that wait: each caller gets every
    answer promptly, and every unit commits once.
    """
    path = tmp_path / "turns.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)
    unawaited = [mgr.submit_write(insert_entry, 100000 + n) for n in range(2000)]
    handed_over: list = []
    slowest: list[float] = []

    def caller(index: int) -> None:
        worst = 0.0
        for step in range(150):
            future = mgr.submit_write(insert_entry, index * 1000 + step)
            if step % 3 == 0:
                handed_over.append(future)  # the watcher thread waits on these
                continue
            if step % 5 == 0:
                try:
                    future.result(timeout=0.0001)
                except FutureTimeout:
                    pass
            began = time.monotonic()
            assert future.result(timeout=10) == index * 1000 + step
            worst = max(worst, time.monotonic() - began)
        slowest.append(worst)

    def watcher() -> None:
        deadline = time.monotonic() + 20
        seen = 0
        while seen < 8 * 50 and time.monotonic() < deadline:
            while seen < len(handed_over):
                handed_over[seen].result(timeout=10)
                seen += 1
            time.sleep(0.001)

    watching = threading.Thread(target=watcher)
    watching.start()
    run_threads(caller, 8)
    watching.join(30)
    assert not watching.is_alive()
    assert all(f.result(timeout=10) == 100000 + n for n, f in enumerate(unawaited))
    assert max(slowest) < 5, slowest
    assert len(entry_ids(path)) == 2000 + 8 * 150
    assert mgr.stats(NAME)["units_committed"] == 1 + 2000 + 8 * 150


# -- readers while the writer works -------------------------------------------

@pytest.mark.timeout(15)
def test_reader_does_not_wait_for_the_writers_open_transaction(make_manager, tmp_path):
    path = tmp_path / "wal.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)
    mgr.submit_write(insert_entry, 1, "before").result(timeout=10)
    in_transaction = threading.Event()

    def slow_unit(store) -> str:
        insert_entry(store, 2, "during")
        in_transaction.set()
        time.sleep(1.0)
        return "slow unit committed"

    slow = mgr.submit_write(slow_unit)
    assert in_transaction.wait(10)
    seen: dict = {}

    def reader() -> None:
        started = time.monotonic()
        store = mgr.get_store(NAME)
        found = store.execute("SELECT unit_id, note FROM entry ORDER BY unit_id").get_all()
        seen["elapsed"] = time.monotonic() - started
        seen["rows"] = found
        seen["writer_done"] = slow.done()

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert seen["rows"] == [(1, "before")]  # the uncommitted row is not visible
    assert seen["writer_done"] is False      # the answer came while the writer was inside
    assert seen["elapsed"] < 0.25, seen
    assert slow.result(timeout=10) == "slow unit committed"
    assert entry_ids(path) == [1, 2]


@pytest.mark.timeout(15)
def test_queue_store_is_read_only_and_names_submit_write(make_manager, tmp_path):
    path = tmp_path / "ro.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)
    store = mgr.get_store(NAME)

    with pytest.raises(ReadOnlyStoreError, match="submit_write"):
        store.execute("INSERT INTO entry (unit_id, note) VALUES (1, 'sneaky')")
    with pytest.raises(ReadOnlyStoreError, match="submit_write"):
        store.execute("DELETE FROM entry")
    item = Item()
    item.id = 7
    item.name = "sneaky"
    store.add(item)
    with pytest.raises(ReadOnlyStoreError, match="submit_write"):
        store.flush()
    store.rollback()

    assert rows(path, "SELECT count(*) FROM entry") == [(0,)]
    assert rows(path, "SELECT count(*) FROM item") == [(0,)]
    # The store still reads, and sees writes made the supported way.
    mgr.submit_write(insert_entry, 5).result(timeout=10)
    assert store.execute("SELECT unit_id FROM entry").get_all() == [(5,)]
    assert mgr.get_store(NAME) is store


class Blob:
    __storm_table__ = "blob"
    id = Int(primary=True)


@pytest.mark.timeout(30)
def test_readers_pin_no_snapshot_so_checkpoints_complete_under_load(make_manager, tmp_path,
                                                                    strategy):
    """Under every strategy, no store holds a read snapshot between calls: not a busy
    reader's, not an idle pooled thread's whose last act was a read (Storm objects included)."""
    path = tmp_path / "checkpoint.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=None)
    mgr.submit_write(lambda store: store.execute(
        "CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")).result(timeout=10)
    mgr.submit_write(lambda store: store.execute(
        "INSERT INTO blob (data) VALUES (x'00')")).result(timeout=10)
    stop = threading.Event()
    reader_report: dict = {"reads": 0, "pinned": 0, "counts": [[], []]}
    reader_errors: list[BaseException] = []

    def count_blobs(store) -> int:
        return store.execute("SELECT count(*) FROM blob").get_one()[0]

    def read_count() -> tuple[int, bool]:
        """A count read the strategy's way, and whether the store kept a transaction open."""
        if strategy == "single":  # its documented read path: every read on the worker
            return mgr.submit_read(count_blobs).result(timeout=10), False
        store = mgr.get_store(NAME)
        return count_blobs(store), store.connection._raw_connection.in_transaction

    def reader(index: int) -> None:
        try:
            while not stop.is_set():
                count, pinned = read_count()
                reader_report["counts"][index].append(count)
                reader_report["reads"] += 1
                reader_report["pinned"] += pinned
                time.sleep(0.001)  # a handler between queries, so reads are not back to back
        except BaseException as error:  # noqa: BLE001
            reader_errors.append(error)

    def idle_reader() -> None:
        """A pooled thread whose last act was a read (objects cached), then idle."""
        try:
            if strategy != "single":
                store = mgr.get_store(NAME)
                assert store.get(Blob, 1) is not None and store.find(Blob).count() >= 1
            else:
                mgr.submit_read(lambda s: s.find(Blob).count()).result(timeout=10)
            stop.wait()
        except BaseException as error:  # noqa: BLE001
            reader_errors.append(error)

    payload = bytes(range(256)) * 64  # 16 KiB
    readers = [threading.Thread(target=reader, args=(index,)) for index in range(2)]
    readers.append(threading.Thread(target=idle_reader))
    for thread in readers:
        thread.start()
    checkpoints = []
    checker = dbapi.connect(str(path), timeout=3, isolation_level=None)
    try:
        started = time.monotonic()
        next_check = started + 0.4
        while time.monotonic() - started < 1.5:
            futures = [mgr.submit_write(lambda store: store.execute(
                "INSERT INTO blob (data) VALUES (?)", (payload,))) for _ in range(16)]
            for future in futures:
                future.result(timeout=10)
            if time.monotonic() >= next_check:
                # Needs every reader off the WAL at some moment: a pinned snapshot
                # keeps it busy for the whole busy timeout and answers busy=1.
                checkpoints.append(
                    checker.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
                next_check = time.monotonic() + 0.4
    finally:
        stop.set()
        for thread in readers:
            thread.join(10)
        checker.close()

    assert reader_errors == []
    assert reader_report["reads"] > 10
    assert reader_report["pinned"] == 0
    # A pinned snapshot would make every checkpoint answer busy; readers that keep no
    # snapshot between reads leave moments when the WAL can be truncated.
    assert len(checkpoints) >= 2
    assert any(busy == 0 and log_frames == checkpointed
               for busy, log_frames, checkpointed in checkpoints), checkpoints
    total = rows(path, "SELECT count(*) FROM blob")[0][0]
    for counts in reader_report["counts"]:
        assert counts == sorted(counts)  # fresh data, never going back
        assert counts[-1] > counts[0]    # each reader saw the writes arrive
        assert counts[-1] <= total


@pytest.mark.timeout(15)
def test_read_your_writes_through_a_cached_store_and_cached_objects(make_manager, tmp_path):
    path = tmp_path / "ryw.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)
    mgr.submit_write(lambda store: store.execute(
        "INSERT INTO item (id, name) VALUES (1, 'old')")).result(timeout=10)

    store = mgr.get_store(NAME)
    cached = store.get(Item, 1)
    assert cached.name == "old"
    assert store.find(Item).count() == 1

    def update(store, new_value: str) -> str:
        store.get(Item, 1).name = new_value
        return new_value

    assert mgr.submit_write(update, "new").result(timeout=10) == "new"
    again = store.get(Item, 1)
    assert again.name == "new"
    assert cached.name == "new"
    assert not store.connection._raw_connection.in_transaction

    def add_item(store) -> int:
        item = Item()
        item.id = 2
        item.name = "second"
        store.add(item)
        return item.id

    assert mgr.submit_write(add_item).result(timeout=10) == 2
    assert sorted((item.id, item.name) for item in store.find(Item)) == [
        (1, "new"), (2, "second")]
    assert mgr.submit_write(update, "newest").result(timeout=10) == "newest"
    assert store.find(Item, Item.name == "newest").one() is cached
    assert cached.name == "newest"


@pytest.mark.timeout(15)
def test_read_block_is_one_snapshot(make_manager, tmp_path):
    path = tmp_path / "snapshot.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)
    mgr.submit_write(insert_entry, 1).result(timeout=10)

    with mgr.read(NAME) as store:
        assert store.execute("SELECT count(*) FROM entry").get_one() == (1,)
        other = threading.Thread(target=lambda: mgr.submit_write(insert_entry, 2).result())
        other.start()
        other.join(10)
        assert entry_ids(path) == [1, 2]  # committed, as another connection sees
        assert store.execute("SELECT count(*) FROM entry").get_one() == (1,)
        assert store.execute("SELECT unit_id FROM entry").get_all() == [(1,)]
        # This thread's own acknowledged write ends the snapshot (read-your-writes),
        # as a write unit in the thread's own store does under mutex/threadlocal.
        assert mgr.submit_write(insert_entry, 3).result(timeout=10) == 3
        assert store.execute("SELECT count(*) FROM entry").get_one() == (3,)
    assert store.execute("SELECT count(*) FROM entry").get_one() == (3,)
    assert not store.connection._raw_connection.in_transaction
    assert mgr.get_store(NAME) is store


@pytest.mark.timeout(15)
def test_write_block_commits_on_exit_and_rolls_back_on_error(make_manager, tmp_path):
    path = tmp_path / "block.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables)

    with mgr.write(NAME) as store:
        insert_entry(store, 1, "block")
        item = Item()
        item.id = 1
        item.name = "from block"
        store.add(item)
        # A unit another thread submits meanwhile waits for the block.
        submitted: list = []
        other = threading.Thread(target=lambda: submitted.append(
            mgr.submit_write(insert_entry, 2, "queued")))
        other.start()
        other.join(10)
        time.sleep(0.1)
        assert not submitted[0].done()
        assert entry_ids(path) == []  # nothing committed before the block ends
    assert submitted[0].result(timeout=10) == 2
    assert rows(path, "SELECT unit_id, note FROM entry ORDER BY unit_id") == [
        (1, "block"), (2, "queued")]
    reader = mgr.get_store(NAME)
    assert reader.get(Item, 1).name == "from block"

    with pytest.raises(Boom, match="block failed"):
        with mgr.write(NAME) as store:
            insert_entry(store, 3, "doomed")
            item = Item()
            item.id = 3
            item.name = "doomed"
            store.add(item)
            store.flush()
            raise Boom("block failed")
    assert entry_ids(path) == [1, 2]
    assert rows(path, "SELECT id FROM item") == [(1,)]
    assert reader.get(Item, 3) is None
    # The writer is intact and its store holds nothing of the failed block.
    assert mgr.submit_write(lambda store: store.get(Item, 3)).result(timeout=10) is None
    assert mgr.submit_write(insert_entry, 4).result(timeout=10) == 4
    assert entry_ids(path) == [1, 2, 4]
    assert mgr.stats(NAME)["writer_restarts"] == 0


# -- strategy single -----------------------------------------------------------

@pytest.mark.timeout(15)
def test_single_refuses_get_store_and_reads_on_the_worker(make_manager, tmp_path):
    path = tmp_path / "single.db"
    mgr = make_manager("single", name=NAME, path=path, schema=None)
    with pytest.raises(StrategyError, match="submit_read"):
        mgr.get_store(NAME)
    with pytest.raises(StrategyError, match="submit_read"):
        mgr.read(NAME).__enter__()

    def where(store) -> int:
        return threading.get_ident()

    writer_thread = mgr.submit_write(where).result(timeout=10)
    mgr.submit_write(create_tables).result(timeout=10)
    mgr.submit_write(insert_entry, 1).result(timeout=10)
    assert mgr.submit_read(lambda store: store.execute(
        "SELECT unit_id FROM entry").get_all()).result(timeout=10) == [(1,)]
    assert mgr.submit_read(where).result(timeout=10) == writer_thread != threading.get_ident()

    seen: dict[int, list] = {}

    def other_thread(index: int) -> None:
        mgr.submit_write(insert_entry, 10 + index).result(timeout=10)
        seen[index] = mgr.submit_read(lambda store: [unit_id for (unit_id,) in store.execute(
            "SELECT unit_id FROM entry").get_all()]).result(timeout=10)

    run_threads(other_thread, 4)
    for index, unit_ids in seen.items():
        assert 1 in unit_ids and 10 + index in unit_ids  # each sees its own write
    assert entry_ids(path) == [1, 10, 11, 12, 13]


# -- figures -------------------------------------------------------------------

@pytest.mark.timeout(15)
def test_stats_match_what_happened(make_manager, tmp_path):
    path = tmp_path / "stats.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=None)
    keys = {"queue_depth", "oldest_wait_seconds", "units_committed", "units_failed",
            "batches", "mean_batch", "largest_batch", "retries", "lock_wait_seconds"}
    fresh = mgr.stats(NAME)
    assert keys <= set(fresh)
    assert (fresh["queue_depth"], fresh["units_committed"], fresh["units_failed"],
            fresh["batches"], fresh["largest_batch"]) == (0, 0, 0, 0, 0)

    mgr.submit_write(create_tables).result(timeout=10)
    stall = Stall()
    stalled = stall.start(mgr)

    def failing(store, unit_id: int) -> None:
        insert_entry(store, unit_id)
        raise Boom(f"unit {unit_id}")

    futures = [mgr.submit_write(insert_entry, unit_id) for unit_id in range(5)]
    futures += [mgr.submit_write(failing, unit_id) for unit_id in (5, 6)]
    time.sleep(0.3)
    waiting = mgr.stats(NAME)
    assert waiting["queue_depth"] == 7
    assert 0.25 <= waiting["oldest_wait_seconds"] < 5
    stall.gate.set()
    assert stalled.result(timeout=10) == "stall released"
    for future in futures[:5]:
        future.result(timeout=10)
    for future in futures[5:]:
        assert isinstance(future.exception(timeout=10), Boom)

    done = mgr.stats(NAME)
    assert done["queue_depth"] == 0
    assert done["oldest_wait_seconds"] == 0
    assert done["units_committed"] == 1 + 1 + 5
    assert done["units_failed"] == 2
    assert done["largest_batch"] == 7
    assert done["batches"] == 3  # setup, stall, then the seven queued units together
    assert done["mean_batch"] == pytest.approx(9 / 3)
    assert done["retries"] == 0
    # Nobody else held the lock: the 0.3 s the stall spent inside its own
    # transaction is not time lost to locks.
    assert 0 <= done["lock_wait_seconds"] < 0.1, done
    assert entry_ids(path) == [0, 1, 2, 3, 4]


# -- in-memory -----------------------------------------------------------------

@pytest.mark.timeout(15)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_in_memory_database_is_one_database_for_all_threads(make_manager, strategy):
    mgr = make_manager(strategy, name=NAME, path="", schema=create_tables)
    mgr.submit_write(insert_entry, 0, "main thread").result(timeout=10)
    seen: dict[int, list] = {}

    def worker(index: int) -> None:
        mgr.submit_write(insert_entry, index + 1, f"thread {index}").result(timeout=10)
        if strategy == "queue":
            store = mgr.get_store(NAME)
            found = store.execute("SELECT unit_id FROM entry").get_all()
        else:
            found = mgr.submit_read(lambda store: store.execute(
                "SELECT unit_id FROM entry").get_all()).result(timeout=10)
        seen[index] = sorted(unit_id for (unit_id,) in found)

    run_threads(worker, 4)
    for index, unit_ids in seen.items():
        assert 0 in unit_ids and index + 1 in unit_ids
    assert mgr.submit_read(lambda store: store.execute(
        "SELECT unit_id FROM entry ORDER BY unit_id").get_all()).result(timeout=10) == [
        (0,), (1,), (2,), (3,), (4,)]


@pytest.mark.timeout(15)
def test_full_queue_blocks_for_timeout_then_raises_queue_full(make_manager, tmp_path):
    path = tmp_path / "full.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables,
                       queue_size=2, timeout=0.3)
    stall = Stall()
    stalled = stall.start(mgr)
    accepted = [mgr.submit_write(insert_entry, unit_id) for unit_id in (1, 2)]
    assert mgr.stats(NAME)["queue_depth"] == 2

    started = time.monotonic()
    with pytest.raises(QueueFullError) as caught:
        mgr.submit_write(insert_entry, 99)
    waited = time.monotonic() - started
    assert 0.28 <= waited < 1.5, waited
    assert "queue_size" in str(caught.value)
    assert "timeout=0.3" in str(caught.value)

    refused: list[BaseException] = []

    def more(index: int) -> None:
        try:
            mgr.submit_write(insert_entry, 100 + index)
        except QueueFullError as error:
            refused.append(error)

    run_threads(more, 4, timeout=10)
    assert len(refused) == 4
    stats = mgr.stats(NAME)
    assert stats["queue_depth"] == 2  # bounded: the refused units were not kept
    assert stats["oldest_wait_seconds"] >= 0.3

    stall.gate.set()
    assert stalled.result(timeout=10) == "stall released"
    assert [future.result(timeout=10) for future in accepted] == [1, 2]
    assert entry_ids(path) == [1, 2]


@pytest.mark.timeout(15)
def test_submit_to_a_full_queue_gets_in_when_room_appears(make_manager, tmp_path):
    path = tmp_path / "room.db"
    mgr = make_manager("queue", name=NAME, path=path, schema=create_tables,
                       queue_size=1, timeout=5)
    stall = Stall()
    stalled = stall.start(mgr)
    first = mgr.submit_write(insert_entry, 1)
    outcome: dict = {}

    def blocked_submit() -> None:
        started = time.monotonic()
        outcome["future"] = mgr.submit_write(insert_entry, 2)
        outcome["waited"] = time.monotonic() - started

    thread = threading.Thread(target=blocked_submit)
    thread.start()
    time.sleep(0.3)
    assert "future" not in outcome  # still blocked on the full queue
    stall.gate.set()
    thread.join(10)
    assert 0.25 <= outcome["waited"] < 5
    assert stalled.result(timeout=10) == "stall released"
    assert first.result(timeout=10) == 1
    assert outcome["future"].result(timeout=10) == 2
    assert entry_ids(path) == [1, 2]


@pytest.mark.timeout(15)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_close_drains_queued_units_then_refuses_everything(make_manager, tmp_path, strategy):
    path = tmp_path / "drain.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=create_tables, batch=8)
    stall = Stall()
    stalled = stall.start(mgr)
    futures = [mgr.submit_write(insert_entry, unit_id) for unit_id in range(50)]
    assert not any(future.done() for future in futures)
    release = threading.Timer(0.3, stall.gate.set)
    release.start()
    started = time.monotonic()
    mgr.close()
    assert time.monotonic() - started >= 0.25  # close waited for the queue to drain
    release.join()

    assert stalled.result(timeout=0) == "stall released"
    assert [future.result(timeout=0) for future in futures] == list(range(50))
    assert entry_ids(path) == list(range(50))
    with pytest.raises(ManagerClosedError):
        mgr.submit_write(insert_entry, 50)
    with pytest.raises(ManagerClosedError):
        mgr.submit_read(lambda store: None)
    with pytest.raises(ManagerClosedError):
        mgr.write(NAME)
    with pytest.raises(ManagerClosedError):
        mgr.get_store(NAME)
    mgr.close()  # a second close is harmless
    assert entry_ids(path) == list(range(50))


@pytest.mark.timeout(15)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
@pytest.mark.parametrize("make_death", [lambda: WriterKiller("kaboom"), lambda: SystemExit(3)],
                         ids=["BaseException-subclass", "SystemExit"])
def test_a_unit_raising_base_exception_breaks_the_writer_cleanly(
        make_manager, tmp_path, strategy, make_death):
    path = tmp_path / "death.db"
    mgr = make_manager(strategy, name=NAME, path=path, schema=create_tables, batch=3)
    death = make_death()

    def fatal(store) -> None:
        insert_entry(store, 2, "fatal")
        raise death

    stall = Stall()
    stalled = stall.start(mgr)
    before = mgr.submit_write(insert_entry, 1)   # same batch, runs before the fatal unit
    culprit = mgr.submit_write(fatal)
    others = [mgr.submit_write(insert_entry, unit_id) for unit_id in (3, 4, 5)]
    stall.gate.set()
    assert stalled.result(timeout=10) == "stall released"

    assert culprit.exception(timeout=10) is death
    for future in [before, *others]:
        error = future.exception(timeout=10)
        assert isinstance(error, WriterBrokenError)
        assert error.__cause__ is death
        assert "died" in str(error)
    assert entry_ids(path) == []  # the whole broken batch was rolled back

    # The next submit starts a new writer on a new connection.
    assert mgr.submit_write(insert_entry, 6).result(timeout=10) == 6
    assert mgr.submit_write(insert_entry, 7).result(timeout=10) == 7
    assert entry_ids(path) == [6, 7]
    assert mgr.stats(NAME)["writer_restarts"] >= 1


@pytest.mark.timeout(15)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_a_file_that_is_not_a_database_fails_every_unit_clearly(make_manager, tmp_path, strategy):
    path = tmp_path / "garbage.db"
    garbage = b"this is certainly not an SQLite database\n" * 200
    path.write_bytes(garbage)
    mgr = make_manager(strategy, name=NAME, path=path, schema=None)

    futures = [mgr.submit_write(insert_entry, unit_id) for unit_id in range(3)]
    for future in futures:
        error = future.exception(timeout=10)
        assert isinstance(error, Exception)
        assert str(path) in str(error)
        assert "not a database" in str(error)
    # Trying again fails the same way instead of hanging.
    again = mgr.submit_write(insert_entry, 9).exception(timeout=10)
    assert str(path) in str(again)
    outcome: dict = {}

    def write_block() -> None:
        try:
            with mgr.write(NAME):
                outcome["entered"] = True
        except Exception as error:  # noqa: BLE001
            outcome["error"] = error

    thread = threading.Thread(target=write_block)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "write() hung on a database that cannot be opened"
    assert "entered" not in outcome
    assert str(path) in str(outcome["error"])
    started = time.monotonic()
    mgr.close(timeout=10)
    assert time.monotonic() - started < 5
    assert path.read_bytes() == garbage  # the bad file was left as it was
