"""Database connections by URL, the migration history table and the migration runner.

The runner is the one code path that the dry-run and `apply` share. For each
pending migration it:

1. splits the file into statements and rejects `PRAGMA foreign_keys`,
   `ignore_check_constraints` and `writable_schema`, `ATTACH`, `DETACH`,
   `VACUUM INTO`, and transaction control in a transactional migration;
2. runs `SAVEPOINT` (or `BEGIN`, see below), then the statements one by one
   (never `executescript`, which commits by itself);
3. checks deferred constraints (PostgreSQL: `SET CONSTRAINTS ALL IMMEDIATE`)
   and runs the foreign key check, because SQLite reports orphans only on request;
4. inserts the history row and runs `RELEASE SAVEPOINT` (or `COMMIT`), or rolls
   the migration back on any failure.

`apply_pending` sets the transaction boundaries: the pending migrations run as
savepoints of one transaction, and only a migration that `needs_own_transaction`
commits the work before it and runs in a transaction of its own (or in none).

Before running anything it also rejects `CREATE INDEX CONCURRENTLY` in a
transactional migration and ALTER TABLE forms that the SQLite library is too
old for. PostgreSQL sessions run with `lock_timeout` and `statement_timeout`,
and a statement that times out on a lock is reported with the sessions that
hold locks on its tables.

A migration marked `-- pipeline: no-transaction` runs statement by statement
in autocommit mode instead, and its `MigrationRun` has `transactional=False`.
A SQLite migration marked `-- pipeline: rebuild-tables` runs in a transaction
of its own with foreign key enforcement off, a foreign key check of every
table before COMMIT, and enforcement on again afterwards.
Before each migration the runner sets the session settings (PostgreSQL
timeouts, SQLite foreign keys) to the configured values again, so a `SET`
in one migration does not carry over into the next.

Supported URLs: `sqlite:///relative/path` (taken from the repository root),
`sqlite:////absolute/path` and `postgresql://user@host:port/database`.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline import sqlite_schema
from pipeline.config import SampleDatabase
from pipeline.errors import ConfigError, MigrationError, ValidationError
from pipeline.findings import Finding
from pipeline.migrations import (
    CONCURRENTLY_MESSAGE,
    NAME_CHARACTERS,
    NO_TRANSACTION_MARK,
    REBUILD_TABLES_MARK,
    Migration,
    MigrationFileError,
    Statement,
    concurrent_operation,
    query_parameters,
    rejected_statement,
    replace_parameters,
    split_statements,
    sqlite_version_problem,
)
from pipeline.sqlite_interrupt import interruptible

logger = logging.getLogger(__name__)

HISTORY_TABLE = "pipeline_migrations"
_HISTORY_DDL = (
    f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} ("
    " version TEXT PRIMARY KEY,"
    " checksum TEXT NOT NULL,"
    " applied_at TEXT NOT NULL,"
    " duration_ms INTEGER NOT NULL,"
    " bundle_version TEXT)"
)
_TRANSACTION_CONTROL = re.compile(
    r"^(?:BEGIN|COMMIT|END|START\s+TRANSACTION|ROLLBACK(?!\s+(?:TRANSACTION\s+)?TO\b))\b",
    re.IGNORECASE,
)
_QUERY_START = re.compile(r"^(?:SELECT|WITH)\b", re.IGNORECASE)

Row = tuple[Any, ...]
Parameters = Sequence[Any] | Mapping[str, Any]


@dataclass(frozen=True)
class MigrationRun:
    """One migration the runner applied, with its wall-clock duration in seconds."""

    version: str
    path: str
    seconds: float
    transactional: bool


@dataclass
class RunResult:
    """The migrations applied to one database and the integrity findings afterwards."""

    applied: list[MigrationRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # The tables the checks after the migrations covered; None for the whole database.
    checked_tables: list[str] | None = None


class StatementError(MigrationError):
    """A migration statement failed: the file, the statement's line and the database's message."""

    def __init__(self, message: str, path: str, line: int, database_message: str) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.database_message = database_message


class Database(abc.ABC):
    """An open connection in autocommit mode; transactions are started explicitly."""

    engine: str
    placeholder: str
    errors: tuple[type[Exception], ...]

    def __init__(self, url: str) -> None:
        self.url = url
        # The name in messages; a dry-run sets it to the sample that a throwaway copy was made of.
        self.label = display_name(url)

    @property
    @abc.abstractmethod
    def engine_version(self) -> str:
        """The server or library version, such as `3.40.1`."""

    @abc.abstractmethod
    def execute(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        """Run one statement and return its rows (an empty list when it returns none)."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters."""

    @abc.abstractmethod
    def foreign_key_violations(self, tables: Collection[str] | None = None) -> list[str]:
        """Describe every row whose foreign key has no parent row.

        `tables` limits the search to those tables and the tables whose foreign
        keys reference them; None searches every table.
        """

    @abc.abstractmethod
    def foreign_key_parents(self) -> dict[str, set[str]]:
        """Return {table: the tables its foreign keys reference}, every name in lower case."""

    @abc.abstractmethod
    def integrity_problems(self, tables: Collection[str] | None = None) -> list[str]:
        """Describe every problem of the engine's own integrity check.

        `tables` limits the check to those tables and their indexes where the
        engine can; None checks the whole database.
        """

    def schema_problems(self) -> list[str]:
        """Describe every table and view on which a statement does not compile.

        Runs on the whole schema, and reads no rows. Only SQLite has such a
        check (pipeline.sqlite_schema); PostgreSQL checks a foreign key's
        parent key, a view and a dropped object's dependents when the DDL runs.
        """
        return []

    def schema_objects(self) -> dict[str, str] | None:
        """Return the schema's objects (`sqlite_schema.schema_objects`); None for PostgreSQL."""
        return None

    def schema_problems_since(
        self, before: Mapping[str, str] | None, created: Collection[str] = ()
    ) -> list[str]:
        """Run the schema check on what changed since `before`, a `schema_objects` result.

        A caller passes the objects of a schema whose problems it has reported
        already. Those of the objects that did not change, and of the tables
        and views that use none of the changed ones, are not described again.
        None checks the whole schema. `created` names tables the caller
        created since `before` with its own plain DDL (see
        `sqlite_schema.probe_targets`).
        """
        return self.schema_problems()

    @abc.abstractmethod
    def _explain(self, sql: str, names: Sequence[str]) -> None:
        """Compile `sql` with every named parameter set to NULL, without fetching its rows."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""

    @property
    @abc.abstractmethod
    def in_transaction(self) -> bool:
        """True while a transaction is open on the connection."""

    # True when the engine checks every foreign key at each statement, so the
    # per-migration orphan search can be left to the final integrity check.
    enforces_foreign_keys = False

    def describe_error(self, error: Exception) -> str:
        """Return the database's own text of an error."""
        return str(error)

    def error_hint(self, error: Exception, statement: str) -> str:
        """Return what an operator should know about a failed statement, or an empty string."""
        return ""

    def check_deferred_constraints(self) -> None:
        """Check deferred constraints now instead of at COMMIT (a no-op where COMMIT suffices)."""
        return None

    def writes_checked(self) -> bool:
        """Tell whether the engine checked every write of the open transaction against every key.

        True means a foreign key scan can find no violation that those writes
        made, so a caller may leave the scan out. The default is False.
        """
        return False

    def reset_session(self) -> None:
        """Set the configured session settings again, undoing what a migration changed."""
        return None

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        """Insert many rows into `table`; the fastest way the engine offers."""
        marks = ", ".join([self.placeholder] * len(columns))
        self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    @abc.abstractmethod
    def tables(self) -> list[str]:
        """Return the names of the application's tables, sorted."""

    def explain_query(self, sql: str, parameters: Sequence[str] | None = None) -> None:
        """Run EXPLAIN on a single SELECT with each `:name` parameter bound to NULL.

        A query that uses a missing table or column fails here without reading rows.
        `parameters` defaults to the placeholders found in the query.

        Raises:
            ValidationError: the query is not a single SELECT or does not compile.
        """
        try:
            statements = split_statements(sql, self.engine)
        except MigrationError as exc:
            raise ValidationError(f"query cannot be parsed: {exc}") from exc
        if len(statements) != 1 or not _QUERY_START.match(statements[0].sql):
            raise ValidationError(
                f"expected a single SELECT statement, found {len(statements)} statement(s)"
                + (f" starting with {statements[0].sql.split(None, 1)[0]!r}" if statements else "")
            )
        names = list(parameters) if parameters is not None else query_parameters(sql, self.engine)
        try:
            self._explain(statements[0].sql, names)
        except self.errors as exc:
            raise ValidationError(
                f"query does not compile against the {self.engine} schema:"
                f" {self.describe_error(exc)}"
            ) from exc

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SQLiteDatabase(Database):
    """A SQLite file opened with foreign keys on and no implicit transactions."""

    engine = "sqlite"
    placeholder = "?"
    errors = (sqlite3.Error,)

    def __init__(self, url: str, path: Path, *, create: bool, lock_timeout_ms: int) -> None:
        super().__init__(url)
        self.path = path
        mode = "rwc" if create else "rw"
        if not create and not path.is_file():
            raise MigrationError(f"SQLite database {path} not found; check the URL {url!r}")
        try:
            self.connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode={mode}",
                uri=True,
                isolation_level=None,
                timeout=lock_timeout_ms / 1000,
            )
        except sqlite3.Error as exc:
            raise MigrationError(f"cannot open SQLite database {path}: {exc}") from exc
        # Must run before any transaction: inside one, SQLite ignores it.
        self.reset_session()

    @property
    def engine_version(self) -> str:
        return sqlite3.sqlite_version

    def execute(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        return self.connection.execute(sql, parameters).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.connection.executemany(sql, rows)

    def reset_session(self) -> None:
        # SQLite ignores foreign_keys inside a transaction, so there the first
        # line does nothing. ignore_check_constraints takes effect anywhere.
        self.connection.execute("PRAGMA foreign_keys=ON")
        self.connection.execute("PRAGMA ignore_check_constraints=OFF")

    def immediate_foreign_keys(self) -> bool:
        """Tell whether every write is checked against every foreign key as it runs.

        True when enforcement is on, `defer_foreign_keys` is off and no table
        declares a key DEFERRABLE INITIALLY DEFERRED. A write that breaks a key
        then fails at once, so no later scan can find a violation it made.
        """
        if not self.execute("PRAGMA foreign_keys")[0][0]:
            return False
        if self.execute("PRAGMA defer_foreign_keys")[0][0]:
            return False
        rows = self.execute("SELECT sql FROM sqlite_master WHERE type = 'table'")
        return not any(_INITIALLY_DEFERRED.search(str(row[0] or "")) for row in rows)

    def writes_checked(self) -> bool:
        return self.immediate_foreign_keys()

    def tables(self) -> list[str]:
        rows = self.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
        return [str(row[0]) for row in rows]

    def foreign_key_parents(self) -> dict[str, set[str]]:
        graph = sqlite_schema.foreign_key_graph(self.connection)
        return {table: keys.parents for table, keys in graph.items()}

    def foreign_key_violations(self, tables: Collection[str] | None = None) -> list[str]:
        # SQLite foreign keys have no names, so a key is named by its columns.
        # The rows are grouped per key, and a few rowids are shown.
        # One table at a time, because a foreign key mismatch stops the check
        # of the table it is on, and the other tables still need theirs.
        wanted = None if tables is None else {table.lower() for table in tables}
        graph = sqlite_schema.foreign_key_graph(self.connection) if wanted is not None else {}
        checked = [
            table
            for table in self.tables()
            if wanted is None
            or table.lower() in wanted
            or graph.get(table.lower(), sqlite_schema.ForeignKeys()).parents & wanted
        ]
        violations = []
        orphans: dict[tuple[str, int, str], list[int]] = {}
        for checked_table in checked:
            try:
                rows = self.execute(f'PRAGMA foreign_key_check("{checked_table}")')
            except sqlite3.Error as exc:
                violations.append(
                    sqlite_schema.describe_mismatch(self.connection, str(exc))
                    or f"table {checked_table}: the foreign key check failed: {exc}"
                )
                continue
            for table, rowid, parent, key_id in rows:
                orphans.setdefault((table, key_id, parent), []).append(rowid)
        for (table, key_id, parent), rowids in orphans.items():
            pairs = [
                (str(row[3]), str(row[4] or "rowid"))
                for row in self.execute(f'PRAGMA foreign_key_list("{table}")')
                if row[0] == key_id
            ]
            child_columns = ", ".join(pair[0] for pair in pairs) or "?"
            parent_columns = ", ".join(pair[1] for pair in pairs) or "?"
            shown = ", ".join(str(rowid) for rowid in rowids[:5])
            more = f" and {len(rowids) - 5} more" if len(rowids) > 5 else ""
            violations.append(
                f"table {table} foreign key ({child_columns}) -> {parent}({parent_columns}):"
                f" {len(rowids)} row(s) have no matching row in parent table {parent},"
                f" rowid {shown}{more}"
            )
        return violations

    def integrity_problems(self, tables: Collection[str] | None = None) -> list[str]:
        if tables is None or sqlite3.sqlite_version_info < (3, 33, 0):
            checks = ["PRAGMA integrity_check"]
        else:
            # A table argument to integrity_check needs SQLite 3.33.0 or newer.
            requested = {table.lower() for table in tables}
            checks = [
                f'PRAGMA integrity_check("{table}")'
                for table in self.tables()
                if table.lower() in requested
            ]
        problems = []
        for check in checks:
            try:
                rows = [str(row[0]) for row in self.execute(check)]
            except sqlite3.Error as exc:
                rows = [f"{check} failed: {exc}"]
            if rows != ["ok"]:
                problems.extend(rows)
        return problems

    def schema_problems(self) -> list[str]:
        return sqlite_schema.schema_problems(self.connection)

    def schema_objects(self) -> dict[str, str] | None:
        return sqlite_schema.schema_objects(self.connection)

    def schema_problems_since(
        self, before: Mapping[str, str] | None, created: Collection[str] = ()
    ) -> list[str]:
        targets = None
        if before is not None:
            after = sqlite_schema.schema_objects(self.connection)
            targets = sqlite_schema.probe_targets(self.connection, before, after, created)
        return sqlite_schema.schema_problems(self.connection, only=targets)

    def _explain(self, sql: str, names: Sequence[str]) -> None:
        sqlite_schema.explain(self.connection, sql, dict.fromkeys(names))

    def close(self) -> None:
        self.connection.close()

    @property
    def in_transaction(self) -> bool:
        try:
            return self.connection.in_transaction
        except sqlite3.ProgrammingError:
            # A closed connection has no transaction. A cleanup block that an interrupt
            # left suspended can run after the close.
            return False


class PostgresDatabase(Database):
    """A PostgreSQL connection through psycopg 3 in autocommit mode."""

    engine = "postgresql"
    placeholder = "%s"
    # Validated foreign keys are checked per statement; deferred ones at
    # `check_deferred_constraints`. NOT VALID ones are left to `check_integrity`.
    enforces_foreign_keys = True

    def __init__(self, url: str, *, lock_timeout_ms: int, statement_timeout_ms: int) -> None:
        super().__init__(url)
        import psycopg

        self.errors = (psycopg.Error,)
        self.conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
        self.lock_timeout_ms = int(lock_timeout_ms)
        self.statement_timeout_ms = int(statement_timeout_ms)
        try:
            self.connection = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise MigrationError(f"cannot connect to {redact_url(url)}: {exc}") from exc
        self.reset_session()

    def reset_session(self) -> None:
        self.connection.execute(f"SET lock_timeout = {self.lock_timeout_ms}")
        self.connection.execute(f"SET statement_timeout = {self.statement_timeout_ms}")

    @property
    def engine_version(self) -> str:
        return str(self.execute("SHOW server_version")[0][0])

    def execute(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        cursor = self.connection.execute(sql.encode("utf-8"), parameters or None)
        return list(cursor.fetchall()) if cursor.description else []

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(sql.encode("utf-8"), rows)

    def tables(self) -> list[str]:
        rows = self.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        )
        return [str(row[0]) for row in rows]

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        # COPY loads a million rows in seconds where executemany takes minutes.
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.connection.cursor() as cursor, cursor.copy(statement.encode("utf-8")) as copy:
            for row in rows:
                copy.write_row(row)

    def check_deferred_constraints(self) -> None:
        # Inside a savepoint that is rolled back afterwards: PostgreSQL then
        # restores each constraint's mode, so a later migration in the same
        # transaction still defers its checks. The checks run again at COMMIT.
        self.execute("SAVEPOINT pipeline_constraints")
        try:
            self.execute("SET CONSTRAINTS ALL IMMEDIATE")
        finally:
            self.execute("ROLLBACK TO SAVEPOINT pipeline_constraints")
            self.execute("RELEASE SAVEPOINT pipeline_constraints")

    def writes_checked(self) -> bool:
        """Tell whether every foreign key trigger fired and the deferred keys hold.

        PostgreSQL checks a foreign key in triggers: at the end of each
        statement, or at COMMIT for a deferred key. A trigger that is disabled,
        or set to fire only for replication, skips writes, and so does the
        session role `replica`. Otherwise `SET CONSTRAINTS ALL IMMEDIATE`
        runs the deferred checks now; a violation makes the result False.
        """
        if self.execute(_KEY_TRIGGERS_OFF_SQL)[0][0]:
            return False
        try:
            self.check_deferred_constraints()
        except self.errors:
            return False
        return True

    def foreign_key_parents(self) -> dict[str, set[str]]:
        parents: dict[str, set[str]] = {}
        for child, parent in self.execute(_FOREIGN_KEY_TABLES_SQL):
            parents.setdefault(str(child).lower(), set()).add(str(parent).lower())
        return parents

    def foreign_key_violations(self, tables: Collection[str] | None = None) -> list[str]:
        """Search every foreign key for child rows without a parent row.

        Validated keys cannot have such rows; a key added NOT VALID, or rows
        loaded with triggers disabled, can. Each finding gives the exact
        number of orphan rows and names the first five by the child table's
        primary key, or by ctid when the table has none.
        """
        violations = []
        wanted = None if tables is None else {table.lower() for table in tables}
        for key in self.execute(_FOREIGN_KEYS_SQL):
            name, child, parent, child_name, parent_name = key[:5]
            child_columns, parent_columns, primary_key = key[5:]
            # `tables` contains bare names, so they are compared with pg_class.relname.
            if wanted is not None and not {child_name.lower(), parent_name.lower()} & wanted:
                continue
            row_key = primary_key or ["ctid"]
            rows = self.execute(
                _orphans_sql(child, parent, child_columns, parent_columns, row_key)
            )
            if rows:
                violations.append(
                    _describe_orphans(
                        name, child, parent, child_columns, parent_columns, row_key, rows
                    )
                )
        return violations

    def integrity_problems(self, tables: Collection[str] | None = None) -> list[str]:
        """Validate every NOT VALID check and foreign key constraint, then roll back.

        `tables` is not used: the constraints left NOT VALID are few, and each
        one is validated whatever table it is on.

        NOTE: PostgreSQL has no counterpart of PRAGMA integrity_check without
        the amcheck extension, so pages and indexes themselves are not checked.
        """
        import psycopg

        problems = []
        for name, table in self.execute(_NOT_VALID_SQL):
            in_transaction = (
                self.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            )
            start, undo = (
                ("SAVEPOINT pipeline_validate", "ROLLBACK TO SAVEPOINT pipeline_validate")
                if in_transaction
                else ("BEGIN", "ROLLBACK")
            )
            self.execute(start)
            try:
                self.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
            except psycopg.Error as exc:
                problems.append(
                    f"table {table} constraint {name} (NOT VALID) fails validation:"
                    f" {self.describe_error(exc)}"
                )
            finally:
                self.execute(undo)
        return problems

    def describe_error(self, error: Exception) -> str:
        # The DETAIL line names what the primary message does not: the
        # duplicated key of a unique index, the objects that depend on a table.
        diag = getattr(error, "diag", None)
        primary = getattr(diag, "message_primary", None)
        if not primary:
            return str(error).strip()
        detail = getattr(diag, "message_detail", None)
        if not detail:
            return str(primary)
        return f"{primary} (DETAIL: {'; '.join(str(detail).splitlines())})"

    def error_hint(self, error: Exception, statement: str) -> str:
        state = getattr(error, "sqlstate", None)
        if state == "55P03":
            return self._lock_holders(statement)
        if state == "55P04":
            return (
                "; a new enum value cannot be used in the transaction that adds it, and the"
                " pending migrations share one transaction: add the value in a migration of"
                f" its own marked '{NO_TRANSACTION_MARK}', so it is committed before a later"
                " migration uses it"
            )
        if state == "57014":
            return (
                f"; statement_timeout ({self.statement_timeout_ms} ms) cancelled the"
                " statement; raise statement_timeout_ms in [tool.pipeline] if it is expected"
                " to take longer"
            )
        return ""

    def _lock_holders(self, statement: str) -> str:
        """Name the other sessions that hold locks on the tables of `statement`."""
        import psycopg

        own = self.connection.info.backend_pid
        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as probe:
                rows = probe.execute(_LOCK_HOLDERS_SQL, (own,)).fetchall()
        except psycopg.Error as exc:
            logger.debug("cannot list the lock holders: %s", exc)
            rows = []
        words = set(re.findall(r"\w+", statement.lower()))
        named = [row for row in rows if str(row[0]).lower() in words] or rows
        holders = "; ".join(
            f"table {table} is locked in {mode} by process {pid} ({state}: {query!r})"
            for table, mode, pid, state, query in named[:5]
        )
        where = f": {holders}" if holders else ""
        return (
            f"; no lock was granted within lock_timeout ({self.lock_timeout_ms} ms){where};"
            " wait for that session to finish, or end it, and run again"
        )

    def _explain(self, sql: str, names: Sequence[str]) -> None:
        # Literal NULLs in place of parameters: a bound NULL parameter of unknown
        # type can fail to compile where the query itself is fine.
        literal = replace_parameters(sql, self.engine, "NULL").replace("%", "%%")
        self.execute(f"EXPLAIN {literal}")

    def close(self) -> None:
        self.connection.close()

    @property
    def in_transaction(self) -> bool:
        import psycopg

        return self.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


# Names come quoted where needed: tables by regclass, columns and constraints by
# quote_ident. The bare relname is there for comparison with a list of tables.
_FOREIGN_KEYS_SQL = """
SELECT quote_ident(con.conname), con.conrelid::regclass::text, con.confrelid::regclass::text,
    (SELECT relname FROM pg_class WHERE oid = con.conrelid),
    (SELECT relname FROM pg_class WHERE oid = con.confrelid),
    ARRAY(SELECT quote_ident(a.attname) FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i)
          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
    ARRAY(SELECT quote_ident(a.attname) FROM unnest(con.confkey) WITH ORDINALITY AS k(n, i)
          JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
    ARRAY(SELECT quote_ident(a.attname)
          FROM pg_constraint pk, unnest(pk.conkey) WITH ORDINALITY AS k(n, i)
          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
          WHERE pk.conrelid = con.conrelid AND pk.contype = 'p' ORDER BY k.i)
FROM pg_constraint con JOIN pg_namespace ns ON ns.oid = con.connamespace
WHERE con.contype = 'f' AND ns.nspname = current_schema()
ORDER BY 2, 1
"""
_FOREIGN_KEY_TABLES_SQL = """
SELECT child.relname, parent.relname
FROM pg_constraint con
JOIN pg_namespace ns ON ns.oid = con.connamespace
JOIN pg_class child ON child.oid = con.conrelid
JOIN pg_class parent ON parent.oid = con.confrelid
WHERE con.contype = 'f' AND ns.nspname = current_schema()
"""
# True when some foreign key trigger of the schema does not fire in this session.
_KEY_TRIGGERS_OFF_SQL = """
SELECT current_setting('session_replication_role') = 'replica' OR EXISTS (
    SELECT 1 FROM pg_trigger t
    JOIN pg_constraint con ON con.oid = t.tgconstraint
    JOIN pg_namespace ns ON ns.oid = con.connamespace
    WHERE con.contype = 'f' AND ns.nspname = current_schema() AND t.tgenabled IN ('D', 'R')
)
"""
_NOT_VALID_SQL = """
SELECT quote_ident(con.conname), con.conrelid::regclass::text
FROM pg_constraint con JOIN pg_namespace ns ON ns.oid = con.connamespace
WHERE NOT con.convalidated AND con.contype IN ('c', 'f') AND ns.nspname = current_schema()
ORDER BY 2, 1
"""
_LOCK_HOLDERS_SQL = """
SELECT DISTINCT c.relname, l.mode, l.pid, a.state, left(a.query, 80)
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> %s AND l.pid <> pg_backend_pid()
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND c.relkind IN ('r', 'p')
ORDER BY c.relname, l.pid
"""


# The maximum number of orphan rows a finding names. Its count covers all of them.
_ORPHANS_SHOWN = 5


def _orphans_sql(
    child: str,
    parent: str,
    columns: Sequence[str],
    parents: Sequence[str],
    row_key: Sequence[str],
) -> str:
    """Return a query for the first orphan rows of a foreign key, ordered by `row_key`.

    Each result row has the `row_key` values, then the foreign key values, as
    text, and last the number of all orphan rows. The names must be quoted
    identifiers from the system catalogs. A row with a NULL in its key is no
    orphan, as MATCH SIMPLE has it.

    NOTE: a MATCH FULL key's rows with some key columns NULL are not found
    here; the validation in `integrity_problems` reports them.
    """
    present = " AND ".join(f"c.{column} IS NOT NULL" for column in columns)
    match = " AND ".join(f"p.{p} = c.{c}" for c, p in zip(columns, parents, strict=True))
    values = ", ".join(f"c.{column}::text" for column in [*row_key, *columns])
    order = ", ".join(f"c.{column}" for column in row_key)
    # The window count is taken over every orphan row before LIMIT applies.
    return (
        f"SELECT {values}, count(*) OVER () FROM {child} AS c"
        f" WHERE {present} AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {match})"
        f" ORDER BY {order} LIMIT {_ORPHANS_SHOWN}"
    )


def _describe_orphans(
    name: str,
    child: str,
    parent: str,
    columns: Sequence[str],
    parents: Sequence[str],
    row_key: Sequence[str],
    rows: Sequence[Row],
) -> str:
    """Describe the orphan rows of one foreign key from the rows of `_orphans_sql`."""
    total = int(rows[0][-1])
    described = []
    for row in rows:
        key_values = ", ".join(row[: len(row_key)])
        values = ", ".join(row[len(row_key) : -1])
        where = (
            f"ctid {key_values}"
            if list(row_key) == ["ctid"]
            else f"({', '.join(row_key)})=({key_values})"
        )
        described.append(f"row {where} has key ({', '.join(columns)})=({values})")
    if total > len(rows):
        described.append(f"and {total - len(rows)} more row(s)")
    return (
        f"table {child} constraint {name}: {total} row(s) have no matching row in parent"
        f" table {parent}({', '.join(parents)}): {'; '.join(described)}"
    )


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by `***`, for messages and logs."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def display_name(url: str) -> str:
    """Return a short name of a database URL: the file name or the database name."""
    return redact_url(url).rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]


