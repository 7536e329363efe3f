"""Database tools for customers and QA: check, repair, reindex and transfer.

- `check_database`: the engine's integrity check, the schema check (SQLite
  statements that no longer compile), orphan rows per foreign key
  (counts and sample keys), and duplicate keys in the catalogs that `apply`
  loaded. PostgreSQL enforces validated foreign keys, so orphans appear
  there only through NOT VALID keys or disabled triggers; the search runs anyway.
- `repair_database`: writes a reviewable SQL script that removes the orphans,
  per table or per foreign key column policy: `delete` the rows, set the key
  to `null`, or `relink:VALUE` to a placeholder parent row that must exist
  with the referenced column's type. The script is
  applied only on request, after a backup, in one transaction, and the check
  runs again afterwards.
- `reindex_database`: SQLite REINDEX, ANALYZE and VACUUM; PostgreSQL REINDEX
  of the `public` schema and ANALYZE; database and per-index sizes before
  and after.
- `transfer_database`: creates the schema in an empty target with the
  migration runner (the same versions as the source), copies every table in
  foreign key order, and compares row counts and per-table checksums.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.apply_store import (
    CATALOG_TABLE_PREFIX,
    CATALOGS_TABLE,
    DEFINITIONS_TABLE,
    UPDATES_TABLE,
    catalog_keys,
    catalog_table,
    ensure_tables,
)
from pipeline.database import (
    HISTORY_TABLE,
    Database,
    applied_migrations,
    check_integrity,
    display_name,
    open_database,
    run_migrations,
)
from pipeline.db_backup import Backup, backup_database, backup_suffix, compare_databases
from pipeline.db_schema import (
    ForeignKey,
    TableSum,
    dependency_order,
    foreign_keys,
    list_tables,
    normalize_value,
    primary_key,
    quote,
    table_columns,
)
from pipeline.errors import DatabaseToolError
from pipeline.findings import CheckCase, Finding
from pipeline.fsutil import atomic_write_text
from pipeline.migrations import load_migrations

logger = logging.getLogger(__name__)

SAMPLE_KEYS = 5
REPAIR_POLICIES = ("delete", "null", "relink:VALUE")
COPY_BATCH_ROWS = 10_000
MANAGED_TABLES = frozenset({CATALOGS_TABLE, DEFINITIONS_TABLE, UPDATES_TABLE})


# -- check -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrphanGroup:
    """Rows of `key.table` whose foreign key `key` has no parent row."""

    key: ForeignKey
    count: int
    samples: list[str]

    def describe(self) -> str:
        columns = ", ".join(self.key.columns)
        parent = f"{self.key.parent}({', '.join(self.key.parent_columns)})"
        return (
            f"table {self.key.table} ({columns}) -> {parent}: {self.count} orphan row(s),"
            f" for example {', '.join(self.samples)}"
        )


@dataclass(frozen=True)
class DuplicateKeys:
    """Key values that occur more than once in a catalog table."""

    table: str
    key: tuple[str, ...]
    count: int
    samples: list[str]


@dataclass
class CheckReport:
    """The problems that `check_database` found in one database."""

    database: str
    engine: str
    integrity: list[Finding] = field(default_factory=list)
    orphans: list[OrphanGroup] = field(default_factory=list)
    duplicates: list[DuplicateKeys] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.integrity or self.orphans or self.duplicates)

    def findings(self) -> list[Finding]:
        """Return every problem as a finding."""
        found = list(self.integrity)
        found += [
            Finding(rule="database.orphans", file=self.database, message=group.describe())
            for group in self.orphans
        ]
        found += [
            Finding(
                rule="database.duplicate-key",
                file=self.database,
                message=f"table {d.table}: {d.count} key value(s) of ({', '.join(d.key)})"
                f" occur more than once, for example {', '.join(d.samples)}",
            )
            for d in self.duplicates
        ]
        return found

    def case(self) -> CheckCase:
        """Return the report as one JUnit check case."""
        return CheckCase(
            name=self.database, classname=f"db-check.{self.engine}", findings=self.findings()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "engine": self.engine,
            "passed": self.passed,
            "integrity": [asdict(f) for f in self.integrity],
            "orphans": [asdict(g) for g in self.orphans],
            "duplicates": [asdict(d) for d in self.duplicates],
        }


def _orphan_condition(key: ForeignKey, child: str = "c", parent: str = "p") -> str:
    """Return the SQL condition on the child table (or alias) `child` of an orphan row."""
    present = " AND ".join(f"{child}.{quote(name)} IS NOT NULL" for name in key.columns)
    return f"{present} AND NOT EXISTS ({_parent_rows(key, child, parent)})"


def _parent_rows(key: ForeignKey, child: str, parent: str) -> str:
    """Return a subquery of the parent rows that the child row `child` references."""
    match = " AND ".join(
        f"{parent}.{quote(parent_column)} = {child}.{quote(child_column)}"
        for child_column, parent_column in zip(key.columns, key.parent_columns, strict=True)
    )
    return f"SELECT 1 FROM {quote(key.parent)} {parent} WHERE {match}"


def find_orphans(db: Database, key: ForeignKey) -> OrphanGroup | None:
    """Count the rows that break one foreign key and list a few of their keys."""
    condition = _orphan_condition(key)
    table = quote(key.table)
    count = int(db.execute(f"SELECT COUNT(*) FROM {table} c WHERE {condition}")[0][0])
    if not count:
        return None
    pk = primary_key(db, key.table) or key.columns
    selected = ", ".join(f"c.{quote(name)}" if name != "rowid" else "c.rowid" for name in pk)
    rows = db.execute(
        f"SELECT {selected} FROM {table} c WHERE {condition} ORDER BY {selected}"
        f" LIMIT {SAMPLE_KEYS}"
    )
    samples = [
        ", ".join(f"{name}={value}" for name, value in zip(pk, row, strict=True)) for row in rows
    ]
    return OrphanGroup(key=key, count=count, samples=samples)


def _duplicate_keys(db: Database) -> list[DuplicateKeys]:
    found = []
    tables = set(list_tables(db))
    for catalog_id, key in sorted(catalog_keys(db).items()):
        table = catalog_table(catalog_id)
        if table not in tables:
            continue
        columns = ", ".join(quote(name) for name in key)
        rows = db.execute(
            f"SELECT {columns}, COUNT(*) FROM {quote(table)} GROUP BY {columns}"
            f" HAVING COUNT(*) > 1 ORDER BY {columns}"
        )
        if rows:
            samples = ["/".join(str(v) for v in row[:-1]) for row in rows[:SAMPLE_KEYS]]
            found.append(DuplicateKeys(table, tuple(key), len(rows), samples))
    return found


def check_database(database: str, root: Path = Path(".")) -> CheckReport:
    """Run the integrity check, the orphan search and the catalog duplicate-key search.

    Raises:
        MigrationError: the database cannot be opened.
    """
    with open_database(database, root) as db:
        report = CheckReport(database=display_name(database), engine=db.engine)
        # The orphan search below replaces the foreign key findings.
        report.integrity = [
            f for f in check_integrity(db) if f.rule in ("database.integrity", "database.schema")
        ]
        for key in foreign_keys(db):
            group = find_orphans(db, key)
            if group is not None:
                report.orphans.append(group)
        report.duplicates = _duplicate_keys(db)
    logger.info(
        "checked %s: %d integrity problem(s), %d foreign key(s) with orphans,"
        " %d catalog(s) with duplicate keys",
        report.database,
        len(report.integrity),
        len(report.orphans),
        len(report.duplicates),
    )
    return report


# -- repair ------------------------------------------------------------------------------------


@dataclass
class RepairResult:
    """The repair script, and what applying it did."""

    script: Path
    statements: int
    applied: bool = False
    backup: Backup | None = None
    remaining: CheckReport | None = None
    relinked: list[str] = field(default_factory=list)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _parse_policy(target: str, policy: str) -> tuple[str, str | None]:
    if policy in ("delete", "null"):
        return policy, None
    if policy.startswith("relink:") and policy != "relink:":
        return "relink", policy.removeprefix("relink:")
    raise DatabaseToolError(
        f"repair policy of {target}: expected one of {', '.join(REPAIR_POLICIES)},"
        f" found {policy!r}"
    )


def _is_integer_type(declared: str) -> bool:
    """Tell whether a declared column type stores integers (SQLite affinity rule, PostgreSQL)."""
    return "INT" in declared.upper()


@dataclass(frozen=True)
class _Relink:
    """One relink statement, kept so that the applied result can be compared."""

    key: ForeignKey
    value: str | int
    condition: str


class _RepairPlan:
    """Conditions of the rows each repair statement touches.

    A row is repaired when its own foreign key is orphaned, or when it
    references a parent row that the script deletes. Statements run children
    first, so every condition reads the parent rows before they are deleted,
    and no foreign key fails halfway.

    A policy names a table (`TABLE`) or one foreign key column
    (`TABLE.COLUMN`). A column policy wins over the table's policy for that
    key. `relink` needs a column policy when the table has several foreign
    keys, so a placeholder never lands in an unrelated key column.
    """

    def __init__(
        self, db: Database, report: CheckReport, policies: Mapping[str, str], default: str
    ) -> None:
        self.db = db
        self.keys = foreign_keys(db)
        self.orphaned = {group.key for group in report.orphans}
        self.policies: dict[str, tuple[str, str | None]] = {}
        self.column_policies: dict[tuple[str, str], tuple[str, str | None]] = {}
        for target, policy in policies.items():
            table, dot, column = target.partition(".")
            if not dot:
                self.policies[table] = _parse_policy(target, policy)
                continue
            parsed = _parse_policy(target, policy)
            if parsed[0] == "delete":
                raise DatabaseToolError(
                    f"repair policy of {target}: delete removes whole rows; write {table}=delete"
                )
            if not any(k.table == table and k.columns == (column,) for k in self.keys):
                raise DatabaseToolError(
                    f"repair policy of {target}: {table}.{column} is not a single-column"
                    f" foreign key; foreign key columns of {table}:"
                    f" {', '.join(self._key_columns(table)) or 'none'}"
                )
            self.column_policies[(table, column)] = parsed
        self.default = _parse_policy("*", default)
        self.relinks: list[_Relink] = []
        self.aliases = 0

    def _key_columns(self, table: str) -> list[str]:
        return [", ".join(k.columns) for k in self.keys if k.table == table]

    def policy(self, table: str) -> tuple[str, str | None]:
        return self.policies.get(table, self.default)

    def key_policy(self, key: ForeignKey) -> tuple[str, str | None]:
        """Return the policy of one foreign key: its column policy, else its table's."""
        if len(key.columns) == 1 and (key.table, key.columns[0]) in self.column_policies:
            return self.column_policies[(key.table, key.columns[0])]
        kind, value = self.policy(key.table)
        columns = self._key_columns(key.table)
        if kind == "relink" and len(columns) > 1:
            orphaned = [k for k in self.keys if k.table == key.table and k in self.orphaned]
            example = (orphaned or [key])[0].columns[0]
            raise DatabaseToolError(
                f"relink:{value} for table {key.table}: {key.table} has several foreign keys"
                f" ({'; '.join(columns)}), and one placeholder cannot fit them all; name the"
                f" column, for example --policy {key.table}.{example}=relink:VALUE"
            )
        return kind, value

    def _alias(self) -> str:
        self.aliases += 1
        return f"r{self.aliases}"

    def key_condition(
        self, key: ForeignKey, child: str, visiting: frozenset[str] = frozenset()
    ) -> str | None:
        """Return when a child row of `key` needs repair, or None when none can."""
        parts = []
        if key in self.orphaned:
            parts.append(_orphan_condition(key, child, self._alias()))
        parent_deletes = self.policy(key.parent)[0] == "delete"
        if key.parent != key.table and parent_deletes and key.parent not in visiting:
            alias = self._alias()
            doomed = self.doomed(key.parent, alias, visiting | {key.table})
            if doomed is not None:
                parts.append(f"EXISTS ({_parent_rows(key, child, alias)} AND ({doomed}))")
        return " OR ".join(f"({part})" for part in parts) if parts else None

    def doomed(self, table: str, alias: str, visiting: frozenset[str] = frozenset()) -> str | None:
        """Return when a row of `table` is deleted by the script, through a delete-policy key."""
        conditions = [
            condition
            for key in self.keys
            if key.table == table and self.key_policy(key)[0] == "delete"
            for condition in [self.key_condition(key, alias, visiting | {table})]
            if condition is not None
        ]
        return " OR ".join(f"({c})" for c in conditions) if conditions else None

    def statements(self) -> list[str]:
        order = dependency_order(list_tables(self.db), self.keys)
        statements = []
        for table in reversed(order):
            name = quote(table)
            doomed = self.doomed(table, name)
            if doomed is not None:
                statements.append(f"DELETE FROM {name} WHERE {doomed};")
            for key in (k for k in self.keys if k.table == table):
                kind, value = self.key_policy(key)
                if kind == "delete":
                    continue
                condition = self.key_condition(key, name)
                if condition is not None:
                    statements.append(self._update(key, kind, value, condition))
        return statements

    def _placeholder(self, key: ForeignKey, value: str) -> str | int:
        """Return the placeholder typed as the referenced column, which must contain it."""
        parent_column = key.parent_columns[0]
        declared = dict(table_columns(self.db, key.parent)).get(parent_column, "")
        typed: str | int = value
        if _is_integer_type(declared):
            digits = value.removeprefix("-")
            if not digits.isdigit() or str(int(value)) != value:
                hint = f"relink:{int(value)}" if digits.isdigit() else "an integer"
                raise DatabaseToolError(
                    f"placeholder {value!r} for {key.parent}.{parent_column} ({declared}):"
                    f" expected an integer written without leading zeros or signs, found"
                    f" {value!r}; write {hint}, so no value is converted silently"
                )
            typed = int(value)
        # NOTE: only integer columns are type-checked; other types compare as text.
        exists = self.db.execute(
            f"SELECT COUNT(*) FROM {quote(key.parent)}"
            f" WHERE {quote(parent_column)} = {self.db.placeholder}",
            (typed,),
        )[0][0]
        if not exists:
            raise DatabaseToolError(
                f"table {key.table}: the placeholder {key.parent}.{parent_column} = {value!r}"
                " does not exist; insert that row first or choose another policy"
            )
        return typed

    def _update(self, key: ForeignKey, kind: str, value: str | None, condition: str) -> str:
        table = quote(key.table)
        if kind == "null":
            assignments = ", ".join(f"{quote(name)} = NULL" for name in key.columns)
            return f"UPDATE {table} SET {assignments} WHERE {condition};"
        assert value is not None
        if len(key.columns) != 1:
            raise DatabaseToolError(
                f"table {key.table}: relink works on single-column foreign keys, but"
                f" ({', '.join(key.columns)}) has {len(key.columns)} columns;"
                " choose delete or null"
            )
        typed = self._placeholder(key, value)
        literal = str(typed) if isinstance(typed, int) else _literal(typed)
        self.relinks.append(_Relink(key, typed, condition))
        return f"UPDATE {table} SET {quote(key.columns[0])} = {literal} WHERE {condition};"


