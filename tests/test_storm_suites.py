"""Storm's own SQLite test suites, run against this project's backend.

Those suites build databases as ``SQLite(URI(...))`` with the class imported
into their modules, so `register()` alone would route almost nothing through
the backend: the modules' ``SQLite`` name is pointed at `SQLiteDatabase` too,
and the run proves it by counting the connections the backend opened.
"""

import io
import unittest

import pytest
import storm.tests.databases.sqlite as database_suite
import storm.tests.store.sqlite as store_suite

from sqlite_storemgr.backends import sqlite as backend


@pytest.mark.timeout(300)
def test_storm_sqlite_suites_pass_on_the_backend(monkeypatch):
    monkeypatch.setattr(database_suite, "SQLite", backend.SQLiteDatabase)
    monkeypatch.setattr(store_suite, "SQLite", backend.SQLiteDatabase)
    monkeypatch.setitem(__import__("storm.database").database._database_schemes,
                        "sqlite", backend.SQLiteDatabase)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite([loader.loadTestsFromModule(database_suite),
                                loader.loadTestsFromModule(store_suite)])
    before = backend.connections_opened()
    output = io.StringIO()
    result = unittest.TextTestRunner(stream=output, verbosity=1).run(suite)
    opened = backend.connections_opened() - before

    assert result.wasSuccessful(), output.getvalue()[-20000:]
    assert result.testsRun >= 600
    # Nearly every test opens at least one connection; all of them must be ours.
    assert opened >= result.testsRun, (opened, result.testsRun)