def interruptible_statements(db: Database) -> contextlib.AbstractContextManager[None]:
    """Let Ctrl+C stop the statement a SQLite `db` runs (`pipeline.sqlite_interrupt`).

    psycopg waits for a PostgreSQL statement in Python code, so Ctrl+C
    reaches it without this.
    """
    if isinstance(db, SQLiteDatabase):
        return interruptible(db.connection)
    return contextlib.nullcontext()


def open_database(
    url: str,
    root: Path,
    *,
    create: bool = False,
    lock_timeout_ms: int = 5000,
    statement_timeout_ms: int = 600_000,
) -> Database:
    """Open a database by URL; a relative SQLite path is taken from `root`.

    `create` allows a new SQLite file; otherwise a missing file is an error.
    `lock_timeout_ms` is how long to wait for a lock, `statement_timeout_ms`
    caps one PostgreSQL statement.

    Raises:
        ConfigError: the URL names an unsupported engine or is malformed.
        MigrationError: the database cannot be opened.
    """
    engine = SampleDatabase(url).engine
    if engine == "sqlite":
        path = SampleDatabase(url).sqlite_path(root)
        return SQLiteDatabase(url, path, create=create, lock_timeout_ms=lock_timeout_ms)
    if engine in ("postgresql", "postgres"):
        return PostgresDatabase(
            url, lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=statement_timeout_ms
        )
    raise ConfigError(
        f"unsupported database URL {redact_url(url)!r}: expected sqlite:///PATH"
        " or postgresql://USER@HOST:PORT/DATABASE"
    )