def _snapshot_relinks(
    db: Database, relinks: Sequence[_Relink]
) -> list[dict[tuple[Any, ...], Any]]:
    """Return, per relink, the rows it is about to change, by primary key."""
    snapshots = []
    for relink in relinks:
        table = relink.key.table
        pk = primary_key(db, table)
        columns = [name for name, _ in table_columns(db, table)]
        selected = ", ".join("rowid" if n == "rowid" else quote(n) for n in (*pk, *columns))
        rows = db.execute(f"SELECT {selected} FROM {quote(table)} WHERE {relink.condition}")
        snapshots.append(
            {
                tuple(row[: len(pk)]): dict(zip(columns, row[len(pk) :], strict=True))
                for row in rows
            }
        )
    return snapshots


def _compare_relinks(
    db: Database, relinks: Sequence[_Relink], snapshots: Sequence[dict[tuple[Any, ...], Any]]
) -> list[str]:
    """Check each relinked row: the key column has the placeholder and no other column changed.

    Columns of other keys that the script repairs in the same table may
    change, and rows the script deleted are skipped.

    Raises:
        DatabaseToolError: a relinked row differs from what the script was to write.
    """
    summary = []
    for relink, before in zip(relinks, snapshots, strict=True):
        table = relink.key.table
        column = relink.key.columns[0]
        pk = primary_key(db, table)
        repaired = {c for k in foreign_keys(db) if k.table == table for c in k.columns}
        where = " AND ".join(
            f"{'rowid' if n == 'rowid' else quote(n)} = {db.placeholder}" for n in pk
        )
        columns = list(next(iter(before.values()), {}).keys())
        selected = ", ".join(quote(n) for n in columns)
        relinked = 0
        for key_values, old in before.items():
            rows = db.execute(f"SELECT {selected} FROM {quote(table)} WHERE {where}", key_values)
            if not rows:
                continue
            new = dict(zip(columns, rows[0], strict=True))
            if new[column] != relink.value:
                raise DatabaseToolError(
                    f"relink check of {table}.{column}: row {key_values} has {new[column]!r},"
                    f" expected the placeholder {relink.value!r}"
                )
            changed = [
                n for n in columns if n not in repaired and n != column and new[n] != old[n]
            ]
            if changed:
                raise DatabaseToolError(
                    f"relink check of {table}.{column}: row {key_values} also changed"
                    f" {', '.join(changed)}; expected only {column} to change"
                )
            relinked += 1
        summary.append(f"{table}.{column}: {relinked} row(s) relinked to {str(relink.value)!r}")
    return summary


