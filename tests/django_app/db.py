"""Pointing Django's default database at a test's own file and strategy, and letting go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django
from django.core.management import call_command

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
django.setup()

from django.db import connections  # noqa: E402  (after setup)

import sqlite_storemgr as sm  # noqa: E402
from sqlite_storemgr.integrations.django.config import forget_database  # noqa: E402

STORE = "main"


def use_database(path: Path | str, strategy: str, migrate: bool = True, **options: Any) -> None:
    """Make ``DATABASES["default"]`` the engine on ``path`` under ``strategy``; migrate it."""
    connection = connections["default"]
    connection.close()
    connection.settings_dict["NAME"] = str(path)
    connection.settings_dict["OPTIONS"] = {"strategy": strategy, "store": STORE, **options}
    if migrate:
        call_command("migrate", run_syncdb=True, verbosity=0)


def release_database() -> None:
    """Close Django's connection and the manager's database (its writer, its stores)."""
    connections["default"].close()
    if STORE in sm.default_manager().names():
        forget_database(sm.default_manager(), STORE)
