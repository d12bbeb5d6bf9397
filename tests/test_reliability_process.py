"""Process faults under every strategy: SIGKILL, SIGTERM, another process holding the lock.

- SIGKILL at random moments: a "zygote" child imports the library once and
  forks one writer process per trial, so a trial costs milliseconds of start-up
  instead of an interpreter launch.  Each writer appends the id of every write
  whose future resolved to an ack file with one ``write(2)`` per id (whole
  lines survive a SIGKILL); afterwards every id written there must be in the
  database and ``PRAGMA integrity_check`` must say ok.
- SIGTERM with `drain_on_sigterm()`: the child submits as fast as it can, gets
  SIGTERM, exits 143 within seconds, and every unit whose submit returned
  (every acknowledged one included) is committed.
- Another process holding ``BEGIN EXCLUSIVE`` (stdlib ``sqlite3`` in a child)
  for random lengths around ``timeout``: units wait within the deadline, the
  others fail with `DatabaseLockedError` within ``timeout`` plus a margin, and
  the manager always recovers.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from _children import LineReader, spawn
from _items import integrity, rows
from sqlite_storemgr import DatabaseLockedError, StoreManager

pytestmark = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning")

# -- SIGKILL ------------------------------------------------------------------------

ZYGOTE = r"""
import itertools, os, sys, threading
from sqlite_storemgr import StoreManager   # imported once; every trial forks from here

def writer(strategy, path, ack_path, run):
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    mgr = StoreManager()
    mgr.configure("db", "sqlite:%s?strategy=%s&timeout=10" % (path, strategy))
    mgr.submit_write(lambda store: store.execute(
        "CREATE TABLE IF NOT EXISTS ack (id TEXT PRIMARY KEY, payload BLOB, part INTEGER)"
    )).result()

    def insert(store, key):
        store.execute("INSERT INTO ack (id, payload, part) VALUES (?, randomblob(300), 1)", (key,))
        store.execute("UPDATE ack SET part = 2 WHERE id = ?", (key,))  # a unit of 2 statements

    def worker(thread):
        for step in itertools.count():
            key = "%s-%d-%d" % (run, thread, step)
            if thread == 0 and strategy != "single":
                with mgr.write("db") as store:       # a write() block acknowledges on exit
                    insert(store, key)
            else:
                mgr.submit_write(insert, key).result()
            os.write(ack, (key + "\n").encode())    # one write(2): a whole line or nothing

    for thread in range(4):
        threading.Thread(target=worker, args=(thread,), daemon=True).start()
    threading.Event().wait()

for line in sys.stdin:
    command = line.split()
    if command[0] == "quit":
        break
    pid = os.fork()
    if pid == 0:
        try:
            writer(*command[1:])
        finally:
            os._exit(3)
    print("pid %d" % pid, flush=True)
    print("status %d" % os.waitpid(pid, 0)[1], flush=True)
"""

KILL_TRIALS = 20


@pytest.mark.timeout(60)
def test_acknowledged_writes_survive_sigkill_at_random_moments(tmp_path, strategy):
    path = tmp_path / "killed.db"
    ack_path = tmp_path / "acks.txt"
    zygote = spawn(ZYGOTE, stdin=True)
    reader = LineReader(zygote.stdout)
    rng = random.Random()
    seen = 0
    acknowledged: list[str] = []
    per_trial: list[int] = []
    try:
        for run in range(KILL_TRIALS):
            zygote.stdin.write(f"trial {strategy} {path} {ack_path} run{run}\n".encode())
            zygote.stdin.flush()
            seen, line = reader.next_line(seen, "pid ", 20)
            pid = int(line.split()[1])
            time.sleep(rng.uniform(0.05, 0.3))
            os.kill(pid, signal.SIGKILL)
            seen, line = reader.next_line(seen + 1, "status ", 20)
            status = int(line.split()[1])
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"trial {run}: the writer ended on its own (status {status})")
            keys = ack_path.read_text().splitlines() if ack_path.exists() else []
            new = keys[len(acknowledged):]
            assert all(key.startswith(f"run{run}-") for key in new)
            acknowledged += new
            per_trial.append(len(new))
            # After every kill: the file is sound and holds every acknowledged write.
            assert integrity(path) == [("ok",)]
            if not rows(path, "SELECT 1 FROM sqlite_master WHERE name = 'ack'"):
                # Killed before its table was committed (a loaded machine): then nothing
                # can have been acknowledged.
                assert acknowledged == [], f"trial {run}: acknowledged, but no table"
                continue
            stored = {key for (key, part) in rows(path, "SELECT id, part FROM ack")
                      if part == 2}
            missing = [key for key in acknowledged if key not in stored]
            assert missing == [], f"trial {run}: {len(missing)} acknowledged writes lost"
            half_done = rows(path, "SELECT count(*) FROM ack WHERE part != 2")
            assert half_done == [(0,)], "a unit was committed half-way"
    finally:
        zygote.stdin.write(b"quit\n")
        zygote.stdin.flush()
        zygote.wait(10)
    assert zygote.returncode == 0, zygote.stderr.read().decode()[-3000:]
    assert len(set(acknowledged)) == len(acknowledged)
    # Enough acknowledged writes, in enough trials, for the check to mean something.
    assert sum(per_trial) >= 100, per_trial
    assert sum(1 for count in per_trial if count) >= KILL_TRIALS // 2, per_trial
    print(f"\nSIGKILL {strategy}: {KILL_TRIALS} kills, {sum(per_trial)} acknowledged writes, "
          "none lost")


# -- SIGTERM ------------------------------------------------------------------------

TERM_CHILD = r"""
import os, signal, sys, threading
import sqlite_storemgr as sm

