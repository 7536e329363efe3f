"""A SQLite schema check that compiles a write to every table and a read of every view.

SQLite looks at a foreign key's parent key, a trigger body and a view only
when it prepares a statement that uses them. A migration can therefore leave
a schema on which statements fail that the integrity checks never prepare:

- a foreign key whose parent columns are neither the primary key nor a
  UNIQUE index ("foreign key mismatch"), which `ALTER TABLE ... ADD COLUMN
  ... REFERENCES` and `DROP INDEX` of the parent's unique index both allow;
  every INSERT into the child table and every DELETE from the parent fails;
- a trigger whose body uses a table or column that is gone;
- a view over a table or column that is gone.

For every table the check prepares `EXPLAIN INSERT INTO t DEFAULT VALUES`,
`EXPLAIN DELETE FROM t` and `EXPLAIN UPDATE t SET c = c` over its columns,
and for every view `EXPLAIN SELECT * FROM v`, with foreign keys on. EXPLAIN
compiles a statement without running it, so the check reads no rows and takes
milliseconds on a database of any size.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from typing import Any

_MISMATCH = re.compile(r'foreign key mismatch - "(?P<child>.+)" referencing "(?P<parent>.+)"')


def _quote(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# Numbers the EXPLAIN statements, so that none comes from the statement cache.
_EXPLAINED = itertools.count()


def explain(connection: sqlite3.Connection, sql: str, parameters: Any = ()) -> None:
    """Compile `sql` with EXPLAIN on the schema as it is now, without running it.

    The sqlite3 module keeps prepared statements by their text, and SQLite
    does not prepare an EXPLAIN statement again after the schema changed.
    A repeated text would report how the statement compiled on the schema of
    its first use, so each call gets a text of its own.

    Raises:
        sqlite3.Error: the statement does not compile.
    """
    connection.execute(f"/* {next(_EXPLAINED)} */ EXPLAIN {sql}", parameters).fetchall()


def schema_problems(connection: sqlite3.Connection) -> list[str]:
    """Describe every table and view on which a statement does not compile.

    A foreign key mismatch fails on the child and on the parent table with
    the same message, so it is described once.
    """
    rows = connection.execute(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
        " AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    problems: dict[tuple[str, str], str] = {}
    for name, kind in rows:
        for verb, sql in _probes(connection, str(name), str(kind)):
            try:
                explain(connection, sql)
            except sqlite3.Error as exc:
                message = str(exc)
                mismatch = describe_mismatch(connection, message)
                where = ("", message) if mismatch else (str(name), message)
                if where not in problems:
                    problems[where] = mismatch or _describe(connection, name, kind, verb, message)
    return list(problems.values())


def _probes(connection: sqlite3.Connection, name: str, kind: str) -> list[tuple[str, str]]:
    """Return `(verb, statement)` pairs that use every constraint, trigger and key of `name`."""
    if kind == "view":
        return [("SELECT", f"SELECT * FROM {_quote(name)}")]
    probes = [
        ("INSERT", f"INSERT INTO {_quote(name)} DEFAULT VALUES"),
        ("DELETE", f"DELETE FROM {_quote(name)}"),
    ]
    # Hidden columns (generated ones, and those of virtual tables) cannot be assigned.
    columns = [
        str(row[1])
        for row in connection.execute(f"PRAGMA table_xinfo({_quote(name)})")
        if int(row[6]) == 0
    ]
    if columns:
        assignments = ", ".join(f"{_quote(column)} = {_quote(column)}" for column in columns)
        probes.append(("UPDATE", f"UPDATE {_quote(name)} SET {assignments}"))
    return probes


def _describe(connection: sqlite3.Connection, name: str, kind: str, verb: str, error: str) -> str:
    if kind == "view":
        return f"view {name} does not compile: {error}; create the view again over the new schema"
    triggers = [
        str(row[0])
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? ORDER BY name",
            (name,),
        )
    ]
    hint = f"; check the triggers of table {name}: {', '.join(triggers)}" if triggers else ""
    return f"table {name}: {verb} does not compile: {error}{hint}"


def describe_mismatch(connection: sqlite3.Connection, error: str) -> str | None:
    """Describe a "foreign key mismatch" error with the keys it is about, else return None."""
    match = _MISMATCH.search(error)
    if match is None:
        return None
    child, parent = match["child"], match["parent"]
    keys: dict[int, list[tuple[str, str]]] = {}
    for row in connection.execute(f"PRAGMA foreign_key_list({_quote(child)})"):
        if str(row[2]).lower() == parent.lower():
            keys.setdefault(int(row[0]), []).append((str(row[3]), str(row[4] or "")))
    unique = _unique_column_sets(connection, parent)
    suspects = [
        pairs for pairs in keys.values() if {p.lower() for _, p in pairs} not in unique
    ] or list(keys.values())
    named = " or ".join(
        f"({', '.join(c for c, _ in pairs)}) -> {parent}({', '.join(p for _, p in pairs)})"
        for pairs in suspects
    )
    return (
        f"table {child} foreign key {named}: {error}: the parent columns are not the"
        f" PRIMARY KEY or a UNIQUE index of {parent}, so every INSERT into {child} and every"
        f" DELETE from {parent} fails; reference the primary key, or create a UNIQUE index"
        " on the parent columns"
    )


def _unique_column_sets(connection: sqlite3.Connection, table: str) -> list[set[str]]:
    """Return the column sets of the primary key and of every UNIQUE index of `table`."""
    sets = []
    primary = {
        str(row[1]).lower()
        for row in connection.execute(f"PRAGMA table_info({_quote(table)})")
        if int(row[5]) > 0
    }
    if primary:
        sets.append(primary)
    for row in connection.execute(f"PRAGMA index_list({_quote(table)})"):
        if int(row[2]):
            columns = connection.execute(f"PRAGMA index_info({_quote(str(row[1]))})")
            sets.append({str(column[2]).lower() for column in columns})
    return sets
