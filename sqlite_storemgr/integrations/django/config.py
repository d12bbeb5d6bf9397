"""Django's ``DATABASES`` entry as a store manager database: the URI, and configuring it.

``OPTIONS`` holds the URI's own options (checked by `sqlite_storemgr.uri`,
with its ``ConfigError`` messages) plus ``store``, the name under which the
module-level manager serves the database (default: the Django alias).
Configuring Django is enough: the first connection configures the manager.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Any, Mapping
from urllib.parse import quote

from ...errors import ConfigError
from ...manager import StoreManager
from ...uri import PostgresConfig, SQLiteConfig, parse_uri

__all__ = ["DatabaseSpec", "database_spec", "ensure_database", "forget_database"]

_lock = threading.Lock()
_configured_here: dict[tuple[int, str], SQLiteConfig | PostgresConfig] = {}  # (id(manager), name) -> config


class DatabaseSpec:
    """What one ``DATABASES`` entry asks of the manager: a store name and a URI."""

    def __init__(self, store: str, uri: str, config: SQLiteConfig):
        self.store = store
        self.uri = uri
        self.config = config


def _option_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if not isinstance(value, (str, int, float)):
        raise ConfigError(f"option {key}={value!r} is not allowed; give a string or a number")
    return str(value)


def is_memory_name(name: Any) -> bool:
    """Whether a ``NAME`` means an in-memory database (as Django's SQLite backend reads it)."""
    return name in (None, "", ":memory:") or (isinstance(name, str) and "mode=memory" in name)


def database_spec(settings: Mapping[str, Any], alias: str) -> DatabaseSpec:
    """The store name and URI for a ``DATABASES`` entry; ConfigError for a bad option."""
    options = dict(settings.get("OPTIONS") or {})
    store = options.pop("store", alias)
    if not isinstance(store, str) or not store:
        raise ConfigError(f"option store={store!r} is not allowed; use a non-empty name")
    name: Any = settings.get("NAME")
    path = "" if is_memory_name(name) else quote(os.path.abspath(os.fspath(name)), safe="/")
    query = "&".join(f"{quote(str(key), safe='')}={quote(_option_text(key, value), safe='')}"
                     for key, value in options.items())
    uri = f"sqlite:{path}" + (f"?{query}" if query else "")
    config = parse_uri(uri)
    if not isinstance(config, SQLiteConfig):  # pragma: no cover - the scheme is ours
        raise ConfigError(f"{uri!r} is not a SQLite database")
    if config.path is not None:
        config = replace(config, path=os.path.abspath(config.path))
    return DatabaseSpec(store, uri, config)


def ensure_database(manager: StoreManager, spec: DatabaseSpec) -> None:
    """Configure ``spec.store`` in ``manager`` unless it serves that database already.

    A database this module configured from another ``NAME`` (Django's test
    runner switches to the test database and back) is closed and replaced.
    One the application configured itself must match, or it is a ConfigError.
    """
    key = (id(manager), spec.store)
    with _lock:
        if spec.store in manager.names():
            current = manager.strategy(spec.store).config
            if current == spec.config:
                return
            if _configured_here.get(key) != current:
                raise ConfigError(
                    f"database {spec.store!r} is configured in the store manager already, "
                    f"as {current.describe()} ({current.strategy}), which is not what "
                    f"DATABASES asks ({spec.config.describe()}, {spec.config.strategy}); "
                    "configure it in one place, or give OPTIONS a different 'store'")
            forget_database(manager, spec.store)
        manager.configure(spec.store, spec.uri)
        _configured_here[key] = manager.strategy(spec.store).config


def forget_database(manager: StoreManager, name: str, timeout: float | None = None) -> bool:
    """Close database ``name`` (drain, close its stores) and remove it from ``manager``.

    Returns whether its writes drained within ``timeout``; a name the manager
    does not serve is already forgotten (True).
    """
    _configured_here.pop((id(manager), name), None)
    if name not in manager.names():
        return True
    return manager.remove(name, timeout)
