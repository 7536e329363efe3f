"""Tables that `apply` manages in a customer database: catalogs, definitions, update history.

| table                  | contents                                                        |
|------------------------|-----------------------------------------------------------------|
| `catalog_<id>`         | one table per catalog: the declared columns as TEXT, the        |
|                        | catalog's key as primary key; values exactly as in rows.csv     |
| `pipeline_catalogs`    | per catalog: key and columns (JSON), row count, SHA-256 of its  |
|                        | rows in canonical CSV, the bundle version that loaded it        |
| `pipeline_definitions` | `(kind, item, version, document)`: report, form, treasury and   |
|                        | fix definitions as JSON text; `version` is the definition's own |
|                        | `version` field, else the bundle version                        |
| `pipeline_updates`     | one row per applied bundle                                      |

Every function here runs inside the caller's transaction and never commits.

Application catalog tables: report queries join the application's own
tables (`knp`, `kato`), not `catalog_<id>`. When the database has a table
named like the catalog id that contains every key column of the catalog,
`load_catalog` also writes the catalog's added and changed rows into it, by
key: an UPDATE of the columns both tables have, or an INSERT when the key is
new. Rows that the catalog removed stay in the application table, because
documents may still reference them and must keep their parent row. A row
that the application table rejects (a CHECK, NOT NULL or length constraint
that a migration added) fails the load with the row's key and the
database's message.

A catalog's canonical CSV is what `catalogs.import_catalog` writes: a header,
rows sorted by key, comma-separated, minimal quoting, LF line ends. Its
SHA-256 equals that of a rows.csv written by the import, so the hash that a
manifest records for a catalog can be checked against the database.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import operator
import os
import signal
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.catalog_delta import CatalogDelta, Row, RowChange, diff_rows
from pipeline.catalog_model import ROWS_FILE, CatalogDescription, relative_path
from pipeline.catalogs import load_description, read_rows
from pipeline.database import Database, undo_savepoint
from pipeline.db_schema import column_types, list_tables, primary_key, quote, table_columns
from pipeline.errors import ApplyError, CatalogError
from pipeline.versions import Version

logger = logging.getLogger(__name__)

# Test hook: with `PIPELINE_TESTING=1`, `PIPELINE_TEST_PAUSE_AT=<point>` stops the
# process with SIGSTOP at that named point, so a test can kill it there. Without
# PIPELINE_TESTING=1, or for an unknown point, the variable is ignored.
TESTING_ENV = "PIPELINE_TESTING"
PAUSE_ENV = "PIPELINE_TEST_PAUSE_AT"
PAUSE_POINTS = frozenset(
    {
        "backup",
        "migration",
        "migration-statement",
        "no-transaction",
        "rebuild-tables",
        "step-commit",
        "catalog",
        "catalog-load",
        "definitions",
        "payload",
        "after-commit",
        "commit",
    }
)

UPDATES_TABLE = "pipeline_updates"
DEFINITIONS_TABLE = "pipeline_definitions"
CATALOGS_TABLE = "pipeline_catalogs"
# The tables `ensure_tables` creates.
MANAGED_TABLES = (UPDATES_TABLE, DEFINITIONS_TABLE, CATALOGS_TABLE)
CATALOG_TABLE_PREFIX = "catalog_"
MANAGED_DDL = (
    f"CREATE TABLE IF NOT EXISTS {UPDATES_TABLE} ("
    " version TEXT NOT NULL, applied_at TEXT NOT NULL, from_version TEXT,"
    " bundle_sha256 TEXT NOT NULL, backup_path TEXT, backup_sha256 TEXT,"
    " status TEXT NOT NULL, PRIMARY KEY (version, applied_at))",
    f"CREATE TABLE IF NOT EXISTS {DEFINITIONS_TABLE} ("
    " kind TEXT NOT NULL, item TEXT NOT NULL, version TEXT NOT NULL,"
    " document TEXT NOT NULL, PRIMARY KEY (kind, item))",
    f"CREATE TABLE IF NOT EXISTS {CATALOGS_TABLE} ("
    " id TEXT PRIMARY KEY, key_columns TEXT NOT NULL, columns TEXT NOT NULL,"
    " row_count INTEGER NOT NULL, sha256 TEXT NOT NULL, version TEXT NOT NULL)",
)


def pause_point(name: str) -> None:
    """Stop the process here when the test hook names this point (see PAUSE_ENV)."""
    if os.environ.get(TESTING_ENV) != "1" or os.environ.get(PAUSE_ENV) != name:
        return
    if name in PAUSE_POINTS:
        logger.warning("%s=%s: stopping the process for a test", PAUSE_ENV, name)
        os.kill(os.getpid(), signal.SIGSTOP)


def ensure_tables(db: Database) -> None:
    """Create the managed tables that are missing."""
    for statement in MANAGED_DDL:
        db.execute(statement)


# -- update history ----------------------------------------------------------------------------


def installed_version(db: Database) -> str | None:
    """Return the version of the most recently applied bundle, or None for a fresh database."""
    if UPDATES_TABLE not in list_tables(db):
        return None
    rows = db.execute(
        f"SELECT version FROM {UPDATES_TABLE} WHERE status = 'applied'"
        " ORDER BY applied_at DESC LIMIT 1"
    )
    return str(rows[0][0]) if rows else None


def record_update(
    db: Database,
    version: str,
    from_version: str | None,
    bundle_sha256: str,
    backup_path: str | None,
    backup_sha256: str | None,
) -> str:
    """Insert the history row of an applied bundle and return its `applied_at`."""
    applied_at = datetime.now(UTC).isoformat(timespec="microseconds")
    marks = ", ".join([db.placeholder] * 7)
    db.execute(
        f"INSERT INTO {UPDATES_TABLE} (version, applied_at, from_version, bundle_sha256,"
        f" backup_path, backup_sha256, status) VALUES ({marks})",
        (version, applied_at, from_version, bundle_sha256, backup_path, backup_sha256, "applied"),
    )
    return applied_at


def check_applicable(
    installed: str | None, manifest: Mapping[str, Any], allow_downgrade: bool
) -> None:
    """Reject a bundle that does not apply to a database at version `installed`.

    A delta bundle ships only what changed since its base release, so it
    applies only to a database at exactly `min_from_version`. A full bundle
    (`full` true, `min_from_version` null) ships everything and applies to any
    older database, an empty one included, even when it was built after a
    base release tag.

    Raises:
        ApplyError: the bundle is older than the database (unless
            `allow_downgrade`) or is a delta on another base release.
    """
    version = Version.parse(manifest["version"])
    min_from = manifest["min_from_version"]
    base = None if manifest["full"] or min_from is None else Version.parse(min_from)
    if installed is not None and Version.parse(installed) > version and not allow_downgrade:
        raise ApplyError(
            f"bundle {version} is older than the installed version {installed};"
            " pass --allow-downgrade to apply it anyway"
        )
    if base is None:
        return
    if installed is None:
        raise ApplyError(
            f"bundle {version} updates release {base}, but the database has no release"
            f" installed; apply the full release bundle first"
        )
    if Version.parse(installed) != base:
        raise ApplyError(
            f"bundle {version} updates release {base}, but the database is at {installed};"
            f" apply the bundles between {installed} and {version} in order"
        )


# -- definitions -------------------------------------------------------------------------------


def store_definition(db: Database, kind: str, item: str, version: str, document: str) -> None:
    """Insert or replace one definition."""
    p = db.placeholder
    db.execute(
        f"INSERT INTO {DEFINITIONS_TABLE} (kind, item, version, document)"
        f" VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (kind, item) DO UPDATE"
        " SET version = excluded.version, document = excluded.document",
        (kind, item, version, document),
    )


def delete_definition(db: Database, kind: str, item: str) -> int:
    """Delete one definition; return how many rows went (0 or 1)."""
    p = db.placeholder
    before = db.execute(
        f"SELECT COUNT(*) FROM {DEFINITIONS_TABLE} WHERE kind = {p} AND item = {p}", (kind, item)
    )[0][0]
    db.execute(f"DELETE FROM {DEFINITIONS_TABLE} WHERE kind = {p} AND item = {p}", (kind, item))
    return int(before)


def load_definitions(db: Database, kind: str) -> dict[str, dict[str, Any]]:
    """Return the stored definitions of one kind by item."""
    rows = db.execute(
        f"SELECT item, document FROM {DEFINITIONS_TABLE} WHERE kind = {db.placeholder}", (kind,)
    )
    return {str(item): json.loads(str(document)) for item, document in rows}


# -- catalogs ----------------------------------------------------------------------------------


def catalog_table(catalog_id: str) -> str:
    return CATALOG_TABLE_PREFIX + catalog_id


def canonical_digest(columns: Sequence[str], key: Sequence[str], rows: Iterable[Row]) -> str:
    """Return the SHA-256 of rows written as canonical CSV (see the module docstring)."""
    positions = [list(columns).index(name) for name in key]
    body = sorted(
        ([row[name] for name in columns] for row in rows), key=operator.itemgetter(*positions)
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(body)
    return hashlib.sha256(out.getvalue().encode("utf-8")).hexdigest()


def read_catalog(db: Database, catalog_id: str, columns: Sequence[str]) -> list[Row]:
    """Return the rows of a catalog table as dicts of text."""
    selected = ", ".join(quote(name) for name in columns)
    rows = db.execute(f"SELECT {selected} FROM {quote(catalog_table(catalog_id))}")
    return [
        dict(zip(columns, ("" if v is None else str(v) for v in row), strict=True)) for row in rows
    ]


def _prepare_table(db: Database, description: CatalogDescription) -> tuple[list[Row], list[str]]:
    """Create or reshape the catalog's table, and return its rows and the triggers to create.

    Columns added after the existing ones are added with ALTER TABLE, which
    keeps the rows and every view, trigger and foreign key over the table.
    A table whose key or other columns differ from the description is
    dropped and created again, so the load that follows replaces it
    completely. Its triggers are returned, to be created again once the
    rows are back, so that they see no insert of a row that was there.

    Raises:
        ApplyError: the table cannot be dropped, because other tables
            reference it or, on PostgreSQL, views use it.
    """
    table = catalog_table(description.id)
    columns = list(description.column_names)
    fits = catalog_table_fits(db, description)
    if fits:
        return read_catalog(db, description.id, columns), []
    if fits is None:
        create_catalog_table(db, description)
        return [], []
    if _add_columns(db, description):
        return read_catalog(db, description.id, columns), []
    changed = "columns" if _table_key(db, description.id) == list(description.key) else "key"
    logger.info("catalog %s: %s changed, the table is created again", table, changed)
    triggers = _triggers(db, table)
    # In a savepoint, because a failed statement aborts a PostgreSQL transaction.
    db.execute("SAVEPOINT pipeline_catalog_drop")
    try:
        db.execute(f"DROP TABLE {quote(table)}")
    except db.errors as exc:
        undo_savepoint(db, "pipeline_catalog_drop")
        raise ApplyError(
            f"catalog {description.id}: its {changed} changed, so table {table} is created"
            f" again, and dropping it failed: {db.describe_error(exc)}"
            f"{_referencing_tables(db, table)}; keep the catalog's key and columns, or drop"
            " the views over the table and the foreign keys into it in a migration of this"
            " release, and create them again in a later release"
        ) from exc
    db.execute("RELEASE SAVEPOINT pipeline_catalog_drop")
    create_catalog_table(db, description)
    return [], triggers


def _add_columns(db: Database, description: CatalogDescription) -> bool:
    """Add the columns a catalog gained after its table's columns, and tell whether it did.

    ALTER TABLE keeps the rows and every view, trigger and foreign key over
    the table, which a new table would lose. Nothing is added, and the result
    is False, when the key or the existing columns changed.
    """
    table = catalog_table(description.id)
    columns = list(description.column_names)
    existing = [name for name, _ in table_columns(db, table)]
    if _table_key(db, description.id) != list(description.key):
        return False
    if columns[: len(existing)] != existing:
        return False
    added = columns[len(existing) :]
    for name in added:
        # A NOT NULL column needs a default on a table with rows; the load then fills it.
        db.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} TEXT NOT NULL DEFAULT ''")
    logger.info("catalog %s: columns %s added", table, ", ".join(added))
    return True


def _table_key(db: Database, catalog_id: str) -> list[str]:
    """Return a catalog table's key: as a load recorded it, else the table's primary key."""
    stored = _stored_key(db, catalog_id)
    if stored is not None:
        return stored
    return list(primary_key(db, catalog_table(catalog_id)))


def _stored_key(db: Database, catalog_id: str) -> list[str] | None:
    """Return the key columns `pipeline_catalogs` records for a catalog, or None."""
    stored = db.execute(
        f"SELECT key_columns FROM {CATALOGS_TABLE} WHERE id = {db.placeholder}", (catalog_id,)
    )
    return list(json.loads(str(stored[0][0]))) if stored else None


def _triggers(db: Database, table: str) -> list[str]:
    """Return the statements that create the triggers on `table` (not PostgreSQL's own)."""
    if db.engine == "sqlite":
        rows = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND lower(tbl_name) = ?"
            " ORDER BY name",
            (table.lower(),),
        )
    else:
        rows = db.execute(
            "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace"
            " AND NOT t.tgisinternal ORDER BY t.tgname",
            (table,),
        )
    return [str(row[0]) for row in rows]


