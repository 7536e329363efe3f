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

The dry-run reuses the results of EXPLAIN on a kept migrated copy, so this
module also describes a schema: its objects and their fingerprint, which
objects changed between two schemas, the foreign keys between tables and
the tables that have triggers.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.migrations import sql_names

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

    `execute` prepares the statement, which raises any compile error, and
    steps it once. The program listing is not fetched, because turning its
    rows into tuples took 25 us per statement against 5 us for the compile
    (SQLite 3.40, tables of the demo sample). Closing the cursor resets the
    statement, so it keeps no table locked.

    Raises:
        sqlite3.Error: the statement does not compile.
    """
    connection.execute(f"/* {next(_EXPLAINED)} */ EXPLAIN {sql}", parameters).close()


def schema_problems(
    connection: sqlite3.Connection, only: Collection[str] | None = None
) -> list[str]:
    """Describe every table and view on which a statement does not compile.

    A foreign key mismatch fails on the child and on the parent table with
    the same message, so it is described once. `only` limits the check to
    the tables and views of those lower-case names (`probe_targets`).
    """
    rows = connection.execute(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
        " AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    problems: dict[tuple[str, str], str] = {}
    for name, kind in rows:
        if only is not None and str(name).lower() not in only:
            continue
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


def schema_objects(connection: sqlite3.Connection) -> dict[str, str]:
    """Return {name: its table, a space and a SHA-256 of its type and SQL} of every object.

    Names are in lower case. The table of a table or view is itself, that
    of an index or trigger the table it is on.
    """
    rows = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    objects = {}
    for kind, name, tbl_name, sql in rows:
        digest = hashlib.sha256(f"{kind}\0{sql}".encode()).hexdigest()
        objects[str(name).lower()] = f"{str(tbl_name).lower()} {digest}"
    return objects


def probe_targets(
    connection: sqlite3.Connection,
    before: Mapping[str, str],
    after: Mapping[str, str],
    created: Collection[str] = (),
) -> set[str]:
    """Return the tables and views whose schema check may differ between two `schema_objects`.

    These are the changed objects (`changed_objects`), the tables of changed
    indexes and triggers, and the tables whose foreign keys reference one of
    those, because an INSERT into a table compiles the lookup of its parent's
    key. A table whose own foreign key breaks fails its own probes, so the
    tables it references need no new probe.

    `created` names tables, in lower case, that the caller created since
    `before` without a trigger, foreign key, CHECK or generated column. Such a
    table's probes can fail only on a foreign key that references it, and the
    referencing table's probes fail alike, so it is left out; the tables and
    views that use it stay in.
    """
    changed = changed_objects(connection, before, after)
    owners = set()
    for name in changed:
        value = after.get(name) or before.get(name)
        owners.add(name)
        if value is not None:
            owners.add(value.rsplit(" ", 1)[0])
    targets = owners - {name for name in created if name not in before}
    for child, keys in foreign_key_graph(connection).items():
        if keys.parents & owners:
            targets.add(child)
    return targets


def schema_fingerprint(objects: Mapping[str, str]) -> str:
    """Return a SHA-256 of `schema_objects` and the SQLite library version.

    Two databases with one fingerprint compile every statement alike, so a
    result of EXPLAIN on one is valid for the other.
    """
    digest = hashlib.sha256(f"sqlite {sqlite3.sqlite_version}\n".encode())
    for name in sorted(objects):
        digest.update(f"{name}\0{objects[name]}\n".encode())
    return digest.hexdigest()


def changed_objects(
    connection: sqlite3.Connection, before: Mapping[str, str], after: Mapping[str, str]
) -> set[str]:
    """Return the objects that differ between two `schema_objects`, and every one using them.

    An object is changed when it was added, removed or defined anew. A view or
    trigger whose SQL names a changed object counts as changed too, at any
    depth, because what it compiles to may differ.
    """
    names = before.keys() | after.keys()
    changed = {name for name in names if before.get(name) != after.get(name)}
    if not changed:
        return changed
    rows = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type IN ('view', 'trigger')"
    ).fetchall()
    uses = {str(name).lower(): sql_names(str(sql or ""), "sqlite") for name, sql in rows}
    grown = True
    while grown:
        grown = False
        for name, used in uses.items():
            if name not in changed and (used is None or used & changed):
                changed.add(name)
                grown = True
    return changed


@dataclass
class ForeignKeys:
    """The parent tables of one table's foreign keys."""

    parents: set[str] = field(default_factory=set)
    # Parents whose change writes to this table (CASCADE, SET NULL, SET DEFAULT).
    acting_parents: set[str] = field(default_factory=set)


_PASSIVE_ACTIONS = {"NO ACTION", "RESTRICT"}


def foreign_key_graph(connection: sqlite3.Connection) -> dict[str, ForeignKeys]:
    """Return each table's foreign keys: the parent tables and whether any key acts on a change.

    An action is an ON DELETE or ON UPDATE clause other than NO ACTION or
    RESTRICT, by which a write to the parent table writes to the child.
    """
    graph: dict[str, ForeignKeys] = {}
    rows = connection.execute(
        'SELECT m.name, p."table", p.on_update, p.on_delete FROM sqlite_master AS m'
        " JOIN pragma_foreign_key_list(m.name) AS p WHERE m.type = 'table'"
    ).fetchall()
    for child, parent, on_update, on_delete in rows:
        keys = graph.setdefault(str(child).lower(), ForeignKeys())
        keys.parents.add(str(parent).lower())
        if {str(on_update).upper(), str(on_delete).upper()} - _PASSIVE_ACTIONS:
            keys.acting_parents.add(str(parent).lower())
    return graph


def trigger_tables(connection: sqlite3.Connection) -> set[str]:
    """Return the tables that have a trigger, lower case."""
    rows = connection.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'")
    return {str(row[0]).lower() for row in rows}
