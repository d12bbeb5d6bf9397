"""UnitFuture behaves as a concurrent.futures.Future for every consumer of one."""

import asyncio
import concurrent.futures as cf
import random
import threading
import time

import pytest

from sqlite_storemgr.futures import UnitFuture, finish_in_turn

pytestmark = pytest.mark.timeout(30)


def _resolve_later(future, value=None, error=None, delay=0.05):
    def resolve():
        time.sleep(delay)
        assert future.set_running_or_notify_cancel()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    thread = threading.Thread(target=resolve)
    thread.start()
    return thread


def test_is_a_future_with_the_same_states():
    future = UnitFuture()
    assert isinstance(future, cf.Future)
    assert not future.done() and not future.running() and not future.cancelled()
    assert "pending" in repr(future)
    assert future.set_running_or_notify_cancel()
    assert future.running() and not future.cancel()
    future.set_result(41)
    assert future.done() and not future.running()
    assert future.result() == 41 and future.exception() is None
    assert "finished" in repr(future)


def test_result_waits_for_another_thread():
    future = UnitFuture()
    thread = _resolve_later(future, value="v")
    assert future.result(timeout=5) == "v"
    thread.join()


def test_exception_is_raised_by_result_and_returned_by_exception():
    future = UnitFuture()
    thread = _resolve_later(future, error=KeyError("k"))
    with pytest.raises(KeyError, match="k"):
        future.result(timeout=5)
    assert isinstance(future.exception(), KeyError)
    thread.join()


def test_timeouts_raise_timeout_error():
    future = UnitFuture()
    began = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.05)
    with pytest.raises(cf.TimeoutError):
        future.exception(timeout=0)
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=-1)
    assert time.monotonic() - began < 2


def test_cancel_before_running():
    future = UnitFuture()
    calls = []
    future.add_done_callback(calls.append)
    assert future.cancel() and future.cancel()
    assert future.cancelled() and future.done()
    assert calls == [future]
    assert not future.set_running_or_notify_cancel()
    with pytest.raises(cf.CancelledError):
        future.result()
    with pytest.raises(cf.CancelledError):
        future.exception()


def test_cancel_wakes_a_waiting_thread():
    future = UnitFuture()
    outcome = []

    def wait():
        try:
            future.result(timeout=5)
        except cf.CancelledError:
            outcome.append("cancelled")
    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    assert future.cancel()
    thread.join()
    assert outcome == ["cancelled"]


def test_resolving_twice_is_refused():
    future = UnitFuture()
    future.set_running_or_notify_cancel()
    future.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        future.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        future.set_exception(ValueError())
    with pytest.raises(RuntimeError):
        future.set_running_or_notify_cancel()
    assert future.result() == 1


def test_done_callbacks_run_once_before_and_after_completion():
    future = UnitFuture()
    calls = []
    future.add_done_callback(lambda f: calls.append(("early", f.result())))
    thread = _resolve_later(future, value=7)
    thread.join()
    future.add_done_callback(lambda f: calls.append(("late", f.result())))
    assert calls == [("early", 7), ("late", 7)]


def test_many_threads_wait_on_one_future():
    future = UnitFuture()
    results = []
    waiters = [threading.Thread(target=lambda: results.append(future.result(timeout=5)))
               for _ in range(8)]
    for waiter in waiters:
        waiter.start()
    _resolve_later(future, value="all").join()
    for waiter in waiters:
        waiter.join()
    assert results == ["all"] * 8


def test_wait_and_as_completed():
    futures = [UnitFuture() for _ in range(4)]
    threads = [_resolve_later(f, value=i, delay=0.02 * (i + 1)) for i, f in enumerate(futures)]
    done, pending = cf.wait(futures, timeout=5, return_when=cf.FIRST_COMPLETED)
    assert done and len(done) + len(pending) == 4
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=5)) == [0, 1, 2, 3]
    done, pending = cf.wait(futures, timeout=5)
    assert len(done) == 4 and not pending
    for thread in threads:
        thread.join()


def test_first_exception_in_wait():
    futures = [UnitFuture(), UnitFuture()]
    thread = _resolve_later(futures[0], error=ValueError("boom"))
    done, pending = cf.wait(futures, timeout=5, return_when=cf.FIRST_EXCEPTION)
    assert done == {futures[0]} and pending == {futures[1]}
    thread.join()


def test_wait_races_with_completion_without_losing_a_wakeup():
    """Resolve while other threads enter wait()/as_completed(): none of them may hang."""
    for round_ in range(300):
        future = UnitFuture()
        seen = []
        watchers = [
            threading.Thread(target=lambda: seen.append(cf.wait([future], timeout=5)[0])),
            threading.Thread(target=lambda: seen.append(set(cf.as_completed([future], timeout=5)))),
        ]
        for watcher in watchers:
            watcher.start()
        future.set_running_or_notify_cancel()
        future.set_result(round_)
        for watcher in watchers:
            watcher.join()
        assert seen == [{future}, {future}], round_


def test_asyncio_can_await_it():
    future = UnitFuture()

    async def main():
        _resolve_later(future, value="async")
        return await asyncio.wrap_future(future)
    assert asyncio.run(main()) == "async"


