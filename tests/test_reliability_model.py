"""A stateful model test: random interleavings of everything a program does with a manager,
under every strategy, checked against a model after every step.

Hypothesis drives submits of good and failing units (awaited or not, from the test's
thread), ``write()`` blocks that commit or raise, reads, worker threads that start,
submit bursts concurrently (awaiting and checking read-your-writes, or not) and exit,
and ``close()`` in the middle of all that (followed by a fresh manager on the same
file).  The model: every acknowledged write is in the database exactly once (the
table has no UNIQUE constraint, so a double commit would show), no failing unit
(raised, UNIQUE violation, refused by a closing manager) ever leaves a trace, no good
unit fails, and after ``close()`` every future has resolved.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test)
from storm.exceptions import IntegrityError

from _items import Boom, rows
from sqlite_storemgr import ManagerClosedError, StoreManager

NAME = "db"
MAX_WORKERS = 4


def good_unit(store, uid: int) -> int:
    store.execute("INSERT INTO entry (uid) VALUES (?)", (uid,))
    store.execute("UPDATE entry SET note = 'done' WHERE uid = ?", (uid,))
    return uid


def failing_unit(store, uid: int, how: str) -> None:
    store.execute("INSERT INTO entry (uid) VALUES (?)", (uid,))
    if how == "raise":
        raise Boom(uid)
    store.execute("INSERT INTO taken (name) VALUES ('taken')")  # UNIQUE: IntegrityError


def visible_ids(store) -> set[int]:
    return {uid for (uid,) in store.execute("SELECT uid FROM entry").get_all()}


def expected_failure(error: BaseException | None, how: str) -> bool:
    if how == "raise":
        return isinstance(error, Boom)
    return isinstance(error, IntegrityError) and "UNIQUE" in str(error)


class Worker(threading.Thread):
    """A thread that submits bursts of units on command, then exits when told."""

    def __init__(self, model: "ManagerModel"):
        super().__init__(daemon=True)
        self.model = model
        self.commands: queue.Queue = queue.Queue()

    def run(self) -> None:
        while True:
            command = self.commands.get()
            try:
                if command is None:
                    return
                self.burst(*command)
            except BaseException as error:  # noqa: BLE001 - reported by the invariant
                self.model.errors.append(("worker", repr(error)))
            finally:
                self.commands.task_done()

    def burst(self, units: list[tuple[int, str | None]], wait: bool) -> None:
        model = self.model
        for uid, how in units:
            mgr = model.mgr
            try:
                if how is None:
                    future = mgr.submit_write(good_unit, uid)
                else:
                    future = mgr.submit_write(failing_unit, uid, how)
            except ManagerClosedError:
                model.refused.add(uid)
                continue
            model.record(uid, future, how)
            if not wait:
                continue
            error = future.exception(timeout=30)
            if how is not None or error is not None:
                continue
            try:  # read-your-writes in this thread
                seen = model.read_ids(mgr)
            except ManagerClosedError:
                continue
            if uid not in seen:
                model.errors.append(("read-your-writes", uid))


class ManagerModel(RuleBasedStateMachine):
    strategy = "queue"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="storemgr-model-"))
        self.path = self.directory / "model.db"
        self.issued = 0
        self.futures: dict[int, tuple[Future, str | None]] = {}
        self.acked_in_caller: set[int] = set()  # write() blocks that returned
        self.bad: set[int] = set()              # write() blocks that raised
        self.refused: set[int] = set()          # submits refused by a closed manager
        self.errors: list = []
        self.workers: list[Worker] = []
        self.closes = 0
        self.issued_at_close = 0
        self.lock = threading.Lock()
        self.mgr = self.open_manager()
        self.mgr.submit_write(lambda store: (
            store.execute("CREATE TABLE entry (uid INTEGER NOT NULL, note TEXT)"),
            store.execute("CREATE TABLE taken (name TEXT UNIQUE)"),
            store.execute("INSERT INTO taken (name) VALUES ('taken')"))).result(timeout=10)

    def open_manager(self) -> StoreManager:
        mgr = StoreManager()
        mgr.configure(NAME, f"sqlite:{self.path}?strategy={self.strategy}&timeout=20"
                            "&synchronous=normal&batch=16")
        return mgr

    def new_id(self) -> int:
        self.issued += 1
        return self.issued

    def record(self, uid: int, future: Future, how: str | None) -> None:
        with self.lock:
            self.futures[uid] = (future, how)

    def read_ids(self, mgr: StoreManager) -> set[int]:
        if self.strategy == "single":
            return mgr.submit_read(visible_ids).result(timeout=30)
        with mgr.read(NAME) as store:
            return visible_ids(store)

    # -- the test thread's own units ------------------------------------------------

    @rule(how=st.sampled_from([None, None, "raise", "unique"]), wait=st.booleans())
    def submit(self, how, wait):
        uid = self.new_id()
        if how is None:
            future = self.mgr.submit_write(good_unit, uid)
        else:
            future = self.mgr.submit_write(failing_unit, uid, how)
        self.record(uid, future, how)
        if wait:
            error = future.exception(timeout=30)
            if how is None:
                assert error is None, repr(error)
                assert uid in self.read_ids(self.mgr)  # read-your-writes
            else:
                assert expected_failure(error, how), repr(error)

    @rule(fails=st.booleans())
    def write_block(self, fails):
        uid = self.new_id()
        try:
            with self.mgr.write(NAME) as store:
                good_unit(store, uid)
                if fails:
                    raise Boom(uid)
        except Boom:
            assert fails
            self.bad.add(uid)
        else:
            self.acked_in_caller.add(uid)
            assert uid in self.read_ids(self.mgr)

    @rule()
    def read(self):
        with self.lock:  # acknowledged before the read begins, in any thread
            before = [uid for uid, (future, how) in self.futures.items()
                      if how is None and future.done() and future.exception() is None]
        seen = self.read_ids(self.mgr)
        # Everything acknowledged before the read began is visible to it.
        assert self.acked_in_caller <= seen
        assert set(before) <= seen

    # -- other threads ----------------------------------------------------------------

    @precondition(lambda self: len(self.workers) < MAX_WORKERS)
    @rule()
    def start_worker(self):
        worker = Worker(self)
        worker.start()
        self.workers.append(worker)

    @precondition(lambda self: self.workers)
    @rule(data=st.data(), size=st.integers(1, 30), wait=st.booleans(),
          failing_every=st.sampled_from([0, 2, 5]))
    def worker_burst(self, data, size, wait, failing_every):
        worker = data.draw(st.sampled_from(self.workers))
        units = []
        for index in range(size):
            uid = self.new_id()
            how = None
            if failing_every and index % failing_every == failing_every - 1:
                how = "raise" if index % 2 else "unique"
            units.append((uid, how))
        worker.commands.put((units, wait))

    @precondition(lambda self: self.workers)
    @rule(size=st.integers(5, 40), wait=st.booleans())
    def burst_on_every_worker(self, size, wait):
        """All workers submit at once (failing units mixed in), the test thread too."""
        for worker in self.workers:
            units = [(self.new_id(), None if index % 4 else "raise") for index in range(size)]
            worker.commands.put((units, wait))
        self.submit(how=None, wait=True)

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def stop_worker(self, data):
        worker = data.draw(st.sampled_from(self.workers))
        self.workers.remove(worker)
        worker.commands.put(None)
        worker.join(30)
        assert not worker.is_alive(), "a worker did not finish its units"

    # -- close, in the middle of whatever the workers do ----------------------------------

    # Deterministic (hypothesis replays steps): counts ids handed out, not units recorded.
    @precondition(lambda self: self.issued >= self.issued_at_close + 40)
    @rule()
    def close_and_reopen(self):
        self.mgr.close()
        with self.lock:
            futures = list(self.futures.values())
        # close() drained: every unit accepted before it has resolved.
        assert all(future.done() for future, _ in futures)
        self.check_database()
        self.closes += 1
        self.issued_at_close = self.issued
        self.mgr = self.open_manager()

    # -- the model ----------------------------------------------------------------------

    def outcomes(self) -> tuple[set[int], set[int]]:
        """(acknowledged ids, ids that must never be committed), from resolved futures."""
        acked, never = set(self.acked_in_caller), set(self.bad) | set(self.refused)
        with self.lock:
            futures = list(self.futures.items())
        for uid, (future, how) in futures:
            if not future.done():
                continue
            error = future.exception()
            if how is None:
                if error is None:
                    acked.add(uid)
                else:
                    self.errors.append(("a good unit failed", uid, repr(error)))
                    never.add(uid)
            else:
                if not expected_failure(error, how):
                    self.errors.append(("wrong failure", uid, how, repr(error)))
                never.add(uid)
        return acked, never

    def check_database(self) -> None:
        acked, never = self.outcomes()  # taken before the database is read
        counts = dict(rows(self.path, "SELECT uid, count(*) FROM entry GROUP BY uid"))
        assert self.errors == [], self.errors[:5]
        twice = {uid: count for uid, count in counts.items() if count != 1}
        assert twice == {}, f"committed more than once: {twice}"
        missing = acked - set(counts)
        assert missing == set(), f"acknowledged but not committed: {sorted(missing)[:10]}"
        traces = never & set(counts)
        assert traces == set(), f"failed units left a trace: {sorted(traces)[:10]}"
        half = rows(self.path, "SELECT count(*) FROM entry WHERE note IS NOT 'done'")
        assert half == [(0,)], "a unit was committed half-way"

    @invariant()
    def database_matches_the_model(self):
        self.check_database()

    def teardown(self):
        try:
            for worker in self.workers:
                worker.commands.put(None)
            for worker in self.workers:
                worker.join(30)
                assert not worker.is_alive()
            self.mgr.close()
            acked, never = self.outcomes()
            with self.lock:
                assert all(future.done() for future, _ in self.futures.values())
            self.check_database()
            committed = {uid for (uid,) in rows(self.path, "SELECT uid FROM entry")}
            assert committed == acked  # exactly the acknowledged ones, nothing else
            assert rows(self.path, "PRAGMA integrity_check") == [("ok",)]
        finally:
            self.mgr.close()
            shutil.rmtree(self.directory, ignore_errors=True)


MODEL_SETTINGS = settings(
    max_examples=50, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.timeout(120)
def test_random_interleavings_match_the_model(strategy):
    machine = type(f"{strategy.title()}Model", (ManagerModel,), {"strategy": strategy})
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)