def repair_script(
    db: Database, report: CheckReport, policies: Mapping[str, str], default: str = "delete"
) -> list[str]:
    """Return the statements that repair every orphan row, children before parents.

    NOTE: rows of a self-referencing table whose parent row is deleted in the
    same table are not followed; a second check shows them.
    """
    return _RepairPlan(db, report, policies, default).statements()


def repair_database(
    database: str,
    out: Path,
    *,
    root: Path = Path("."),
    policies: Mapping[str, str] | None = None,
    default_policy: str = "delete",
    apply: bool = False,
    backup_dir: Path | None = None,
) -> RepairResult:
    """Write the repair script to `out`; with `apply`, back up, run it and check again.

    Raises:
        DatabaseToolError: a policy is invalid, a placeholder row is missing,
            or the script failed (it is rolled back).
    """
    report = check_database(database, root)
    with open_database(database, root) as db:
        plan = _RepairPlan(db, report, policies or {}, default_policy)
        statements = plan.statements()
    header = [
        f"-- Repair script for {report.database} ({report.engine}),"
        f" written {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}.",
        "-- Review it, then apply it with `inv db.repair --apply`, which backs up first.",
        *(f"-- {group.describe()}" for group in report.orphans),
        *(
            f"-- duplicate keys in {d.table} are not repaired here: load the catalog again"
            for d in report.duplicates
        ),
    ]
    atomic_write_text(out, "\n".join([*header, "BEGIN;", *statements, "COMMIT;"]) + "\n")
    result = RepairResult(script=out, statements=len(statements))
    logger.info("wrote %s: %d statement(s)", out, len(statements))
    if not apply or not statements:
        return result
    folder = backup_dir or out.parent
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{display_name(database).rsplit('.', 1)[0]}-before-repair-{stamp}"
    result.backup = backup_database(database, root, folder / (name + backup_suffix(database)))
    with open_database(database, root) as db:
        db.execute("BEGIN")
        try:
            snapshots = _snapshot_relinks(db, plan.relinks)
            for statement in statements:
                db.execute(statement.removesuffix(";"))
            result.relinked = _compare_relinks(db, plan.relinks, snapshots)
            db.execute("COMMIT")
        except db.errors as exc:
            db.execute("ROLLBACK")
            raise DatabaseToolError(
                f"repair script {out} failed on {report.database} and was rolled back:"
                f" {db.describe_error(exc)}"
            ) from exc
        except DatabaseToolError as exc:
            db.execute("ROLLBACK")
            raise DatabaseToolError(
                f"{exc}; the repair of {report.database} was rolled back"
            ) from exc
    result.applied = True
    result.remaining = check_database(database, root)
    return result


