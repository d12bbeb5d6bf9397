"""A `concurrent.futures.Future` that is cheap to create, resolve and wait for.

Every write unit has a future, and under the writer queue the cost of handing
a result back to the waiting thread bounds throughput.  The stock Future builds
a `threading.Condition` (an RLock and a Python-level waiter list) for each
instance and waits through it.  `UnitFuture` keeps the same state machine but
guards it with a bare lock and lets `result()` block on a second bare lock
that is released once the future is done.  The Condition that
`concurrent.futures.wait`, `as_completed` and the rarely used methods expect
is built on demand over the same guard lock, so every path still excludes
every other.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock
from concurrent.futures import CancelledError, Future, InvalidStateError, TimeoutError
from concurrent.futures._base import (
    CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING)
from typing import Any

_ENDED = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class UnitFuture(Future):
    """A Future for one unit of work: same interface, no Condition unless asked for."""

    def __init__(self) -> None:  # deliberately not Future.__init__: it builds a Condition
        self._guard = allocate_lock()
        self._ended = allocate_lock()
        self._ended.acquire()  # released once, when the future finishes or is cancelled
        self._cond: threading.Condition | None = None
        self._state = PENDING
        self._result = None
        self._exception: BaseException | None = None
        self._waiters: list = []
        self._done_callbacks: list = []

    @property
    def _condition(self) -> threading.Condition:
        """The Condition Future's own methods and `wait()` use, over the same guard lock."""
        if self._cond is None:
            with self._guard:
                if self._cond is None:
                    self._cond = threading.Condition(self._guard)
        return self._cond

    def _end(self) -> None:
        """With the guard held: wake `wait()`/`as_completed()` callers using the Condition."""
        if self._cond is not None:
            self._cond.notify_all()

    def set_running_or_notify_cancel(self) -> bool:
        with self._guard:
            if self._state == PENDING:
                self._state = RUNNING
                return True
        return super().set_running_or_notify_cancel()  # cancelled, or a misuse it reports

    def set_result(self, result: Any) -> None:
        self._finish(result, None, failed=False)

    def set_exception(self, exception: BaseException | None) -> None:
        self._finish(None, exception, failed=True)

    def _finish(self, result: Any, exception: BaseException | None, failed: bool) -> None:
        with self._guard:
            ended = self._state in _ENDED
            if not ended:
                self._result = result
                self._exception = exception
                self._state = FINISHED
                for waiter in self._waiters:
                    (waiter.add_exception if failed else waiter.add_result)(self)
                self._end()
        if ended:  # raised outside the guard: repr() takes it
            raise InvalidStateError(f"{self._state}: {self!r}")
        self._ended.release()
        self._invoke_callbacks()

    def cancel(self) -> bool:
        with self._guard:
            if self._state in (RUNNING, FINISHED):
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED
            self._end()
        self._ended.release()
        self._invoke_callbacks()
        return True

    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _ENDED

    def _wait(self, timeout: float | None) -> None:
        """Block until done, or raise TimeoutError after ``timeout`` seconds."""
        if self._state in _ENDED:
            return
        ended = self._ended
        if not ended.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise TimeoutError()
        ended.release()  # let every other waiter through too

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._state != FINISHED:
            raise CancelledError()
        if self._exception is not None:
            try:
                raise self._exception
            finally:
                self = None  # noqa: F841 - break the frame/exception reference cycle, as Future does
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        if self._state != FINISHED:
            raise CancelledError()
        return self._exception
