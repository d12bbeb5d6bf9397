"""``@transaction.atomic`` as a decorator re-runs the whole function on a lock conflict.

A unit given to ``submit_write`` is re-run from the start when SQLite reports
a lock conflict (``on_locked=retry``); a function decorated with
``transaction.atomic`` is a unit too, so Django's ``Atomic.__call__`` is
wrapped: for a connection of this engine, an outermost decorated call runs
under the database's lock policy.  Other engines' connections, the ``with``
form and nested blocks are left exactly as Django has them.
"""

from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from django.db import transaction

__all__ = ["install_retrying_atomic"]


def install_retrying_atomic() -> None:
    """Wrap ``Atomic.__call__`` once per process."""
    atomic_class = transaction.Atomic
    if getattr(atomic_class.__call__, "_sqlite_storemgr", False):
        return
    django_call = atomic_class.__call__

    def __call__(self: Any, func: Callable[..., Any]) -> Callable[..., Any]:
        decorated = django_call(self, func)

        @wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            connection = transaction.get_connection(self.using)
            retrying = getattr(connection, "retrying_call", None)
            if retrying is None:
                return decorated(*args, **kwargs)
            return retrying(lambda: decorated(*args, **kwargs))
        return inner

    # Django's Atomic.__call__ patched once, marked so (django-stubs types neither).
    __call__._sqlite_storemgr = True  # type: ignore[attr-defined]
    atomic_class.__call__ = __call__  # type: ignore[method-assign,assignment]