# -- reindex -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReindexResult:
    """Sizes in bytes before and after rebuilding indexes and statistics.

    `indexes_before` and `indexes_after` map each index name to its size, and
    `index_size_*` is their sum. On SQLite they come from the dbstat virtual
    table; without it they are None and `index_note` gives the reason.
    """

    database: str
    engine: str
    size_before: int
    size_after: int
    index_size_before: int | None
    index_size_after: int | None
    seconds: float
    indexes_before: dict[str, int] | None = None
    indexes_after: dict[str, int] | None = None
    index_note: str | None = None


DBSTAT_MISSING = (
    "index sizes not reported: this SQLite build lacks the dbstat virtual table"
    " (SQLITE_ENABLE_DBSTAT_VTAB)"
)


def _database_size(db: Database) -> int:
    if db.engine == "sqlite":
        pages = int(db.execute("PRAGMA page_count")[0][0])
        page_size = int(db.execute("PRAGMA page_size")[0][0])
        return pages * page_size
    return int(db.execute("SELECT pg_database_size(current_database())")[0][0])


def _index_sizes(db: Database) -> dict[str, int] | None:
    """Return the size in bytes of every index by name, or None when SQLite lacks dbstat."""
    if db.engine == "sqlite":
        try:
            rows = db.execute(
                "SELECT m.name, COALESCE(SUM(s.pgsize), 0) FROM sqlite_master m"
                " LEFT JOIN dbstat s ON s.name = m.name WHERE m.type = 'index'"
                " GROUP BY m.name ORDER BY m.name"
            )
        except db.errors as exc:
            if "dbstat" not in str(exc):
                raise
            logger.info("%s: %s", display_name(db.url), DBSTAT_MISSING)
            return None
    else:
        rows = db.execute(
            "SELECT ic.relname, pg_relation_size(i.indexrelid) FROM pg_index i"
            " JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' ORDER BY ic.relname"
        )
    return {str(name): int(size) for name, size in rows}


