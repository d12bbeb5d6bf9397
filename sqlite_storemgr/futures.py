"""A `concurrent.futures.Future` that is cheap to create, resolve and wait for.

Every write unit has a future, and under the writer queue the cost of handing
a result back to the waiting thread bounds throughput.  The stock Future builds
a `threading.Condition` (an RLock and a Python-level waiter list) for each
instance and waits through it.  `UnitFuture` keeps the same state machine but
guards it with a bare lock, and a thread blocked in `result()` sleeps on a bare
lock of its own that is released once the future is done.  The Condition that
`concurrent.futures.wait`, `as_completed` and the rarely used methods expect
is built on demand over the same guard lock, so every path still excludes
every other.

`finish_in_turn` resolves a committed batch at once but wakes its blocked
callers one after another, each woken caller waking the next: woken all at
once, a dozen threads would fight over the GIL while the writer still holds
it, and on two cores that costs more than the whole batch's SQL.  Only threads
other than the main thread relay the wake-up: the main thread alone can be
interrupted (a signal handler raising KeyboardInterrupt), so the chain never
depends on it.  Done-callbacks run after the wake-ups, so a callback that
raises cannot strand a waiter.

Two hooks serve the writer queue: ``runner`` (whoever runs the unit) is asked
before a thread blocks, so the writer thread waiting for its own unit raises
instead of hanging, and so a parked writer's queued units run in the thread
that would otherwise block for them; ``on_result`` runs in each thread that takes the outcome
(`result()`, `exception()`), so that thread's cached Storm objects show the
write it was told of (read-your-writes).
"""

from __future__ import annotations

import threading
from _thread import allocate_lock
from concurrent.futures import CancelledError, Future, InvalidStateError, TimeoutError
from concurrent.futures._base import (
    CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING)
from typing import TYPE_CHECKING, Any, Callable, Iterable

_ENDED = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class UnitFuture(Future[Any]):
    """A Future for one unit of work: same interface, no Condition unless asked for."""

    # Has refuse_waiting_on_itself(), called before a thread blocks, and run_for_waiter(),
    # which may run the unit in the thread that would block (see `WriterQueue`).
    runner: Any = None
    on_result: Callable[[], None] | None = None  # run in the thread that takes the outcome

    def __init__(self) -> None:  # deliberately not Future.__init__: it builds a Condition
        self._guard = allocate_lock()
        self._woken = False  # set, under the guard, by the one who wakes the sleepers
        # (lock, relays) of each thread blocked in result()/exception(), under the guard.
        self._sleeping: list[tuple[Any, bool]] = []
        self._next: UnitFuture | None = None  # whose waiters to wake after ours (finish_in_turn)
        self._cond: threading.Condition | None = None
        self._state = PENDING
        self._result = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[Any]], object]] = []

    if TYPE_CHECKING:  # Future's, not in typeshed
        def _invoke_callbacks(self) -> None: ...

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]  # Future's attribute
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
        self._finish(result, failed=False)
        _wake_in_turn(self)
        self._invoke_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        self._finish(exception, failed=True)
        _wake_in_turn(self)
        self._invoke_callbacks()

    def _finish(self, outcome: Any, failed: bool) -> None:
        """End the future with its result, or its exception if ``failed``.

        Its waiters are woken and its callbacks run separately.
        """
        with self._guard:
            ended = self._state in _ENDED
            if not ended:
                self._result = None if failed else outcome
                self._exception = outcome if failed else None
                self._state = FINISHED
                for waiter in self._waiters:
                    (waiter.add_exception if failed else waiter.add_result)(self)
                self._end()
        if ended:  # raised outside the guard: repr() takes it
            raise InvalidStateError(f"{self._state}: {self!r}")

    def cancel(self) -> bool:
        with self._guard:
            if self._state in (RUNNING, FINISHED):
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED
            self._end()
        _wake_in_turn(self)
        self._invoke_callbacks()
        return True

    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _ENDED

    def _wait(self, timeout: float | None) -> None:
        """Block until done, or raise TimeoutError after ``timeout`` seconds.

        A relaying sleeper (not the main thread) is relied on to wake the next
        future's waiters once it is woken, so it does so however it leaves.
        """
        if self.runner is not None:
            self.runner.refuse_waiting_on_itself()
            if timeout is None:
                self.runner.run_for_waiter()  # a parked writer's queue may run right here
                if self._state in _ENDED:
                    return
        relays = threading.current_thread() is not threading.main_thread()
        with self._guard:
            if self._state in _ENDED:
                return
            sleeper = (allocate_lock(), relays)
            sleeper[0].acquire()
            self._sleeping.append(sleeper)
        woken = False
        try:
            # Acquired means released by `_wake_in_turn`, which marked us woken before.
            woken = sleeper[0].acquire(timeout=-1 if timeout is None else max(timeout, 0))
        finally:
            if not woken:
                with self._guard:
                    woken = self._woken
                    if not woken:  # timed out (or interrupted): no one is to count on us
                        self._sleeping.remove(sleeper)
            if woken and relays and self._next is not None:
                _wake_in_turn(self._next)
        if self._state not in _ENDED:
            raise TimeoutError()

    def result(self, timeout: float | None = None) -> Any:
        if self._state not in _ENDED:
            self._wait(timeout)
        if self._state != FINISHED:
            raise CancelledError()
        if self.on_result is not None:
            self.on_result()
        if self._exception is not None:
            try:
                raise self._exception
            finally:
                self = None  # type: ignore[assignment]  # noqa: F841 - break the frame/exception reference cycle, as Future does
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state not in _ENDED:
            self._wait(timeout)
        if self._state != FINISHED:
            raise CancelledError()
        if self.on_result is not None:
            self.on_result()
        return self._exception


def _wake_in_turn(future: UnitFuture | None) -> None:
    """Wake the sleepers of ``future`` and of those after it, up to one with a relaying sleeper.

    That sleeper, once running, wakes the rest (`UnitFuture._wait`).  Whoever
    marks a future woken releases its sleepers and sees to the futures after
    it, so every sleeper is released exactly once and none is left behind.
    """
    while future is not None:
        with future._guard:
            if future._woken:
                return
            future._woken = True
            sleeping, future._sleeping = future._sleeping, []
        for lock, _ in sleeping:
            lock.release()
        if any(relays for _, relays in sleeping):
            return
        future = future._next


def finish_in_turn(outcomes: Iterable[tuple[UnitFuture, bool, Any]]) -> None:
    """Resolve futures with ``(future, succeeded, result or exception)``, waking their waiters in turn.

    Every future that can be resolved is, and woken, before any callback runs
    or a refusal (`InvalidStateError`, a future already resolved) is raised.
    """
    finished: list[UnitFuture] = []
    refused: InvalidStateError | None = None
    for future, succeeded, value in outcomes:
        try:
            future._finish(value, failed=not succeeded)
        except InvalidStateError as error:
            refused = refused or error
            continue
        if finished:
            finished[-1]._next = future
        finished.append(future)
    if finished:
        _wake_in_turn(finished[0])
    for future in finished:
        future._invoke_callbacks()
    if refused is not None:
        raise refused
