"""Storm database backends the manager opens: SQLite on pysqlite3, and PostgreSQL."""