def reindex_database(database: str, root: Path = Path(".")) -> ReindexResult:
    """Rebuild every index and refresh the planner statistics; report the sizes."""
    started = time.perf_counter()
    with open_database(database, root) as db:
        size_before, indexes_before = _database_size(db), _index_sizes(db)
        if db.engine == "sqlite":
            for statement in ("REINDEX", "ANALYZE", "VACUUM"):
                db.execute(statement)
        else:
            db.execute("REINDEX SCHEMA public")
            db.execute("ANALYZE")
        size_after, indexes_after = _database_size(db), _index_sizes(db)
        engine = db.engine
    result = ReindexResult(
        database=display_name(database),
        engine=engine,
        size_before=size_before,
        size_after=size_after,
        index_size_before=sum(indexes_before.values()) if indexes_before is not None else None,
        index_size_after=sum(indexes_after.values()) if indexes_after is not None else None,
        seconds=time.perf_counter() - started,
        indexes_before=indexes_before,
        indexes_after=indexes_after,
        index_note=DBSTAT_MISSING if indexes_after is None else None,
    )
    logger.info("reindexed %s: %d -> %d bytes", result.database, size_before, size_after)
    return result


# -- transfer ----------------------------------------------------------------------------------


@dataclass
class TransferResult:
    """Tables copied by `transfer_database`, with their row counts and checksums."""

    source: str
    target: str
    migrations: list[str]
    tables: dict[str, TableSum] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())


