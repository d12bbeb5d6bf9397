"""Parse and validate database URIs into a frozen, typed configuration.

Parsing is pure: it opens nothing and creates nothing on disk.  Every option
value is checked against its allowed set here, so no text from a URI ever
reaches SQL unchecked (Storm's own backend pastes pragma values into SQL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping
from urllib.parse import unquote

from storm.uri import URI

from .errors import ConfigError

STRATEGIES = ("queue", "single", "mutex", "threadlocal")
LOCK_POLICIES = ("retry", "retry_commit", "rollback")
JOURNAL_MODES = ("wal", "delete", "truncate", "persist", "memory")
# Values refused with the reason (a plain "not allowed" would not say why).
REFUSED = {
    ("journal_mode", "off"): "without a journal SQLite cannot roll back, so a failed unit's "
                             "writes would be committed with the others",
}
SYNCHRONOUS = ("off", "normal", "full", "extra")
FOREIGN_KEYS = ("on", "off")

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 2_147_483  # seconds: SQLite's busy timeout is an int of milliseconds
DEFAULT_BATCH = 256
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_SLOW_UNIT = 1.0  # seconds; a unit running longer is logged (0: never)


@dataclass(frozen=True)
class SQLiteConfig:
    """Everything a `sqlite:` URI says, validated.

    ``path`` is None for the in-memory database.  A pragma left as None is not
    set on connect (SQLite's own default stays), which is how plain Storm URIs
    behave; the manager fills in the durable defaults of DESIGN.md.
    """

    path: str | None
    timeout: float = DEFAULT_TIMEOUT
    strategy: str = "queue"
    on_locked: str = "retry"
    journal_mode: str | None = "wal"
    synchronous: str | None = "full"
    foreign_keys: str | None = "on"
    batch: int = DEFAULT_BATCH
    queue_size: int = DEFAULT_QUEUE_SIZE
    slow_unit: float = DEFAULT_SLOW_UNIT

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def describe(self) -> str:
        """The database for messages: its path, or 'the in-memory database'."""
        return "the in-memory database" if self.path is None else repr(self.path)


def _choice(allowed: tuple[str, ...]) -> Callable[[str, str], str]:
    def check(option: str, value: str) -> str:
        lowered = value.lower()
        if lowered not in allowed:
            reason = REFUSED.get((option, lowered))
            raise ConfigError(
                f"option {option}={value!r} is not allowed"
                + (f" ({reason})" if reason else "") + f"; use one of: {', '.join(allowed)}")
        return lowered
    return check


def _seconds(option: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    # SQLite's busy timeout is a C int of milliseconds; more would overflow it.
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIMEOUT:
        raise ConfigError(
            f"option {option}={value!r} is not allowed; "
            f"use a number of seconds from 0 to {MAX_TIMEOUT}, e.g. {option}=0.3")
    return seconds


def _positive_int(option: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise ConfigError(
            f"option {option}={value!r} is not allowed; "
            f"use a whole number >= 1, e.g. {option}=100")
    return int(value)


_OPTIONS: Mapping[str, Callable[[str, str], object]] = {
    "timeout": _seconds,
    "strategy": _choice(STRATEGIES),
    "on_locked": _choice(LOCK_POLICIES),
    "journal_mode": _choice(JOURNAL_MODES),
    "synchronous": _choice(SYNCHRONOUS),
    "foreign_keys": _choice(FOREIGN_KEYS),
    "batch": _positive_int,
    "queue_size": _positive_int,
    "slow_unit": _seconds,
}

# A plain Storm URI (the backend without the manager) may also turn the journal off:
# Storm itself never rolls back to a savepoint, and its own tests use it.
_STORM_OPTIONS = {**_OPTIONS, "journal_mode": _choice(JOURNAL_MODES + ("off",))}
SQLITE_ONLY = ("journal_mode", "synchronous", "foreign_keys")
# Storm's levels but "autocommit": a unit of work needs a transaction.
ISOLATION_LEVELS = ("repeatable-read", "serializable", "read-committed", "read-uncommitted")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _application_name(option: str, value: str) -> str:
    if not value or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in value):
        raise ConfigError(
            f"option {option}={value!r} is not allowed; use letters, digits, '_', '.', '-'")
    return value


# Storm's and libpq's own options for postgres:// URIs, checked like ours.
_POSTGRES_OPTIONS: dict[str, Callable[[str, str], object]] = {
    "isolation": _choice(ISOLATION_LEVELS),
    "sslmode": _choice(SSL_MODES),
    "connect_timeout": _positive_int,
    "application_name": _application_name,
}
_POSTGRES_KNOWN = {key: check for key, check in _OPTIONS.items()
                   if key not in SQLITE_ONLY} | _POSTGRES_OPTIONS


def _split_options(uri: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        key, value = unquote(key), unquote(value)
        if not sep or not key:
            raise ConfigError(f"malformed option {pair!r} in {uri!r}; use name=value")
        if key in options:
            raise ConfigError(f"option {key!r} is given more than once in {uri!r}")
        options[key] = value
    return options


def validate_options(options: Mapping[str, str], *, storm_defaults: bool = False,
                     known: Mapping[str, Callable[[str, str], object]] = _OPTIONS
                     ) -> dict[str, Any]:
    """Check every option and return the typed values as config field names.

    With ``storm_defaults`` the pragmas not given stay None (SQLite's defaults),
    as a plain Storm URI expects.
    """
    values: dict[str, object] = {}
    if storm_defaults:
        values.update(journal_mode=None, synchronous=None, foreign_keys=None)
    for key, value in options.items():
        check = known.get(key)
        if check is None:
            if key in SQLITE_ONLY:
                raise ConfigError(f"option {key!r} is for sqlite: URIs only")
            raise ConfigError(
                f"unknown option {key!r}; known options: {', '.join(known)}")
        if "\x00" in value:
            raise ConfigError(f"option {key} has a NUL character in its value")
        values[key] = check(key, value)
    return values


def _check_path(uri: str, database: str | None) -> str | None:
    if database in (None, "", ":memory:"):
        return None
    if "\x00" in database:
        raise ConfigError(f"the path in {uri!r} has a NUL character")
    return database


def durable_synchronous(journal_mode: str | None) -> str:
    """The ``synchronous`` level that survives power loss in ``journal_mode``.

    In DELETE mode COMMIT is the journal's unlink, which only ``extra`` makes
    durable (it fsyncs the directory); ``full`` can lose the last transaction
    (tests/test_power_loss.py).  Elsewhere ``full`` suffices.
    """
    return "extra" if journal_mode == "delete" else "full"


def parse_uri(uri: str) -> "SQLiteConfig | PostgresConfig":
    """Parse a `sqlite:` URI (defaults: WAL, a durable synchronous) or a `postgres://` one."""
    if not isinstance(uri, str):
        raise ConfigError(f"a database URI must be a string, not {type(uri).__name__}")
    scheme, colon, rest = uri.partition(":")
    if not colon or not scheme:
        raise ConfigError(f"{uri!r} is not a database URI; use e.g. sqlite:app.db")
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise ConfigError(
            f"unknown scheme {scheme!r} in {uri!r}; use sqlite: or postgres://")
    rest, question, query = rest.partition("?")
    options = _split_options(uri, query) if question else {}
    if question and not query:
        raise ConfigError(f"{uri!r} ends with '?' but gives no option")
    if scheme != "sqlite":
        return _postgres_config(uri, rest, options)
    if rest.startswith("//") and not rest.startswith("///"):
        raise ConfigError(
            f"{uri!r} names a host; SQLite URIs take a path: sqlite:relative.db, "
            "sqlite:///relative.db, sqlite:/abs/path.db or sqlite:////abs/path.db")
    try:
        parsed = URI(f"sqlite:{rest}")
    except Exception as error:  # Storm raises several types for a bad URI
        raise ConfigError(f"{uri!r} is not a valid URI: {error}") from None
    values = validate_options(options)
    if "synchronous" not in values:
        values["synchronous"] = durable_synchronous(values.get("journal_mode", "wal"))
    return SQLiteConfig(path=_check_path(uri, parsed.database), **values)


def config_from_storm_uri(uri: URI) -> SQLiteConfig:
    """The config of a Storm URI object, as Storm's own SQLite backend reads one."""
    if uri.host:
        raise ConfigError(f"a SQLite URI takes no host (got {uri.host!r})")
    config = SQLiteConfig(path=_check_path(str(uri), uri.database))
    return replace(config, **validate_options(uri.options, storm_defaults=True,
                                              known=_STORM_OPTIONS))


@dataclass(frozen=True)
class PostgresConfig:
    """A `postgres://` (or `postgresql://`) URI, validated; the same strategies as SQLite.

    ``storm_uri`` is what Storm's PostgreSQL backend receives: scheme
    ``postgres``, and only Storm's and libpq's own options.
    """

    storm_uri: str
    where: str
    timeout: float = DEFAULT_TIMEOUT
    strategy: str = "threadlocal"
    on_locked: str = "retry"
    batch: int = DEFAULT_BATCH
    queue_size: int = DEFAULT_QUEUE_SIZE
    slow_unit: float = DEFAULT_SLOW_UNIT
    isolation: str = "repeatable-read"
    path = None
    in_memory = False

    def describe(self) -> str:
        return self.where


def _postgres_config(uri: str, rest: str, options: dict[str, str]) -> PostgresConfig:
    if not rest.startswith("//") or rest.startswith("///"):
        raise ConfigError(f"{uri!r} is not a postgres://user:password@host:port/db URI")
    values = validate_options(options, known=_POSTGRES_KNOWN)
    try:
        parsed = URI(f"postgres:{rest}")
    except Exception as error:  # Storm raises several types for a bad URI
        raise ConfigError(f"{uri!r} is not a valid URI: {error}") from None
    if not parsed.database:
        raise ConfigError(f"{uri!r} names no database; use postgres://user@host/dbname")
    query = "&".join(f"{key}={values[key]}" for key in options if key in _POSTGRES_OPTIONS)
    where = f"postgres database {parsed.database!r} on {parsed.host or 'localhost'}" + (
        f":{parsed.port}" if parsed.port else "")
    return PostgresConfig(storm_uri=f"postgres:{rest}" + (f"?{query}" if query else ""),
                          where=where, **values)
