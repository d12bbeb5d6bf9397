"""What a unit sees of its context, the same under every strategy.

Whether a call joins a unit is decided by the call stack (a unit of this database
is running in this call), never by the thread; reads inside a unit join it; reads
outside one refuse writes; a relative path names one file for the manager's life.
"""

from __future__ import annotations

import os
import threading

import pytest
from storm.exceptions import IntegrityError

from _items import WRITER_THREAD_STRATEGIES, Boom, Item, create_unique_items, insert, names
from _threads import in_thread
from sqlite_storemgr import (
    ReadOnlyStoreError, StrategyError, TransactionDoomedError)

NAME = "db"
pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def manager(make_manager, strategy):
    return make_manager(strategy, name=NAME, schema=create_unique_items, timeout=5)


def test_a_relative_path_names_one_file_for_the_managers_life(make_manager, tmp_path, strategy):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    old = os.getcwd()
    os.chdir(first)
    try:
        mgr = make_manager(strategy, name=NAME, path="rel.db", schema=None)
        os.chdir(second)  # nothing was opened yet: the path was resolved at configure
        mgr.submit_write(create_unique_items).result(timeout=10)
        mgr.submit_write(insert("kept")).result(timeout=10)
        read = (lambda: mgr.submit_read(lambda s: s.find(Item).count()).result(timeout=10)) \
            if strategy == "single" else (lambda: mgr.get_store(NAME).find(Item).count())
        assert in_thread(read) == 1  # a new thread's store opens the same file
        mgr.close(timeout=10)
    finally:
        os.chdir(old)
    assert names(first / "rel.db") == ["kept"]
    assert not (second / "rel.db").exists()


def test_get_store_inside_a_unit_is_the_units_store(manager):
    def unit(store):
        insert("inside")(store)
        inner = manager.get_store(NAME)
        return inner is store, inner.find(Item, name="inside").count()

    assert in_thread(lambda: manager.submit_write(unit).result(timeout=10)) == (True, 1)


def test_a_failing_read_inside_a_unit_fails_alone_and_dooms_nothing(manager):
    def unit(store):
        insert("kept")(store)
        failed = manager.submit_read(lambda s: s.execute("SELECT nope FROM item")).exception()
        try:
            with manager.read(NAME) as reading:
                reading.execute("SELECT nope FROM item")
        except Exception as error:  # noqa: BLE001 - compared below
            block_error = error
        return type(failed).__name__, type(block_error).__name__

    assert in_thread(lambda: manager.submit_write(unit).result(timeout=10)) == (
        "OperationalError", "OperationalError")
    assert names(manager.strategy(NAME).config.path) == ["kept"]


def test_a_failing_write_inside_a_unit_dooms_it(manager):
    def unit(store):
        insert("never")(store)
        error = manager.submit_write(insert("never")).exception()  # UNIQUE
        assert isinstance(error, IntegrityError)

    error = in_thread(lambda: manager.submit_write(unit).exception(timeout=10))
    assert isinstance(error, TransactionDoomedError)
    assert names(manager.strategy(NAME).config.path) == []


def test_reads_outside_units_refuse_writes_and_leave_nothing(manager, strategy):
    error = manager.submit_read(insert("sneaky")).exception(timeout=10)
    assert isinstance(error, ReadOnlyStoreError)
    if strategy != "single":
        with pytest.raises(ReadOnlyStoreError):
            with manager.read(NAME) as store:
                insert("sneaky")(store)
    assert names(manager.strategy(NAME).config.path) == []
    assert manager.submit_write(insert("fine")).result(timeout=10) == "fine"


def test_a_read_block_inside_a_read_block_joins_it(manager, strategy):
    if strategy == "single":
        pytest.skip("single has no read() blocks outside units: its reads are submit_read")
    with manager.read(NAME) as outer:
        outer.execute("SELECT count(*) FROM item").get_one()
        with manager.read(NAME) as inner:
            assert inner is outer
        assert outer.connection.in_transaction  # the inner block did not end the snapshot
    assert not outer.connection.in_transaction


@pytest.mark.parametrize("strategy", WRITER_THREAD_STRATEGIES)
def test_the_writer_thread_outside_a_unit_submits_but_never_waits_for_itself(
        make_manager, db_path, strategy):
    """A done-callback runs on the writer thread after COMMIT: it may submit (an ordinary
    outermost unit, committed), but waiting there for the writer would never end."""
    mgr = make_manager(strategy, name=NAME, schema=create_unique_items)
    seen: dict = {}
    done = threading.Event()

    def callback(_):
        try:
            seen["submitted"] = mgr.submit_write(insert("from callback"))
            for name, attempt in [("wait", lambda: seen["submitted"].result()),
                                  ("write", lambda: mgr.write(NAME).__enter__())]:
                try:
                    attempt()
                except StrategyError as error:
                    seen[name] = str(error)
        finally:
            done.set()

    future = mgr.submit_write(insert("first"))
    future.add_done_callback(callback)
    assert future.result(timeout=10) == "first"
    assert done.wait(10)
    assert "would wait for itself" in seen["wait"] and "would wait for itself" in seen["write"]
    assert seen["submitted"].result(timeout=10) == "from callback"
    assert mgr.submit_write(insert("after")).result(timeout=10) == "after"
    mgr.close(timeout=10)
    assert names(db_path) == ["first", "from callback", "after"]


def test_a_unit_that_raises_leaves_the_next_one_alone(manager):
    def failing(store):
        insert("gone")(store)
        raise Boom()

    with pytest.raises(Boom):
        manager.submit_write(failing).result(timeout=10)
    assert manager.submit_write(insert("next")).result(timeout=10) == "next"
    assert names(manager.strategy(NAME).config.path) == ["next"]


def test_held_objects_show_a_write_block_of_their_own_thread(manager, strategy):
    """Found by the differential test under queue: a write() block (it borrows the
    writer's store) left the thread's held objects stale; submit_write did not."""
    if strategy == "single":
        pytest.skip("single has no get_store outside units: no held objects")
    manager.submit_write(insert("a")).result(timeout=10)
    held = manager.get_store(NAME).find(Item, name="a").one()
    with manager.write(NAME) as store:
        store.execute("UPDATE item SET name = 'b' WHERE name = 'a'")
    assert held.name == "b"


def test_what_integrations_ask_a_strategy_unit_store_and_writable_store(make_manager,
                                                                        strategy):
    """unit_store(): the unit's store inside a unit, else None; writable_store(): where a
    write made here goes, refused clearly where a thread has no writable store."""
    manager = make_manager(strategy)
    served = manager.strategy("main")
    assert served.unit_store() is None
    assert served.joins_foreign_transaction is (strategy in ("mutex", "threadlocal"))
    if served.joins_foreign_transaction:
        assert served.writable_store() is manager.get_store("main")
    else:
        with pytest.raises(StrategyError, match="only the writer of 'main' writes; run the "
                                                "write in submit_write"):
            served.writable_store()

    def inside(store):
        assert served.unit_store() is store
        assert served.writable_store() is store
        return "checked"

    assert manager.submit_write(inside).result(timeout=10) == "checked"