# -- history -----------------------------------------------------------------------------------


def ensure_history(db: Database) -> None:
    """Create the history table when it is missing."""
    db.execute(_HISTORY_DDL)


def applied_migrations(db: Database) -> dict[str, str]:
    """Return the checksum of every applied migration by version."""
    rows = db.execute(f"SELECT version, checksum FROM {HISTORY_TABLE} ORDER BY version")
    return {str(version): str(checksum) for version, checksum in rows}


def pending_migrations(db: Database, migrations: Sequence[Migration]) -> list[Migration]:
    """Return the migrations whose version is not in the history table, in order.

    Raises:
        MigrationError: an applied migration's file changed since, or the database
            has a version that no migration file provides.
    """
    applied = applied_migrations(db)
    known = {m.version for m in migrations}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise MigrationError(
            f"{db.label} has migration(s) {', '.join(unknown)} applied that no file"
            " in migrations/ provides; the database is newer than this content"
        )
    pending = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} was modified after it was applied:"
                f" database has {recorded}, file has {migration.checksum};"
                " restore the applied text and put the change in a new migration"
            )
    return pending


# -- runner ------------------------------------------------------------------------------------


def migration_statements(migration: Migration, dialect: str) -> list[Statement]:
    """Split a migration and reject what the runner must not run.

    Raises:
        MigrationFileError: the file does not split, contains a statement that
            `rejected_statement` names, controls its own transaction or runs
            `... CONCURRENTLY` without the no-transaction mark, or needs a newer
            SQLite library than this one.
    """
    try:
        statements = split_statements(migration.text, dialect)
    except MigrationError as exc:
        raise MigrationFileError(str(exc), migration.path) from exc
    for statement in statements:
        problem = _statement_problem(migration, statement, dialect)
        if problem:
            raise MigrationFileError(problem, migration.path, statement.line)
    return statements


