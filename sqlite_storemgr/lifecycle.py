"""The process events the package acts on (a fork, interpreter exit) and the live managers.

One registry instead of a WeakSet and an ``os.register_at_fork`` hook per
module: objects holding locks, threads or connections are `track`-ed and reset
in a forked child (where the parent's other threads never ran on); writers are
drained at exit within one shared deadline; `live_managers` is what the SIGTERM
drain closes.  This module imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from typing import Any, Callable, Protocol

EXIT_DRAIN_SECONDS = 10.0


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None:
        """Forget the parent's threads and locks; never close an inherited connection."""


class ExitDrained(Protocol):
    def close(self, timeout: float | None = None) -> bool:
        """Finish queued work within ``timeout`` seconds; False if it could not."""


Hook = Callable[[], None]

_before: list[Hook] = []
_after_in_parent: list[Hook] = []
_after_in_child: list[Hook] = []
_forked: "weakref.WeakSet[Any]" = weakref.WeakSet()
_drained_at_exit: "weakref.WeakSet[Any]" = weakref.WeakSet()
_managers: "weakref.WeakSet[Any]" = weakref.WeakSet()


def on_fork(before: Hook | None = None, after_in_parent: Hook | None = None,
            after_in_child: Hook | None = None) -> None:
    """Module-level fork hooks, run before the tracked objects' (``before`` in reverse order)."""
    for hooks, hook in ((_before, before), (_after_in_parent, after_in_parent),
                        (_after_in_child, after_in_child)):
        if hook is not None:
            hooks.append(hook)


def track(obj: ForkAware) -> None:
    """Call ``obj.after_fork_in_child()`` in every forked child while ``obj`` is alive."""
    _forked.add(obj)


def drain_at_exit(obj: ExitDrained) -> None:
    """Call ``obj.close(seconds)`` at interpreter exit, all within `EXIT_DRAIN_SECONDS`."""
    _drained_at_exit.add(obj)


def add_manager(manager: Any) -> None:
    _managers.add(manager)


def live_managers() -> list[Any]:
    """The store managers not yet garbage-collected (closed ones included)."""
    return list(_managers)


def _run_before_fork() -> None:
    for hook in reversed(_before):
        hook()


def _run_after_fork_in_parent() -> None:
    for hook in _after_in_parent:
        hook()


def _run_after_fork_in_child() -> None:
    for hook in _after_in_child:
        hook()
    for obj in list(_forked):
        obj.after_fork_in_child()


def _drain_all_at_exit() -> None:
    """Interpreter exit without close(): commit what is queued, bounded in time."""
    deadline = time.monotonic() + EXIT_DRAIN_SECONDS
    for obj in list(_drained_at_exit):
        obj.close(max(0.0, deadline - time.monotonic()))


os.register_at_fork(before=_run_before_fork, after_in_parent=_run_after_fork_in_parent,
                    after_in_child=_run_after_fork_in_child)
atexit.register(_drain_all_at_exit)
