"""Load and leaks: a 64-thread soak of 100,000 mixed units, and 1,000 short-lived threads.

- The soak (``@pytest.mark.soak``, part of the default run): 64 threads run 100,000
  units under the default strategy (``queue``): reads through the thread's own
  store, blind writes, and read-then-write increments of shared counters.  Zero
  errors, every write acknowledged and present exactly once, every increment
  counted (no lost update), bounded in time, and the process's resident memory
  grows by less than 50 MB after the warm-up.
- 1,000 short-lived threads each calling ``get_store`` (``queue`` and
  ``threadlocal``): the open file descriptors return to the baseline.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
from collections import Counter

import pytest

from _items import rows
from sqlite_storemgr import StoreManager

pytestmark = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning")

NAME = "db"
THREADS = 64
UNITS = 100_000
COUNTERS = 16
RSS_GROWTH_LIMIT = 50 * 1024 * 1024


def open_files() -> Counter:
    """What this process's file descriptors point to, counted."""
    found: Counter = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[os.readlink(f"/proc/self/fd/{fd}")] += 1
        except OSError:  # the descriptor listdir itself used, now closed
            pass
    return found


def rss_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def setup_schema(store) -> None:
    store.execute("CREATE TABLE event (id INTEGER NOT NULL, thread INTEGER NOT NULL, "
                  "payload TEXT NOT NULL)")
    store.execute("CREATE INDEX event_thread ON event (thread)")
    store.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    for index in range(COUNTERS):
        store.execute("INSERT INTO counter (id, n) VALUES (?, 0)", (index,))


def add_event(store, event_id: int, thread: int) -> int:
    store.execute("INSERT INTO event (id, thread, payload) VALUES (?, ?, ?)",
                  (event_id, thread, "x" * 64))
    return event_id


def increment(store, counter: int) -> int:
    (value,) = store.execute("SELECT n FROM counter WHERE id = ?", (counter,)).get_one()
    store.execute("UPDATE counter SET n = ? WHERE id = ?", (value + 1, counter))
    return value + 1


@pytest.mark.soak
@pytest.mark.timeout(120)
def test_soak_64_threads_100k_mixed_units(tmp_path):
    path = tmp_path / "soak.db"
    mgr = StoreManager()
    mgr.configure(NAME, f"sqlite:{path}?timeout=30")
    mgr.submit_write(setup_schema).result(timeout=10)
    per_thread = -(-UNITS // THREADS)  # 1,563 each: 100,032 in all
    warmup = per_thread // 10
    errors: list[BaseException] = []
    events: list[list[int]] = [[] for _ in range(THREADS)]
    increments = [[0] * COUNTERS for _ in range(THREADS)]
    reads = [0] * THREADS
    warmed = threading.Barrier(THREADS + 1)
    sample = {}

    def worker(index: int) -> None:
        rng = random.Random(index)
        store = mgr.get_store(NAME)
        seen_events = 0
        try:
            for step in range(per_thread):
                if step == warmup:
                    warmed.wait(60)
                kind = rng.random()
                if kind < 0.4:   # read through this thread's own (read-only) store
                    (count,) = store.execute(
                        "SELECT count(*) FROM event WHERE thread = ?", (index,)).get_one()
                    # Read-your-writes: every event this thread was told about is there.
                    assert count == seen_events, (count, seen_events)
                    reads[index] += 1
                elif kind < 0.8:  # a blind write
                    event_id = index * per_thread + step
                    assert mgr.submit_write(add_event, event_id, index).result(60) == event_id
                    events[index].append(event_id)
                    seen_events += 1
                else:            # read, then write what was read
                    counter = rng.randrange(COUNTERS)
                    mgr.submit_write(increment, counter).result(60)
                    increments[index][counter] += 1
        except BaseException as error:  # noqa: BLE001 - every error fails the soak
            errors.append(error)
            if not warmed.broken:
                warmed.abort()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    warmed.wait(60)
    gc.collect()
    sample["rss_after_warmup"] = rss_bytes()
    for thread in threads:
        thread.join(110)
        assert not thread.is_alive(), "a soak thread hung"
    elapsed = time.monotonic() - started
    gc.collect()
    rss_growth = rss_bytes() - sample["rss_after_warmup"]
    stats = mgr.stats(NAME)
    mgr.close()

    assert errors == []
    assert elapsed < 60, f"the soak took {elapsed:.1f}s"
    all_events = sorted(event for mine in events for event in mine)
    total_increments = [sum(mine[counter] for mine in increments) for counter in range(COUNTERS)]
    units = len(all_events) + sum(total_increments) + sum(reads)
    assert units == per_thread * THREADS >= UNITS
    # Nothing lost, nothing twice: the events, and every increment counted.
    assert rows(path, "SELECT id FROM event ORDER BY id") == [(event,) for event in all_events]
    assert rows(path, "SELECT n FROM counter ORDER BY id") == [
        (count,) for count in total_increments]
    assert stats["units_failed"] == 0
    assert stats["units_committed"] == 1 + len(all_events) + sum(total_increments)
    assert rss_growth < RSS_GROWTH_LIMIT, f"RSS grew {rss_growth / 2**20:.1f} MB"
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    print(f"\nsoak: {units} units ({sum(reads)} reads, {len(all_events)} writes, "
          f"{sum(total_increments)} read-then-write) from {THREADS} threads in {elapsed:.1f}s; "
          f"mean batch {stats['mean_batch']:.1f}; RSS growth after warm-up "
          f"{rss_growth / 2**20:.1f} MB")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", ["queue", "threadlocal"])
def test_a_thousand_short_lived_threads_leave_no_file_descriptors(tmp_path, strategy):
    path = tmp_path / "threads.db"
    gc.collect()
    before = open_files()
    mgr = StoreManager()
    mgr.configure(NAME, f"sqlite:{path}?strategy={strategy}&timeout=10")
    try:
        mgr.submit_write(lambda store: store.execute(
            "CREATE TABLE t (k INTEGER PRIMARY KEY)")).result(timeout=10)
        mgr.submit_write(lambda store: store.execute("INSERT INTO t VALUES (1)")).result(10)
        # The baseline: this thread's store and (queue) the writer's are open already.
        assert mgr.get_store(NAME).execute("SELECT count(*) FROM t").get_one() == (1,)
        gc.collect()
        baseline = open_files()
        errors: list[BaseException] = []
        peak = [0]

        def short_lived() -> None:
            try:
                store = mgr.get_store(NAME)
                assert store.execute("SELECT count(*) FROM t").get_one() == (1,)
                peak[0] = max(peak[0], len(os.listdir("/proc/self/fd")))
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

        for _ in range(20):  # 20 waves of 50 concurrent threads
            wave = [threading.Thread(target=short_lived) for _ in range(50)]
            for thread in wave:
                thread.start()
            for thread in wave:
                thread.join(10)
                assert not thread.is_alive()
        assert errors == []
        gc.collect()
        extra = open_files() - baseline
        # Every thread's store was closed when the thread ended.  What SQLite keeps is
        # the descriptor of the database file itself of some closed connections: its
        # unix VFS may not close it while another connection of the process (here the
        # test thread's, and the writer's) holds a POSIX lock on the file, as closing
        # would drop that lock; it reuses those descriptors for the next connections,
        # so they never exceed one wave of threads.  No -wal, -shm or other file stays.
        assert set(extra) <= {str(path)}, extra
        assert sum(extra.values()) <= 50, extra
        assert peak[0] > sum(baseline.values())  # the threads had stores of their own
    finally:
        mgr.close()
    gc.collect()
    assert open_files() == before  # with every connection closed, all of them are gone