def _statement_problem(migration: Migration, statement: Statement, dialect: str) -> str | None:
    """Return why the runner must not run `statement` of `migration`, or None."""
    rejected = rejected_statement(statement, dialect)
    if rejected:
        return rejected
    if migration.transactional and _TRANSACTION_CONTROL.match(statement.sql):
        return (
            f"transaction control ({statement.sql.split(None, 1)[0].upper()}) is not"
            " allowed, because the runner wraps each migration in one transaction;"
            " remove it, or mark the file '-- pipeline: no-transaction'"
        )
    operation = concurrent_operation(statement)
    if migration.transactional and operation:
        return CONCURRENTLY_MESSAGE.format(operation=operation)
    return sqlite_version_problem(statement) if dialect == "sqlite" else None


def _run_statement(db: Database, migration: Migration, statement: Statement) -> None:
    try:
        db.execute(statement.sql)
    except db.errors as exc:
        text = db.describe_error(exc) + db.error_hint(exc, statement.sql)
        raise StatementError(
            f"{migration.path}:{statement.line}: statement failed on {db.label}: {text}",
            migration.path,
            statement.line,
            text,
        ) from exc


def _record(db: Database, migration: Migration, seconds: float, bundle: str | None) -> None:
    marks = ", ".join([db.placeholder] * 5)
    db.execute(
        f"INSERT INTO {HISTORY_TABLE}"
        f" (version, checksum, applied_at, duration_ms, bundle_version) VALUES ({marks})",
        (
            migration.version,
            migration.checksum,
            datetime.now(UTC).isoformat(timespec="seconds"),
            round(seconds * 1000),
            bundle,
        ),
    )


