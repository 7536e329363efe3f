"""The SQLite schema check and the schema comparisons of the dry-run."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.migrations import sql_names
from pipeline.sqlite_schema import (
    changed_objects,
    explain,
    probe_targets,
    schema_objects,
    schema_problems,
)


def test_explain_sees_changed_schema() -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.executescript("CREATE TABLE t (a, b); CREATE VIEW v AS SELECT b FROM t;")
    before = schema_problems(connection)
    connection.executescript("BEGIN; DROP TABLE t; CREATE TABLE t (a, c);")

    after = schema_problems(connection)

    assert before == []
    assert after == [
        "view v does not compile: no such column: b; create the view again over the new schema"
    ]


def test_sql_names_cover_quoted_names() -> None:
    names = sql_names(
        "SELECT \"My Table\".x, [b c].y FROM \"My Table\", [b c], `d``e` -- f\nWHERE k = 'it''s'",
        "sqlite",
    )

    assert names is not None
    assert {"my table", "b c", "d`e", "x", "y", "f", "k", "it's"} <= names


def test_sql_names_non_ascii_words() -> None:
    names = sql_names("SELECT сумма FROM платежи№2 WHERE код$1 = 'х'", "sqlite")

    assert names is not None
    assert {"сумма", "платежи№2", "код$1", "х"} <= names
    assert "платежи" not in names


def test_changed_objects_non_ascii_table() -> None:
    connection = sqlite3.connect(":memory:")
    connection.executescript(
        'CREATE TABLE "платежи№2" (сумма); CREATE VIEW итоги№2 AS SELECT сумма FROM платежи№2;'
    )
    before = schema_objects(connection)
    connection.executescript("DROP TABLE платежи№2; CREATE TABLE платежи№2 (amount);")

    changed = changed_objects(connection, before, schema_objects(connection))

    assert changed == {"платежи№2", "итоги№2"}


def test_sql_names_unterminated_quote() -> None:
    assert sql_names("SELECT 'open FROM t", "sqlite") is None


def test_changed_objects_include_views() -> None:
    connection = sqlite3.connect(":memory:")
    connection.executescript(
        "CREATE TABLE t (a); CREATE VIEW v AS SELECT a FROM t; CREATE VIEW w AS SELECT * FROM v;"
        " CREATE TABLE other (b); CREATE VIEW u AS SELECT b FROM other;"
    )
    before = schema_objects(connection)
    connection.executescript("DROP VIEW w; DROP VIEW v; DROP TABLE t; CREATE TABLE t (a, c);")
    connection.executescript("CREATE VIEW v AS SELECT a FROM t; CREATE VIEW w AS SELECT * FROM v;")

    changed = changed_objects(connection, before, schema_objects(connection))

    assert changed == {"t", "v", "w"}


def test_probe_targets_follow_changes() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT);"
        " CREATE UNIQUE INDEX parent_code ON parent (code);"
        " CREATE TABLE child (id INTEGER PRIMARY KEY, code TEXT REFERENCES parent (code));"
        " CREATE TABLE log (line TEXT);"
        " CREATE TABLE other (x);"
        " CREATE TABLE unrelated (x);"
        " CREATE TRIGGER other_logged AFTER INSERT ON other"
        " BEGIN INSERT INTO log (line) VALUES (1); END;"
    )
    before = schema_objects(connection)
    connection.executescript("DROP INDEX parent_code; DROP TABLE log; CREATE TABLE log (text);")
    after = schema_objects(connection)

    targets = probe_targets(connection, before, after)

    # The dropped index belongs to parent, child references parent, the trigger names log.
    assert targets == {"parent", "parent_code", "child", "log", "other", "other_logged"}
    problems = schema_problems(connection)
    assert len(problems) == 2
    assert schema_problems(connection, only=targets) == problems


def test_probe_targets_skip_created_tables() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.executescript(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, code TEXT REFERENCES catalog_x (name));"
        " CREATE VIEW named AS SELECT name FROM catalog_x;"
    )
    before = schema_objects(connection)
    connection.execute(
        "CREATE TABLE catalog_x (code TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (code))"
    )
    after = schema_objects(connection)

    targets = probe_targets(connection, before, after, created={"catalog_x"})

    # The child's probes fail on its key to a column of the new table that is not unique.
    assert "catalog_x" not in targets
    assert {"child", "named"} <= targets
    (problem,) = schema_problems(connection, only=targets)
    assert 'foreign key mismatch - "child" referencing "catalog_x"' in problem
    assert schema_problems(connection) == [problem]


_MISMATCH = 'foreign key mismatch - "child" referencing "parent"'


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("INSERT INTO child DEFAULT VALUES", _MISMATCH),
        ("DELETE FROM parent", _MISMATCH),
        ("INSERT INTO logged DEFAULT VALUES", "no such table: main.gone"),
        ("SELECT * FROM broken", "no such column: missing"),
    ],
)
def test_explain_raises_compile_errors(statement: str, error: str) -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    connection.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT);"
        " CREATE TABLE child (code TEXT REFERENCES parent (code));"
        " CREATE TABLE logged (x); CREATE TABLE gone (x);"
        " CREATE TRIGGER logged_insert AFTER INSERT ON logged"
        " BEGIN INSERT INTO gone VALUES (1); END;"
        " CREATE VIEW broken AS SELECT id AS missing FROM parent;"
        " DROP TABLE gone; DROP VIEW broken; CREATE VIEW broken AS SELECT missing FROM parent;"
    )

    with pytest.raises(sqlite3.Error) as raised:
        explain(connection, statement)

    assert str(raised.value) == error
