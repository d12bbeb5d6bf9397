"""Fork safety: ``os.fork()`` never catches this package's connections inside SQLite.

A barrier around every fork waits, within a bound, for other threads'
transactions that would lock the child out and for calls inside SQLite; the
child abandons the inherited connections instead of closing them.
See docs/forking.md for why and how.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any


from .. import lifecycle
from ..errors import ForkLockedError, InheritedConnectionError

if TYPE_CHECKING:
    from .sqlite import SQLiteConnection

__all__ = ["ForkLockedError", "InheritedConnectionError", "FORK_WAIT_MIN", "FORK_WAIT_MAX",
           "stats"]

FORK_WAIT_MIN = 1.0   # a unit holds its transaction a while beyond its wait for the lock
FORK_WAIT_MAX = 5.0   # a fork never waits longer than this for other threads' transactions
USE_GRACE = 0.5       # for calls under way inside SQLite, even once the wait above expired
_POLL = 0.005         # the forker looks again this often if a wake-up was missed

logger = logging.getLogger(__name__)


# Re-entrant: a connection that is garbage may be closed (Storm's __del__) by a collection
# that starts inside a section holding it.
_lock = threading.RLock()
_changed = threading.Condition(_lock)   # transactions ended, connections closed, a fork done
# Added to and listed under _lock; closed ones leave as garbage (no discard: a close may come
# from a collection that starts while the same thread iterates it).
_live: "weakref.WeakSet[SQLiteConnection]" = weakref.WeakSet()
_forker: int | None = None              # the thread whose fork is pending
_lock_held = False                      # the forker holds _lock across the fork
_gc_was_enabled = False                 # collections are off during the barrier
_held: list[Any] = []                        # the _use locks the forker holds across the fork
_stuck: dict[Any, str] = {}                       # file key -> why the child cannot write it
_warnings: list[tuple[object, ...]] = []  # logged by the parent once the fork is done
# In a child: the files it inherited locked (file key -> why); kept by its own children too.
_locked_out: dict[Any, str] = {}
_kept: list[Any] = []                        # inherited pysqlite3 connections, never to be closed
_stats = {"forks": 0, "forks_held_back": 0, "held_back_seconds": 0.0, "forks_warned": 0}
_pin: Any = None                        # Py_IncRef through ctypes, loaded by the first fork


def stats() -> dict[str, Any]:
    """Forks in this process: how many, how many waited for a transaction (and how long), warned."""
    return dict(_stats)


# -- hooks of SQLiteConnection (the hot path: no lock unless a fork is pending) -------------

def register(connection: "SQLiteConnection") -> None:
    """A new connection, before it opens its file (opening runs inside SQLite)."""
    connection._fork_txn = 0
    connection._fork_writes = False
    connection._fork_pid = os.getpid()
    me = threading.get_ident()
    with _lock:
        while _forker is not None and _forker != me and not _holds_blocking(me):
            _changed.wait()
        _live.add(connection)


def began(connection: "SQLiteConnection", writes: bool) -> None:
    """Before BEGIN (``writes``: BEGIN IMMEDIATE): the transaction counts as open from here."""
    connection._fork_writes = writes
    connection._fork_txn = threading.get_ident()
    if _forker is not None or _locked_out:
        _began_slowly(connection, writes)


def ended(connection: "SQLiteConnection") -> None:
    """After COMMIT, or as ROLLBACK starts (under ``_use``), or after a BEGIN that failed."""
    connection._fork_txn = 0
    if _forker is not None:
        with _lock:
            _changed.notify_all()


def closed(connection: "SQLiteConnection") -> None:
    """The connection was closed (under ``_use``): it is no longer the fork's concern."""
    connection._fork_txn = 0
    if _forker is not None:
        with _lock:
            _changed.notify_all()


def inherited(connection: "SQLiteConnection") -> bool:
    """Whether the connection came from the parent process with ``os.fork()``.

    Then it is abandoned (see docs/forking.md) and must not be closed.  A
    child meets its parent's connections before this module's fork hook runs:
    CPython drops the parent's other threads' thread-local data while forking,
    and with it their stores, whose finalizers close them.
    """
    if getattr(connection, "_fork_pid", None) in (None, os.getpid()):
        return False
    if not isinstance(connection.__dict__.get("_raw_connection"), _Inherited):
        _abandon(connection, os.getppid())
    return True


def _began_slowly(connection: "SQLiteConnection", writes: bool) -> None:
    me = threading.get_ident()
    if _forker is not None and _forker != me:
        with _lock:
            if (_forker is not None and _forker != me
                    and not _holds_blocking(me, connection)):
                connection._fork_txn = 0  # not begun after all: the forker may be waiting on it
                _changed.notify_all()
                while _forker is not None and _forker != me:
                    _changed.wait()
                connection._fork_writes = writes
                connection._fork_txn = me
    if writes and _locked_out:
        why = _locked_out.get(_file_key(connection))
        if why is not None:
            connection._fork_txn = 0
            raise ForkLockedError(
                f"{connection._database.config.describe()}: this process (pid {os.getpid()}) "
                f"was forked while {why}; the lock state SQLite keeps in process memory came "
                "with the fork and keeps the file locked in this process for good, so no "
                "connection of this process can write it (reading works). Fork outside write "
                "units and write() blocks (os.fork() waits for other threads' transactions, "
                "not for its own thread's), or start a fresh process (subprocess, "
                "multiprocessing's 'spawn' or 'forkserver')")


