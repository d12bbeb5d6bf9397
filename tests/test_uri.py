"""URI parsing and validation: every Storm SQLite form, every option, and bad input.

Parsing must be pure: a bad URI raises `ConfigError` naming the option and the
bad value, and nothing is created on disk (each bad URI also goes through
`StoreManager.configure` with the working directory set to an empty tmp dir).
"""

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlite_storemgr
from sqlite_storemgr import ConfigError, SQLiteConfig, StoreManager
from sqlite_storemgr.uri import (
    FOREIGN_KEYS, JOURNAL_MODES, LOCK_POLICIES, MAX_TIMEOUT, STRATEGIES, SYNCHRONOUS, parse_uri)

# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("uri, path", [
    ("sqlite:", None),
    ("sqlite::memory:", None),
    ("sqlite:foo", "foo"),
    ("sqlite:foo.db", "foo.db"),
    ("sqlite:sub/dir/foo.db", "sub/dir/foo.db"),
    ("sqlite:///foo", "foo"),
    ("sqlite:///sub/foo.db", "sub/foo.db"),
    ("sqlite:/abs/foo", "/abs/foo"),
    ("sqlite:/abs/dir/foo.db", "/abs/dir/foo.db"),
    ("sqlite:////abs/foo", "/abs/foo"),
    ("sqlite:////abs/dir/foo.db", "/abs/dir/foo.db"),
    ("sqlite:foo%20bar.db", "foo bar.db"),
    ("sqlite:?timeout=1", None),
    ("sqlite::memory:?timeout=1", None),
    ("sqlite:foo?timeout=1", "foo"),
    ("sqlite:///foo?timeout=1", "foo"),
    ("sqlite:/abs/foo?timeout=1", "/abs/foo"),
    ("sqlite:////abs/foo?timeout=1", "/abs/foo"),
])
def test_storm_uri_forms_give_the_right_path(uri, path):
    config = parse_uri(uri)
    assert isinstance(config, SQLiteConfig)
    assert config.path == path
    assert config.in_memory is (path is None)


def test_describe_names_the_path_or_memory():
    assert parse_uri("sqlite:").describe() == "the in-memory database"
    assert parse_uri("sqlite:/abs/x.db").describe() == "'/abs/x.db'"


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_durable_ones_of_the_design():
    config = parse_uri("sqlite:app.db")
    assert config.timeout == 5.0 and isinstance(config.timeout, float)
    assert config.strategy == "queue"
    assert config.on_locked == "retry"
    assert config.journal_mode == "wal"
    assert config.synchronous == "full"
    assert config.foreign_keys == "on"
    assert isinstance(config.batch, int) and config.batch >= 1
    assert isinstance(config.queue_size, int) and config.queue_size >= 1


def test_the_config_is_frozen():
    config = parse_uri("sqlite:app.db")
    with pytest.raises(AttributeError):
        config.timeout = 1.0  # type: ignore[misc]


def test_parse_uri_is_re_exported():
    assert sqlite_storemgr.parse_uri is parse_uri
    assert sqlite_storemgr.SQLiteConfig is SQLiteConfig


# --------------------------------------------------------------------------- valid options


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), ("0.0", 0.0), ("0.3", 0.3), ("1", 1.0), ("5", 5.0), ("12.5", 12.5),
    ("1e-3", 0.001), ("3600", 3600.0), (str(MAX_TIMEOUT), float(MAX_TIMEOUT)),
])
def test_timeout_values(text, seconds):
    config = parse_uri(f"sqlite:x.db?timeout={text}")
    assert config.timeout == pytest.approx(seconds)
    assert isinstance(config.timeout, float)


@pytest.mark.parametrize("option, allowed", [
    ("strategy", STRATEGIES),
    ("on_locked", LOCK_POLICIES),
    ("journal_mode", JOURNAL_MODES),
    ("synchronous", SYNCHRONOUS),
    ("foreign_keys", FOREIGN_KEYS),
])
def test_choice_options_accept_every_allowed_value_in_any_case(option, allowed):
    for value in allowed:
        for spelled in (value, value.upper(), value.capitalize(), value.swapcase()):
            config = parse_uri(f"sqlite:x.db?{option}={spelled}")
            assert getattr(config, option) == value, (option, spelled)


def test_the_allowed_sets_are_the_ones_of_the_design():
    assert set(STRATEGIES) == {"queue", "single", "mutex", "threadlocal"}
    assert set(LOCK_POLICIES) == {"retry", "retry_commit", "rollback"}
    assert set(JOURNAL_MODES) == {"wal", "delete", "truncate", "persist", "memory"}
    assert set(SYNCHRONOUS) == {"off", "normal", "full", "extra"}
    assert set(FOREIGN_KEYS) == {"on", "off"}


