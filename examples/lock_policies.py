"""What each ``on_locked`` policy does when another process holds the write lock.

A separate process (stdlib ``sqlite3``) takes ``BEGIN EXCLUSIVE`` on the same
file and holds it for ``--hold`` seconds, while this process tries a write under
``strategy=threadlocal`` with each policy and each ``timeout``.  Two kinds of
write show the difference:

A. ``submit_write(fn)``: the unit begins ``BEGIN IMMEDIATE``, so the wait for
   the lock (in line with this process's other threads, `lock_wait`) is
   bounded by ``timeout``, the same under every policy.
B. Code that reads, then writes through its own ``get_store`` store, wrapped in
   ``@manager.retrying()``: it too begins ``BEGIN IMMEDIATE`` before its first
   read, so its read can never go stale and it waits exactly like A.  The
   policies differ only for a busy error inside a transaction that read first
   (a store joined to a zope transaction) or at COMMIT (rollback-journal mode).

    python examples/lock_policies.py [--hold 1.0] [--timeouts 0.3,2]

Exit status 1 if an outcome differs from what the policy promises.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import sqlite_storemgr as sm

POLICIES = {
    "retry": "on a busy error roll back and re-run the whole unit, with backoff, until "
             "the deadline",
    "retry_commit": "only a COMMIT refused as busy is repeated (the store is then in a "
                    "well-defined state); any other busy error rolls back and raises",
    "rollback": "roll back and raise DatabaseLockedError at once",
}

# The other process: takes the write lock, says so, holds it until told or --hold passes.
HOLDER = """
import select, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
connection.execute("BEGIN EXCLUSIVE")
connection.execute("INSERT INTO note (text) VALUES ('from the other process')")
print("locked", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))  # a line on stdin ends the hold early
connection.execute("COMMIT")
print("released", flush=True)
"""


class Holder:
    """The other process holding ``BEGIN EXCLUSIVE`` on ``path``."""

    def __init__(self, path: str, hold: float):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, path, str(hold)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "locked":
            raise SystemExit("lock_policies.py: the holder process could not take the lock")

    def release(self) -> None:
        """End the hold now (if it has not ended) and wait for the process."""
        try:
            self.process.communicate("release\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def submit_write_unit(manager: sm.StoreManager) -> None:
    manager.submit_write(lambda store: store.execute(
        "INSERT INTO note (text) VALUES ('from submit_write')")).result()


def read_then_write(manager: sm.StoreManager) -> None:
    @manager.retrying("main")
    def unit() -> int:
        store = manager.get_store("main")
        count = store.execute("SELECT count(*) FROM note").get_one()[0]  # after BEGIN IMMEDIATE
        store.execute("INSERT INTO note (text) VALUES (?)", (f"after {count} notes",))
        return count
    unit()


def attempt(path: str, policy: str, timeout: float, hold: float, write) -> tuple[bool, str]:
    """One write under ``policy``/``timeout`` while the holder holds the lock."""
    manager = sm.StoreManager()
    manager.configure("main", f"sqlite:{path}?strategy=threadlocal&on_locked={policy}"
                              f"&timeout={timeout:g}")
    with manager.read("main") as store:  # open this thread's store before the lock is taken
        store.execute("SELECT 1")
    holder = Holder(path, hold)
    began = time.monotonic()
    try:
        write(manager)
        outcome = True, f"succeeded after {time.monotonic() - began:.2f} s"
    except sm.DatabaseLockedError as error:
        outcome = False, (f"DatabaseLockedError after {time.monotonic() - began:.2f} s\n"
                          f"{'':6}{error}")
    finally:
        holder.release()
        manager.close()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", type=float, default=1.0,
                        help="seconds the other process holds the lock")
    parser.add_argument("--timeouts", default="0.3,2",
                        help="comma-separated timeouts to try (default: 0.3,2)")
    args = parser.parse_args(argv)
    timeouts = [float(value) for value in args.timeouts.split(",")]
    scratch = tempfile.TemporaryDirectory(prefix="storemgr-locks-")  # goes when main ends
    path = os.path.join(scratch.name, "locks.db")
    with sm.StoreManager() as manager:
        manager.configure("main", f"sqlite:{path}?strategy=threadlocal")
        manager.submit_write(lambda store: store.execute(
            "CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")).result()

    print(f"database {path}; another process holds BEGIN EXCLUSIVE for {args.hold:g} s "
          "in every case (its hold ends early once our attempt has given up)\n")
    for policy, meaning in POLICIES.items():
        print(f"  on_locked={policy}: {meaning}")
    cases = [
        ("A. submit_write(fn): BEGIN IMMEDIATE waits for the lock, up to "
         "timeout, under every policy", submit_write_unit,
         lambda policy, timeout: timeout > args.hold),
        ("B. read, then write through get_store under @retrying(): BEGIN IMMEDIATE first, "
         "so it waits like A", read_then_write,
         lambda policy, timeout: timeout > args.hold),
    ]
    unexpected = 0
    for title, write, should_succeed in cases:
        print(f"\n{title}")
        for policy in POLICIES:
            for timeout in timeouts:
                succeeded, text = attempt(path, policy, timeout, args.hold, write)
                expected = should_succeed(policy, timeout)
                unexpected += succeeded != expected
                mark = "" if succeeded == expected else "   <-- UNEXPECTED"
                print(f"  on_locked={policy:12} timeout={timeout:<4g} {text}{mark}")
    print(f"\nunexpected outcomes: {unexpected}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
