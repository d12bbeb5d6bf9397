"""``os.fork()`` at any moment leaves the child able to use the database file.

SQLite keeps each file's lock state (POSIX lock counts, the WAL index's lock
masks) in process memory, and a forked child inherits it with the parent's
connections.  A connection caught inside a transaction by the fork keeps the
file locked in the child for good, for every connection the child opens.
`sqlite_storemgr.backends.forking` holds forks back until the package's transactions
are over and no thread of ours is inside SQLite.

Real processes, real files, no mocks.  Each child reports through a pipe and
leaves with ``os._exit``; a child that hangs is killed with SIGKILL and fails
the test.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import threading
import time
import traceback

import pytest

from _items import insert, rows
from sqlite_storemgr import StoreManager

SCHEMA = "CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"


def create_schema(store) -> None:
    store.execute(SCHEMA)

# Set by a fork hook of the test's own (it runs before the package's, which wait):
# the moment a fork began, for a thread that must act while the fork is held back.
_fork_began = threading.Event()
os.register_at_fork(before=_fork_began.set)


def _fork_child(child, *args) -> tuple[int, int]:
    """Fork; the child runs ``child(*args)`` and exits 0 (or 1, its error in the pipe).

    Returns ``(pid, read end of the pipe)`` in the parent.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # never return into pytest
        code = 1
        try:
            os.close(read_end)
            child(*args)
            code = 0
        except BaseException:  # noqa: BLE001 - reported to the parent
            os.write(write_end, traceback.format_exc()[-3000:].encode())
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _reap(pid: int, read_end: int, within: float) -> str:
    """Wait up to ``within`` seconds for the child; '' if it exited 0, else why not."""
    deadline = time.monotonic() + within
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return f"the child hung for {within}s and was killed"
            time.sleep(0.002)
        report = b""
        while chunk := os.read(read_end, 65536):
            report += chunk
    finally:
        os.close(read_end)
    code = os.waitstatus_to_exitcode(status)
    return "" if code == 0 else f"exit status {code}: {report.decode(errors='replace')}"


def _write_in_child(path, strategy: str, name: str, within: float) -> None:
    """A brand-new manager on the same file writes and commits ``name`` within ``within`` s."""
    began = time.monotonic()
    manager = StoreManager()
    manager.configure("child", f"sqlite:{path}?strategy={strategy}&timeout=5")
    assert manager.submit_write(insert(name)).result(timeout=10) == name
    took = time.monotonic() - began
    assert took < within, f"the child's write took {took:.2f}s"
    manager.close()


# --------------------------------------------------------------------------- the reported case


@pytest.mark.timeout(30)
@pytest.mark.parametrize("journal, holder", [
    ("wal", "unit"),        # the reported case
    ("delete", "unit"),
    ("delete", "read"),     # outside WAL an inherited read lock stops the child's commits too
])
def test_fork_while_the_writer_is_inside_a_batch_leaves_the_child_able_to_write(
        make_manager, tmp_path, journal, holder):
    """A transaction is open in another thread (blocked inside it) when the fork comes."""
    path = tmp_path / "a.db"
    manager = make_manager("queue", path=path, schema=create_schema, timeout=3,
                           journal_mode=journal)
    inside, release = threading.Event(), threading.Event()

    def blocking(store):
        store.execute("INSERT INTO item (name) VALUES ('parent')")
        inside.set()
        assert release.wait(20)
        return "parent"

    def reading():
        with manager.read("main") as store:
            assert store.execute("SELECT count(*) FROM item").get_one() == (0,)
            inside.set()
            assert release.wait(20)
        manager.submit_write(insert("parent")).result(timeout=10)
        return "parent"

    pool = concurrent.futures.ThreadPoolExecutor(1)
    if holder == "unit":
        future = manager.submit_write(blocking)  # the writer thread blocks inside its batch
    else:
        future = pool.submit(reading)
    assert inside.wait(10)

    def release_once_the_fork_began():
        assert _fork_began.wait(20)
        time.sleep(0.2)  # the fork is under way (held back, if it waits for the transaction)
        release.set()

    _fork_began.clear()
    releaser = threading.Thread(target=release_once_the_fork_began)
    releaser.start()
    try:
        pid, read_end = _fork_child(_write_in_child, path, "queue", "child", 1.0)
    finally:
        releaser.join(30)
    assert _reap(pid, read_end, 10) == ""
    assert future.result(timeout=10) == "parent"
    pool.shutdown()
    manager.close()
    assert sorted(name for (name,) in rows(path, "SELECT name FROM item")) == ["child", "parent"]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


