"""Units that compose: inner units join, never commit early, and doom the outer one on failure.

The rules of DESIGN.md "Transactions and snapshots", under every strategy.
"""

import pytest

from sqlite_storemgr import TransactionDoomedError
from _items import Boom, Item, failing, insert, names


@pytest.fixture
def setup(make_manager, strategy, db_path):
    return make_manager(strategy, timeout=3), db_path


@pytest.mark.timeout(20)
def test_inner_submit_that_succeeds_commits_nothing_by_itself(setup):
    manager, path = setup
    seen = {}

    def outer(store):
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        seen["inner"] = manager.submit_write(insert("inner")).result(timeout=5)
        seen["committed_inside"] = names(path)
        return "outer"

    assert manager.submit_write(outer).result(timeout=10) == "outer"
    assert seen == {"inner": "inner", "committed_inside": []}
    assert names(path) == ["outer", "inner"]


@pytest.mark.timeout(20)
def test_inner_failure_reaches_its_caller_and_dooms_the_outer_unit(setup):
    manager, path = setup
    seen = {}

    def outer(store):
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        seen["inner_error"] = manager.submit_write(failing("inner")).exception(timeout=5)
        return "carried on"  # the outer unit swallowed the inner failure

    error = manager.submit_write(outer).exception(timeout=10)
    assert isinstance(seen["inner_error"], Boom)
    assert isinstance(error, TransactionDoomedError), repr(error)
    assert "Boom('inner')" in str(error)
    assert isinstance(error.__cause__, Boom)
    assert names(path) == []
    assert manager.submit_write(insert("after")).result(timeout=5) == "after"
    assert names(path) == ["after"]


@pytest.mark.timeout(20)
def test_write_blocks_nest_the_same_way(setup):
    manager, path = setup
    with manager.write("main") as store:
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        with manager.write("main") as inner:
            assert inner is store
            inner.execute("INSERT INTO item (name) VALUES ('inner')")
        assert manager.submit_write(insert("submitted")).result(timeout=5) == "submitted"
        assert names(path) == []
    assert names(path) == ["outer", "inner", "submitted"]

    with pytest.raises(TransactionDoomedError):
        with manager.write("main") as store:
            store.execute("INSERT INTO item (name) VALUES ('doomed')")
            with pytest.raises(Boom):
                with manager.write("main") as inner:
                    inner.execute("INSERT INTO item (name) VALUES ('inner')")
                    raise Boom("inner block")
    assert names(path) == ["outer", "inner", "submitted"]


@pytest.mark.timeout(20)
def test_a_savepoint_block_fails_alone_and_storm_forgets_its_objects(setup):
    manager, path = setup

    def outer(store):
        kept = store.add(Item())
        kept.name = "kept"
        try:
            with manager.write("main", savepoint=True) as inner:
                inner.find(Item, Item.name == "kept").one().name = "renamed in savepoint"
                lost = inner.add(Item())
                lost.name = "lost"
                inner.flush()
                raise Boom("savepoint")
        except Boom:
            pass
        # Storm's cache was invalidated: the rolled-back rename is not served from it.
        assert store.find(Item, Item.name == "kept").one() is not None
        assert store.find(Item, Item.name == "lost").is_empty()
        assert kept.name == "kept"
        with manager.write("main", savepoint=True) as inner:
            inner.add(Item()).name = "second savepoint"
        return sorted(item.name for item in store.find(Item))

    assert manager.submit_write(outer).result(timeout=10) == ["kept", "second savepoint"]
    assert names(path) == ["kept", "second savepoint"]


@pytest.mark.timeout(20)
def test_failure_inside_a_savepoint_block_dooms_only_that_block(setup):
    manager, path = setup

    def outer(store):
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        with pytest.raises(TransactionDoomedError):
            with manager.write("main", savepoint=True) as inner:
                inner.execute("INSERT INTO item (name) VALUES ('in savepoint')")
                manager.submit_write(failing("innermost")).exception(timeout=5)
        return "outer survives"

    assert manager.submit_write(outer).result(timeout=10) == "outer survives"
    assert names(path) == ["outer"]


@pytest.mark.timeout(20)
def test_an_exception_from_the_inner_unit_left_uncaught_fails_the_outer_with_it(setup):
    manager, path = setup

    def outer(store):
        store.execute("INSERT INTO item (name) VALUES ('outer')")
        manager.submit_write(failing("inner")).result(timeout=5)

    error = manager.submit_write(outer).exception(timeout=10)
    assert isinstance(error, Boom)
    assert names(path) == []


@pytest.mark.timeout(20)
def test_nesting_three_deep_commits_once_at_the_outermost(setup):
    manager, path = setup

    def level(depth):
        def unit(store):
            store.execute("INSERT INTO item (name) VALUES (?)", (f"level {depth}",))
            if depth < 3:
                manager.submit_write(level(depth + 1)).result(timeout=5)
            return names(path)
        return unit

    assert manager.submit_write(level(1)).result(timeout=10) == []
    assert names(path) == ["level 1", "level 2", "level 3"]


@pytest.mark.timeout(20)
def test_uncommitted_changes_are_joined_not_committed_early(setup):
    manager, path = setup
    if manager.stats("main")["strategy"] in ("queue", "single"):
        pytest.skip("stores handed out under queue/single cannot hold uncommitted changes")
    store = manager.get_store("main")
    store.execute("INSERT INTO item (name) VALUES ('loose')")  # a transaction the caller owns
    assert manager.submit_write(insert("unit")).result(timeout=5) == "unit"
    assert names(path) == []  # the unit joined; the caller's commit decides
    store.commit()
    assert names(path) == ["loose", "unit"]

    store.execute("INSERT INTO item (name) VALUES ('loose 2')")
    assert isinstance(manager.submit_write(failing("bad")).exception(timeout=5), Boom)
    with pytest.raises(TransactionDoomedError):
        store.commit()
    assert names(path) == ["loose", "unit"]
    assert not store.connection.in_transaction
    store.execute("INSERT INTO item (name) VALUES ('fresh')")
    store.commit()  # the doom ended with the rollback
    assert names(path) == ["loose", "unit", "fresh"]
