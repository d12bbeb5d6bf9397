"""Running test code in threads of its own, every wait bounded."""

from __future__ import annotations

import threading
from typing import Any, Callable


def in_thread(fn: Callable[..., Any], *args: Any, timeout: float = 20) -> Any:
    """fn(*args) in a new thread: its result, or its exception raised here."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the thread hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def run_threads(target: Callable[[int], Any], count: int, timeout: float = 60) -> None:
    """target(index) in ``count`` threads at once; fails if one is still running after
    ``timeout`` seconds."""
    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
