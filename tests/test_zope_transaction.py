"""Stores joined to a zope transaction manager: commit, abort and doom drive them together."""

from __future__ import annotations

import threading

import pysqlite3.dbapi2 as dbapi
import pytest
import transaction
from transaction.interfaces import DoomedTransaction, IDataManager
from zope.interface import implementer

from sqlite_storemgr import (
    StoreManager, StrategyError, TransactionDoomedError)
from sqlite_storemgr.integrations.zope import join_transaction_manager
from _items import Boom, Item, create_items, names


class VoteRefused(Exception):
    pass


@implementer(IDataManager)
class OtherResource:
    """Another data manager in the same transaction, which can refuse in tpc_vote."""

    def __init__(self, transaction_manager, refuse_vote=False):
        self.transaction_manager = transaction_manager
        self.refuse_vote = refuse_vote
        self.calls = []

    def abort(self, txn):
        self.calls.append("abort")

    def tpc_begin(self, txn):
        self.calls.append("tpc_begin")

    def commit(self, txn):
        self.calls.append("commit")

    def tpc_vote(self, txn):
        self.calls.append("tpc_vote")
        if self.refuse_vote:
            raise VoteRefused("the other resource cannot commit")

    def tpc_finish(self, txn):
        self.calls.append("tpc_finish")

    def tpc_abort(self, txn):
        self.calls.append("tpc_abort")

    def sortKey(self):
        return "zz_other_resource"


@pytest.fixture
def setup(tmp_path):
    """Two SQLite files, one per caller-thread strategy, joined to a fresh manager."""
    paths = {"a": tmp_path / "a.db", "b": tmp_path / "b.db"}
    manager = StoreManager()
    manager.configure("a", f"sqlite:{paths['a']}?strategy=mutex&timeout=3")
    manager.configure("b", f"sqlite:{paths['b']}?strategy=threadlocal&timeout=3")
    for name in paths:
        manager.submit_write(create_items, name=name).result()
    tm = transaction.ThreadTransactionManager()
    join = join_transaction_manager(manager, tm)
    yield manager, paths, tm
    tm.abort()
    join.detach()
    manager.close()


def write_both(manager, a_name="in a", b_name="in b"):
    """Storm writes through both databases: a direct store add, and a write() block."""
    manager.get_store("a").add(Item()).name = a_name
    with manager.write("b") as store:
        store.execute("INSERT INTO item (name) VALUES (?)", (b_name,))


@pytest.mark.timeout(20)
def test_commit_commits_both_databases_together(setup):
    manager, paths, tm = setup
    tm.begin()
    other = OtherResource(tm)
    tm.get().join(other)
    write_both(manager)
    # The write() block joined the zope transaction: nothing is committed yet.
    assert sorted(names(paths["a"])) == [] and sorted(names(paths["b"])) == []
    tm.commit()
    assert sorted(names(paths["a"])) == ["in a"]
    assert sorted(names(paths["b"])) == ["in b"]
    assert other.calls == ["tpc_begin", "commit", "tpc_vote", "tpc_finish"]
    for name in paths:
        assert not manager.get_store(name).connection.in_transaction
    # The stores join the next transaction too.
    tm.begin()
    write_both(manager, "second a", "second b")
    tm.commit()
    assert sorted(names(paths["a"])) == ["in a", "second a"]
    assert sorted(names(paths["b"])) == ["in b", "second b"]


@pytest.mark.timeout(20)
def test_a_data_manager_refusing_its_vote_commits_neither_file(setup):
    manager, paths, tm = setup
    tm.begin()
    other = OtherResource(tm, refuse_vote=True)
    tm.get().join(other)
    write_both(manager)
    with pytest.raises(VoteRefused):
        tm.commit()
    tm.abort()
    assert sorted(names(paths["a"])) == [] and sorted(names(paths["b"])) == []
    assert "tpc_abort" in other.calls
    for name in paths:
        store = manager.get_store(name)
        assert not store.connection.in_transaction and store.unit_depth == 0
    tm.begin()
    write_both(manager, "after", "after")
    tm.commit()
    assert sorted(names(paths["a"])) == ["after"] and sorted(names(paths["b"])) == ["after"]


@pytest.mark.timeout(20)
def test_abort_rolls_both_back(setup):
    manager, paths, tm = setup
    tm.begin()
    write_both(manager)
    assert manager.submit_write(lambda store: store.execute(
        "INSERT INTO item (name) VALUES ('submitted')"), name="a").result() is not None
    tm.abort()
    assert sorted(names(paths["a"])) == [] and sorted(names(paths["b"])) == []
    assert manager.get_store("a").find(Item).count() == 0


