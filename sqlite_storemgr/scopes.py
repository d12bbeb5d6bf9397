"""Outer transaction scopes: the hook that lets one open before a write unit starts.

A WSGI request or a zope transaction opens its transaction lazily, at the first
write unit: `StoreManager.submit_write` and `StoreManager.write` call
`before_write_unit`, and the unit then joins what a hook began.  Process hooks
run before thread hooks.  See docs/scopes.md.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

Hook = Callable[[Any, Any], None]

_thread = threading.local()
_process_hooks: list[Hook] = []
_process_lock = threading.Lock()


def before_write_unit(manager: Any, strategy: Any) -> None:
    """Run the hooks of the scopes active here, before a write unit on ``strategy`` starts."""
    if _process_hooks:
        for hook in tuple(_process_hooks):
            hook(manager, strategy)
    hooks = getattr(_thread, "hooks", None)
    if hooks:
        for hook in tuple(hooks):
            hook(manager, strategy)


def push_thread_hook(hook: Hook) -> None:
    """Install ``hook`` for the calling thread (innermost last)."""
    hooks = getattr(_thread, "hooks", None)
    if hooks is None:
        hooks = _thread.hooks = []
    hooks.append(hook)


def remove_thread_hook(hook: Hook) -> None:
    """Remove ``hook`` from the calling thread's hooks (no error if it is not there)."""
    hooks = getattr(_thread, "hooks", None)
    if hooks and hook in hooks:
        hooks.remove(hook)


def add_process_hook(hook: Hook) -> None:
    with _process_lock:
        _process_hooks.append(hook)


def remove_process_hook(hook: Hook) -> None:
    with _process_lock:
        if hook in _process_hooks:
            _process_hooks.remove(hook)