def _create_catalog_tables(source: Database, target: Database) -> None:
    keys = catalog_keys(source)
    for table in list_tables(source):
        if not table.startswith(CATALOG_TABLE_PREFIX) or table in list_tables(target):
            continue
        catalog_id = table.removeprefix(CATALOG_TABLE_PREFIX)
        key = keys.get(catalog_id)
        if key is None:
            continue
        columns = ", ".join(f"{quote(c)} TEXT NOT NULL" for c, _ in table_columns(source, table))
        primary = ", ".join(quote(c) for c in key)
        target.execute(f"CREATE TABLE {quote(table)} ({columns}, PRIMARY KEY ({primary}))")


def _ordered_rows(rows: list[Any], key: ForeignKey | None, columns: list[str]) -> list[Any]:
    """Order rows so that a row referencing its own table comes after its parent row."""
    if key is None or len(key.columns) != 1:
        return rows
    child = columns.index(key.columns[0])
    parent = columns.index(key.parent_columns[0])
    placed: set[Any] = set()
    ordered: list[Any] = []
    remaining = rows
    while remaining:
        ready = [
            r for r in remaining if r[child] is None or r[child] in placed or r[child] == r[parent]
        ]
        if not ready:
            return ordered + remaining  # a cycle: the engine reports it
        ordered.extend(ready)
        placed.update(r[parent] for r in ready)
        ready_ids = {id(r) for r in ready}
        remaining = [r for r in remaining if id(r) not in ready_ids]
    return ordered