@pytest.mark.timeout(20)
def test_doom_makes_commit_raise_and_commits_nothing(setup):
    manager, paths, tm = setup
    tm.begin()
    write_both(manager)
    tm.doom()
    with pytest.raises(DoomedTransaction):
        tm.commit()
    tm.abort()
    assert sorted(names(paths["a"])) == [] and sorted(names(paths["b"])) == []


@pytest.mark.timeout(20)
def test_an_inner_unit_that_fails_dooms_the_zope_transaction(setup):
    manager, paths, tm = setup
    tm.begin()
    other = OtherResource(tm)
    tm.get().join(other)
    write_both(manager)
    with pytest.raises(Boom):
        with manager.write("b") as store:
            store.execute("INSERT INTO item (name) VALUES ('inner')")
            raise Boom("inner")
    with pytest.raises(TransactionDoomedError) as caught:
        tm.commit()
    assert "Boom('inner')" in str(caught.value)
    tm.abort()
    assert sorted(names(paths["a"])) == [] and sorted(names(paths["b"])) == []
    assert "tpc_finish" not in other.calls


@pytest.mark.timeout(20)
def test_a_savepoint_block_fails_alone_inside_the_zope_transaction(setup):
    manager, paths, tm = setup
    tm.begin()
    write_both(manager)
    with pytest.raises(Boom):
        with manager.write("a", savepoint=True) as store:
            store.execute("INSERT INTO item (name) VALUES ('lost')")
            raise Boom("savepoint")
    tm.commit()
    assert sorted(names(paths["a"])) == ["in a"] and sorted(names(paths["b"])) == ["in b"]


@pytest.mark.timeout(20)
def test_each_thread_has_its_own_transaction(setup):
    manager, paths, tm = setup
    b_joined, a_aborted = threading.Event(), threading.Event()
    errors, seen = [], {}

    def thread_a():  # writes, then aborts while B's transaction is open
        try:
            tm.begin()
            assert b_joined.wait(10)
            write_both(manager, "dropped a", "dropped b")
            tm.abort()
            a_aborted.set()
        except BaseException as error:
            errors.append(error)
            a_aborted.set()

    def thread_b():  # joins its own transaction by reading, writes after A's abort, commits
        try:
            tm.begin()
            seen["before"] = manager.get_store("a").find(Item).count()
            seen["depth"] = manager.get_store("a").unit_depth  # joined: B's zope txn owns it
            b_joined.set()
            assert a_aborted.wait(10)
            seen["still joined"] = manager.get_store("a").unit_depth
            write_both(manager, "kept a", "kept b")
            tm.commit()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert errors == []
    assert seen == {"before": 0, "depth": 1, "still joined": 1}
    assert sorted(names(paths["a"])) == ["kept a"] and sorted(names(paths["b"])) == ["kept b"]


@pytest.mark.timeout(20)
def test_a_lock_conflict_is_retried_by_the_transaction_manager(make_manager, tmp_path):
    path = tmp_path / "busy.db"
    manager = make_manager("threadlocal", path=path, timeout=0.2)
    tm = transaction.ThreadTransactionManager()
    join = join_transaction_manager(manager, tm)
    holder = dbapi.connect(str(path), isolation_level=None)  # another connection, same SQLite
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO item (name) VALUES ('holder')")
    attempts = []

    def body():
        attempts.append(1)
        if len(attempts) == 2:
            holder.execute("COMMIT")  # the lock frees up before the second attempt writes
        manager.get_store("main").add(Item()).name = "zope"

    try:
        tm.run(body, tries=3)
        assert len(attempts) == 2  # the first attempt met the lock and was re-run whole
        assert sorted(names(path)) == ["holder", "zope"]

        holder.execute("BEGIN IMMEDIATE")
        tm.begin()
        manager.get_store("main").add(Item()).name = "never"
        with pytest.raises(Exception) as caught:
            tm.commit()  # no retry without run()/attempts(): the lock error surfaces
        assert "locked" in str(caught.value)
        assert tm.get()._resources[0].should_retry(caught.value)
        assert not tm.get()._resources[0].should_retry(Boom("not a lock error"))
        tm.abort()
        holder.execute("ROLLBACK")
        assert sorted(names(path)) == ["holder", "zope"]
    finally:
        holder.close()
        join.detach()