def catalog_table_fits(db: Database, description: CatalogDescription) -> bool | None:
    """Tell whether the catalog's table has the description's columns and key; None when absent.

    A load keeps a table that fits and creates any other one anew. A table
    that no load has recorded yet (`prepare_catalog_tables` made it
    before the migrations) has its key in its primary key.
    """
    table = catalog_table(description.id)
    if table not in list_tables(db):
        return None
    existing = [name for name, _ in table_columns(db, table)]
    same_key = _table_key(db, description.id) == list(description.key)
    return existing == list(description.column_names) and same_key


def prepare_catalog_tables(db: Database, root: Path, catalog_ids: Iterable[str]) -> None:
    """Create the missing tables of the catalogs at `root`, empty, and add the columns they gained.

    Apply runs this before the migrations. A migration can then create a
    view, trigger or foreign key over a catalog's table, or over a column the
    catalog gains, also on a new database. The catalog load after the
    migrations fills the tables. A table whose key or other columns changed
    is left to the load, which creates it anew.
    """
    tables = set(list_tables(db))
    for catalog_id in catalog_ids:
        description = load_description(root, catalog_id)
        if catalog_table(catalog_id) not in tables:
            create_catalog_table(db, description)
        elif catalog_table_fits(db, description) is False:
            _add_columns(db, description)


