"""The strategy decides where a unit runs and how fast, never what a program observes.

What this proves (DESIGN.md, "One behaviour under every strategy"): for any program
over the public API of `StoreManager`, the values returned, the exceptions (by type),
what every read sees and the final database are the same under ``queue``, ``single``,
``mutex`` and ``threadlocal``, except for the differences listed in `DIFFERENCES`.

How: Hypothesis generates small programs (`_differential.programs`): 2-3 logical
threads reading through ``get_store``, ``read()`` and ``submit_read``, holding Storm
objects across steps, submitting units and running ``write()`` blocks that insert and
update by raw SQL and by Storm objects, nest units (``submit_write``, ``write()``,
``write(savepoint=True)``, reads, a check-then-insert helper) and may raise, return
Storm objects or ResultSets, submit from done-callbacks, exit, and ``close()`` the
manager.  Each program runs under the four strategies on fresh files, one real thread
per logical thread, every step awaited before the next (a deterministic interleaving),
and the four lists of observations must be equal.  A failing example is printed as the
program's script with the observations of each strategy.

The plain tests at the end pin the defects reported so far, one test each, under
every strategy.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings

from _differential import (
    SEED_ROWS, STEP_TIMEOUT, Item, Program, create_database, final_rows, open_manager, programs,
    run_program)
from sqlite_storemgr import StoreManagerError
from sqlite_storemgr.uri import STRATEGIES


@dataclass(frozen=True)
class Difference:
    """A documented way in which strategies differ: what, under which, and why."""
    strategies: frozenset
    what: str
    why: str


DIFFERENCES = {
    "get_store is refused outside a unit": Difference(
        strategies=frozenset({"single"}),
        what="get_store() and read() outside a unit raise StrategyError, so there a "
             "program's get_store reads and read() blocks run through submit_read(fn), "
             "the documented read path: a read through get_store or a read() block "
             "becomes submit_read(read); holding an object "
             "(h = get_store().get(Item, k)) becomes reading its value through "
             "submit_read and remembering its key, and reading h.v later reads the row "
             "again through submit_read (a row absent when held stays None).  The "
             "generator reads a held object again only while the contract says it is "
             "fresh, so re-reading it is the same observation.",
        why="under single every access runs on the worker thread, and a Storm object "
            "belongs to the store of the thread that loaded it; inside a unit get_store "
            "joins the unit like under every other strategy"),
    "where fn runs": Difference(
        strategies=frozenset({"queue", "single"}),
        what="a unit's fn (and a done-callback of a unit still running) runs on the "
             "writer thread, not in the caller's thread as under mutex and threadlocal; "
             "the programs never observe thread identity (the callback step only uses it "
             "to keep a writer-thread unit running until its callback is registered)",
        why="that is what the strategies are: one writer thread owning the only write "
            "connection (group commit), or writes in the caller's thread"),
}

GET_STORE_REFUSED = DIFFERENCES["get_store is refused outside a unit"].strategies


def observe(program: Program) -> dict[str, list]:
    """Each strategy's observations of ``program``, each run on a fresh file."""
    with tempfile.TemporaryDirectory() as directory:
        return {strategy: run_program(program, strategy, str(Path(directory, f"{strategy}.db")),
                                      reads_via_submit_read=strategy in GET_STORE_REFUSED)
                for strategy in STRATEGIES}


def differences_report(observed: dict[str, list]) -> str:
    """The observations that differ, step by step, one line per strategy."""
    lines = []
    for entries in zip_longest(*observed.values(), fillvalue=("?", "missing")):
        if any(entry != entries[0] for entry in entries):
            lines.append(f"step {entries[0][0]}:")
            lines.extend(f"    {strategy:12} {entry[1]!r}"
                         for strategy, entry in zip(observed, entries))
    return "\n".join(lines)


# 200 programs take 10 s on an idle 2-core machine, about 45 s on a loaded one.  A failing
# run takes longer: Hypothesis shrinks the program (each attempt runs it four times),
# 1-4 minutes; Hypothesis itself stops shrinking after 5.
@pytest.mark.timeout(600)
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_every_strategy_observes_the_same(program):
    note(program.script())
    observed = observe(program)
    report = differences_report(observed)
    assert not report, "the strategies observed different things:\n" + report


# -- the defects reported so far: one test each, under every strategy ----------------


@pytest.fixture
def path(tmp_path):
    file = str(tmp_path / "regression.db")
    create_database(file)  # item: SEED_ROWS, [(1, 'a'), (2, 'a')]
    return file


@pytest.fixture
def mgr(path, strategy):
    manager = open_manager(path, strategy)
    yield manager
    manager.close(STEP_TIMEOUT)


def read_outside_units(mgr, strategy, read):
    """``read(store)`` through get_store, or through submit_read where it is refused."""
    if strategy in GET_STORE_REFUSED:
        return mgr.submit_read(read).result(STEP_TIMEOUT)
    return read(mgr.get_store())


