"""Fair turns at SQLite's write lock for this process's threads (``strategy=threadlocal``).

The threads waiting for one file's write lock queue in arrival order, the first
of them trying SQLite, and take turns once it has waited too long, so no unit
starves in SQLite's busy handler while others keep committing.  The lock stays
SQLite's.  See docs/lock-turns.md.
"""

from __future__ import annotations

import math
import random
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Hashable

from .. import lifecycle

# How often the first waiter tries the lock while no unit of ours holds it (another
# process, or a write outside a unit, may): short, jittered.
POLL_SECONDS = (0.0005, 0.002)
# While a unit of ours holds it, the unit's end wakes the first waiter, but not for this
# long after threads were seen coming straight back for the lock (a wake-up that found
# it taken again already, or a newcomer that found it taken): then the first waiter
# looks by itself every 1 to 2 times this, and the threads that keep committing do not
# pay a thread switch per unit.
REWAKE_SECONDS = 0.01
# The other waiters are woken when their turn comes; this only bounds a lost wake-up.
CHECK_SECONDS = (0.2, 0.4)
# Once the first waiter has been first this long (or this share of its timeout, if
# less), the lock goes in turn.
STARVING_SECONDS = 0.05
STARVING_SHARE = 0.1


class _Waiter:
    __slots__ = ("wake", "patience", "first_since", "woken_by_end", "futile_at")

    def __init__(self, wait: float) -> None:
        self.wake = threading.Lock()  # held until the waiter is woken (a binary semaphore)
        self.wake.acquire()
        self.patience = min(STARVING_SECONDS, wait * STARVING_SHARE)
        self.first_since: float | None = None  # when it became the first in line
        self.woken_by_end = False
        self.futile_at = -math.inf  # when a unit's end last woke it for nothing


class WriteLockLine:
    """The threads of this process waiting for one database's write lock, in arrival order.

    A newcomer may take a free lock before the waiters (as in Go's ``sync.Mutex``)
    until the first waiter has been first for its patience; then everyone in line
    gets the lock in turn (docs/lock-turns.md).
    """

    def __init__(self) -> None:
        self.generation = _generation  # a line of the parent is not used after a fork
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        # Connections that took the lock inside a unit and have not said it ended
        # (`ended`): while there are any, trying the lock is no use.
        self._units = 0
        self._starving = False
        self._last_starving: _Waiter | None = None  # the last waiter of the turns under way
        self._busy_until = -math.inf  # threads come straight back: ends wake no one till then

    def begin(self, begin: Callable[[str], None], wait: float, in_unit: bool) -> bool:
        """``begin("BEGIN IMMEDIATE")`` (no busy wait of SQLite's) in turn until it succeeds.

        After ``wait`` seconds the last busy error is raised.  Returns whether
        the taker is counted as a unit that will call `ended`.
        """
        now = tried = time.monotonic()
        deadline = now + wait
        if self._starving or self._units:  # in turn, or one of ours holds it (a hint)
            with self._lock:
                me = _Waiter(wait)
                self._waiters.append(me)
        else:
            error = _attempt(begin)
            if error is None:
                return self._taken(None, in_unit)
            with self._lock:
                self._busy_until = time.monotonic() + REWAKE_SECONDS
                me = _Waiter(wait)
                self._waiters.append(me)
        taken = woken = False
        try:
            while True:
                now = time.monotonic()
                remaining = deadline - now
                with self._lock:
                    first = self._waiters[0] is me
                    units = self._units
                    starving = self._starving
                    if woken and me.woken_by_end and units and not starving:
                        me.futile_at = now  # someone went first: ends need not wake us
                    me.woken_by_end = False
                    if first and not starving:
                        if me.first_since is None:
                            me.first_since = now
                        elif now - me.first_since >= me.patience:
                            starving = self._starving = True  # turns for all in line now
                            self._last_starving = self._waiters[-1]
                # The first waiter tries when no unit of ours holds the lock (now and
                # then even so, should an end go unannounced); at the deadline every
                # waiter makes one last try, whatever its turn.
                if (first and (not units or now - tried >= CHECK_SECONDS[0])
                        or remaining <= 0):
                    tried = now
                    error = _attempt(begin)
                    if error is None:
                        taken = True
                        return self._taken(me, in_unit)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise error
                if first and not units:
                    pause = random.uniform(*POLL_SECONDS)
                elif first and not starving:
                    pause = random.uniform(REWAKE_SECONDS, 2 * REWAKE_SECONDS)
                    if me.first_since is not None:  # look again when patience runs out
                        pause = max(0.0001, min(pause, me.first_since + me.patience - now))
                else:
                    pause = random.uniform(*CHECK_SECONDS)  # woken when our turn comes
                woken = me.wake.acquire(timeout=min(remaining, pause))
        finally:
            if not taken:
                self._leave(me)

    def _taken(self, me: _Waiter | None, in_unit: bool) -> bool:
        if me is None and not in_unit:
            return False
        with self._lock:
            if in_unit:
                self._units += 1
            if me is not None:
                first = self._remove(me)
                if first and not (self._starving and in_unit):  # else `ended` wakes it
                    self._wake_first()  # the next in line takes over watching
        return in_unit

    def _leave(self, me: _Waiter) -> None:
        with self._lock:
            if self._remove(me):
                self._wake_first()

    def _remove(self, me: _Waiter) -> bool:
        """Take ``me`` out of the line (under the lock); whether it was the first."""
        first = self._waiters[0] is me
        self._waiters.remove(me)
        if me is self._last_starving or not self._waiters:
            self._starving = False  # the turns are over: newcomers may take a free lock again
            self._last_starving = None
        return first

    def ended(self) -> None:
        """A unit that took the lock here ended its transaction: wake the first waiter."""
        with self._lock:
            self._units = max(0, self._units - 1)
            if not self._waiters:
                return
            now = time.monotonic()
            if self._starving or (now >= self._busy_until
                                  and now - self._waiters[0].futile_at >= REWAKE_SECONDS):
                self._waiters[0].woken_by_end = True
                self._wake_first()

    def _wake_first(self) -> None:
        if self._waiters:
            wake = self._waiters[0].wake
            if wake.locked():
                wake.release()


