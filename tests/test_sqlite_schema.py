"""The SQLite schema check and the schema comparisons of the dry-run."""

from __future__ import annotations

import sqlite3

from pipeline.sqlite_schema import schema_problems


def test_explain_sees_schema_changed_on_same_connection() -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.executescript("CREATE TABLE t (a, b); CREATE VIEW v AS SELECT b FROM t;")
    before = schema_problems(connection)
    connection.executescript("BEGIN; DROP TABLE t; CREATE TABLE t (a, c);")

    after = schema_problems(connection)

    assert before == []
    assert after == [
        "view v does not compile: no such column: b; create the view again over the new schema"
    ]