@pytest.mark.parametrize("option", ["batch", "queue_size"])
@pytest.mark.parametrize("text, number", [("1", 1), ("7", 7), ("100", 100), ("0100", 100)])
def test_positive_int_options(option, text, number):
    config = parse_uri(f"sqlite:x.db?{option}={text}")
    assert getattr(config, option) == number
    assert isinstance(getattr(config, option), int)


def test_all_options_together_and_percent_encoded_values():
    config = parse_uri(
        "sqlite:/abs/x.db?timeout=0.25&strategy=MUTEX&on_locked=Retry_Commit"
        "&journal_mode=%77al&synchronous=NORMAL&foreign_keys=Off&batch=64&queue_size=9")
    assert config == SQLiteConfig(
        path="/abs/x.db", timeout=0.25, strategy="mutex", on_locked="retry_commit",
        journal_mode="wal", synchronous="normal", foreign_keys="off", batch=64, queue_size=9)


def test_options_not_given_keep_their_defaults():
    config = parse_uri("sqlite:x.db?strategy=threadlocal")
    assert config.strategy == "threadlocal"
    default = parse_uri("sqlite:x.db")
    assert (config.timeout, config.on_locked, config.journal_mode, config.synchronous,
            config.foreign_keys, config.batch, config.queue_size) == (
        default.timeout, default.on_locked, default.journal_mode, default.synchronous,
        default.foreign_keys, default.batch, default.queue_size)


# --------------------------------------------------------------------------- bad URIs

# (uri, substrings the ConfigError message must contain)
MALFORMED = [
    ("sqlite:x.db?timeout=-1", ["timeout", "'-1'"]),
    ("sqlite:x.db?timeout=-0.5", ["timeout", "'-0.5'"]),
    ("sqlite:x.db?timeout=nan", ["timeout", "'nan'"]),
    ("sqlite:x.db?timeout=NaN", ["timeout", "'NaN'"]),
    ("sqlite:x.db?timeout=inf", ["timeout", "'inf'"]),
    ("sqlite:x.db?timeout=-inf", ["timeout", "'-inf'"]),
    ("sqlite:x.db?timeout=1e999", ["timeout", "'1e999'"]),
    ("sqlite:x.db?timeout=1e308", ["timeout", "'1e308'"]),
    ("sqlite:x.db?timeout=abc", ["timeout", "'abc'"]),
    ("sqlite:x.db?timeout=0x10", ["timeout", "'0x10'"]),
    ("sqlite:x.db?timeout=", ["timeout", "''"]),
    ("sqlite:x.db?strategy=fast", ["strategy", "'fast'", "queue", "mutex"]),
    ("sqlite:x.db?strategy=", ["strategy", "''"]),
    ("sqlite:x.db?on_locked=never", ["on_locked", "'never'", "retry_commit"]),
    ("sqlite:x.db?journal_mode=wal;DROP TABLE x", ["journal_mode", "'wal;DROP TABLE x'", "wal"]),
    ("sqlite:x.db?journal_mode=wal%3BDROP%20TABLE%20x", ["journal_mode", "'wal;DROP TABLE x'"]),
    ("sqlite:x.db?journal_mode=wal2", ["journal_mode", "'wal2'"]),
    ("sqlite:x.db?journal_mode=WAL%20", ["journal_mode", "'WAL '"]),
    ("sqlite:x.db?synchronous=2", ["synchronous", "'2'", "full"]),
    ("sqlite:x.db?synchronous=full;", ["synchronous", "'full;'"]),
    ("sqlite:x.db?foreign_keys=1", ["foreign_keys", "'1'", "on"]),
    ("sqlite:x.db?foreign_keys=yes", ["foreign_keys", "'yes'"]),
    ("sqlite:x.db?batch=0", ["batch", "'0'"]),
    ("sqlite:x.db?batch=1.5", ["batch", "'1.5'"]),
    ("sqlite:x.db?batch=abc", ["batch", "'abc'"]),
    ("sqlite:x.db?batch=-1", ["batch", "'-1'"]),
    ("sqlite:x.db?batch=+5", ["batch", "'+5'"]),
    ("sqlite:x.db?batch=%205", ["batch", "' 5'"]),
    ("sqlite:x.db?batch=\u00b2", ["batch", "'\u00b2'"]),  # superscript two: isdigit() but not int()
    ("sqlite:x.db?batch=", ["batch", "''"]),
    ("sqlite:x.db?queue_size=0", ["queue_size", "'0'"]),
    ("sqlite:x.db?queue_size=ten", ["queue_size", "'ten'"]),
    ("sqlite:x.db?bogus=1", ["unknown option", "'bogus'", "timeout"]),
    ("sqlite:x.db?Timeout=1", ["unknown option", "'Timeout'"]),
    ("sqlite:x.db?timeout=1&timeout=2", ["'timeout'", "more than once"]),
    ("sqlite:x.db?strategy=mutex&strategy=mutex", ["'strategy'", "more than once"]),
    ("sqlite:x.db?", ["sqlite:x.db?"]),
    ("sqlite:x.db?timeout=1&&strategy=mutex", ["sqlite:x.db?timeout=1&&strategy=mutex"]),
    ("sqlite:x.db?&timeout=1", ["sqlite:x.db?&timeout=1"]),
    ("sqlite:x.db?timeout=1&", ["sqlite:x.db?timeout=1&"]),
    ("sqlite:x.db?timeout", ["'timeout'", "name=value"]),
    ("sqlite:x.db?=1", ["'=1'"]),
    ("sqlite://host/x.db", ["host", "sqlite://host/x.db"]),
    ("sqlite://host", ["host"]),
    ("postgres://user@host/db?journal_mode=wal", ["journal_mode", "sqlite: URIs only"]),
    ("postgres:db", ["postgres://user:password@host:port/db"]),
    ("mysql:x.db", ["'mysql'"]),
    ("sqlite3:x.db", ["'sqlite3'"]),
    ("x.db", ["'x.db'"]),
    ("", ["''"]),
    ("sqlite:x\x00y.db", ["NUL"]),
    ("sqlite:x%00y.db", ["NUL"]),
    ("sqlite:x.db?timeout=1\x00", ["timeout", "NUL"]),
    ("sqlite:x.db?journal_mode=wal%00", ["journal_mode", "NUL"]),
]


