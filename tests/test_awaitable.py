"""The awaitable API: `awrite`/`aread` under every strategy, and the event loop never blocks.

Real event loops, real threads, real SQLite files: the loop's lag is measured by a
ticker task while a 300 ms unit runs; cancellation is checked on the committed data.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from storm.exceptions import OperationalError

from _items import Boom, Item, failing, insert, names
from sqlite_storemgr import (
    ManagerClosedError, ReadOnlyStoreError, StoreManager, StoreManagerError)
from sqlite_storemgr.awaitable import POOL_THREADS

NAME = "db"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def path(db_path):
    return db_path


@pytest.fixture
def manager(make_manager, strategy):
    return make_manager(strategy, name=NAME, timeout=5)


def run(coroutine):
    """Run ``coroutine`` on a new event loop, bounded in time."""
    async def bounded():
        return await asyncio.wait_for(coroutine, 30)
    return asyncio.run(bounded())


def item_names(store):
    return [item.name for item in store.find(Item).order_by(Item.id)]


async def until(event: threading.Event) -> None:
    """Wait for a thread's ``event`` without blocking the loop."""
    deadline = time.monotonic() + 10
    while not event.is_set():
        assert time.monotonic() < deadline, "the unit never started"
        await asyncio.sleep(0.005)


class Stall:
    """A unit that inserts ``first``, says it started, waits to be released, then inserts
    ``second`` (or raises Boom)."""

    def __init__(self, first: str, second: str | None = None, fail: bool = False):
        self.first, self.second, self.fail = first, second, fail
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, store):
        store.execute("INSERT INTO item (name) VALUES (?)", (self.first,))
        self.started.set()
        assert self.release.wait(10), "the test never released the unit"
        if self.fail:
            raise Boom(self.first)
        if self.second is not None:
            store.execute("INSERT INTO item (name) VALUES (?)", (self.second,))
        return self.first


def test_awrite_returns_the_units_value_and_aread_reads_it(manager, path):
    def add(store, name, *, suffix):
        return insert(name + suffix)(store)

    async def session():
        written = [await manager.awrite(insert("a")),
                   await manager.awrite(add, "b", suffix="!", name=NAME)]
        read = await manager.aread(item_names)
        counted = await manager.aread(lambda store, table: store.execute(
            f"SELECT count(*) FROM {table}").get_one()[0], "item", name=NAME)
        return written, read, counted

    assert run(session()) == (["a", "b!"], ["a", "b!"], 2)
    assert names(path) == ["a", "b!"]


def test_reads_see_the_tasks_own_writes_even_through_cached_objects(manager):
    """Every pool thread (or the worker) caches the Item; each write must show in the next reads."""
    item_id = manager.submit_write(lambda store: insert("v0")(store) and store.execute(
        "SELECT id FROM item").get_one()[0]).result(timeout=10)

    def name_of(store):
        return store.get(Item, item_id).name

    def rename(store, name):
        store.get(Item, item_id).name = name

    async def session():
        seen = []
        for version in range(1, 6):
            await asyncio.gather(*(manager.aread(name_of) for _ in range(2 * POOL_THREADS)))
            await manager.awrite(rename, f"v{version}")
            seen.append(set(await asyncio.gather(
                *(manager.aread(name_of) for _ in range(2 * POOL_THREADS)))))
        return seen

    assert run(session()) == [{f"v{version}"} for version in range(1, 6)]


LAG_LIMIT = 0.020
LAG_ATTEMPTS = 8  # a loop blocked by the unit fails each; a loaded machine only some