# -- what the fork looks at ------------------------------------------------------------------

def _file_key(connection: "SQLiteConnection") -> Any:
    """What SQLite keys its lock state by: the file's (device, inode); the memdb's name."""
    identity = getattr(connection, "_file_identity", None)
    if identity is not None:
        return identity
    return ("memory", getattr(connection._database, "_target", id(connection._database)))


def _blocks_child(connection: "SQLiteConnection") -> bool:
    """Whether the connection's open transaction, inherited, would lock the child out.

    A write transaction always does (the WAL write lock, or RESERVED and up);
    a read transaction only outside WAL mode (its SHARED lock stops the
    child's commits) or on an in-memory database.
    """
    if not getattr(connection, "_fork_txn", 0):
        return False
    if connection._fork_writes or connection._wrote:
        return True
    in_wal = (getattr(connection, "_file_identity", None) is not None
              and getattr(connection._database.config, "journal_mode", None) == "wal")
    return not in_wal


def _owner(connection: "SQLiteConnection", me: int) -> bool:
    """Whether thread ``me`` owns the connection's transaction (began it, or owns its store)."""
    if connection._fork_txn == me:
        return True
    object_ref = getattr(connection._event, "_object_ref", None)  # Storm's EventSystem -> Store
    store = object_ref() if object_ref is not None else None
    return getattr(store, "owner", None) == me  # e.g. a write() block on the writer's store


def _holds_blocking(me: int, besides: Any = None) -> bool:
    """(Under _lock) whether thread ``me`` holds a transaction the pending fork waits for."""
    return any(connection is not besides and connection._fork_txn == me
               and _blocks_child(connection) for connection in _live)


def _describe(connection: "SQLiteConnection") -> str:
    return connection._database.config.describe()


# -- the fork ---------------------------------------------------------------------------------

def _before_fork() -> None:
    global _forker, _pin, _gc_was_enabled
    me = threading.get_ident()
    if _pin is None and _live:
        _pin = _load_pin()
    with _lock:
        while _forker is not None:  # another thread's fork is under way
            _changed.wait()
        _forker = me
    # No collection may run Storm's __del__ (a close(), waiting for a _use the forker holds)
    # in a thread that holds _lock, until the fork is done.
    _gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _quiesce(me)  # returns with _lock and every _use it could take held
    except BaseException:  # noqa: BLE001 - never stop a fork; the after hooks let go
        logger.exception("sqlite_storemgr's fork barrier failed")


def _quiesce(me: int) -> None:
    """Wait for other threads' transactions, then take every ``_use``; return holding _lock."""
    global _stuck, _warnings, _lock_held
    with _lock:  # bounded by the databases it waits for, not by every live one
        timeouts = [getattr(connection._database.config, "timeout", 0.0) or 0.0
                    for connection in _live
                    if _blocks_child(connection) and not _owner(connection, me)]
    started = time.monotonic()
    deadline = started + min(FORK_WAIT_MAX, max([FORK_WAIT_MIN, *timeouts]))
    held_back = False
    while True:
        with _lock:
            while True:
                others = [connection for connection in _live
                          if _blocks_child(connection) and not _owner(connection, me)]
                remaining = deadline - time.monotonic()
                if not others or remaining <= 0:
                    break
                held_back = True
                _changed.wait(min(remaining, _POLL))
            connections = list(_live)
        # No lock of ours is held while waiting for a _use: a thread holding its _use may be
        # waiting for _lock (ended() during a ROLLBACK, closed()).
        until = max(deadline, time.monotonic() + USE_GRACE)
        missed: list[Any] = []
        for connection in connections:
            use = connection._use
            if use.acquire(timeout=max(0.0, until - time.monotonic())):
                _held.append(use)
            else:
                missed.append(connection)
        _lock.acquire()
        _lock_held = True
        others = [connection for connection in _live
                  if _blocks_child(connection) and not _owner(connection, me)]
        if not others or time.monotonic() >= deadline:
            break
        _lock_held = False  # a read began to write meanwhile: wait for that transaction too
        _lock.release()
        while _held:
            _held.pop().release()
    taken = {id(use) for use in _held}
    for connection in _live:  # opened meanwhile by a thread let through (it held a transaction)
        if id(connection._use) not in taken and all(connection is not m for m in missed):
            if connection._use.acquire(blocking=False):
                _held.append(connection._use)
                taken.add(id(connection._use))
            else:
                missed.append(connection)

    waited = time.monotonic() - started
    stuck: dict[Any, str] = {}
    warnings: list[tuple[object, ...]] = []
    own = [connection for connection in _live
           if _blocks_child(connection) and _owner(connection, me)]
    for connection in own:
        stuck[_file_key(connection)] = (
            "the forking thread was inside a transaction on it (a fork from inside a unit "
            "or a write() block)")
    for name in sorted({_describe(connection) for connection in own}):
        warnings.append((
            "os.fork() from inside a write transaction on %s (the forking thread's own): "
            "the child can never write that file; its writes fail with ForkLockedError", name))
    for connection in others:
        stuck[_file_key(connection)] = (
            f"another thread of the parent held a transaction on it for longer than the "
            f"fork waited ({waited:.1f}s)")
    for name in sorted({_describe(connection) for connection in others}):
        warnings.append((
            "os.fork() waited %.1fs for another thread's write transaction on %s to end and "
            "forked anyway: the child can never write that file; its writes fail with "
            "ForkLockedError", waited, name))
    for name in sorted({_describe(connection) for connection in missed}):
        warnings.append((
            "os.fork() waited %.1fs for a thread inside SQLite on %s and forked anyway: the "
            "child may be unable to use that file", waited, name))
    _stuck, _warnings = stuck, warnings
    _stats["forks"] += 1
    _stats["forks_warned"] += bool(warnings)
    if held_back:
        _stats["forks_held_back"] += 1
        _stats["held_back_seconds"] += waited