def _running(count):
    futures = [UnitFuture() for _ in range(count)]
    for future in futures:
        assert future.set_running_or_notify_cancel()
    return futures


def _block_on(future, into, timeout=None):
    def wait():
        try:
            into.append(("ok", future.result(timeout=timeout)))
        except cf.TimeoutError:
            into.append(("timeout", None))
        except Exception as error:  # noqa: BLE001 - the test looks at what was raised
            into.append(("error", error))
    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def _until_blocked(futures, sleepers):
    deadline = time.monotonic() + 5
    while sum(len(f._sleeping) for f in futures) < sleepers:
        assert time.monotonic() < deadline, "waiters never blocked"
        time.sleep(0.001)


def test_finish_in_turn_wakes_every_waiter_even_behind_futures_nobody_waits_for():
    futures = _running(6)
    seen = []
    threads = [_block_on(futures[i], seen) for i in (1, 2, 2, 5)]  # 0, 3, 4: no waiter
    _until_blocked(futures, 4)
    outcomes = [(f, i != 2, i if i != 2 else ValueError(str(i))) for i, f in enumerate(futures)]
    finish_in_turn(outcomes)
    for thread in threads:
        thread.join(5)
    assert sorted(str(value) for _, value in seen) == ["1", "2", "2", "5"]
    assert [kind for kind, _ in seen].count("error") == 2
    assert all(f.done() and f._woken for f in futures)
    assert futures[0].result() == 0 and isinstance(futures[2].exception(), ValueError)


def test_a_waiter_that_timed_out_does_not_break_the_chain():
    futures = _running(3)
    seen = []
    gone = _block_on(futures[1], seen, timeout=0.01)
    gone.join(5)
    later = _block_on(futures[2], seen)
    _until_blocked(futures, 1)
    finish_in_turn([(f, True, i) for i, f in enumerate(futures)])
    later.join(5)
    assert seen == [("timeout", None), ("ok", 2)]


def test_finish_in_turn_under_racing_waiters():
    """Waiters arrive, time out and leave while batches are resolved: none is left asleep."""
    rng = random.Random(7)
    for round_ in range(60):
        futures = _running(rng.randint(1, 12))
        seen = []
        threads = []
        for future in futures:
            for _ in range(rng.choice((0, 1, 1, 2))):
                timeout = rng.choice((None, None, 0.0005, 0.002))
                threads.append((timeout, _block_on(future, seen, timeout)))
        time.sleep(rng.choice((0, 0.0005, 0.002)))
        finish_in_turn([(f, True, i) for i, f in enumerate(futures)])
        for timeout, thread in threads:
            thread.join(5)
            assert not thread.is_alive(), f"round {round_}: a waiter never woke"
        untimed = sum(1 for timeout, _ in threads if timeout is None)
        assert sum(1 for kind, _ in seen if kind == "ok") >= untimed, round_
        assert all(f._woken for f in futures)


def test_a_waiter_whose_timeout_runs_out_as_the_future_ends_gets_the_result():
    future = _running(1)[0]
    seen = []
    thread = _block_on(future, seen, timeout=0.2)
    _until_blocked([future], 1)
    future._finish("late", failed=False)  # ended, its sleepers not woken yet
    thread.join(5)
    assert seen == [("ok", "late")]


def test_slow_done_callbacks_do_not_delay_the_waiters():
    first, second = _running(2)
    second.add_done_callback(lambda _: time.sleep(0.6))
    seen = []
    thread = _block_on(first, seen, timeout=0.3)
    _until_blocked([first], 1)
    finish_in_turn([(first, True, "A"), (second, True, "B")])
    thread.join(5)
    assert seen == [("ok", "A")]


class _Stop(BaseException):
    pass


def test_a_callback_raising_a_base_exception_strands_no_waiter():
    futures = _running(3)

    def stop(_):
        raise _Stop()
    futures[1].add_done_callback(stop)
    seen = []
    threads = [_block_on(future, seen) for future in futures]
    _until_blocked(futures, 3)
    with pytest.raises(_Stop):
        finish_in_turn([(f, True, i) for i, f in enumerate(futures)])
    for thread in threads:
        thread.join(5)
    assert sorted(value for _, value in seen) == [0, 1, 2]


def test_finish_in_turn_resolves_the_others_when_one_was_already_resolved():
    early, first, last = _running(3)
    early.set_result("early")
    seen = []
    threads = [_block_on(f, seen) for f in (first, last)]
    _until_blocked([first, last], 2)
    with pytest.raises(cf.InvalidStateError):
        finish_in_turn([(first, True, 1), (early, True, 2), (last, True, 3)])
    for thread in threads:
        thread.join(5)
    assert sorted(value for _, value in seen) == [1, 3] and early.result() == "early"


def test_the_main_thread_never_carries_the_wake_up_chain():
    """Only the main thread can be interrupted by a signal, so the chain goes on without it."""
    head, follower = _running(2)
    checked = []

    def resolve():
        _until_blocked([head], 1)
        finish_in_turn([(head, True, "head"), (follower, True, "follower")])
        checked.append(follower._woken)  # woken by the resolver itself, not by main
    thread = threading.Thread(target=resolve)
    thread.start()
    assert head.result(timeout=5) == "head"
    thread.join(5)
    assert checked == [True]
