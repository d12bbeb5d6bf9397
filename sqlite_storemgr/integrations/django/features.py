"""Django's SQLite features, judged by the SQLite library this engine runs (pysqlite3's)."""

from __future__ import annotations

from typing import Any

import pysqlite3.dbapi2 as dbapi
from django.db.backends.sqlite3.features import DatabaseFeatures as SQLite3Features
from django.utils.functional import cached_property

__all__ = ["DatabaseFeatures"]

# Skips Django's features take from the standard library's SQLite version.
_FIXED_IN_3_47 = "SQLite does not parse escaped double quotes in the JSON path notation"


class DatabaseFeatures(SQLite3Features):
    can_alter_table_drop_column = dbapi.sqlite_version_info >= (3, 35, 5)

    @cached_property
    def django_test_skips(self) -> dict[str, Any]:  # type: ignore[override]  # Django's attribute, computed once
        skips = dict(super().django_test_skips)
        if dbapi.sqlite_version_info >= (3, 47):
            skips.pop(_FIXED_IN_3_47, None)
        return skips

    @cached_property
    def can_return_columns_from_insert(self) -> bool:  # type: ignore[override]  # Django's attribute, computed once
        return bool(dbapi.sqlite_version_info >= (3, 35))

    @cached_property
    def can_return_rows_from_bulk_insert(self) -> bool:  # type: ignore[override]  # Django's attribute, computed once
        return bool(dbapi.sqlite_version_info >= (3, 35))