_INITIALLY_DEFERRED = re.compile(r"\bINITIALLY\s+DEFERRED\b", re.IGNORECASE)
_NAME_PART = rf'(?:"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|[{NAME_CHARACTERS}]+)'
_TABLE_NAME = rf"{_NAME_PART}(?:\s*\.\s*{_NAME_PART})?"
_NAME_PARTS = re.compile(_NAME_PART)
_TOUCHES_TABLE = re.compile(
    r"^(?:ALTER\s+TABLE|(?:INSERT|REPLACE)(?:\s+OR\s+\w+)?\s+INTO|UPDATE(?:\s+OR\s+\w+)?"
    r"|DELETE\s+FROM|CREATE\s+(?:TEMP\w*\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?"
    rf"|DROP\s+TABLE(?:\s+IF\s+EXISTS)?)\s+({_TABLE_NAME})(?:\s+RENAME\s+TO\s+({_TABLE_NAME}))?",
    re.IGNORECASE,
)
_TOUCHES_NO_ROWS = re.compile(
    r"^(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|CREATE\s+VIEW|DROP\s+VIEW|SELECT|ANALYZE)\b",
    re.IGNORECASE,
)
# A new table made from a column list has no rows. SQLite checks an added
# column's constraints against every existing row: it rejects NOT NULL without
# a default, REFERENCES with a non-NULL default and UNIQUE, and since 3.37.0 it
# tests CHECK constraints. So neither statement can leave a row that breaks a constraint,
# except for the added columns that `_UNCHECKED_COLUMN` finds.
# SQLite does not check that a REFERENCES target is unique, so the schema check
# after the migrations (`Database.schema_problems`) covers that on every table.
_CHECKED_BY_ENGINE = re.compile(
    rf"^(?:CREATE\s+(?:TEMP\w*\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?\s+{_TABLE_NAME}\s*\("
    rf"|ALTER\s+TABLE\s+{_TABLE_NAME}\s+ADD\b)",
    re.IGNORECASE,
)
_ADD_COLUMN_CHECKED = sqlite3.sqlite_version_info >= (3, 37, 0)
# The added columns whose rows SQLite 3.40 does not check. It never tests the
# REFERENCES of a generated column (`AS`) against the rows. It does not test a
# non-NULL DEFAULT against the column type of a STRICT table, nor against a
# REFERENCES when foreign keys are off. The pattern also matches these words
# inside quotes and comments, which only makes a table checked needlessly.
_UNCHECKED_COLUMN = re.compile(
    rf"(?<![{NAME_CHARACTERS}])"
    rf"(?:AS|DEFAULT(?!\s*(?:NULL|\(\s*NULL\s*\))(?![{NAME_CHARACTERS}])))"
    rf"(?![{NAME_CHARACTERS}])",
    re.IGNORECASE,
)