# --------------------------------------------------------------------------- random moments

TRIALS = 50  # per strategy
MOMENTS = ["idle", "batch", "checkpoint", "close"]
PAYLOAD = "randomblob(1500)"  # a few pages per commit: autocheckpoints come often


class _Workload:
    """Threads submitting units (and write() blocks) to whichever manager is current.

    ``pause()`` parks them all between units (the writer idle); a manager closed under
    them is replaced by the test, and they go on with the new one.
    """

    def __init__(self, path, strategy: str, threads: int = 3):
        self.path = path
        self.strategy = strategy
        self.uri = f"sqlite:{path}?strategy={strategy}&timeout=5&synchronous=normal"
        self.manager = self.new_manager()
        self.acknowledged: list[str] = []
        self.errors: list[str] = []
        self.go = threading.Event()
        self.stop = False
        self._busy = 0
        self._changed = threading.Condition()
        self.threads = [threading.Thread(target=self._run, args=(number,), daemon=True)
                        for number in range(threads)]

    def new_manager(self) -> StoreManager:
        manager = StoreManager()
        manager.configure("db", self.uri)
        return manager

    def start(self) -> None:
        self.go.set()
        for thread in self.threads:
            thread.start()

    def pause(self) -> None:
        self.go.clear()
        with self._changed:
            assert self._changed.wait_for(lambda: self._busy == 0, 20)

    def finish(self) -> None:
        self.stop = True
        self.go.set()
        for thread in self.threads:
            thread.join(20)
            assert not thread.is_alive()

    def _unit(self, key: str):
        def unit(store):
            store.execute("PRAGMA wal_autocheckpoint = 16")  # a checkpoint in many COMMITs
            store.execute(f"INSERT INTO item (name, payload) VALUES (?, {PAYLOAD})", (key,))
            return key
        return unit

    def _run(self, number: int) -> None:
        from sqlite_storemgr import ManagerClosedError
        step = 0
        while not self.stop:
            self.go.wait()
            with self._changed:
                if not self.go.is_set() or self.stop:
                    continue
                self._busy += 1
            try:
                step += 1
                key = f"t{number}-{step}"
                manager = self.manager
                try:
                    if number == 0 and self.strategy != "single":
                        with manager.write("db") as store:
                            self._unit(key)(store)
                    else:
                        manager.submit_write(self._unit(key)).result(timeout=20)
                except ManagerClosedError:
                    time.sleep(0.001)  # closed under us: not acknowledged; the next one is new
                    continue
                self.acknowledged.append(key)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                self.errors.append(f"{key}: {error!r}")
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()


class _Checkpointer:
    """A thread running ``PRAGMA wal_checkpoint`` through a manager's own connection."""

    def __init__(self, path):
        self.manager = StoreManager()
        self.manager.configure("ckpt", f"sqlite:{path}?strategy=queue&timeout=5")
        self.running = threading.Event()
        self.stop = False
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            store = self.manager.get_store("ckpt")  # read-only: autocommit, so it checkpoints
            while not self.stop:
                if self.running.wait(0.05):
                    store.execute("PRAGMA wal_checkpoint(PASSIVE)").get_all()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(error))

    def finish(self) -> None:
        self.stop = True
        self.thread.join(20)
        self.manager.close()


