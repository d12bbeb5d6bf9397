"""Outer transaction scopes: the hook that lets one open before a write unit starts.

A request-scoped transaction (`sqlite_storemgr.integrations.wsgi`) or a zope transaction
(`sqlite_storemgr.integrations.zope`) owns the transaction that the units run
inside it join.  Such a scope is opened lazily, by the first write unit that
needs it, so a request that only reads never takes a write lock.
`StoreManager.submit_write` and `StoreManager.write` call `before_write_unit`
just before they hand the unit to the strategy; a scope hooked here may then
begin its transaction (``BEGIN IMMEDIATE`` on the thread's store, a lease on the
writer), so that the unit finds a transaction under way and joins it under the
nesting rules of `sqlite_storemgr.units`.

Two kinds of hooks, both called as ``hook(manager, strategy)``:

- thread hooks (`push_thread_hook`): active in the calling thread only, e.g.
  while a WSGI request runs in it;
- process hooks (`add_process_hook`): active in every thread, e.g. a zope
  transaction manager joined by a manager.  They run first, so a scope that
  owns the store's transaction already (a zope transaction) makes a thread
  hook find the store nested and leave it alone.

With no hook installed the check costs two attribute look-ups.
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