def create_catalog_table(db: Database, description: CatalogDescription) -> None:
    """Create the catalog's table, empty, when it does not exist."""
    definitions = ", ".join(f"{quote(name)} TEXT NOT NULL" for name in description.column_names)
    key = ", ".join(quote(name) for name in description.key)
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {quote(catalog_table(description.id))}"
        f" ({definitions}, PRIMARY KEY ({key}))"
    )


def _apply_delta(db: Database, description: CatalogDescription, delta: CatalogDelta) -> None:
    table = quote(catalog_table(description.id))
    columns = list(description.column_names)
    p = db.placeholder
    where = " AND ".join(f"{quote(name)} = {p}" for name in description.key)
    if delta.removed:
        keys = [c.key for c in delta.removed]
        delete = f"DELETE FROM {table} WHERE {where}"
        # In a savepoint, because a failed statement aborts a PostgreSQL transaction.
        db.execute("SAVEPOINT pipeline_catalog_removal")
        try:
            db.executemany(delete, keys)
        except db.errors as exc:
            undo_savepoint(db, "pipeline_catalog_removal")
            raise ApplyError(_removal_problem(db, description, delete, keys, exc)) from exc
        db.execute("RELEASE SAVEPOINT pipeline_catalog_removal")
    pause_point("catalog-load")
    upserts = [c.new for c in delta.added + delta.changed if c.new is not None]
    if upserts:
        names = ", ".join(quote(name) for name in columns)
        marks = ", ".join([p] * len(columns))
        others = [name for name in columns if name not in description.key]
        update = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in others)
        conflict = ", ".join(quote(name) for name in description.key)
        action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
        db.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({conflict}) {action}",
            [[row[name] for name in columns] for row in upserts],
        )


