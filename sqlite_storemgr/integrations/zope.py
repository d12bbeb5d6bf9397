"""Stores as data managers of the zope ``transaction`` package.

``join_transaction_manager(manager, transaction.manager)`` makes every store a
thread touches join that thread's current transaction, the way ZStorm does for
Storm, so ``transaction.commit()``, ``abort()`` and ``doom()`` drive the stores
with any other data manager (``mutex`` and ``threadlocal`` databases only).
See docs/zope.md.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from ..backends.dialect import busy_phase
from ..errors import ConfigError, DatabaseLockedError, StrategyError
from ..scopes import add_process_hook, remove_process_hook
from ..stores import ManagedStore
from ..strategies import Strategy
from ..threadlocal import ThreadStores

try:
    from transaction.interfaces import IDataManager, NoTransaction
    from zope.interface import implementer
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "join_transaction_manager needs the zope transaction package: "
        "pip install 'sqlite_storemgr[zope]'") from error

__all__ = ["join_transaction_manager", "TransactionJoin", "StoreDataManager"]


def _joinable(strategy: Strategy) -> bool:
    return strategy.joins_foreign_transaction


def join_transaction_manager(manager: Any, transaction_manager: Any,
                             name: str | None = None) -> "TransactionJoin":
    """Make the stores of ``name`` (default: every database) join ``transaction_manager``.

    Returns a handle whose ``detach()`` undoes it; see docs/zope.md.
    """
    names = [name] if name is not None else manager.names()
    if not names:
        raise ConfigError("no database is configured; call configure(name, uri) first")
    strategies = [manager.strategy(each) for each in names]
    refused = [s for s in strategies if not _joinable(s)]
    if refused:
        described = ", ".join(f"{s.name!r} (strategy={s.config.strategy})" for s in refused)
        raise StrategyError(
            f"cannot join a transaction manager for {described}: under queue and single "
            "every write is a unit of its own on the writer thread, which no caller's "
            "transaction can own; use strategy=mutex or strategy=threadlocal"
            + ("" if name is not None else ", or pass name= for the databases that can join"))
    return TransactionJoin(manager, transaction_manager, strategies)


class TransactionJoin:
    """The link between a manager's stores and one transaction manager; ``detach()`` ends it."""

    def __init__(self, manager: Any, transaction_manager: Any, strategies: list[Any]):
        self.manager = manager
        self.transaction_manager = transaction_manager
        self._strategies = list(strategies)
        self._lock = threading.Lock()
        self._stores: "weakref.WeakSet[ManagedStore]" = weakref.WeakSet()
        self.attached = True
        for strategy in self._strategies:
            registry: ThreadStores = strategy.stores
            registry.add_on_create(self._store_created)
            for store in registry.all_stores():
                self._hook(store)
        add_process_hook(self._before_write_unit)

    def _store_created(self, store: ManagedStore) -> None:
        """A thread made a new store of a joined database: hook it too."""
        if self.attached:
            self._hook(store)

    def _hook(self, store: ManagedStore) -> None:
        with self._lock:
            self._stores.add(store)
        store.hook_register_transaction(_register, weakref.ref(self))

    def _before_write_unit(self, manager: Any, strategy: Any) -> None:
        """A ``write()``/``submit_write`` is about to start: join first, so that it joins us."""
        if manager is self.manager and strategy in self._strategies:
            strategy.get_store().emit_register_transaction()

    def detach(self) -> None:
        """Stop joining new transactions (stores already joined finish theirs)."""
        if not self.attached:
            return
        self.attached = False
        remove_process_hook(self._before_write_unit)
        for strategy in self._strategies:
            strategy.stores.remove_on_create(self._store_created)
        with self._lock:
            stores = list(self._stores)
        for store in stores:
            store.unhook_register_transaction(_register, weakref.ref(self))


def _register(store: ManagedStore, join_ref: "weakref.ref[TransactionJoin]") -> Any:
    """Storm's ``register-transaction`` hook: join the thread's current transaction."""
    join = join_ref()
    if join is None or not join.attached:
        return False
    try:
        txn = join.transaction_manager.get()
    except NoTransaction:  # an explicit transaction manager with no transaction begun
        return None
    data_manager = StoreDataManager(store, join)
    txn.join(data_manager)
    data_manager.enter()
    return False  # unhooked until the transaction ends; StoreDataManager re-hooks


@implementer(IDataManager)
class StoreDataManager:
    """One store in one zope transaction (modelled on ZStorm's ``StoreDataManager``)."""

    def __init__(self, store: ManagedStore, join: TransactionJoin):
        self._store = store
        self._join = join
        self.transaction_manager = join.transaction_manager
        self._joined = False

    def enter(self) -> None:
        """Own the store's transaction: units started now join it (nesting rules).

        A read snapshot the store kept from before the transaction is ended
        first (its changes, if it has any, are adopted by the transaction).
        """
        store = self._store
        if (store.connection.in_transaction and not store.has_uncommitted_changes()
                and not store.in_unit and not store.in_user_code):
            store.rollback()
        store.enter_unit()
        self._joined = True

    def _leave(self) -> None:
        if not self._joined:
            return
        self._joined = False
        self._store.leave_unit()
        if self._join.attached:
            self._store.hook_register_transaction(_register, weakref.ref(self._join))

    def abort(self, txn: Any) -> None:
        try:
            self._store.rollback()
        finally:
            self._leave()

    def tpc_begin(self, txn: Any) -> None:
        # Flush before any resource votes: a failing INSERT aborts everything.
        self._store.flush()

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        self._store.check_thread()
        self._store.raise_if_doomed()

    def tpc_finish(self, txn: Any) -> None:
        try:
            self._store.commit()
        finally:
            self._leave()

    def tpc_abort(self, txn: Any) -> None:
        try:
            self._store.rollback()
        finally:
            self._leave()

    def sortKey(self) -> str:
        # "aa": before resources that can prepare (ZStorm's order for non-TPC stores).
        return f"aa_sqlite_storemgr_{self._store.name}_{id(self)}"

    def should_retry(self, error: BaseException | None) -> bool:
        """Lock conflicts are worth re-running the whole transaction for."""
        seen = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            if isinstance(error, DatabaseLockedError) or busy_phase(error) is not None:
                return True
            error = getattr(error, "orig", None) or error.__cause__
        return False

    def __repr__(self) -> str:
        return f"<StoreDataManager {self._store.name!r} joined={self._joined}>"
