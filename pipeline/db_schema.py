"""Introspection shared by the database tools: tables, columns, foreign keys, checksums.

Both engines answer the same questions: SQLite from `sqlite_master` and its
PRAGMAs, PostgreSQL from the catalogs of the `public` schema. Table checksums
do not depend on row order or on the engine, so a SQLite database and its
PostgreSQL copy compare equal when they hold the same values.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pipeline.database import Database


@dataclass(frozen=True)
class ForeignKey:
    """One foreign key: `table(columns)` references `parent(parent_columns)`."""

    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableSum:
    """Row count and order-independent SHA-256 of one table's values."""

    rows: int
    sha256: str


def quote(name: str) -> str:
    """Quote an identifier for SQLite and PostgreSQL alike."""
    return '"' + name.replace('"', '""') + '"'


def list_tables(db: Database) -> list[str]:
    """List the user tables, sorted by name."""
    if db.engine == "sqlite":
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    else:
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    return sorted(str(row[0]) for row in rows)


def table_columns(db: Database, table: str) -> list[tuple[str, str]]:
    """Return `(name, declared type)` of each column of `table`, in table order."""
    if db.engine == "sqlite":
        return [(str(r[1]), str(r[2])) for r in db.execute(f"PRAGMA table_info({quote(table)})")]
    rows = db.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [(str(r[0]), str(r[1])) for r in rows]


def column_types(db: Database, table: str) -> dict[str, str]:
    """Return {column: its type as SQL writes it} of `table`, for a CAST to it.

    PostgreSQL's `information_schema` names an enum, a domain over a domain
    and an array `USER-DEFINED` or `ARRAY`, so the type comes from
    `format_type` there, which gives `residency` or `text[]`. It is taken
    without the column's length: a cast to `varchar(80)` would cut a longer
    value, where storing it into the column rejects it.
    """
    if db.engine == "sqlite":
        return dict(table_columns(db, table))
    rows = db.execute(
        "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relname = %s AND a.attnum > 0"
        " AND NOT a.attisdropped ORDER BY a.attnum",
        (table,),
    )
    return {str(r[0]): str(r[1]) for r in rows}


def primary_key(db: Database, table: str) -> tuple[str, ...]:
    """Return the primary key columns of `table`; SQLite tables without one use `rowid`."""
    if db.engine == "sqlite":
        info = db.execute(f"PRAGMA table_info({quote(table)})")
        keyed = sorted((int(r[5]), str(r[1])) for r in info if int(r[5]) > 0)
        return tuple(name for _, name in keyed) or ("rowid",)
    rows = db.execute(
        "SELECT a.attname FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY a.attnum",
        (quote(table),),
    )
    return tuple(str(r[0]) for r in rows)


def foreign_keys(db: Database) -> list[ForeignKey]:
    """List every foreign key of every user table."""
    keys: list[ForeignKey] = []
    if db.engine == "sqlite":
        for table in list_tables(db):
            grouped: dict[int, list[Any]] = {}
            for row in db.execute(f"PRAGMA foreign_key_list({quote(table)})"):
                grouped.setdefault(int(row[0]), []).append(row)
            for rows in grouped.values():
                rows.sort(key=lambda r: int(r[1]))
                parent = str(rows[0][2])
                parent_columns = tuple(str(r[4]) if r[4] else "" for r in rows)
                if not all(parent_columns):
                    parent_columns = primary_key(db, parent)
                columns = tuple(str(r[3]) for r in rows)
                keys.append(ForeignKey(table, columns, parent, parent_columns))
        return keys
    rows = db.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text,"
        " array(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)"
        "  JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n ORDER BY k.o),"
        " array(SELECT attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o)"
        "  JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n ORDER BY k.o)"
        " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE c.contype = 'f' AND n.nspname = 'public' ORDER BY 1, c.conname"
    )
    for table, parent, columns, parent_columns in rows:
        keys.append(
            ForeignKey(_unquote(table), tuple(columns), _unquote(parent), tuple(parent_columns))
        )
    return keys


def _unquote(name: str) -> str:
    if name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name


def dependency_order(tables: list[str], keys: list[ForeignKey]) -> list[str]:
    """Sort tables so that every table comes after the tables it references.

    Self-references are ignored; tables in a reference cycle keep name order
    after the others.
    """
    parents = {t: {k.parent for k in keys if k.table == t and k.parent != t} for t in tables}
    ordered: list[str] = []
    remaining = sorted(tables)
    while remaining:
        ready = [t for t in remaining if not (parents[t] & set(remaining))]
        if not ready:
            ordered.extend(remaining)
            break
        ordered.extend(ready)
        remaining = [t for t in remaining if t not in ready]
    return ordered


def normalize_value(value: object) -> object:
    """Return a value in the form both engines compare equal in: dates as ISO text, and so on."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC)
            return value.strftime("%Y-%m-%dT%H:%M:%SZ")
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return value


def table_checksum(db: Database, table: str, columns: list[str] | None = None) -> TableSum:
    """Return the row count and an order-independent SHA-256 of a table's values.

    Columns are taken in name order, so two tables whose columns were added in
    another order still compare equal. Each row is hashed on its own and the
    sorted row hashes are hashed together, so memory use is 32 bytes per row.
    """
    names = sorted(columns if columns is not None else [c for c, _ in table_columns(db, table)])
    selected = ", ".join(quote(name) for name in names)
    digests = []
    for row in db.execute(f"SELECT {selected} FROM {quote(table)}"):
        text = json.dumps([normalize_value(v) for v in row], ensure_ascii=False, default=str)
        digests.append(hashlib.sha256(text.encode("utf-8")).digest())
    digests.sort()
    total = hashlib.sha256()
    for digest in digests:
        total.update(digest)
    return TableSum(rows=len(digests), sha256=total.hexdigest())


def database_checksums(db: Database, skip: frozenset[str] = frozenset()) -> dict[str, TableSum]:
    """Return the checksum of every user table except those in `skip`."""
    return {t: table_checksum(db, t) for t in list_tables(db) if t not in skip}


def describe_schema(db: Database) -> dict[str, list[str]]:
    """Return every table with its columns as `name type`, for reports."""
    return {
        t: [f"{c} {kind}".strip() for c, kind in table_columns(db, t)] for t in list_tables(db)
    }
