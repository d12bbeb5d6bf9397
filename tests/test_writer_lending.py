"""A lone caller about to wait runs its queued units itself while the writer is parked
(`WriterQueue.run_for_waiter`): the writer's rules hold there too."""

from __future__ import annotations

import threading

import pytest

from _items import WRITER_THREAD_STRATEGIES, Boom, WriterKiller, insert, names
from _threads import in_thread
from sqlite_storemgr import StrategyError, WriterBrokenError

pytestmark = pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)


def running_thread(store) -> int:
    return threading.get_ident()


def settle(manager) -> None:
    """One unit waited for from the main thread: the writer ran it and is parked again."""
    manager.submit_write(lambda store: None).result(timeout=10)


@pytest.mark.timeout(60)
def test_a_lone_caller_thread_runs_its_units_in_order_and_reads_its_writes(
        strategy, make_manager, db_path):
    manager = make_manager(strategy)
    settle(manager)

    def lone_caller() -> tuple[int, set[int], list[str], int]:
        ran_in = {manager.submit_write(running_thread).result() for _ in range(20)}
        written = [manager.submit_write(insert(f"n{i:02d}")).result() for i in range(30)]
        seen = manager.submit_read(
            lambda store: store.execute("SELECT count(*) FROM item").get_one()[0]).result()
        return threading.get_ident(), ran_in, written, seen

    caller, ran_in, written, seen = in_thread(lone_caller, timeout=40)
    assert caller in ran_in  # the writer may take the first, not all twenty
    assert len(ran_in) <= 2
    assert written == [f"n{i:02d}" for i in range(30)]
    assert seen == 30
    assert names(db_path) == written
    stats = manager.stats()
    assert stats["units_committed"] >= 51 and stats["units_failed"] == 0


@pytest.mark.timeout(60)
def test_the_main_thread_never_runs_a_unit_itself(strategy, make_manager):
    manager = make_manager(strategy)
    settle(manager)
    ran_in = {manager.submit_write(running_thread).result(timeout=10) for _ in range(10)}
    assert threading.get_ident() not in ran_in


@pytest.mark.timeout(60)
def test_a_failing_unit_fails_alone_in_the_caller_s_thread(strategy, make_manager, db_path):
    manager = make_manager(strategy)
    settle(manager)

    def lone_caller() -> list[object]:
        return [manager.submit_write(unit).exception() for unit in (
            insert("a"), lambda store: (_ for _ in ()).throw(Boom("b")), insert("c"))]

    outcomes = in_thread(lone_caller, timeout=40)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], Boom) and outcomes[1].args == ("b",)
    assert names(db_path) == ["a", "c"]


@pytest.mark.timeout(60)
def test_a_unit_that_kills_its_runner_kills_the_writer_as_before(strategy, make_manager,
                                                                 db_path):
    manager = make_manager(strategy)
    settle(manager)
    killer = WriterKiller("dies in the caller's batch")

    def fatal(store) -> None:
        insert("lost")(store)
        raise killer

    def lone_caller() -> tuple[BaseException | None, str]:
        error = manager.submit_write(fatal).exception()
        after = manager.submit_write(insert("after")).result()  # a fresh writer takes it
        return error, after

    error, after = in_thread(lone_caller, timeout=40)
    assert error is killer
    assert after == "after"
    assert names(db_path) == ["after"]
    assert manager.stats()["writer_restarts"] == 1


@pytest.mark.timeout(60)
def test_units_queued_behind_a_killer_fail_as_broken(strategy, make_manager, db_path):
    manager = make_manager(strategy)
    settle(manager)
    killer = WriterKiller("the batch dies")
    behind: list = []

    def fatal(store) -> None:
        # Queued while this batch runs in the caller's thread: the death fails it.
        behind.append(in_thread(lambda: manager.submit_write(insert("behind")), timeout=10))
        raise killer

    def lone_caller() -> BaseException | None:
        return manager.submit_write(fatal).exception()

    assert in_thread(lone_caller, timeout=40) is killer
    error = behind[0].exception(timeout=10)
    assert isinstance(error, WriterBrokenError) and error.__cause__ is killer
    assert names(db_path) == []


@pytest.mark.timeout(60)
def test_a_done_callback_there_may_submit_but_not_wait(strategy, make_manager, db_path):
    manager = make_manager(strategy)
    settle(manager)
    seen: dict = {}

    def callback(future) -> None:
        follow = manager.submit_write(insert("follow"))
        seen["follow"] = follow
        try:
            follow.result()
        except StrategyError as error:
            seen["refused"] = error

    def lone_caller() -> str:
        future = manager.submit_write(insert("first"))
        future.add_done_callback(callback)
        return future.result()

    assert in_thread(lone_caller, timeout=40) == "first"
    assert seen["follow"].result(timeout=10) == "follow"
    # The callback ran where the batch ran (the caller's thread or the writer's): it may
    # not wait there for a unit that needs that very thread.
    assert "would wait for itself" in str(seen["refused"])
    assert names(db_path) == ["first", "follow"]


@pytest.mark.timeout(60)
def test_a_unit_s_nested_submit_joins_it_in_the_caller_s_thread(strategy, make_manager,
                                                                db_path):
    manager = make_manager(strategy)
    settle(manager)

    def outer(store) -> tuple[int, bool]:
        inner = manager.submit_write(insert("inner"))
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        return threading.get_ident(), inner.done()

    def lone_caller() -> tuple[int, int, bool]:
        for _ in range(3):  # the writer parked with a lone caller's batch behind it
            manager.submit_write(lambda store: None).result()
        ran_in, joined = manager.submit_write(outer).result()
        return threading.get_ident(), ran_in, joined

    caller, ran_in, joined = in_thread(lone_caller, timeout=40)
    assert ran_in == caller and joined
    assert names(db_path) == ["inner", "outer"]