def _ids(case):
    return repr(case)[:60]


@pytest.mark.parametrize("uri, parts", MALFORMED, ids=[_ids(c[0]) for c in MALFORMED])
def test_malformed_uri_raises_config_error_naming_option_and_value(uri, parts):
    with pytest.raises(ConfigError) as info:
        parse_uri(uri)
    message = str(info.value)
    for part in parts:
        assert part in message, (part, message)


@pytest.mark.parametrize("uri, parts", MALFORMED, ids=[_ids(c[0]) for c in MALFORMED])
def test_malformed_uri_through_configure_creates_no_file(uri, parts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manager = StoreManager()
    try:
        with pytest.raises(ConfigError) as info:
            manager.configure("x", uri)
        for part in parts:
            assert part in str(info.value), (part, str(info.value))
        assert manager.names() == []
        assert os.listdir(tmp_path) == []
    finally:
        manager.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", [None, 42, 1.5, b"sqlite:x.db", ["sqlite:x.db"]])
def test_a_uri_that_is_not_a_string(value, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as info:
        parse_uri(value)
    assert "string" in str(info.value)
    assert type(value).__name__ in str(info.value)
    monkeypatch.chdir(tmp_path)
    manager = StoreManager()
    with pytest.raises(ConfigError):
        manager.configure("x", value)
    manager.close()
    assert os.listdir(tmp_path) == []


def test_config_error_is_a_value_error_and_a_store_manager_error():
    with pytest.raises(ValueError):
        parse_uri("sqlite:x.db?batch=0")
    with pytest.raises(sqlite_storemgr.StoreManagerError):
        parse_uri("sqlite:x.db?batch=0")


@pytest.mark.parametrize("name", ["", None, 3])
def test_configure_refuses_a_bad_name(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manager = StoreManager()
    with pytest.raises(ConfigError) as info:
        manager.configure(name, "sqlite:x.db?strategy=threadlocal")
    assert repr(name) in str(info.value)
    manager.close()
    assert os.listdir(tmp_path) == []


def test_configure_with_a_missing_parent_directory_names_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manager = StoreManager()
    try:
        with pytest.raises(ConfigError) as info:
            manager.configure("x", "sqlite:no/such/dir/app.db?strategy=threadlocal")
        message = str(info.value)
        assert "no/such/dir/app.db" in message
        assert str(tmp_path / "no" / "such" / "dir") in message
        absolute = tmp_path / "missing" / "app.db"
        with pytest.raises(ConfigError) as info:
            manager.configure("y", f"sqlite:{absolute}")
        assert str(absolute) in str(info.value)
        assert "does not exist" in str(info.value)
        assert manager.names() == []
    finally:
        manager.close()
    assert os.listdir(tmp_path) == []


def test_configure_twice_with_one_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with StoreManager() as manager:
        manager.configure("main", "sqlite:a.db?strategy=threadlocal")
        with pytest.raises(ConfigError) as info:
            manager.configure("main", "sqlite:b.db?strategy=threadlocal")
        assert "'main'" in str(info.value)
    assert not (tmp_path / "b.db").exists()


def test_a_valid_configure_opens_the_file_where_the_uri_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with StoreManager() as manager:
        manager.configure("rel", "sqlite:///sub/rel.db?strategy=threadlocal")
        manager.configure("abs", f"sqlite:////{str(tmp_path).lstrip('/')}/abs.db"
                                 "?strategy=threadlocal")
        manager.submit_write(lambda store: store.execute("CREATE TABLE t (x)"),
                             name="rel").result()
        manager.submit_write(lambda store: store.execute("CREATE TABLE u (x)"),
                             name="abs").result()
    assert (tmp_path / "sub" / "rel.db").is_file()
    assert (tmp_path / "abs.db").is_file()


# --------------------------------------------------------------------------- property

OPTION_NAMES = ["timeout", "strategy", "on_locked", "journal_mode", "synchronous",
                "foreign_keys", "batch", "queue_size"]
TRICKY_VALUES = ["", "0", "1", "-1", "1.5", "nan", "inf", "1e999", "\u00b2", "\u0663", " 5",
                 "wal", "WAL", "wal;DROP TABLE x", "full", "on", "retry", "mutex", "\x00",
                 "%00", "%77al", "=", "&", "?", "1_0"]

option_values = st.one_of(st.sampled_from(TRICKY_VALUES), st.text(max_size=12),
                          st.sampled_from(STRATEGIES + LOCK_POLICIES + JOURNAL_MODES
                                          + SYNCHRONOUS + FOREIGN_KEYS))
option_names = st.one_of(st.sampled_from(OPTION_NAMES), st.text(max_size=8))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rest=st.text(max_size=30),
       options=st.dictionaries(option_names, option_values, max_size=4),
       with_query=st.booleans())
def test_random_uris_only_ever_give_a_config_or_a_config_error(
        rest, options, with_query, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = "sqlite:" + rest
    if with_query or options:
        uri += "?" + "&".join(f"{key}={value}" for key, value in options.items())
    try:
        config = parse_uri(uri)
    except ConfigError as error:
        assert str(error)
    else:
        assert isinstance(config, SQLiteConfig)
        # Whatever passes validation is one of the fixed words: nothing else can reach SQL.
        assert config.strategy in STRATEGIES
        assert config.on_locked in LOCK_POLICIES
        assert config.journal_mode in JOURNAL_MODES
        assert config.synchronous in SYNCHRONOUS
        assert config.foreign_keys in FOREIGN_KEYS
        assert isinstance(config.timeout, float)
        assert math.isfinite(config.timeout) and 0 <= config.timeout <= MAX_TIMEOUT
        assert isinstance(config.batch, int) and config.batch >= 1
        assert isinstance(config.queue_size, int) and config.queue_size >= 1
        assert config.path is None or "\x00" not in config.path
    assert os.listdir(tmp_path) == []


def test_journal_mode_off_is_refused_with_its_reason():
    """Without a journal SQLite cannot roll back: a failed unit would be committed."""
    with pytest.raises(ConfigError, match=r"journal_mode='off' is not allowed \(without a "
                                          r"journal SQLite cannot roll back.*use one of: wal"):
        parse_uri("sqlite:x.db?journal_mode=off")


@pytest.mark.parametrize("journal_mode, synchronous", [
    ("wal", "full"), ("delete", "extra"), ("truncate", "full"), ("persist", "full"),
    ("memory", "full")])
def test_the_default_synchronous_is_the_durable_one_for_the_journal_mode(journal_mode,
                                                                          synchronous):
    """DELETE mode commits by unlinking the journal: only extra fsyncs that (power loss)."""
    assert parse_uri(f"sqlite:x.db?journal_mode={journal_mode}").synchronous == synchronous
    assert parse_uri(f"sqlite:x.db?journal_mode={journal_mode}&synchronous=full"
                     ).synchronous == "full"  # what the user asks for is kept
