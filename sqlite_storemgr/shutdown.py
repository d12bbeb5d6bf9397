"""Opt-in graceful shutdown on SIGTERM: drain queued writes, close every manager, exit 143.

A process manager (systemd, Docker, Kubernetes, supervisord) stops a service
with SIGTERM, and Python's default action for it ends the process at once:
units still queued for the writer thread are lost, although their callers
were never told they committed.  `drain_on_sigterm()` replaces that action::

    import sqlite_storemgr as sm
    sm.configure("main", "sqlite:app.db")
    sm.drain_on_sigterm()          # once, from the main thread

On SIGTERM the handler starts a drain thread and returns at once, so it never
waits on a lock the interrupted main thread may hold.  The drain thread closes
every live `StoreManager` (the default one included): queued writes are
committed, running units finish, later calls raise `ManagerClosedError`.  Then
it ends the process with status 143 (128 + SIGTERM) through ``os._exit``, after
flushing ``sys.stdout`` and ``sys.stderr``; like the default SIGTERM action,
that skips ``atexit`` handlers and the ``finally`` blocks of other threads.
The drain is bounded by ``timeout`` seconds; more SIGTERMs during it are
ignored.  Python runs signal handlers in the main thread, between bytecodes: a
main thread blocked in C (say, in SQLite's busy wait for the write lock under
``threadlocal``) starts the drain only when that call returns, at most the
database's ``timeout`` later.  A Python handler installed before is chained:
it runs first, in the main thread (it may stop taking requests, say), and the
drain starts when it returns or raises.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from .lifecycle import live_managers

__all__ = ["drain_on_sigterm", "EXIT_STATUS"]

EXIT_STATUS = 128 + signal.SIGTERM
DEFAULT_DRAIN_SECONDS = 10.0

_draining = threading.Event()


class _DrainHandler:
    """The SIGTERM handler: start the drain thread, then chain the previous handler."""

    def __init__(self, timeout: float, previous: Callable[..., Any] | int | None):
        self.timeout = timeout
        self.previous = previous

    def __call__(self, signum: int, frame: Any) -> None:
        if _draining.is_set():
            return
        _draining.set()
        try:
            if callable(self.previous):
                self.previous(signum, frame)
        finally:
            # Not a daemon: if the main thread ends meanwhile, the interpreter waits for it.
            threading.Thread(target=_drain_and_exit, args=(self.timeout,),
                             name="storemgr-sigterm-drain", daemon=False).start()


def _drain_and_exit(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for manager in live_managers():
        try:
            manager.close(max(0.0, deadline - time.monotonic()))
        except Exception as error:  # noqa: BLE001 - the process is ending; say why, go on
            _say(f"sqlite_storemgr: closing a store manager on SIGTERM failed: {error!r}\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not keep the process alive
            pass
    os._exit(EXIT_STATUS)


def _say(text: str) -> None:
    try:
        sys.stderr.write(text)
    except Exception:  # noqa: BLE001
        pass


def drain_on_sigterm(timeout: float = DEFAULT_DRAIN_SECONDS) -> Callable[..., Any] | int | None:
    """Install the SIGTERM handler described in the module docstring; returns the previous one.

    Must be called from the main thread (Python only lets it set signal
    handlers).  Calling it again only changes ``timeout``.
    """
    if not (isinstance(timeout, (int, float)) and 0 <= timeout < float("inf")):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "drain_on_sigterm() must be called from the main thread: "
            "Python only lets the main thread set signal handlers")
    current = signal.getsignal(signal.SIGTERM)
    if isinstance(current, _DrainHandler):
        current.timeout = float(timeout)
        return current.previous
    signal.signal(signal.SIGTERM, _DrainHandler(float(timeout), current))
    return current
