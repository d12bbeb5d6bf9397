"""A unit of work owns its transaction: its code may not commit or roll back."""

import pytest

from _items import insert
from sqlite_storemgr import TransactionControlError


@pytest.fixture
def manager(make_manager, strategy):
    return make_manager(strategy)


def _names(manager):
    return manager.submit_read(
        lambda store: [row[0] for row in store.execute("SELECT name FROM item ORDER BY name")]
    ).result()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("action", ["commit", "rollback"])
def test_a_unit_cannot_end_its_own_transaction(manager, action):
    def unit(store):
        store.execute("INSERT INTO item (name) VALUES ('inside')")
        getattr(store, action)()

    error = manager.submit_write(unit).exception(timeout=10)
    assert isinstance(error, TransactionControlError), repr(error)
    assert f"store.{action}()" in str(error)
    assert "raise an exception to roll it back" in str(error)
    # Nothing of the refused unit is committed, and the next unit works.
    assert _names(manager) == []
    manager.submit_write(insert("next")).result()
    assert _names(manager) == ["next"]


@pytest.mark.timeout(20)
def test_a_write_block_cannot_commit_midway(manager):
    with pytest.raises(TransactionControlError):
        with manager.write() as store:
            store.execute("INSERT INTO item (name) VALUES ('block')")
            store.commit()
    assert _names(manager) == []
