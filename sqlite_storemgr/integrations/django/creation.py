"""Test databases for the engine: Django's SQLite rules, with the manager let go of first.

A test database file is deleted before it is created and after the run; the
manager's connections to it are closed before (SQLite would go on writing to a
deleted file), and so are its ``-wal`` and ``-shm`` files, which a new file of
the same name must not inherit.  ``:memory:`` is the manager's in-memory
database (``sqlite:``), shared by every thread until the run ends.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from django.db import NotSupportedError
from django.db.backends.sqlite3.creation import DatabaseCreation as SQLite3Creation

from .config import forget_database

if TYPE_CHECKING:
    from .base import DatabaseWrapper

__all__ = ["DatabaseCreation"]


def _remove_files(path: str) -> None:
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        if os.path.lexists(name):
            os.remove(name)


class DatabaseCreation(SQLite3Creation):

    connection: DatabaseWrapper

    def _let_go(self, database_name: str) -> None:
        """Close the manager's database if it is this file."""
        connection = self.connection
        manager = connection.manager
        store = connection.spec.store
        if store in manager.names():
            path = manager.strategy(store).config.path
            if path is not None and path == os.path.abspath(database_name):
                forget_database(manager, store)

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> str:
        name: str = self._get_test_db_name()  # type: ignore[attr-defined]  # private Django API
        if not keepdb and not self.is_in_memory_db(name) and os.access(name, os.F_OK):
            self._let_go(name)
            for suffix in ("-wal", "-shm", "-journal"):
                if os.path.lexists(f"{name}{suffix}"):
                    os.remove(f"{name}{suffix}")
        created: str = super()._create_test_db(  # type: ignore[misc]  # private Django API
            verbosity, autoclobber, keepdb)
        return created

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        if test_database_name and not self.is_in_memory_db(test_database_name):
            self._let_go(test_database_name)
            _remove_files(test_database_name)
        else:
            forget_database(self.connection.manager, self.connection.spec.store)

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        raise NotSupportedError(
            "the sqlite_storemgr engine does not clone test databases; run the tests "
            "with --parallel 1")
