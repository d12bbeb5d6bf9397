"""Lock policies: what a "database is locked" error does, within one deadline.

A busy error inside a transaction cannot be cured by re-running the failing
statement (the snapshot is stale), so every policy works on whole units of
work: ``retry`` rolls the unit back and runs it again with jittered backoff,
``retry_commit`` only repeats a COMMIT that was refused (the store is then in
a well-defined state), ``rollback`` gives up at once.  SQLite's own busy wait
and every retry share one wall-clock deadline taken from ``timeout``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TypeVar

from storm.exceptions import DisconnectionError

from .backends.dialect import BUSY_COMMIT, busy_phase
from .errors import DatabaseLockedError

if TYPE_CHECKING:
    from .backends.sqlite import SQLiteConnection

T = TypeVar("T")

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 0.05
_LATE_START = 0.1  # a deadline that began this fraction of timeout ago bounds the first wait


@dataclass
class LockStats:
    """Counters a policy keeps: retries and the time lost to locks."""

    retries: int = 0
    lock_wait: float = 0.0
    locked_errors: int = 0


@dataclass
class LockPolicy:
    """One ``on_locked`` policy with its ``timeout``; `run` applies it to a unit."""

    on_locked: str = "retry"
    timeout: float = 5.0
    where: str = "the database"
    stats: LockStats = field(default_factory=LockStats)

    def run(self, body: Callable[[], T], *, commit: Callable[[], None],
            rollback: Callable[[], None],
            set_wait: Callable[[float], None] | None = None,
            started: float | None = None) -> T:
        """Run ``body()`` then ``commit()``; on a busy error act as the policy says.

        ``rollback()`` undoes a failed attempt; ``set_wait(seconds)`` bounds
        SQLite's busy wait for the next attempt, so the deadline holds.
        ``started`` is when the deadline began (default: now).
        """
        started = time.monotonic() if started is None else started
        deadline = started + self.timeout
        attempts = 0
        delay = _FIRST_BACKOFF
        attempt_started = started
        shortened = False  # whether set_wait cut SQLite's busy wait, to be restored
        reconnected = False
        if set_wait is not None and time.monotonic() - started > self.timeout * _LATE_START:
            # The deadline began a while ago (a unit that waited in the writer's queue,
            # or for the write mutex): SQLite's first busy wait gets only what is left.
            shortened = True
            set_wait(max(0.0, deadline - time.monotonic()))
        try:
            while True:
                attempts += 1
                if attempts > 1:
                    attempt_started = time.monotonic()
                body_done = False
                try:
                    result = body()
                    body_done = True
                    commit()
                    return result
                except Exception as error:
                    phase = busy_phase(error)
                    if phase is None:
                        rollback()
                        if not isinstance(error, DisconnectionError):
                            raise
                        if body_done:
                            raise DisconnectionError(
                                f"the connection to {self.where} was lost during COMMIT; "
                                f"whether the unit committed is unknown: {error}") from error
                        if reconnected:
                            raise
                        reconnected = True  # not committed: run it once more, reconnected
                        continue
                    if phase == BUSY_COMMIT and body_done and self.on_locked == "retry_commit":
                        shortened = True
                        try:
                            self._retry_commit(commit, started, deadline, set_wait)
                        except BaseException:
                            rollback()
                            raise
                        return result
                    rollback()
                    remaining = deadline - time.monotonic()
                    if self.on_locked != "retry" or remaining <= 0:
                        raise self._locked(error, started, attempts) from error
                    self.stats.retries += 1
                    log.debug("%s was busy (%s); retry %d after %.3f s of timeout=%g", self.where,
                              phase, attempts, time.monotonic() - started, self.timeout)
                    pause = min(remaining, random.uniform(delay / 2, delay))
                    time.sleep(pause)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    if set_wait is not None:
                        shortened = True
                        set_wait(max(0.0, deadline - time.monotonic()))
                except BaseException:
                    rollback()
                    raise
        finally:
            if attempts > 1:
                self.stats.lock_wait += attempt_started - started
            if shortened and set_wait is not None:
                set_wait(self.timeout)

    def _retry_commit(self, commit: Callable[[], None], started: float, deadline: float,
                      set_wait: Callable[[float], None] | None) -> None:
        """Repeat a refused COMMIT until it goes through or the deadline passes."""
        attempts = 1
        delay = _FIRST_BACKOFF
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked(None, started, attempts)
            self.stats.retries += 1
            log.debug("COMMIT on %s was refused (busy); retry %d after %.3f s of timeout=%g",
                      self.where, attempts, time.monotonic() - started, self.timeout)
            time.sleep(min(remaining, random.uniform(delay / 2, delay)))
            delay = min(delay * 2, _MAX_BACKOFF)
            if set_wait is not None:
                set_wait(max(0.0, deadline - time.monotonic()))
            attempts += 1
            try:
                commit()
                return
            except Exception as error:
                if busy_phase(error) != BUSY_COMMIT:
                    raise

    def _locked(self, cause: BaseException | None, started: float,
                attempts: int) -> DatabaseLockedError:
        waited = time.monotonic() - started
        self.stats.locked_errors += 1
        if waited < self.timeout:
            reason = (f"{self.where} was locked and on_locked={self.on_locked} gave up without "
                      f"waiting for the rest of timeout={self.timeout:g}s")
        else:
            reason = (f"no write lock on {self.where} within timeout={self.timeout:g}s "
                      f"(on_locked={self.on_locked})")
        log.warning("DatabaseLockedError: %s; waited %.3f s over %d attempt(s)", reason,
                    waited, attempts)
        return DatabaseLockedError(
            f"database is locked: {reason}; waited {waited:.3f}s over {attempts} attempt(s)",
            waited=waited, attempts=attempts)

    def begin(self, connection: "SQLiteConnection") -> None:
        """``BEGIN IMMEDIATE`` on ``connection``, counting the wait for the lock."""
        began = time.perf_counter()
        try:
            connection.begin_write()
        finally:
            self.stats.lock_wait += time.perf_counter() - began

    def for_commit(self) -> "LockPolicy":
        """The policy for a COMMIT whose work cannot be re-run (a ``write()`` block)."""
        mode = "rollback" if self.on_locked == "rollback" else "retry_commit"
        return LockPolicy(mode, self.timeout, self.where, self.stats)