def touched_tables(statements: Sequence[Statement]) -> set[str] | None:
    """Return the tables whose rows or definition the statements change unchecked.

    A new table made from a column list, and a column added with ALTER TABLE,
    do not count: the engine itself checks that no row breaks their
    constraints (an added column on SQLite 3.37.0 or newer). A generated
    column and a column with a non-NULL default count, because SQLite does not
    check those against the rows in every case (`_UNCHECKED_COLUMN`). None
    means that a statement has a form not recognized here (a trigger, a CTE,
    ...), so every table must be checked.
    """
    tables: set[str] = set()
    for statement in statements:
        checked = _CHECKED_BY_ENGINE.match(statement.sql)
        if checked and _checked_by_engine(statement.sql, checked):
            continue
        match = _TOUCHES_TABLE.match(statement.sql)
        if match:
            for name in match.groups():
                if name:
                    tables.add(_table_of(name))
        elif not _TOUCHES_NO_ROWS.match(statement.sql):
            return None
    return tables


def _checked_by_engine(sql: str, checked: re.Match[str]) -> bool:
    """Tell whether SQLite checks every existing row against the new table or column of `sql`."""
    if not checked.group(0).upper().startswith("ALTER"):
        return True
    return _ADD_COLUMN_CHECKED and not _UNCHECKED_COLUMN.search(sql, checked.end())


def _table_of(name: str) -> str:
    """Return the table of a `_TABLE_NAME` match, without its schema and quotes."""
    last: str = _NAME_PARTS.findall(name)[-1]
    if last[:1] in ('"', "`"):
        return last[1:-1].replace(last[0] * 2, last[0])
    if last[:1] == "[":
        return last[1:-1]
    return last