def read_delta_file(path: Path, description: CatalogDescription) -> dict[str, Any]:
    """Read and check a catalog delta file against the catalog's description.

    The file is JSON (`delta.json`)::

        {"format": 1, "catalog": "kato", "key": [...], "columns": [...],
         "base": {"rows": N, "sha256": H}, "result": {"rows": N, "sha256": H},
         "added": [row...], "changed": [row...], "removed": [[key values]...]}

    A row maps every column to its text value; `base` and `result` hold the
    canonical digests before and after.

    Raises:
        ApplyError: the file is missing or not JSON, its key or columns differ
            from the description, or a row or key has the wrong shape.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApplyError(f"{path}: cannot read the catalog delta: {exc}") from exc
    if not isinstance(document, dict):
        raise ApplyError(f"{path}: expected a JSON object, found {type(document).__name__}")
    columns = list(description.column_names)
    for field, expected in (("columns", columns), ("key", list(description.key))):
        if document.get(field) != expected:
            raise ApplyError(
                f"{path} $.{field}: expected {expected} as in catalog.json,"
                f" found {document.get(field)!r}"
            )
    for name in ("added", "changed"):
        for index, row in enumerate(document.get(name, [])):
            if not isinstance(row, dict) or any(not isinstance(row.get(c), str) for c in columns):
                raise ApplyError(
                    f"{path} $.{name}[{index}]: expected an object with the text columns"
                    f" {', '.join(columns)}, found {row!r}"
                )
    for index, key in enumerate(document.get("removed", [])):
        if not isinstance(key, list) or len(key) != len(description.key):
            raise ApplyError(
                f"{path} $.removed[{index}]: expected a list of the key values"
                f" ({', '.join(description.key)}), found {key!r}"
            )
    result: dict[str, Any] = document
    return result


def _delta_from_file(
    db: Database, path: Path, description: CatalogDescription, current: list[Row]
) -> tuple[CatalogDelta, str | None]:
    """Check a shipped delta against the current rows; return it and its result digest."""
    document = read_delta_file(path, description)
    columns = list(description.column_names)
    base = document.get("base", {}).get("sha256")
    found = canonical_digest(columns, description.key, current) if base is not None else None
    if base is not None and found != base:
        raise ApplyError(_base_mismatch(db, description, str(base), str(found)))
    by_key = {tuple(row[k] for k in description.key): row for row in current}
    result = CatalogDelta(catalog_id=description.id, key=description.key)
    problem = "the database is not at the delta's base"
    for row in document.get("added", []):
        key = tuple(row[k] for k in description.key)
        if key in by_key:
            raise ApplyError(
                f"catalog {description.id}: the delta adds key {'/'.join(key)}, which the"
                f" database already has; {problem}"
            )
        result.added.append(RowChange(key, None, {c: row[c] for c in columns}))
    for row in document.get("changed", []):
        key = tuple(row[k] for k in description.key)
        if key not in by_key:
            raise ApplyError(
                f"catalog {description.id}: the delta changes key {'/'.join(key)}, which the"
                f" database does not have; {problem}"
            )
        result.changed.append(RowChange(key, by_key[key], {c: row[c] for c in columns}))
    for values in document.get("removed", []):
        key = tuple(str(v) for v in values)
        if key not in by_key:
            raise ApplyError(
                f"catalog {description.id}: the delta removes key {'/'.join(key)}, which the"
                f" database does not have; {problem}"
            )
        result.removed.append(RowChange(key, by_key[key], None))
    after = document.get("result", {}).get("sha256")
    return result, after


def _base_mismatch(db: Database, description: CatalogDescription, base: str, found: str) -> str:
    """Return the message for a catalog table whose rows are not those a delta starts from."""
    table = catalog_table(description.id)
    order = ", ".join(description.key)
    recorded = db.execute(
        f"SELECT sha256, version FROM {CATALOGS_TABLE} WHERE id = {db.placeholder}",
        (description.id,),
    )
    if recorded and str(recorded[0][0]) == base:
        cause = (
            f"table {table} was changed in the database after release {recorded[0][1]}"
            " loaded it, so its rows differ from the rows the delta starts from"
        )
    else:
        cause = f"the rows of table {table} differ from the rows the delta starts from"
    return (
        f"catalog {description.id}: {cause}: expected SHA-256 {base}, found {found}."
        f" See the difference by comparing `SELECT * FROM {table} ORDER BY {order}` with"
        f" catalogs/{description.id}/rows.csv of the base release; then undo the local"
        " change, or apply a full bundle, which replaces the catalog"
    )


def load_catalog(
    db: Database, extracted: Path, entry: Mapping[str, Any], bundle_version: str
) -> dict[str, int]:
    """Load one catalog of a bundle into its table; return rows added, changed, removed, total.

    `entry` is the manifest's `catalogs[]` entry. Mode `full` (the default)
    compares rows.csv with the table and writes only the difference; mode
    `delta` checks that the table has the delta's base digest and applies the
    shipped `delta.json`. Either way the table's canonical digest must then
    equal the expected one: that of rows.csv for a full catalog, the entry's
    `sha256` (or the delta's result digest) for a delta.

    Raises:
        ApplyError: the catalog cannot be read, the delta does not fit the
            table, or the digest after loading differs.
    """
    catalog_id = entry["id"]
    mode = entry.get("mode", "full")
    try:
        description = load_description(extracted, catalog_id)
        if mode == "delta" and catalog_table_fits(db, description) is False:
            raise ApplyError(
                f"catalog {catalog_id}: the bundle ships a delta of it, but table"
                f" {catalog_table(catalog_id)} has another key or other columns than the bundle"
                " describes, so no delta can start from its rows; apply a full bundle of this"
                " release"
            )
        current, triggers = _prepare_table(db, description)
        columns = list(description.column_names)
        if mode == "full":
            new_rows = list(read_rows(extracted, catalog_id))
            delta = diff_rows(current, new_rows, description.key, catalog_id=catalog_id)
            expected = canonical_digest(columns, description.key, new_rows)
        elif mode == "delta":
            delta, result_digest = _delta_from_file(
                db, extracted / entry["path"], description, current
            )
            expected = str(entry.get("sha256") or result_digest)
        else:
            raise ApplyError(
                f"catalog {catalog_id}: unknown mode {mode!r}; expected full or delta"
            )
    except CatalogError as exc:
        raise ApplyError(f"catalog {catalog_id}: {exc}") from exc
    _apply_delta(db, description, delta)
    for trigger in triggers:
        db.execute(trigger)
    after = read_catalog(db, catalog_id, columns)
    digest = canonical_digest(columns, description.key, after)
    if digest != expected:
        raise ApplyError(
            f"catalog {catalog_id}: after the {mode} load the rows have SHA-256 {digest},"
            f" expected {expected}; the bundle's catalog does not match the database"
        )
    _record_catalog(db, description, len(after), digest, bundle_version)
    source = str(entry.get("path") or relative_path(catalog_id, ROWS_FILE))
    _update_application_table(db, description, delta, source, after)
    logger.info("catalog %s (%s): %s", catalog_id, mode, delta.summary())
    return {
        "added": len(delta.added),
        "changed": len(delta.changed),
        "removed": len(delta.removed),
        "rows": len(after),
    }


def _update_application_table(
    db: Database,
    description: CatalogDescription,
    delta: CatalogDelta,
    source: str,
    catalog_rows: Sequence[Row],
) -> None:
    """Write added and changed catalog rows into the application table of the same name.

    An application table without rows, such as one a migration of this
    bundle created, gets every row of the catalog (`catalog_rows`), as a
    fresh install gives it. `source` is the catalog file in the bundle,
    for the error message.

    Raises:
        ApplyError: a row breaks a constraint of the application table; the
            message names the row's key and the database's message.
    """
    table = description.id
    if table not in list_tables(db):
        return
    types = column_types(db, table)
    existing = list(types)
    if not all(name in existing for name in description.key):
        logger.debug("table %s lacks the key of catalog %s; not updated", table, table)
        return
    rows = [c.new for c in delta.added + delta.changed if c.new is not None]
    if not db.execute(f"SELECT 1 FROM {quote(table)} LIMIT 1"):
        rows = list(catalog_rows)
    if not rows:
        return
    shared = [name for name in description.column_names if name in existing]
    others = [name for name in shared if name not in description.key]
    p = db.placeholder
    where = " AND ".join(f"{quote(name)} = {p}" for name in description.key)
    statements: list[tuple[str, list[list[str]]]] = []
    if others:
        assignments = ", ".join(f"{quote(name)} = {p}" for name in others)
        statements.append(
            (
                f"UPDATE {quote(table)} SET {assignments} WHERE {where}",
                [[row[n] for n in others] + [row[k] for k in description.key] for row in rows],
            )
        )
    names = ", ".join(quote(name) for name in shared)
    if db.engine == "postgresql":
        # A bare parameter in a SELECT list is typed text, so cast it to the column's type.
        marks = ", ".join(f"CAST({p} AS {types[name]})" for name in shared)
    else:
        marks = ", ".join([p] * len(shared))
    statements.append(
        (
            f"INSERT INTO {quote(table)} ({names}) SELECT {marks}"
            f" WHERE NOT EXISTS (SELECT 1 FROM {quote(table)} WHERE {where})",
            [[row[n] for n in shared] + [row[k] for k in description.key] for row in rows],
        )
    )
    try:
        with _savepoint(db):
            for sql, parameters in statements:
                db.executemany(sql, parameters)
    except db.errors as exc:
        raise ApplyError(_row_problem(db, description, source, statements, rows, exc)) from exc
    logger.info(
        "application table %s: %d catalog row(s) written (columns %s); %d removed row(s) kept",
        table,
        len(rows),
        ", ".join(shared),
        len(delta.removed),
    )


@contextlib.contextmanager
def _savepoint(db: Database) -> Iterator[None]:
    """Roll back to the state before the block when it raises, inside the open transaction."""
    db.execute("SAVEPOINT pipeline_application_rows")
    try:
        yield
    except BaseException:
        undo_savepoint(db, "pipeline_application_rows")
        raise
    db.execute("RELEASE SAVEPOINT pipeline_application_rows")


def _row_problem(
    db: Database,
    description: CatalogDescription,
    source: str,
    statements: Sequence[tuple[str, list[list[str]]]],
    rows: Sequence[Row],
    error: Exception,
) -> str:
    """Find the first row that the application table rejects, by writing the rows one by one.

    Each row is written in a savepoint that is rolled back afterwards, so the
    search leaves the table as it was. When SQLite has rolled back the whole
    transaction, nothing is written, because each write would commit.
    """
    table = description.id
    if not db.in_transaction:
        return (
            f"catalog {table}: the rows of {source} cannot be written into table {table}:"
            f" {db.describe_error(error)}; SQLite rolled back the whole transaction, so the"
            " row was not looked for"
        )
    for index, row in enumerate(rows):
        problem = _undone_attempt(db, [(sql, parameters[index]) for sql, parameters in statements])
        if problem is not None:
            key = ", ".join(f"{name}={row[name]}" for name in description.key)
            return (
                f"catalog {table}: row {key} of {source} cannot be written into table"
                f" {table}: {problem}"
            )
    return (
        f"catalog {table}: the rows of {source} cannot be written into table {table}:"
        f" {db.describe_error(error)}"
    )


def _removal_problem(
    db: Database,
    description: CatalogDescription,
    delete: str,
    keys: Sequence[Sequence[str]],
    error: Exception,
) -> str:
    """Find the first catalog row whose removal fails, by removing the rows one by one.

    Each removal is rolled back to its savepoint, and none is tried once
    SQLite has rolled back the whole transaction.
    """
    table = catalog_table(description.id)
    if not db.in_transaction:
        return (
            f"catalog {description.id}: its removed rows cannot be deleted from table {table}:"
            f" {db.describe_error(error)}"
        )
    referencing = _referencing_tables(db, table)
    for values in keys:
        problem = _undone_attempt(db, [(delete, values)])
        if problem is not None:
            named = ", ".join(f"{n}={v}" for n, v in zip(description.key, values, strict=True))
            return (
                f"catalog {description.id}: row {named} cannot be removed from table {table}:"
                f" {problem}{referencing}"
            )
    return (
        f"catalog {description.id}: its removed rows cannot be deleted from table {table}:"
        f" {db.describe_error(error)}{referencing}"
    )


def _undone_attempt(db: Database, statements: Sequence[tuple[str, Sequence[str]]]) -> str | None:
    """Run `statements` in a savepoint, roll them back and return why one failed, or None."""
    db.execute("SAVEPOINT pipeline_catalog_row")
    try:
        for sql, parameters in statements:
            db.execute(sql, parameters)
    except db.errors as exc:
        return db.describe_error(exc)
    finally:
        undo_savepoint(db, "pipeline_catalog_row")
    return None


def _referencing_tables(db: Database, table: str) -> str:
    """Return "; tables referencing it: ..." for the tables with a foreign key into `table`."""
    children = [
        child for child, parents in db.foreign_key_parents().items() if table.lower() in parents
    ]
    return f"; tables referencing it: {', '.join(sorted(children))}" if children else ""


def _record_catalog(
    db: Database, description: CatalogDescription, rows: int, digest: str, version: str
) -> None:
    p = db.placeholder
    db.execute(
        f"INSERT INTO {CATALOGS_TABLE} (id, key_columns, columns, row_count, sha256, version)"
        f" VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (id) DO UPDATE SET"
        " key_columns = excluded.key_columns, columns = excluded.columns,"
        " row_count = excluded.row_count, sha256 = excluded.sha256, version = excluded.version",
        (
            description.id,
            json.dumps(list(description.key)),
            json.dumps(list(description.column_names)),
            rows,
            digest,
            version,
        ),
    )


def catalog_keys(db: Database) -> dict[str, list[str]]:
    """Return the key columns of every catalog the pipeline loaded, by catalog id."""
    if CATALOGS_TABLE not in list_tables(db):
        return {}
    rows = db.execute(f"SELECT id, key_columns FROM {CATALOGS_TABLE}")
    return {str(i): list(json.loads(str(k))) for i, k in rows}