path, strategy = sys.argv[1], sys.argv[2]
sm.configure("main", "sqlite:%s?strategy=%s&queue_size=1000000&timeout=10" % (path, strategy))

def chained(signum, frame):             # the application's own handler, installed first
    stats = sm.stats("main")
    os.write(1, ("chained %d %d\n" % (signum, stats.get("queue_depth", 0))).encode())

signal.signal(signal.SIGTERM, chained)
previous = sm.drain_on_sigterm(timeout=20)
assert previous is chained
sm.submit_write(lambda store: store.execute(
    "CREATE TABLE t (id TEXT PRIMARY KEY)")).result()
print("ready", flush=True)

def insert(store, key):
    store.execute("INSERT INTO t (id) VALUES (?)", (key,))

def acknowledge(key):
    def done(future):
        error = future.exception()
        if error is None:
            os.write(1, ("a %s\n" % key).encode())
        else:
            os.write(1, ("f %s %r\n" % (key, error)).encode())
    return done

def submitter(thread):
    step = 0
    while True:
        key = "%d-%d" % (thread, step)
        try:
            future = sm.submit_write(insert, key)
        except sm.ManagerClosedError:
            os.write(1, ("closed %d\n" % thread).encode())
            return
        os.write(1, ("s %s\n" % key).encode())      # its submit returned: it must commit
        future.add_done_callback(acknowledge(key))
        step += 1

for thread in range(1, 4):
    threading.Thread(target=submitter, args=(thread,), daemon=True).start()
if strategy != "threadlocal":
    # The main thread submits too: the handler interrupts it inside the library's code.
    # (Not under threadlocal: there it would wait in SQLite's busy handler, in C, where
    # Python runs no signal handler until the wait ends, up to timeout later.)
    submitter(0)
threading.Event().wait()                # the drain thread ends the process
"""


@pytest.mark.timeout(60)
def test_sigterm_drains_every_submitted_unit_then_exits_143(tmp_path, strategy):
    path = tmp_path / "term.db"
    child = spawn(TERM_CHILD, path, strategy)
    reader = LineReader(child.stdout)
    try:
        assert reader.wait_for("ready", 30), child.stderr.read().decode()[-3000:]
        # Let a backlog build up, then stop the child the way a process manager does.
        assert reader.wait_until(lambda lines: sum(
            line.startswith("s ") for line in lines) >= 3000, 30)
        signalled = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.wait(15)
        elapsed = time.monotonic() - signalled
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = reader.finish()
    stderr = child.stderr.read().decode()
    assert child.returncode == 143, stderr[-3000:]
    assert elapsed < 8, elapsed
    assert "Traceback" not in stderr, stderr[-3000:]
    submitted = [line[2:] for line in lines if line.startswith("s ")]
    acked = [line[2:] for line in lines if line.startswith("a ")]
    chained = [line for line in lines if line.startswith("chained ")]
    assert len(chained) == 1 and chained[0].startswith(f"chained {int(signal.SIGTERM)} ")
    stored = {key for (key,) in rows(path, "SELECT id FROM t")}
    assert set(acked) <= stored
    failed = [line for line in lines if line.startswith("f ")]
    assert failed == []
    missing = [key for key in submitted if key not in stored]
    assert missing == [], f"{len(missing)} submitted units lost, e.g. {missing[:5]}"
    if strategy in ("queue", "single"):
        # The submitters learned that the manager closed while the backlog drained.
        assert any(line.startswith("closed ") for line in lines)
    assert integrity(path) == [("ok",)]
    queued = int(chained[0].split()[2])
    if strategy == "queue":
        assert queued > 0, "nothing was queued at the signal: the drain proved nothing"
    print(f"\nSIGTERM {strategy}: {len(submitted)} units submitted, {queued} still queued at "
          f"the signal, all committed; exit 143 after {elapsed:.2f}s")


@pytest.mark.timeout(20)
def test_drain_on_sigterm_outside_the_main_thread_is_refused():
    import sqlite_storemgr as sm
    outcome = {}

    def target():
        try:
            sm.drain_on_sigterm()
        except RuntimeError as error:
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(5)
    assert "main thread" in str(outcome["error"])
    with pytest.raises(ValueError, match="timeout"):
        sm.drain_on_sigterm(timeout=-1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


IDLE_TERM_CHILD = r"""
import sys, threading
import sqlite_storemgr as sm
sm.configure("main", "sqlite:" + sys.argv[1])
sm.drain_on_sigterm(timeout=5)
sm.drain_on_sigterm(timeout=5)          # twice: still one handler, no chaining to itself
sm.submit_write(lambda store: store.execute("CREATE TABLE t (x)")).result()
print("ready", flush=True)
threading.Event().wait()
"""


@pytest.mark.timeout(30)
def test_sigterm_on_an_idle_process_exits_143_at_once(tmp_path):
    child = spawn(IDLE_TERM_CHILD, tmp_path / "idle.db")
    reader = LineReader(child.stdout)
    try:
        assert reader.wait_for("ready", 30), child.stderr.read().decode()[-3000:]
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.wait(10)
        assert time.monotonic() - started < 3
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 143, child.stderr.read().decode()[-3000:]
    assert rows(tmp_path / "idle.db", "SELECT count(*) FROM t") == [(0,)]


# -- another process holds the write lock --------------------------------------------

LOCKER = r"""
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for line in sys.stdin:
    hold = float(line)
    connection.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(hold)
    connection.execute("COMMIT")
    print("released", flush=True)