async def worst_lag_during(awaitable) -> tuple[object, float, float]:
    """(its outcome, the seconds it took, the worst lag of a 2 ms ticker meanwhile)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lags: list[float] = []

    async def ticker():
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.002)
            lags.append(loop.time() - before - 0.002)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    began = time.perf_counter()
    outcome = await awaitable
    elapsed = time.perf_counter() - began
    stop.set()
    await ticking
    assert len(lags) >= 20, f"the ticker ran {len(lags)} times in {elapsed:.3f} s"
    return outcome, elapsed, max(lags)


@pytest.mark.parametrize("call", ["awrite", "aread"])
def test_the_loop_never_blocks_while_a_300ms_unit_runs(manager, path, strategy, call):
    """The unit adds under 20 ms to the loop's worst lag; a loop blocked by it would lag
    300 ms on every attempt.  What the machine's load adds by itself (measured just before,
    with nothing in flight) is allowed on top, and a noisy attempt is tried again."""
    def slow(store):
        store.execute("SELECT count(*) FROM item").get_all()
        time.sleep(0.3)  # the unit holds its thread (and under mutex the write lock)
        if call == "awrite":
            insert("slow")(store)
        return "done"

    async def attempt():
        _, _, idle = await worst_lag_during(asyncio.sleep(0.3))
        outcome, elapsed, busy = await worst_lag_during(getattr(manager, call)(slow))
        assert outcome == "done" and elapsed >= 0.3
        return idle, busy

    lags = []
    for _ in range(LAG_ATTEMPTS):
        idle, busy = run(attempt())
        lags.append((round(idle * 1000, 1), round(busy * 1000, 1)))
        if busy < LAG_LIMIT + idle:
            break
    else:
        pytest.fail(f"the loop lagged (idle ms, with the unit ms) {lags} under {strategy}")
    assert names(path) == (["slow"] * len(lags) if call == "awrite" else [])


def test_cancelling_a_unit_that_has_not_started_means_it_never_runs(manager, path, strategy):
    stall = Stall("stalled")
    ran = threading.Event()

    def behind(store):
        ran.set()
        insert("cancelled")(store)

    async def session():
        stalled = asyncio.create_task(manager.awrite(stall))
        await until(stall.started)
        # Queued behind the stalled unit (queue, single), or waiting for the write lock
        # in a pool thread (mutex, threadlocal).
        waiting = asyncio.create_task(manager.awrite(behind))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        stall.release.set()
        assert await stalled == "stalled"
        return await manager.awrite(insert("after"))

    assert run(session()) == "after"
    assert manager.close(timeout=10)  # drains anything still handed over
    assert not ran.is_set(), f"the cancelled unit ran under {strategy}"
    assert names(path) == ["stalled", "after"]


@pytest.mark.parametrize("fail", [False, True], ids=["commits", "rolls-back"])
def test_cancelling_a_started_unit_leaves_it_whole(manager, path, fail):
    stall = Stall("first", "second", fail=fail)

    async def session():
        task = asyncio.create_task(manager.awrite(stall))
        await until(stall.started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stall.release.set()
        return await manager.awrite(insert("after"))  # queued or locked behind the stalled unit

    assert run(session()) == "after"
    assert names(path) == (["after"] if fail else ["first", "second", "after"])


def test_errors_reach_the_awaiting_task_with_their_types(manager, path):
    async def session():
        with pytest.raises(Boom, match="^broken$"):
            await manager.awrite(failing("broken"))
        with pytest.raises(OperationalError, match="no such column"):
            await manager.awrite(lambda store: store.execute("SELECT nope FROM item"))
        with pytest.raises(StoreManagerError, match="bound to the unit's store"):
            await manager.awrite(lambda store: store.find(Item))
        with pytest.raises(Boom, match="^in a read$"):
            await manager.aread(lambda store: (_ for _ in ()).throw(Boom("in a read")))
        with pytest.raises(ReadOnlyStoreError):
            await manager.aread(insert("sneaked"))
        return await manager.aread(item_names)

    assert run(session()) == []
    assert names(path) == []


def test_after_close_both_raise_manager_closed_error(manager):
    run(manager.awrite(insert("before")))
    manager.close(timeout=10)

    async def session():
        with pytest.raises(ManagerClosedError):
            await manager.awrite(insert("after"))
        with pytest.raises(ManagerClosedError):
            await manager.aread(item_names)

    run(session())


def test_close_drains_every_unit_already_handed_over(manager, path):
    count = 40

    async def session():
        tasks = [asyncio.create_task(manager.awrite(insert(f"n{index}")))
                 for index in range(count)]
        await asyncio.sleep(0)  # every task has handed its unit over
        drained = await asyncio.to_thread(manager.close, 20)
        return drained, await asyncio.gather(*tasks)

    drained, results = run(session())
    assert drained
    assert results == [f"n{index}" for index in range(count)]
    assert sorted(names(path)) == sorted(results)


def test_the_pool_is_bounded_and_its_threads_end_with_the_manager(manager, strategy):
    def which_thread(store):
        time.sleep(0.02)
        return threading.get_ident()

    async def session():
        return await asyncio.gather(*(manager.aread(which_thread) for _ in range(5 * POOL_THREADS)))

    threads = set(run(session()))
    assert len(threads) <= (1 if strategy == "single" else POOL_THREADS)
    assert threading.get_ident() not in threads  # never the loop's thread
    assert manager.close(timeout=10)
    left = [thread.name for thread in threading.enumerate()
            if thread.name.startswith("storemgr-async")]
    assert left == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_awaits_through_a_pool_of_its_own(manager, path):
    run(manager.awrite(insert("parent")))  # the parent's pool (mutex, threadlocal) exists now
    pid = os.fork()
    if pid == 0:  # the child: its parent's pool threads do not exist here
        code = 1
        try:
            child = StoreManager()
            child.configure(NAME, f"sqlite:{path}?strategy=mutex")
            run(child.awrite(insert("child")))
            run(manager.awrite(insert("child via the inherited manager")))
            code = 0 if run(manager.aread(item_names))[-1].startswith("child via") else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(status) == 0
    assert names(path) == ["parent", "child", "child via the inherited manager"]


def test_a_unit_that_closes_its_manager_does_not_hang(manager):
    async def session():
        closed = await manager.awrite(lambda store: manager.close(timeout=5))
        with pytest.raises(ManagerClosedError):
            await manager.aread(item_names)
        return closed

    started = time.monotonic()
    assert run(session()) is True
    assert time.monotonic() - started < 5
