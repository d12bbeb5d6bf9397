"""Writer death with a full house: 1,000 units queued from several threads, submitters
blocked on a full queue, a ``write()`` block waiting for its turn.  Nothing hangs, every
future ends, exactly the acknowledged units are committed, and the next writer serves
what comes after (tests/test_writer_queue.py covers a small batch).
"""

from __future__ import annotations

import threading
import time

import pytest

from _items import WRITER_THREAD_STRATEGIES, WriterKiller, rows
from sqlite_storemgr import WriterBrokenError

pytestmark = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning")

NAME = "db"


def create_entries(store) -> None:
    store.execute("CREATE TABLE entry (k INTEGER NOT NULL UNIQUE)")


def insert(store, key: int) -> int:
    store.execute("INSERT INTO entry (k) VALUES (?)", (key,))
    return key


def stored(path) -> list[int]:
    return [key for (key,) in rows(path, "SELECT k FROM entry ORDER BY k")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
@pytest.mark.parametrize("queue_size", [10_000, 64], ids=["roomy-queue", "full-queue"])
def test_writer_death_with_a_thousand_units_queued_from_several_threads(
        make_manager, db_path, strategy, queue_size):
    mgr = make_manager(strategy, name=NAME, schema=create_entries,
                       batch=32, queue_size=queue_size, timeout=20)
    entered, gate = threading.Event(), threading.Event()

    def stall(store):
        entered.set()
        assert gate.wait(20)
        return "stalled"

    stalled = mgr.submit_write(stall)
    assert entered.wait(10)
    boom = WriterKiller("the writer dies here")

    def fatal(store):
        insert(store, -1)
        raise boom

    futures: dict[int, object] = {}
    lock = threading.Lock()
    culprit: dict = {}
    started = threading.Barrier(5)

    def submitter(index: int) -> None:
        started.wait()
        for step in range(250):
            key = index * 1000 + step
            if index == 0 and step == 100:
                culprit["future"] = mgr.submit_write(fatal)
            future = mgr.submit_write(insert, key)
            with lock:
                futures[key] = future

    block_outcome: dict = {}

    def write_block() -> None:
        started.wait()
        time.sleep(0.05)  # queued behind some of the units
        try:
            with mgr.write(NAME) as store:
                insert(store, 99_999)
            block_outcome["ok"] = True
        except BaseException as error:  # noqa: BLE001 - checked below
            block_outcome["error"] = error

    threads = [threading.Thread(target=submitter, args=(index,)) for index in range(4)]
    threads.append(threading.Thread(target=write_block))
    for thread in threads:
        thread.start()
    if queue_size >= 1000:
        deadline = time.monotonic() + 10
        while len(futures) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(futures) == 1000  # all queued before the writer moves again
    gate.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a submitter or a write() block hung"
    assert stalled.result(timeout=10) == "stalled"

    assert culprit["future"].exception(timeout=10) is boom
    committed, broken = set(), set()
    for key, future in futures.items():
        error = future.exception(timeout=20)  # every future ends
        if error is None:
            committed.add(key)
        else:
            assert isinstance(error, WriterBrokenError), repr(error)
            assert error.__cause__ is boom
            broken.add(key)
    assert broken, "the death failed no pending unit"
    if "error" in block_outcome:
        assert isinstance(block_outcome["error"], WriterBrokenError), block_outcome
    else:
        committed.add(99_999)
    # Exactly the acknowledged units are in the file; nothing of the culprit.
    assert stored(db_path) == sorted(committed)
    if queue_size < 1000:
        # Submitters blocked on the full queue went on after the death: a new writer
        # took their units.
        assert mgr.stats(NAME)["writer_restarts"] >= 1
    assert mgr.submit_write(insert, 123_456).result(timeout=10) == 123_456
    assert stored(db_path) == sorted(committed | {123_456})
    assert rows(db_path, "PRAGMA integrity_check") == [("ok",)]