"""

def insert_row(store, key: int, trial: int) -> int:
    store.execute("INSERT INTO t (id, trial) VALUES (?, ?)", (key, trial))
    return key


LOCK_TIMEOUT = 0.3
LOCK_TRIALS = 8
MARGIN = 0.2  # scheduling noise allowed on top of timeout (2 busy cores, child processes)


@pytest.mark.timeout(60)
def test_other_process_holding_the_lock_for_random_lengths(tmp_path, strategy):
    path = tmp_path / "locked.db"
    mgr = StoreManager()
    mgr.configure("db", f"sqlite:{path}?strategy={strategy}&timeout={LOCK_TIMEOUT}")
    locker = None
    try:
        mgr.submit_write(lambda store: store.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, trial INTEGER)")).result(timeout=10)
        locker = spawn(LOCKER, path, stdin=True)
        reader = LineReader(locker.stdout)
        rng = random.Random()
        # Holds well inside the deadline, close to it (either outcome), well after it.
        holds = ([rng.uniform(0.02, 0.12) for _ in range(3)]
                 + [rng.uniform(0.25, 0.4) for _ in range(LOCK_TRIALS - 6)]
                 + [rng.uniform(0.55, 0.8) for _ in range(3)])
        rng.shuffle(holds)
        seen = 0
        committed: list[int] = []
        outcomes = {"waited": 0, "locked": 0}
        for trial, hold in enumerate(holds):
            locker.stdin.write(f"{hold}\n".encode())
            locker.stdin.flush()
            seen, _ = reader.next_line(seen, "locked", 20)
            results: dict[int, tuple] = {}

            def unit(index: int) -> None:
                key = trial * 10 + index
                started = time.monotonic()
                try:
                    future = mgr.submit_write(insert_row, key, trial)
                    error = future.exception(timeout=10)
                except BaseException as caught:  # noqa: BLE001 - reported below
                    error = caught
                results[key] = (error, time.monotonic() - started)

            threads = [threading.Thread(target=unit, args=(index,)) for index in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
                assert not thread.is_alive(), "a unit hung while another process held the lock"
            seen, _ = reader.next_line(seen + 1, "released", 20)
            for key, (error, elapsed) in results.items():
                if error is None:
                    committed.append(key)
                    outcomes["waited"] += 1
                    assert hold < LOCK_TIMEOUT + MARGIN, (hold, elapsed)
                    assert elapsed < LOCK_TIMEOUT + MARGIN
                else:
                    outcomes["locked"] += 1
                    assert isinstance(error, DatabaseLockedError), repr(error)
                    assert "database is locked" in str(error)
                    assert f"timeout={LOCK_TIMEOUT:g}s" in str(error)
                    assert hold > LOCK_TIMEOUT - MARGIN, (hold, elapsed)
                    assert elapsed < LOCK_TIMEOUT + MARGIN, elapsed
            if hold < LOCK_TIMEOUT - MARGIN:
                assert all(error is None for error, _ in results.values()), (hold, results)
            if hold > LOCK_TIMEOUT + MARGIN:
                assert all(error is not None for error, _ in results.values()), (hold, results)
            # The manager recovers at once after every trial.
            recovery = 1000 + trial
            assert mgr.submit_write(insert_row, recovery, trial).result(timeout=10) == recovery
            committed.append(recovery)
        assert outcomes["waited"] >= 3 and outcomes["locked"] >= 3, outcomes
        assert sorted(key for (key,) in rows(path, "SELECT id FROM t")) == sorted(committed)
        assert integrity(path) == [("ok",)]
    finally:
        if locker is not None:
            locker.stdin.close()
            locker.wait(10)
        mgr.close(timeout=10)
