"""The examples of the README's "Composing transactions" run, in order, as one session."""

from __future__ import annotations

import os
import re

import pysqlite3.dbapi2 as dbapi
import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def blocks():
    with open(README, encoding="utf-8") as readme:
        section = readme.read().split("## Composing transactions", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def rows(path, table, column):
    connection = dbapi.connect(str(path))
    try:
        return [row[0] for row in connection.execute(f"SELECT {column} FROM {table} ORDER BY id")]
    finally:
        connection.close()


@pytest.mark.timeout(30)
def test_the_composing_examples_run_and_do_what_they_say(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks()
    assert len(code) == 5
    session: dict = {}
    try:
        exec(compile(code[0], "README composing: nesting", "exec"), session)
        assert rows(tmp_path / "app.db", "note", "text") == ["first", "second"]

        exec(compile(code[1], "README composing: savepoint", "exec"), session)
        assert rows(tmp_path / "app.db", "note", "text")[-1] == "kept"

        exec(compile(code[2], "README composing: wsgi", "exec"), session)
        seen = {}
        body = session["application"](
            {"PATH_INFO": "/hello"}, lambda status, headers, exc_info=None: seen.update(
                status=status))
        assert b"".join(body) == b"saved" and seen["status"] == "200 OK"
        body.close()
        assert rows(tmp_path / "app.db", "note", "text")[-2:] == ["/hello", "audit: /hello"]

        exec(compile(code[3], "README composing: zope", "exec"), session)
        assert rows(tmp_path / "app.db", "note", "text")[-1] == "with its audit entry"
        assert rows(tmp_path / "audit.db", "entry", "text") == ["note added"]

        exec(compile(code[4], "README composing: sqlalchemy", "exec"), session)
        assert rows(tmp_path / "app.db", "note", "text")[-2:] == ["from Storm", "from SQLAlchemy"]
        assert "never committed" not in rows(tmp_path / "app.db", "note", "text")
        assert "undone alone" not in rows(tmp_path / "app.db", "note", "text")
    finally:
        if "engine" in session:
            session["engine"].dispose()
        if "manager" in session:
            session["manager"].close()