_lines: "weakref.WeakValueDictionary[Hashable, WriteLockLine]" = weakref.WeakValueDictionary()
_lines_lock = threading.Lock()
_generation = 0  # forks so far (in this process's line of descent)


def line_for(key: Hashable) -> WriteLockLine:
    """The one line of this process for the database ``key`` names (a file's identity)."""
    line = _lines.get(key)
    if line is None:
        with _lines_lock:
            line = _lines.get(key)
            if line is None:
                line = _lines[key] = WriteLockLine()
    return line


def _attempt(begin: Callable[[str], None]) -> BaseException | None:
    """One ``BEGIN IMMEDIATE``: None if it went through, else the busy error."""
    try:
        begin("BEGIN IMMEDIATE")
    except Exception as error:
        if getattr(error, "busy_phase", None) is None:
            raise
        return error
    return None


class WriteTurns:
    """One connection's place in its database's line (kept by the connection)."""

    __slots__ = ("key", "line", "held", "in_unit")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.line: WriteLockLine | None = None
        self.held: WriteLockLine | None = None  # took the lock inside a unit: `ended` owed
        self.in_unit = False  # inside an outermost unit (`unit_started`)

    def begin(self, begin: Callable[[str], None], busy_timeout: Callable[..., None],
              wait: float) -> None:
        """``begin("BEGIN IMMEDIATE")`` in turn, within ``wait`` seconds.

        ``busy_timeout(seconds, remember=False)`` sets SQLite's own busy wait:
        off while in line, back to ``wait`` afterwards.
        """
        held, self.held = self.held, None
        if held is not None and held.generation == _generation:
            held.ended()  # a unit's earlier attempt that rolled back: its turn is over
        line = self.line
        if line is None or line.generation != _generation:
            line = self.line = line_for(self.key)
        busy_timeout(0, remember=False)
        try:
            if line.begin(begin, wait, self.in_unit):
                self.held = line
        finally:
            busy_timeout(wait, remember=False)


def unit_started(connection: Any) -> None:
    """An outermost unit begins on ``connection``: it will say when its transaction ended."""
    turns = connection.__dict__.get("_write_turns")
    if turns is not None:
        turns.in_unit = True


def unit_ended(connection: Any) -> None:
    """The unit on ``connection`` ended (committed or rolled back): wake the first waiter."""
    turns = connection.__dict__.get("_write_turns")
    if turns is not None:
        turns.in_unit = False
        held, turns.held = turns.held, None
        if held is not None and held.generation == _generation:
            held.ended()


def _after_fork_in_child() -> None:
    global _lines, _lines_lock, _generation
    # Another thread of the parent may have been in line, or inside a line's lock:
    # the child starts afresh and never touches the parent's lines.
    _lines = weakref.WeakValueDictionary()
    _lines_lock = threading.Lock()
    _generation += 1


lifecycle.on_fork(after_in_child=_after_fork_in_child)