@pytest.mark.timeout(20)
def test_queue_and_single_databases_refuse_to_join(tmp_path):
    manager = StoreManager()
    manager.configure("q", f"sqlite:{tmp_path / 'q.db'}?strategy=queue")
    manager.configure("t", f"sqlite:{tmp_path / 't.db'}?strategy=threadlocal")
    manager.configure("s", f"sqlite:{tmp_path / 's.db'}?strategy=single")
    tm = transaction.TransactionManager()
    try:
        with pytest.raises(StrategyError) as caught:
            join_transaction_manager(manager, tm)
        message = str(caught.value)
        assert "'q' (strategy=queue)" in message and "'s' (strategy=single)" in message
        assert "pass name=" in message
        with pytest.raises(StrategyError, match="strategy=mutex or strategy=threadlocal"):
            join_transaction_manager(manager, tm, name="q")
        join = join_transaction_manager(manager, tm, name="t")  # the caller-thread one can
        join.detach()
    finally:
        manager.close()


@pytest.mark.timeout(20)
def test_detach_stops_joining(setup):
    manager, paths, tm = setup
    tm.begin()
    write_both(manager, "joined a", "joined b")
    tm.commit()
    manager_join = join_transaction_manager(manager, tm, name="a")
    manager_join.detach()
    # Detached joins do not interfere; the fixture's join still works.
    tm.begin()
    with manager.write("a") as store:
        store.execute("INSERT INTO item (name) VALUES ('again')")
    assert sorted(names(paths["a"])) == ["joined a"]
    tm.commit()
    assert sorted(names(paths["a"])) == ["again", "joined a"]


@pytest.mark.timeout(20)
def test_detaching_the_first_of_two_joins_keeps_the_second_joining_new_stores(
        make_manager, tmp_path):
    path = tmp_path / "two_joins.db"
    manager = make_manager("threadlocal", path=path, timeout=3)
    first_tm = transaction.TransactionManager(explicit=True)
    second_tm = transaction.TransactionManager(explicit=True)
    first = join_transaction_manager(manager, first_tm)
    second = join_transaction_manager(manager, second_tm)
    seen = {}

    def in_a_new_thread():  # its store is made after the first join was detached
        try:
            second_tm.begin()
            manager.get_store("main").execute("INSERT INTO item (name) VALUES ('second')")
            seen["before commit"] = sorted(names(path))
            second_tm.commit()
            seen["after commit"] = sorted(names(path))
        except Exception as error:  # reported below, in the test's thread
            seen["error"] = error

    try:
        first.detach()
        thread = threading.Thread(target=in_a_new_thread)
        thread.start()
        thread.join(10)
        assert "error" not in seen, seen.get("error")
        assert seen["before commit"] == []  # joined the second transaction: not committed yet
        assert seen["after commit"] == ["second"]
    finally:
        second.detach()


@pytest.mark.timeout(20)
def test_after_detach_units_commit_on_their_own(make_manager, tmp_path):
    path = tmp_path / "detached.db"
    manager = make_manager("mutex", path=path, timeout=3)
    tm = transaction.ThreadTransactionManager()
    join = join_transaction_manager(manager, tm)
    tm.begin()
    with manager.write("main") as store:
        store.execute("INSERT INTO item (name) VALUES ('joined')")
    assert sorted(names(path)) == []
    tm.abort()
    join.detach()
    tm.begin()
    with manager.write("main") as store:
        store.execute("INSERT INTO item (name) VALUES ('alone')")
    assert sorted(names(path)) == ["alone"]  # the unit committed without the zope transaction
    tm.abort()
    assert sorted(names(path)) == ["alone"]


@pytest.mark.timeout(20)
def test_an_explicit_manager_leaves_units_outside_a_transaction_alone(make_manager, tmp_path):
    path = tmp_path / "explicit.db"
    manager = make_manager("threadlocal", path=path, timeout=3)
    tm = transaction.TransactionManager(explicit=True)
    join = join_transaction_manager(manager, tm)
    try:
        # No transaction begun: a unit is its own transaction and commits at once.
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('on its own')")
        assert sorted(names(path)) == ["on its own"]
        assert manager.get_store("main").find(Item).count() == 1  # a read joins nothing
        outside = dbapi.connect(str(path))
        outside.execute("INSERT INTO item (name) VALUES ('outside')")
        outside.commit()
        outside.close()
        tm.begin()
        # Joining ended the snapshot the store kept from before: the transaction reads fresh.
        assert manager.get_store("main").find(Item).count() == 2
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('in the transaction')")
        assert sorted(names(path)) == ["on its own", "outside"]
        tm.commit()
        assert sorted(names(path)) == ["in the transaction", "on its own", "outside"]
    finally:
        join.detach()