def _copy_table(
    source: Database, target: Database, table: str, keys: Sequence[ForeignKey]
) -> None:
    columns = [c for c, _ in table_columns(source, table)]
    target_columns = [c for c, _ in table_columns(target, table)]
    if sorted(columns) != sorted(target_columns):
        raise DatabaseToolError(
            f"table {table}: the source has columns {', '.join(columns)}, the migrated target"
            f" {', '.join(target_columns)}; migrate both to the same schema version first"
        )
    selected = ", ".join(quote(c) for c in columns)
    rows = source.execute(f"SELECT {selected} FROM {quote(table)}")
    self_key = next((k for k in keys if k.table == table and k.parent == table), None)
    rows = _ordered_rows(rows, self_key, columns)
    if target.engine == "sqlite":
        rows = [tuple(normalize_value(v) for v in row) for row in rows]
    marks = ", ".join([target.placeholder] * len(columns))
    statement = f"INSERT INTO {quote(table)} ({selected}) VALUES ({marks})"
    for start in range(0, len(rows), COPY_BATCH_ROWS):
        target.executemany(statement, rows[start : start + COPY_BATCH_ROWS])


def _reset_sequences(target: Database, tables: Sequence[str]) -> None:
    if target.engine != "postgresql":
        return
    for table in tables:
        for column, _ in table_columns(target, table):
            sequence = target.execute(
                "SELECT pg_get_serial_sequence(%s, %s)", (quote(table), column)
            )[0][0]
            if sequence:
                target.execute(
                    f"SELECT setval(%s, COALESCE((SELECT MAX({quote(column)}) FROM"
                    f" {quote(table)}), 1), (SELECT COUNT(*) > 0 FROM {quote(table)}))",
                    (sequence,),
                )


def transfer_database(
    source_url: str, target_url: str, *, root: Path = Path("."), repo: Path = Path(".")
) -> TransferResult:
    """Copy a database into an empty one, of the same or the other engine, and verify it.

    The target's schema comes from the migrations in `repo` for the target's
    engine, up to the versions that the source's history lists. Its history
    rows are the runner's own, because a per-engine migration has its own
    checksum; every other table must match the source row for row.

    Raises:
        DatabaseToolError: the target is not empty, a source migration is
            missing from `repo`, a table differs in columns, or the copy does
            not match the source afterwards.
    """
    started = time.perf_counter()
    with (
        open_database(source_url, root) as source,
        open_database(target_url, root, create=True) as target,
    ):
        if list_tables(target):
            raise DatabaseToolError(
                f"target {display_name(target_url)} is not empty: it has tables"
                f" {', '.join(list_tables(target)[:5])}; transfer into a new database"
            )
        versions = (
            sorted(applied_migrations(source)) if HISTORY_TABLE in list_tables(source) else []
        )
        available = load_migrations(repo, target.engine)
        chosen = [m for m in available if m.version in versions]
        missing = sorted(set(versions) - {m.version for m in chosen})
        if missing:
            raise DatabaseToolError(
                f"the source has migration(s) {', '.join(missing)} applied that"
                f" {repo / 'migrations'} does not provide; pass --repo with the content"
                " the database came from"
            )
        run_migrations(target, chosen)
        target.execute("BEGIN")
        try:
            if set(list_tables(source)) & MANAGED_TABLES:
                ensure_tables(target)
            _create_catalog_tables(source, target)
            tables = [t for t in list_tables(source) if t != HISTORY_TABLE]
            unknown = sorted(set(tables) - set(list_tables(target)))
            if unknown:
                raise DatabaseToolError(
                    f"table(s) {', '.join(unknown)} of the source are not created by the"
                    " migrations; the source has tables outside the pipeline's schema"
                )
            keys = foreign_keys(source)
            order = dependency_order(tables, keys)
            # Data migrations already put rows into the new target; the source's rows
            # replace them, children cleared before their parents.
            for table in reversed(order):
                target.execute(f'DELETE FROM "{table}"')
            for table in order:
                _copy_table(source, target, table, keys)
            _reset_sequences(target, tables)
            target.execute("COMMIT")
        except BaseException:
            target.execute("ROLLBACK")
            raise
        comparison = compare_databases(source, target, skip=frozenset({HISTORY_TABLE}))
    if not comparison.equal:
        raise DatabaseToolError(
            f"transfer to {display_name(target_url)} does not match the source: "
            + "; ".join(comparison.differences[:5])
        )
    result = TransferResult(
        source=display_name(source_url),
        target=display_name(target_url),
        migrations=versions,
        tables=comparison.tables,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "transferred %s to %s: %d tables, %d rows",
        result.source,
        result.target,
        len(result.tables),
        result.rows,
    )
    return result