def _check_foreign_keys(db: Database, migration: Migration) -> None:
    if migration.transactional:
        try:
            db.check_deferred_constraints()
        except db.errors as exc:
            raise MigrationError(
                f"{migration.path}: a deferred constraint fails at the end of the migration"
                f" on {db.label}: {db.describe_error(exc)}"
            ) from exc
    if db.enforces_foreign_keys:
        return
    tables = touched_tables(split_statements(migration.text, db.engine))
    if migration.rebuilds_tables:
        tables = None
    logger.debug("%s: foreign key check on %s", migration.path, tables or "every table")
    violations = db.foreign_key_violations(tables)
    if violations:
        shown = "; ".join(violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        raise MigrationError(
            f"{migration.path}: foreign key check failed after the migration: {shown}{more}"
        )


def apply_migration(
    db: Database,
    migration: Migration,
    bundle_version: str | None = None,
    *,
    savepoint: bool = False,
    after_statement: Callable[[int], None] | None = None,
) -> MigrationRun:
    """Apply one migration and record it in the history table.

    With `savepoint`, a transactional migration runs inside the caller's open
    transaction as a SAVEPOINT, so the caller decides when it commits.
    `after_statement` is called with each statement's index once it has run.

    Raises:
        StatementError: a statement failed; a transactional migration is rolled back.
        MigrationError: the file is rejected or the foreign key check failed.
    """
    statements = migration_statements(migration, db.engine)
    foreign_keys_off = _prepare_session(db, migration, savepoint=savepoint)
    started = time.perf_counter()
    if not migration.transactional:
        logger.info("applying %s statement by statement without a transaction", migration.path)
        for index, statement in enumerate(statements):
            _run_statement(db, migration, statement)
            if after_statement is not None:
                after_statement(index)
        _check_foreign_keys(db, migration)
        seconds = time.perf_counter() - started
        _record(db, migration, seconds, bundle_version)
        return MigrationRun(migration.version, migration.path, seconds, transactional=False)

    logger.info("applying %s", migration.path)
    if savepoint:
        return _apply_in_savepoint(
            db, migration, statements, started, bundle_version, after_statement
        )
    try:
        db.execute("BEGIN")
        for index, statement in enumerate(statements):
            _run_statement(db, migration, statement)
            if after_statement is not None:
                after_statement(index)
        _check_foreign_keys(db, migration)
        seconds = time.perf_counter() - started
        _record(db, migration, seconds, bundle_version)
        commit(db, migration.path)
    except BaseException:
        _rollback(db)
        raise
    finally:
        if foreign_keys_off:
            # Outside the transaction again, where SQLite accepts the pragma.
            db.reset_session()
    return MigrationRun(migration.version, migration.path, seconds, transactional=True)


def _prepare_session(db: Database, migration: Migration, *, savepoint: bool) -> bool:
    """Undo the session settings of the previous migration; switch foreign keys off to rebuild.

    SQLite counts the child rows of a dropped referenced table as a deferred
    violation that renaming the new table into its place does not undo, so a
    rebuild (create new, copy, drop, rename) fails at COMMIT even with
    `PRAGMA defer_foreign_keys`. A migration marked `-- pipeline: rebuild-tables`
    therefore runs with foreign key enforcement off, as SQLite's documented
    ALTER TABLE procedure does, and `_check_foreign_keys` searches every table
    before COMMIT. `apply_migration` switches enforcement on again afterwards.

    Returns:
        True when foreign key enforcement was switched off.

    Raises:
        MigrationError: a rebuild on SQLite inside the caller's transaction, where
            the pragma has no effect.
    """
    db.reset_session()
    if not (migration.rebuilds_tables and db.engine == "sqlite"):
        return False
    if savepoint or not migration.transactional:
        raise MigrationError(
            f"{migration.path}: a migration marked '{REBUILD_TABLES_MARK}' must run in a"
            " transaction of its own on SQLite, because foreign keys can be switched off only"
            " between transactions; remove the mark, or apply the migration on its own"
        )
    logger.debug("%s: foreign keys off for a table rebuild", migration.path)
    db.execute("PRAGMA foreign_keys=OFF")
    return True


def _apply_in_savepoint(
    db: Database,
    migration: Migration,
    statements: Sequence[Statement],
    started: float,
    bundle_version: str | None,
    after_statement: Callable[[int], None] | None = None,
) -> MigrationRun:
    db.execute("SAVEPOINT pipeline_migration")
    try:
        for index, statement in enumerate(statements):
            _run_statement(db, migration, statement)
            if after_statement is not None:
                after_statement(index)
        _check_foreign_keys(db, migration)
        seconds = time.perf_counter() - started
        _record(db, migration, seconds, bundle_version)
    except BaseException:
        undo_savepoint(db, "pipeline_migration")
        raise
    db.execute("RELEASE SAVEPOINT pipeline_migration")
    return MigrationRun(migration.version, migration.path, seconds, transactional=True)


def undo_savepoint(db: Database, name: str) -> None:
    """Roll back to savepoint `name` and release it, unless the transaction has ended.

    After an interrupt, or SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY or SQLITE_NOMEM,
    SQLite may have rolled back the whole transaction, savepoint included. Rolling
    back to it then would raise "no such savepoint" in place of the real error.
    """
    if db.in_transaction:
        db.execute(f"ROLLBACK TO SAVEPOINT {name}")
        db.execute(f"RELEASE SAVEPOINT {name}")


def commit(db: Database, contents: str) -> None:
    """Run COMMIT. `contents` names the migrations of the transaction for the error message.

    Raises:
        MigrationError: the COMMIT failed; the transaction may still be open.
    """
    try:
        db.execute("COMMIT")
    except db.errors as exc:
        raise MigrationError(
            f"{contents}: COMMIT failed on {db.label}: {db.describe_error(exc)}"
            + _commit_hint(db, exc)
        ) from exc


def _commit_hint(db: Database, error: Exception) -> str:
    if db.engine != "sqlite" or "FOREIGN KEY" not in str(error):
        return ""
    return (
        "; PRAGMA foreign_key_check finds no orphan rows, so the failure is SQLite's count of"
        " deferred violations, which DROP TABLE of a referenced table raises and a later"
        f" RENAME does not lower; to rebuild a referenced table, mark the file"
        f" '{REBUILD_TABLES_MARK}' instead of using PRAGMA defer_foreign_keys"
    )


def _rollback(db: Database) -> None:
    try:
        db.execute("ROLLBACK")
    except db.errors as exc:
        # A failed COMMIT has already ended the transaction on PostgreSQL.
        logger.debug("ROLLBACK on %s: %s", db.label, exc)


def table_row_counts(db: Database) -> dict[str, int]:
    """Return the number of rows of every application table, by name."""
    counts = {}
    for table in db.tables():
        if table != HISTORY_TABLE:
            counts[table] = int(db.execute(f'SELECT count(*) FROM "{table}"')[0][0])
    return counts


def check_integrity(
    db: Database,
    tables: Collection[str] | None = None,
    *,
    foreign_keys: bool = True,
    schema: Sequence[str] | None = None,
) -> list[Finding]:
    """Run the schema, integrity and foreign key checks; return one finding per problem.

    `tables` limits the integrity and foreign key checks to those tables,
    their indexes and the tables whose foreign keys reference them; None
    checks the whole database. The schema check (`Database.schema_problems`)
    reads no rows and always covers every table and view. An error that a
    check itself raises is a finding too. Without `foreign_keys`, the
    foreign key check is left out, for a caller whose writes the engine
    checked as they ran. `schema` is the schema check's result when the
    caller has it already.
    """
    name = db.label
    if schema is None:
        schema = db.schema_problems()
    findings = [
        Finding(rule="database.schema", file=name, message=f"schema check: {problem}")
        for problem in schema
    ]
    findings.extend(
        Finding(rule="database.integrity", file=name, message=f"integrity check: {problem}")
        for problem in _run_check(db, db.integrity_problems, tables)
    )
    # A foreign key mismatch fails the foreign key check of its table with the
    # problem that the schema check has reported already.
    if not foreign_keys:
        return findings
    findings.extend(
        Finding(rule="database.foreign-key", file=name, message=f"foreign key check: {problem}")
        for problem in _run_check(db, db.foreign_key_violations, tables)
        if problem not in schema
    )
    return findings


def _run_check(
    db: Database,
    check: Callable[[Collection[str] | None], list[str]],
    tables: Collection[str] | None,
) -> list[str]:
    """Run one check; an error of the database is one more problem instead of an exception."""
    try:
        return check(tables)
    except db.errors as exc:
        return [f"the check failed: {db.describe_error(exc)}"]


def changed_tables(db: Database, migrations: Sequence[Migration]) -> set[str] | None:
    """Return the tables that `migrations` change unchecked, or None when that is not known.

    None when a migration rebuilds tables (it runs with foreign keys off) or
    has a statement that `touched_tables` does not recognize.
    """
    tables: set[str] = set()
    for migration in migrations:
        touched = touched_tables(migration_statements(migration, db.engine))
        if touched is None or migration.rebuilds_tables:
            return None
        tables |= touched
    return tables


def needs_own_transaction(migration: Migration, engine: str) -> bool:
    """Tell whether `migration` cannot run as a SAVEPOINT of a transaction shared with others.

    A no-transaction migration runs outside any transaction. On SQLite, a
    rebuild-tables migration needs foreign keys off, which SQLite allows only
    between transactions. PostgreSQL runs a rebuild-tables migration like any other.
    """
    return not migration.transactional or (migration.rebuilds_tables and engine == "sqlite")


class RunnerHooks:
    """Calls that `apply_pending` makes between its steps; each one does nothing here.

    `apply` overrides them to write its journal and to offer test pause points.
    """

    def before_commit(self) -> None:
        """Run before the open transaction is committed for a migration that runs on its own."""

    def after_commit(self) -> None:
        """Run once that COMMIT has succeeded."""

    def before_migration(self, migration: Migration) -> None:
        """Run before `migration` starts; the dry-run shows it on a progress line."""

    def after_statement(self, index: int) -> None:
        """Run after the statement at `index` of the current migration."""

    def after_migration(self, migration: Migration) -> None:
        """Run after `migration` has been applied and recorded."""


def apply_pending(
    db: Database,
    pending: Sequence[Migration],
    bundle_version: str | None,
    applied: list[MigrationRun],
    hooks: RunnerHooks | None = None,
) -> list[Migration]:
    """Apply `pending` in order, starting inside the caller's open transaction.

    These are the transaction boundaries that `apply` and the dry-run share.
    Each migration runs as a SAVEPOINT of the open transaction, except one
    that `needs_own_transaction`. Before such a migration the open transaction
    is committed. The migration then runs in a transaction of its own (or in
    none, when it is marked no-transaction), and BEGIN opens the next one.
    Each migration that was applied is appended to `applied`.

    Returns:
        The migrations in the transaction left open, which the caller ends
        with COMMIT or ROLLBACK. After an exception, `db.in_transaction` shows
        whether a transaction is open.

    Raises:
        StatementError: a statement failed; its migration is rolled back.
        MigrationError: a migration was rejected, its foreign key check failed,
            or a COMMIT failed. After a failed COMMIT, the migrations of that
            transaction are rolled back and removed from `applied`.
    """
    hooks = hooks or RunnerHooks()
    batch: list[Migration] = []
    for migration in pending:
        hooks.before_migration(migration)
        if not needs_own_transaction(migration, db.engine):
            run = apply_migration(
                db,
                migration,
                bundle_version,
                savepoint=True,
                after_statement=hooks.after_statement,
            )
            applied.append(run)
            batch.append(migration)
            hooks.after_migration(migration)
            continue
        hooks.before_commit()
        _commit_batch(db, batch, applied, describe_batch(batch, migration))
        hooks.after_commit()
        batch = []
        run = apply_migration(db, migration, bundle_version, after_statement=hooks.after_statement)
        applied.append(run)
        hooks.after_migration(migration)
        db.execute("BEGIN")
    return batch


def _commit_batch(
    db: Database, batch: Sequence[Migration], applied: list[MigrationRun], contents: str
) -> None:
    try:
        commit(db, contents)
    except BaseException:
        _rollback(db)
        del applied[len(applied) - len(batch) :]
        raise


def describe_batch(batch: Sequence[Migration], before: Migration | None = None) -> str:
    """Name the migrations of one transaction for a message about its COMMIT."""
    if batch:
        return ", ".join(migration.path for migration in batch)
    if before is not None:
        return f"the transaction before {before.path}"
    return "the transaction after the migrations"


def run_migrations(
    db: Database,
    migrations: Sequence[Migration],
    bundle_version: str | None = None,
    result: RunResult | None = None,
    *,
    checked_before: bool = False,
    hooks: RunnerHooks | None = None,
) -> RunResult:
    """Apply every pending migration in order, then run the integrity checks.

    `checked_before` tells that the database passed the full integrity and
    foreign key checks before the migrations. The checks afterwards then cover
    only the tables the migrations changed (`changed_tables`), when known,
    and the schema check only what the migrations changed in the schema.
    `hooks` are called between the steps, as `apply_pending` describes.

    The migrations run with the transaction boundaries of `apply_pending`.
    Stops at the first failing migration; the ones before it stay applied. A
    caller that passes `result` finds those in `result.applied` even after an
    exception.

    Raises:
        MigrationError: a migration was modified after it was applied, or failed.
    """
    # The objects whose schema check the sample passed; only changes are checked again.
    before = db.schema_objects() if checked_before else None
    ensure_history(db)
    pending = pending_migrations(db, migrations)
    logger.info("%s: %d of %d migration(s) pending", db.label, len(pending), len(migrations))
    result = RunResult() if result is None else result
    db.execute("BEGIN")
    try:
        batch = apply_pending(db, pending, bundle_version, result.applied, hooks)
    except MigrationError:
        _commit_before_failure(db)
        raise
    except BaseException:
        _rollback(db)
        raise
    _commit_batch(db, batch, result.applied, describe_batch(batch))
    db.reset_session()
    tables = changed_tables(db, pending) if checked_before else None
    # None: the checks cover the whole database, also after an earlier run on `result`.
    result.checked_tables = sorted(tables) if tables is not None else None
    if tables is not None:
        logger.info("%s: integrity checks of the changed tables %s", db.label, sorted(tables))
    schema = db.schema_problems_since(before)
    result.findings.extend(check_integrity(db, tables, schema=schema))
    return result


def _commit_before_failure(db: Database) -> None:
    """Commit the migrations that ran before a failed one in the same transaction.

    The failed migration was rolled back to its SAVEPOINT already, so the
    ones before it stay applied, as `run_migrations` promises.
    """
    if not db.in_transaction:
        return
    try:
        db.execute("COMMIT")
    except db.errors as exc:
        _rollback(db)
        logger.warning(
            "%s: the migrations before the failed one were rolled back too,"
            " because their COMMIT failed: %s",
            db.label,
            db.describe_error(exc),
        )
