"""A per-thread registry of named stores (the idea of Storm's ZStorm, finished).

Each thread gets its own store per name, created on first use.  Unlike ZStorm,
a thread's stores are closed the moment the thread ends: they live in a holder
that only the thread's ``threading.local`` references, and CPython drops that
when the thread finishes, so open transactions roll back and the connections
close without waiting for garbage collection.  After ``os.fork()`` the child
abandons the parent's stores untouched (closing an inherited SQLite connection
can checkpoint or delete a WAL the parent still uses) and opens its own.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Iterator

from . import lifecycle
from .stores import ManagedStore

StoreFactory = Callable[[str], ManagedStore]

# What a forked child inherited: kept referenced so that no destructor closes it.
_abandoned_after_fork: list[Any] = []


def _close_stores(stores: dict[str, ManagedStore]) -> None:
    for store in list(stores.values()):
        close_store(store)
    stores.clear()


def close_store(store: ManagedStore) -> None:
    """Close a store from any thread; errors on the way are moot.

    Its own thread rolls back first, Storm's cache with it.  Another thread
    (a manager's close()) leaves the store's Python state alone, since the
    owner may be using it, and only closes the connection, which rolls back
    in SQLite and waits for a call under way (see the backend's ``_use``).
    """
    if store.owner == threading.get_ident():
        try:
            store.rollback()
        except Exception:
            pass
    try:
        store.close()
    except Exception:
        pass


class _Holder:
    """One thread's stores; closing them is tied to the holder's lifetime."""

    __slots__ = ("stores", "finalizer", "__weakref__")

    def __init__(self) -> None:
        self.stores: dict[str, ManagedStore] = {}
        self.finalizer = weakref.finalize(self, _close_stores, self.stores)
        # Not at interpreter exit: daemon threads may still be using their stores then.
        self.finalizer.atexit = False


class ThreadStores:
    """Named stores, one per thread, made by ``factory(name)`` on first use."""

    def __init__(self, factory: StoreFactory):
        self._factory = factory
        self._on_create: tuple[Callable[[ManagedStore], None], ...] = ()  # copied on change
        self._local = threading.local()
        self._holders: "weakref.WeakSet[_Holder]" = weakref.WeakSet()
        self._lock = threading.Lock()
        lifecycle.track(self)

    def get(self, name: str) -> ManagedStore:
        """This thread's store for ``name``, created on first use."""
        try:
            store: ManagedStore = self._local.holder.stores[name]
            return store
        except (AttributeError, KeyError):
            return self._create(name)

    def current(self, name: str) -> ManagedStore | None:
        """This thread's store for ``name`` if it has one already."""
        holder = getattr(self._local, "holder", None)
        return None if holder is None else holder.stores.get(name)

    def _create(self, name: str) -> ManagedStore:
        holder = getattr(self._local, "holder", None)
        if holder is None:
            holder = self._local.holder = _Holder()
            with self._lock:
                self._holders.add(holder)
        store = self._factory(name)
        for callback in self._on_create:
            callback(store)
        holder.stores[name] = store
        return store

    def add_on_create(self, callback: Callable[[ManagedStore], None]) -> None:
        """Call ``callback(store)`` for every store made from now on, before it is handed out."""
        with self._lock:
            self._on_create += (callback,)

    def remove_on_create(self, callback: Callable[[ManagedStore], None]) -> None:
        """Undo one `add_on_create` of ``callback``; the other callbacks stay (no error if absent)."""
        with self._lock:
            callbacks = list(self._on_create)
            if callback in callbacks:
                callbacks.remove(callback)
            self._on_create = tuple(callbacks)

    def all_stores(self) -> Iterator[ManagedStore]:
        with self._lock:
            holders = list(self._holders)
        for holder in holders:
            yield from list(holder.stores.values())

    def close(self) -> None:
        """Close every thread's stores from this thread, but those inside a unit.

        A store still inside a unit (its thread outlived close()'s wait) is left
        to its thread: closing it under the unit could crash the driver, and
        its thread's exit closes it.  This thread's own stores go first: one of
        them may hold the write lock another thread's statement is waiting for.
        """
        mine = getattr(self._local, "holder", None)
        with self._lock:
            holders = sorted(self._holders, key=lambda holder: holder is not mine)
        for holder in holders:
            for store_name, store in list(holder.stores.items()):
                if not store.in_unit:
                    holder.stores.pop(store_name, None)
                    close_store(store)

    def after_fork_in_child(self) -> None:
        """Abandon the parent's stores untouched (see the module docstring); open afresh."""
        holders = list(self._holders)
        for holder in holders:
            holder.finalizer.detach()
        _abandoned_after_fork.append((self._local, holders))
        self._holders = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()