def _let_go() -> list[tuple[object, ...]]:
    """Release what the forker holds, let the held-back threads go on; the warnings to log."""
    global _forker, _stuck, _warnings, _lock_held
    warnings = _warnings
    _stuck, _warnings = {}, []
    while _held:
        _held.pop().release()
    if not _lock_held:
        _lock.acquire()
    _lock_held = False
    _forker = None
    _changed.notify_all()
    _lock.release()
    if _gc_was_enabled:
        gc.enable()
    return warnings


def _after_fork_in_parent() -> None:
    for arguments in _let_go():
        logger.warning(*arguments)


class _Inherited:
    """Stands in for an inherited pysqlite3 connection: refuses every use, closes nothing."""

    in_transaction = False

    def __init__(self, message: str):
        self._message = message

    def error(self) -> InheritedConnectionError:
        return InheritedConnectionError(self._message)

    def close(self) -> None:
        """Nothing: closing the real one would roll back the parent's transaction."""

    def __getattr__(self, name: str) -> Any:
        raise self.error()


def _load_pin() -> Any:
    """``Py_IncRef`` (in the parent: the child may meet its connections mid-fork)."""
    try:
        import ctypes
        incref = ctypes.pythonapi.Py_IncRef
        return lambda obj: incref(ctypes.py_object(obj))
    except Exception:  # noqa: BLE001 - no ctypes: _kept alone covers all but the exit
        return False


def _keep_forever(raw: Any) -> None:
    """Keep an inherited pysqlite3 connection alive for good: its deallocation closes it."""
    _kept.append(raw)
    if _pin:  # module teardown at interpreter exit empties _kept: one reference more never is
        _pin(raw)


def _abandon(connection: "SQLiteConnection", parent: int) -> None:
    stand_in = _Inherited(
        f"{_describe(connection)}: this connection was opened by process {parent} and came "
        f"to process {os.getpid()} with os.fork(); a child must never use it (SQLite: "
        "carrying a connection across fork() can corrupt the file); this process opens its "
        "own (get_store() and submit_write() in the child do so by themselves)")
    raw = connection.__dict__.get("_raw_connection")
    if raw is not None and not isinstance(raw, _Inherited):
        _keep_forever(raw)
    connection._raw_connection = stand_in
    connection._closed = True
    # What every later call raises (an instance attribute over the method).
    connection._closed_error = stand_in.error  # type: ignore[method-assign]
    connection._use = threading.RLock()        # the parent's threads are gone
    connection._fork_txn = 0


def _after_fork_in_child() -> None:
    global _lock, _changed, _live, _forker, _stuck, _warnings, _lock_held
    parent = os.getppid()
    inherited = list(_live)
    for connection in inherited:
        _abandon(connection, parent)
    while _held:  # this thread holds them (the forking thread, the same one in the child)
        try:
            _held.pop().release()
        except RuntimeError:
            pass
    _locked_out.update(_stuck)
    _lock = threading.RLock()
    _changed = threading.Condition(_lock)
    _live = weakref.WeakSet()
    _forker = None
    _lock_held = False
    if _gc_was_enabled:
        gc.enable()
    _stuck, _warnings = {}, []
    if inherited:
        logger.info("forked: process %d set aside %d connection(s) inherited from %d; it "
                    "opens its own", os.getpid(), len(inherited), parent)


lifecycle.on_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                  after_in_child=_after_fork_in_child)