def in_other_thread(fn):
    """Run ``fn()`` in a thread of its own and return its result."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join(STEP_TIMEOUT)
    return box[0]


def insert(key, value):
    return lambda store: store.execute("INSERT INTO item (id, v) VALUES (?, ?)", (key, value))


def rename(key, value):
    def unit(store):
        store.get(Item, key).v = value
    return unit


@pytest.mark.timeout(30)
def test_1_a_submit_from_a_done_callback_is_committed_once_acknowledged(mgr, path):
    """Defect 1: under queue it ran inline on the writer, acknowledged, never committed."""
    caller = threading.current_thread()
    registered, submitted, later = threading.Event(), threading.Event(), []

    def first(store):  # on a writer thread: still running when its callback is registered
        if threading.current_thread() is not caller:
            registered.wait(STEP_TIMEOUT)
        insert(3, "b")(store)

    def on_done(_):  # the callback only submits; the test thread awaits the future
        later.append(mgr.submit_write(insert(4, "c")))
        submitted.set()

    future = mgr.submit_write(first)
    future.add_done_callback(on_done)
    registered.set()
    future.result(STEP_TIMEOUT)
    submitted.wait(STEP_TIMEOUT)  # callbacks may run after result() returns
    later[0].result(STEP_TIMEOUT)
    assert final_rows(path) == [*SEED_ROWS, (3, "b"), (4, "c")]
    mgr.submit_write(insert(5, "d")).result(STEP_TIMEOUT)  # the writer is not left mid-transaction
    assert final_rows(path)[-1] == (5, "d")


@pytest.mark.timeout(30)
def test_2_a_held_object_shows_the_threads_own_acknowledged_write(mgr, strategy):
    """Defect 2: under queue the held object kept its old value."""
    if strategy in GET_STORE_REFUSED:
        mgr.submit_write(rename(1, "renamed")).result(STEP_TIMEOUT)
        assert mgr.submit_read(lambda s: s.get(Item, 1).v).result(STEP_TIMEOUT) == "renamed"
        return
    held = mgr.get_store().get(Item, 1)
    assert held.v == "a"
    mgr.submit_write(rename(1, "renamed")).result(STEP_TIMEOUT)
    assert held.v == "renamed"


@pytest.mark.timeout(30)
def test_3_reads_inside_a_unit_see_its_writes(mgr, path):
    """Defect 3: under queue check-then-insert inserted twice (read() refused under single)."""
    def present_by_read(key):
        with mgr.read() as store:
            return store.get(Item, key) is not None

    def present_by_submit_read(key):
        return mgr.submit_read(lambda s: s.get(Item, key) is not None).result(STEP_TIMEOUT)

    def ensure(present, key, value):  # check-then-insert, called inside a unit
        if not present(key):
            mgr.submit_write(insert(key, value)).result(STEP_TIMEOUT)

    def unit(store):
        ensure(present_by_read, 3, "b")
        ensure(present_by_read, 3, "b")
        ensure(present_by_submit_read, 4, "c")
        ensure(present_by_submit_read, 4, "c")
        return present_by_read(4), present_by_submit_read(3)

    assert mgr.submit_write(unit).result(STEP_TIMEOUT) == (True, True)
    assert final_rows(path) == [*SEED_ROWS, (3, "b"), (4, "c")]


@pytest.mark.timeout(30)
def test_4_a_unit_returning_a_resultset_fails_and_commits_nothing(mgr, path):
    """Defect 4: the live ResultSet was handed back (and the unit committed)."""
    def unit(store):
        insert(3, "b")(store)
        return store.find(Item)

    with pytest.raises(StoreManagerError):
        mgr.submit_write(unit).result(STEP_TIMEOUT)
    assert final_rows(path) == SEED_ROWS


@pytest.mark.timeout(30)
def test_9_a_read_through_get_store_pins_no_snapshot(mgr, strategy):
    """Defect 9: under mutex/threadlocal the first read's snapshot stayed open."""
    def every_row(store):
        return [(item.id, item.v) for item in store.find(Item).order_by(Item.id)]

    assert read_outside_units(mgr, strategy, every_row) == SEED_ROWS
    in_other_thread(lambda: mgr.submit_write(insert(3, "b")).result(STEP_TIMEOUT))
    assert read_outside_units(mgr, strategy, every_row) == [*SEED_ROWS, (3, "b")]


@pytest.mark.timeout(30)
def test_10_a_read_block_sees_fresh_cached_objects(mgr, strategy):
    """Defect 10: under queue the cached object was stale while raw SQL was fresh."""
    def both_ways(store):
        raw = store.execute("SELECT v FROM item WHERE id = 1").get_one()[0]
        return store.get(Item, 1).v, raw

    assert read_outside_units(mgr, strategy, lambda store: store.get(Item, 1).v) == "a"
    in_other_thread(lambda: mgr.submit_write(rename(1, "renamed")).result(STEP_TIMEOUT))
    if strategy in GET_STORE_REFUSED:
        seen = mgr.submit_read(both_ways).result(STEP_TIMEOUT)
    else:
        with mgr.read() as store:
            seen = both_ways(store)
    assert seen == ("renamed", "renamed")
