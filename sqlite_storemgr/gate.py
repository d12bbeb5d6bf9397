"""A gate for units that run in their callers' threads (``mutex``, ``threadlocal``).

``close()`` closes every thread's store.  Done while another thread is inside a
unit, that unit would lose its connection half-way (a ``ClosedError``), or
worse: a rollback from the closing thread that lands between the unit's last
statement and its COMMIT leaves the COMMIT nothing to commit, and the unit
would report success for work that was rolled back.  The gate counts the
units under way; `UnitGate.close` refuses new ones (`ManagerClosedError`) and
waits for those under way to finish, which is what "close() drains" means
when there is no queue.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from . import lifecycle
from .errors import ManagerClosedError

class UnitGate:
    """Counts the units under way; once closing, lets none in and waits for the rest."""

    def __init__(self, name: str):
        self.name = name
        self._reset()
        lifecycle.track(self)

    def _reset(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._running = 0
        self._closing = False
        self._mine = threading.local()  # units of the calling thread (close() may be inside one)

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Around one unit (or ``write()``/``read()`` block) in the calling thread."""
        mine = self._mine
        with self._changed:
            if self._closing:
                raise ManagerClosedError(f"the database {self.name!r} is closing")
            self._running += 1
        mine.count = getattr(mine, "count", 0) + 1
        try:
            yield
        finally:
            mine.count -= 1
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new units; wait up to ``timeout`` for the others' units to end."""
        own = getattr(self._mine, "count", 0)
        with self._changed:
            self._closing = True
            return self._changed.wait_for(lambda: self._running <= own, timeout)

    def after_fork_in_child(self) -> None:
        """The parent's other threads do not exist in the child: their units never end here."""
        closing = self._closing
        self._reset()
        self._closing = closing
