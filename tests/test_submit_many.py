"""submit_many(fn, args_list): one write unit per arguments tuple, queued at once."""

from __future__ import annotations

import threading

import pytest

import sqlite_storemgr
from _items import WRITER_THREAD_STRATEGIES, Boom, names
from sqlite_storemgr import ManagerClosedError, QueueFullError, StoreManager


def insert_named(store, name: str) -> str:
    store.execute("INSERT INTO item (name) VALUES (?)", (name,))
    return name


def insert_unless_bad(store, name: str) -> str:
    store.execute("INSERT INTO item (name) VALUES (?)", (name,))
    if name == "bad":
        raise Boom(name)
    return name


@pytest.mark.timeout(60)
def test_every_unit_commits_in_order_with_its_own_future(strategy, make_manager, db_path):
    manager = make_manager(strategy)
    wanted = [f"n{i:04d}" for i in range(600)]  # more than one batch
    futures = manager.submit_many(insert_named, [(name,) for name in wanted])
    assert [future.result(timeout=30) for future in futures] == wanted
    assert names(db_path) == wanted


@pytest.mark.timeout(60)
def test_a_failing_unit_fails_alone_and_is_reported(strategy, make_manager, db_path):
    manager = make_manager(strategy)
    batch = ["a", "b", "bad", "c", "d"]
    futures = manager.submit_many(insert_unless_bad, [(name,) for name in batch])
    outcomes = [future.exception(timeout=30) for future in futures]
    assert [type(error) for error in outcomes] == [type(None)] * 2 + [Boom] + [type(None)] * 2
    assert outcomes[2].args == ("bad",)
    assert [future.result() for i, future in enumerate(futures) if i != 2] == [
        "a", "b", "c", "d"]
    assert names(db_path) == ["a", "b", "c", "d"]


@pytest.mark.timeout(60)
def test_units_of_several_producers_keep_each_producer_s_order(strategy, make_manager,
                                                               db_path):
    manager = make_manager(strategy)
    failures: list[BaseException] = []

    def produce(prefix: str) -> None:
        try:
            futures = manager.submit_many(
                insert_named, [(f"{prefix}{i:03d}",) for i in range(150)])
            for future in futures:
                future.result(timeout=30)
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    producers = [threading.Thread(target=produce, args=(prefix,)) for prefix in "pqrs"]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(timeout=50)
    assert failures == []
    committed = names(db_path)
    assert len(committed) == 600
    for prefix in "pqrs":
        mine = [name for name in committed if name.startswith(prefix)]
        assert mine == [f"{prefix}{i:03d}" for i in range(150)]


@pytest.mark.timeout(60)
def test_the_results_are_visible_to_the_producer_once_it_has_them(strategy, make_manager):
    manager = make_manager(strategy)
    for future in manager.submit_many(insert_named, [("x",), ("y",)]):
        future.result(timeout=30)
    count = manager.submit_read(
        lambda store: store.execute("SELECT count(*) FROM item").get_one()[0]).result(10)
    assert count == 2


@pytest.mark.timeout(60)
def test_inside_a_unit_each_joins_it(strategy, make_manager, db_path):
    manager = make_manager(strategy)

    def outer(store) -> list[str]:
        inner = manager.submit_many(insert_named, [("in1",), ("in2",)])
        assert all(future.done() for future in inner)  # run at once, joined
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        return [future.result() for future in inner]

    assert manager.submit_write(outer).result(timeout=30) == ["in1", "in2"]
    assert names(db_path) == ["in1", "in2", "outer"]


def test_arguments_that_are_not_tuples_are_refused_before_anything_runs(make_manager, db_path):
    manager = make_manager("queue")
    with pytest.raises(TypeError, match=r"a tuple of arguments per unit, got a str: 'b'"):
        manager.submit_many(insert_named, [("a",), "b"])
    assert names(db_path) == []


def test_nothing_to_do_gives_no_futures(strategy, make_manager):
    assert make_manager(strategy).submit_many(insert_named, iter([])) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_units_the_full_queue_could_not_take_fail_with_queue_full(strategy, make_manager,
                                                                  db_path):
    manager = make_manager(strategy, queue_size=4, timeout=0.3)
    release = threading.Event()
    blocker = manager.submit_write(lambda store: release.wait(20))  # holds the writer
    futures = manager.submit_many(insert_named, [(f"n{i}",) for i in range(10)])
    release.set()
    blocker.result(timeout=30)
    errors = [future.exception(timeout=30) for future in futures]
    queued = [i for i, error in enumerate(errors) if error is None]
    assert queued == list(range(len(queued))) and 4 <= len(queued) < 10
    for error in errors[len(queued):]:
        assert isinstance(error, QueueFullError)
        assert "stayed full (4 units)" in str(error)
    assert names(db_path) == [f"n{i}" for i in queued]


@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_a_closed_manager_refuses_at_once(strategy, make_manager):
    manager = make_manager(strategy)
    manager.close()
    with pytest.raises(ManagerClosedError):
        manager.submit_many(insert_named, [("a",)])


@pytest.mark.timeout(60)
def test_the_module_level_function_uses_the_default_manager(tmp_path, monkeypatch):
    manager = StoreManager()
    monkeypatch.setattr(sqlite_storemgr, "_default", manager)
    manager.configure("main", f"sqlite:{tmp_path / 'app.db'}?strategy=queue")
    manager.submit_write(lambda store: store.execute(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")).result(timeout=10)
    try:
        futures = sqlite_storemgr.submit_many(insert_named, [("m",)], name="main")
        assert [future.result(timeout=30) for future in futures] == ["m"]
        assert "submit_many" in sqlite_storemgr.__all__
    finally:
        manager.close()