IN_FLIGHT = 4  # children writing at once, beside the parent's threads


@pytest.mark.timeout(90)
def test_forks_at_random_moments_leave_every_child_able_to_write(tmp_path, strategy, caplog):
    from sqlite_storemgr.backends import forking
    path = tmp_path / "b.db"
    rng = random.Random()
    workload = _Workload(path, strategy)
    workload.manager.submit_write(lambda store: store.execute(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB)")).result()
    checkpointer = _Checkpointer(path)
    workload.start()
    failures: list[str] = []
    children: list[str] = []
    in_flight: list[tuple[str, int, int, float]] = []
    moments = [MOMENTS[trial % len(MOMENTS)] for trial in range(TRIALS)]
    rng.shuffle(moments)
    before = forking.stats()
    started = time.monotonic()

    def reap(child) -> None:
        label, pid, read_end, forked = child
        outcome = _reap(pid, read_end, max(0.0, forked + 10 - time.monotonic()))
        if outcome:
            failures.append(f"{label}: {outcome}")

    try:
        for trial, moment in enumerate(moments):
            closing = None
            if moment == "idle":
                workload.pause()
            elif moment == "checkpoint":
                checkpointer.running.set()
            elif moment == "close":
                closing = threading.Thread(target=workload.manager.close)
            time.sleep(rng.uniform(0, 0.006))
            if closing is not None:
                closing.start()
                time.sleep(rng.uniform(0, 0.003))
            name = f"child-{trial}-{moment}"
            pid, read_end = _fork_child(_write_in_child, path, strategy, name, 3.0)
            children.append(name)
            in_flight.append((f"trial {trial} ({moment})", pid, read_end, time.monotonic()))
            if closing is not None:
                closing.join(20)
                assert not closing.is_alive()
                workload.manager = workload.new_manager()
            checkpointer.running.clear()
            workload.go.set()
            if len(in_flight) >= IN_FLIGHT:
                reap(in_flight.pop(0))
            if failures:
                break
    finally:
        while in_flight:
            reap(in_flight.pop(0))
        workload.finish()
        checkpointer.finish()
        workload.manager.close()
    took = time.monotonic() - started
    after = forking.stats()
    assert failures == []
    assert workload.errors == [] and checkpointer.errors == []
    assert not [record.getMessage() for record in caplog.records
                if record.name == "sqlite_storemgr.backends.forking" and record.levelno >= 30]
    assert after["forks"] - before["forks"] == TRIALS and after["forks_warned"] == before["forks_warned"]
    # Every acknowledged unit, and every child's row, is in the file exactly once.
    counts = dict(rows(path, "SELECT name, count(*) FROM item GROUP BY name"))
    expected = workload.acknowledged + children
    assert [name for name in expected if counts.get(name) != 1] == []
    assert len(set(workload.acknowledged)) == len(workload.acknowledged)
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert len(workload.acknowledged) >= TRIALS  # the forks met a writer at work
    held_back = after["forks_held_back"] - before["forks_held_back"]
    print(f"\n{strategy}: {TRIALS} forks in {took:.1f}s, {held_back} held back for a "
          f"transaction ({(after['held_back_seconds'] - before['held_back_seconds']) * 1000:.0f}"
          f" ms in all), {len(workload.acknowledged)} acknowledged units, none lost or doubled")


# --------------------------------------------------------------------------- what cannot wait


def _fork_locked_child(path, inherited_store):
    """In a child that inherited a transaction on ``path``: its writes fail at once, clearly."""
    from sqlite_storemgr import ForkLockedError, InheritedConnectionError
    if inherited_store is not None:
        with pytest.raises(InheritedConnectionError, match="os.fork"):
            inherited_store.execute("SELECT count(*) FROM item")
    manager = StoreManager()
    manager.configure("child", f"sqlite:{path}?strategy=queue&timeout=5")
    began = time.monotonic()
    error = manager.submit_write(insert("child")).exception(timeout=10)
    assert isinstance(error, ForkLockedError), repr(error)
    assert "forked while" in str(error) and str(path) in str(error)
    assert time.monotonic() - began < 2.5  # at once, not after the whole timeout (5 s)
    reader = manager.get_store("child")
    assert reader.execute("SELECT count(*) FROM item").get_one()[0] >= 0  # reads still work


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strategy", ["queue", "mutex"])
def test_a_fork_from_inside_a_unit_warns_and_its_child_fails_fast(
        make_manager, tmp_path, strategy, caplog):
    path = tmp_path / "c.db"
    manager = make_manager(strategy, path=path, schema=create_schema, timeout=5)

    def forking_unit(store):
        store.execute("INSERT INTO item (name) VALUES ('parent')")
        return _fork_child(_fork_locked_child, path, store)

    began = time.monotonic()
    pid, read_end = manager.submit_write(forking_unit).result(timeout=20)
    assert time.monotonic() - began < 2.5  # a fork never waits for its own transaction
    assert _reap(pid, read_end, 10) == ""
    manager.close()
    assert [name for (name,) in rows(path, "SELECT name FROM item")] == ["parent"]
    warnings = [record.getMessage() for record in caplog.records
                if record.name == "sqlite_storemgr.backends.forking" and record.levelno >= 30]
    assert len(warnings) == 1 and "from inside a write transaction" in warnings[0]
    assert str(path) in warnings[0]


@pytest.mark.timeout(30)
def test_a_fork_waits_for_a_stuck_transaction_only_so_long(make_manager, tmp_path, caplog):
    """A unit that outlives the wait (FORK_WAIT_MIN for timeout=0.3): fork, warn, fail fast."""
    from sqlite_storemgr.backends.forking import FORK_WAIT_MIN
    path = tmp_path / "d.db"
    manager = make_manager("queue", path=path, schema=create_schema, timeout=0.3)
    inside, release = threading.Event(), threading.Event()

    def stuck(store):
        store.execute("INSERT INTO item (name) VALUES ('parent')")
        inside.set()
        assert release.wait(20)
        return "parent"

    future = manager.submit_write(stuck)
    assert inside.wait(10)
    began = time.monotonic()
    pid, read_end = _fork_child(_fork_locked_child, path, None)
    waited = time.monotonic() - began
    release.set()
    assert _reap(pid, read_end, 10) == ""
    assert FORK_WAIT_MIN - 0.05 <= waited < FORK_WAIT_MIN + 2
    assert future.result(timeout=10) == "parent"
    manager.close()
    warnings = [record.getMessage() for record in caplog.records
                if record.name == "sqlite_storemgr.backends.forking" and record.levelno >= 30]
    assert len(warnings) == 1 and "forked anyway" in warnings[0] and str(path) in warnings[0]


@pytest.mark.timeout(30)
def test_a_read_snapshot_in_another_thread_does_not_hold_a_fork_back(
        make_manager, tmp_path, caplog):
    """A WAL read transaction, inherited, locks nothing the child needs: no wait for it."""
    path = tmp_path / "e.db"
    manager = make_manager("queue", path=path, schema=create_schema, timeout=5)
    manager.submit_write(insert("before")).result()
    inside, release = threading.Event(), threading.Event()

    def reader():
        with manager.read("main") as store:
            assert store.execute("SELECT count(*) FROM item").get_one() == (1,)
            inside.set()
            assert release.wait(20)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert inside.wait(10)
        began = time.monotonic()
        pid, read_end = _fork_child(_write_in_child, path, "queue", "child", 1.0)
        assert time.monotonic() - began < 1.0  # held back, it would wait 5 s (timeout)
        assert _reap(pid, read_end, 10) == ""
    finally:
        release.set()
        thread.join(10)
    manager.close()
    assert sorted(name for (name,) in rows(path, "SELECT name FROM item")) == ["before", "child"]
    assert not [record for record in caplog.records if record.name == "sqlite_storemgr.backends.forking"]
