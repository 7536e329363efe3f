"""Lint rules for migrations that would hurt a production database.

Each rule has an id, the reason it exists and the fix. A finding names the
migration file and the statement's line. An author who has weighed the risk
acknowledges one finding with a comment line above its statement:

    -- lint-ack index-without-concurrently: kbk_code is new, so the index is empty

The comment covers the first finding of that rule on a line after it, so a
file with two such findings needs two comments. A `--` line inside a string
literal is not a comment and acknowledges nothing. An acknowledged finding
stays in the reports as a warning that carries the reason. An acknowledgment
without a reason, or of an unknown rule, is an error.

`inv validate` lints without a database, so a table created by an earlier
migration counts as having rows and as large. The dry-run lints against the
row counts of each sample database before its pending migrations run.

Statements are matched with regular expressions over the comment-free text;
the patterns cover the ALTER TABLE, DROP TABLE and CREATE INDEX forms of
SQLite and PostgreSQL, not every SQL a file may contain.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp

from pipeline.config import Config, load_config
from pipeline.content import Kind, definition_path, list_items
from pipeline.errors import ConfigError, MigrationError
from pipeline.findings import Finding
from pipeline.migrations import (
    DIALECTS,
    NO_TRANSACTION_MARK,
    Migration,
    Statement,
    line_comments,
    load_migrations,
    replace_parameters,
    split_statements,
    strip_comments,
)

logger = logging.getLogger(__name__)

# A table with at least this many rows counts as large in a dry-run.
LARGE_TABLE_ROWS = 100_000


@dataclass(frozen=True)
class Rule:
    """A lint rule: its id, why the operation is dangerous and what to do instead."""

    id: str
    reason: str
    fix: str


RULES = {
    rule.id: rule
    for rule in (
        Rule(
            "not-null-without-default",
            "existing rows have no value for the column, so the statement fails on a table"
            " with rows, and PostgreSQL scans the whole table under an exclusive lock",
            "add the column as NULL, fill it, then add NOT NULL in a later migration,"
            " or give the column a DEFAULT",
        ),
        Rule(
            "drop-used-object",
            "a report or form query, or a catalog, still reads it, so it fails after the release",
            "change the report definitions and catalogs first, then drop or rename in a"
            " later release",
        ),
        Rule(
            "table-rewrite",
            "PostgreSQL rewrites every row and holds an ACCESS EXCLUSIVE lock until it is done,"
            " so reads and writes wait",
            "add a new column of the new type, copy the values in batches, then switch over",
        ),
        Rule(
            "index-without-concurrently",
            "CREATE INDEX without CONCURRENTLY blocks every write to the table while the"
            " index builds",
            f"use CREATE INDEX CONCURRENTLY in a migration marked '{NO_TRANSACTION_MARK}'",
        ),
        Rule(
            "session-timeout",
            "a SET or RESET without LOCAL changes the setting for the rest of the session,"
            " so the statements after this migration run with it",
            "use SET LOCAL inside the migration's transaction; in a migration marked"
            f" '{NO_TRANSACTION_MARK}', set the configured value again at its end",
        ),
        Rule(
            "missing-lock-timeout",
            "without lock_timeout a statement that waits for a lock queues every later"
            " query of the table behind it",
            "leave the runner's lock_timeout in force, or SET lock_timeout to a few seconds"
            " in the migration",
        ),
    )
}

_ACK = re.compile(r"^--\s*lint-ack\b[ \t]*(?P<rule>[\w-]*)(?P<rest>.*)$")
_NAME = r'(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[\w$]+)(?:\s*\.\s*(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[\w$]+))?'
_ALTER_TABLE = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?({_NAME})\s+(.*)$", re.I | re.S
)
_RENAME_TABLE = re.compile(r"^RENAME\s+TO\s+", re.I)
_ADD_COLUMN = re.compile(
    rf"^ADD\s+(COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})\s*(.*)$", re.I | re.S
)
_NOT_COLUMN = re.compile(r"^(?:CONSTRAINT|PRIMARY|UNIQUE|FOREIGN|CHECK|EXCLUDE)$", re.I)
_DROP_COLUMN = re.compile(rf"^DROP\s+(COLUMN\s+)?(?:IF\s+EXISTS\s+)?({_NAME})", re.I)
_RENAME_COLUMN = re.compile(rf"^RENAME\s+(?:COLUMN\s+)?({_NAME})\s+TO\s+", re.I)
_ALTER_TYPE = re.compile(rf"^ALTER\s+(?:COLUMN\s+)?({_NAME})\s+(?:SET\s+DATA\s+)?TYPE\s", re.I)
_SET_NOT_NULL = re.compile(rf"^ALTER\s+(?:COLUMN\s+)?({_NAME})\s+SET\s+NOT\s+NULL\b", re.I)
_DROP_TABLE = re.compile(
    r"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(.*?)(?:\s+(?:CASCADE|RESTRICT))?$", re.I | re.S
)
_CREATE_TABLE = re.compile(
    rf"^CREATE\s+(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})",
    re.I,
)
_CREATE_INDEX = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?:(?!ON\s){_NAME}\s+)?ON\s+(?:ONLY\s+)?({_NAME})",
    re.I,
)
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?({_NAME})", re.I)
_SET_LOCK_TIMEOUT = re.compile(
    r"^(?:SET\s+(SESSION\s+|LOCAL\s+)?lock_timeout\s*(?:=|\s+TO\s)\s*(.+)|RESET\s+lock_timeout)$",
    re.I | re.S,
)
_SESSION_TIMEOUT = re.compile(
    r"^(?:SET\s+(?:SESSION\s+)?|RESET\s+)(lock_timeout|statement_timeout)\b", re.I
)
_RENAME_TO = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}\s+RENAME\s+TO\s+({_NAME})", re.I
)


@dataclass(frozen=True)
class ReportQuery:
    """The `query` of one report or form definition."""

    code: str
    kind: Kind
    path: str
    sql: str


class UsedObjects:
    """Tables and columns that report queries and catalogs read, with who reads each.

    Made by `used_objects`, it parses the queries and catalog descriptions when
    a lint rule first reads `tables` or `columns`. Only a migration that drops
    or renames something needs them, and parsing hundreds of queries costs
    more than a small sample's whole dry-run.
    """

    def __init__(self, root: Path | None = None, queries: Sequence[ReportQuery] = ()) -> None:
        self._tables: dict[str, set[str]] = {}
        self._columns: dict[tuple[str, str], set[str]] = {}
        self._source = None if root is None else (root, tuple(queries))

    @property
    def tables(self) -> dict[str, set[str]]:
        """Table name -> the readers of that table."""
        self._load()
        return self._tables

    @property
    def columns(self) -> dict[tuple[str, str], set[str]]:
        """(table, column) -> the readers of that column."""
        self._load()
        return self._columns

    def add(self, user: str, table: str, columns: Iterable[str] = ()) -> None:
        self._tables.setdefault(table.lower(), set()).add(user)
        for column in columns:
            self._columns.setdefault((table.lower(), column.lower()), set()).add(user)

    def _load(self) -> None:
        if self._source is None:
            return
        root, queries = self._source
        self._source = None
        for query in queries:
            _add_query(self, query)
        for catalog_id in list_items(root, Kind.CATALOG):
            file = definition_path(root, Kind.CATALOG, catalog_id)
            try:
                document = json.loads(file.read_text(encoding="utf-8-sig"))
                columns = [str(column["name"]) for column in document.get("columns", [])]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                logger.debug("%s unreadable; the validate stage reports it", file)
                continue
            self.add(f"catalog {catalog_id}", catalog_id, columns)


@dataclass(frozen=True)
class LintContext:
    """Facts about the target database that the rules use.

    `row_counts` contains the rows of each table before the pending migrations,
    or is None without a database. `lock_timeout_ms` is the runner's session
    setting, None when the runner sets none.
    """

    dialect: str
    used: UsedObjects
    row_counts: Mapping[str, int] | None = None
    large_table_rows: int = LARGE_TABLE_ROWS
    lock_timeout_ms: int | None = None


def load_report_queries(root: Path) -> tuple[list[ReportQuery], list[Finding]]:
    """Read the `query` field of every report and form definition.

    A definition without a query is skipped; one that is not readable JSON
    gives a warning, because the validate stage reports it in full.
    """
    queries: list[ReportQuery] = []
    findings: list[Finding] = []
    for kind in (Kind.REPORT, Kind.FORM):
        for code in list_items(root, kind):
            file = definition_path(root, kind, code)
            path = file.relative_to(root).as_posix()
            try:
                document = json.loads(file.read_bytes().decode("utf-8").removeprefix("\ufeff"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                findings.append(
                    Finding(
                        rule="dry-run.query",
                        file=path,
                        message=f"{kind} {code}: query not checked, the file is not"
                        f" UTF-8 JSON: {exc}",
                        severity="warning",
                    )
                )
                continue
            sql = document.get("query") if isinstance(document, dict) else None
            if isinstance(sql, str) and sql.strip():
                queries.append(ReportQuery(code, kind, path, sql))
            else:
                logger.debug("%s has no query to check", path)
    return queries, findings


def used_objects(root: Path, queries: Sequence[ReportQuery]) -> UsedObjects:
    """Collect the tables and columns that report queries and catalogs read.

    A catalog is loaded into the table named by its id, so it reads that table
    and every column it declares. A column without a table qualifier counts
    for every table of its query. The work is done when the result is first read.
    """
    return UsedObjects(root, queries)


def _add_query(used: UsedObjects, query: ReportQuery) -> None:
    user = f"{query.kind} {query.code}"
    literal = replace_parameters(query.sql, "postgresql", "NULL")
    try:
        tree = sqlglot.parse_one(literal)
    except sqlglot.errors.ParseError as exc:
        logger.debug("%s: query not parsed for lint: %s", query.path, exc)
        return
    aliases: dict[str, str] = {}
    for node in tree.find_all(exp.Table):
        aliases[node.alias_or_name.lower()] = node.name.lower()
        used.add(user, node.name)
    tables = set(aliases.values())
    for column in tree.find_all(exp.Column):
        owner = aliases.get(column.table.lower()) if column.table else None
        for table in [owner] if owner else sorted(tables):
            used.add(user, table, [column.name])


def _bare_name(name: str) -> str:
    last = re.split(r"\s*\.\s*", name.strip())[-1]
    if last[:1] in '"`[':
        return last[1:-1]
    return last.lower()


def _split_actions(text: str) -> list[str]:
    """Split ALTER TABLE actions at commas outside parentheses and quotes."""
    actions: list[str] = []
    depth = 0
    quote = ""
    start = 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            actions.append(text[start:index].strip())
            start = index + 1
    actions.append(text[start:].strip())
    return [action for action in actions if action]


def _lock_timeout_value(value: str) -> int | None:
    """Return milliseconds of a SET lock_timeout value; None for 0 or DEFAULT."""
    text = value.strip().strip("'\"").strip().lower()
    match = re.fullmatch(r"(\d+)\s*(ms|s|min)?", text)
    if match is None:
        return None
    factor = {"ms": 1, "s": 1000, "min": 60_000, None: 1}[match.group(2)]
    milliseconds = int(match.group(1)) * factor
    return milliseconds or None


class _Linter:
    """Lint one migration's statements in order for one dialect."""

    def __init__(self, migration: Migration, context: LintContext) -> None:
        self.migration = migration
        self.context = context
        self.created: set[str] = set()
        # Tables that a RENAME TO in this migration puts back under their old
        # name, as in SQLite's rebuild: CREATE x_new, copy, DROP x, RENAME x_new TO x.
        self.recreated: set[str] = set()
        self.lock_timeout_ms = context.lock_timeout_ms
        self.findings: list[Finding] = []

    def has_rows(self, table: str) -> bool:
        if table in self.created:
            return False
        counts = self.context.row_counts
        return True if counts is None else counts.get(table, 0) > 0

    def size(self, table: str) -> str:
        counts = self.context.row_counts
        if counts is None:
            return "an existing table"
        return f"{counts.get(table, 0):,} rows"

    def is_large(self, table: str) -> bool:
        if table in self.created:
            return False
        counts = self.context.row_counts
        return True if counts is None else counts.get(table, 0) >= self.context.large_table_rows

    def report(self, rule: str, statement: Statement, message: str) -> None:
        self.findings.append(
            Finding(
                rule=f"lint.{rule}",
                file=self.migration.path,
                line=statement.line,
                message=f"{message}: {RULES[rule].reason}; {RULES[rule].fix}, or acknowledge"
                f" it with '-- lint-ack {rule}: REASON'",
            )
        )

    def lint(self, statements: Sequence[Statement]) -> list[Finding]:
        texts = [
            " ".join(strip_comments(statement.sql, self.context.dialect).split())
            for statement in statements
        ]
        for text in texts:
            if match := _RENAME_TO.match(text):
                self.recreated.add(_bare_name(match.group(1)))
        for statement, text in zip(statements, texts, strict=True):
            self.statement(statement, text)
        return self.findings

    def statement(self, statement: Statement, text: str) -> None:
        postgresql = self.context.dialect == "postgresql"
        if postgresql and (match := _SESSION_TIMEOUT.match(text)):
            self.report(
                "session-timeout",
                statement,
                f"{text.split(None, 1)[0].upper()} {match.group(1).lower()} stays in force"
                " for the rest of the session",
            )
        if match := _SET_LOCK_TIMEOUT.match(text):
            self.set_lock_timeout(match)
            return
        if match := _CREATE_TABLE.match(text):
            self.created.add(_bare_name(match.group(1)))
            return
        table: str | None = None
        if match := _ALTER_TABLE.match(text):
            table = _bare_name(match.group(1))
            self.alter_table(statement, table, match.group(2))
        elif match := _DROP_TABLE.match(text):
            for name in _split_actions(match.group(1)):
                self.drop_table(statement, _bare_name(name), "drops")
            table = _bare_name(_split_actions(match.group(1))[0])
        elif match := _CREATE_INDEX.match(text):
            table = _bare_name(match.group(2))
            if postgresql and not match.group(1) and self.is_large(table):
                self.report(
                    "index-without-concurrently",
                    statement,
                    f"CREATE INDEX on {table} ({self.size(table)}) without CONCURRENTLY",
                )
        elif match := _TRUNCATE.match(text):
            table = _bare_name(match.group(1))
        if postgresql and table and table not in self.created and self.lock_timeout_ms is None:
            self.report(
                "missing-lock-timeout",
                statement,
                f"{text.split(None, 1)[0].upper()} locks {table} with no lock_timeout in force",
            )

    def set_lock_timeout(self, match: re.Match[str]) -> None:
        local = (match.group(1) or "").strip().upper() == "LOCAL"
        if local and not self.migration.transactional:
            # SET LOCAL outside a transaction block changes nothing.
            return
        self.lock_timeout_ms = _lock_timeout_value(match.group(2)) if match.group(2) else None

    def alter_table(self, statement: Statement, table: str, rest: str) -> None:
        if _RENAME_TABLE.match(rest):
            self.drop_table(statement, table, "renames")
            return
        postgresql = self.context.dialect == "postgresql"
        for action in _split_actions(rest):
            if (match := _ADD_COLUMN.match(action)) and (
                match.group(1) or not _NOT_COLUMN.match(match.group(2))
            ):
                definition = match.group(3).upper()
                if (
                    re.search(r"\bNOT\s+NULL\b", definition)
                    and not re.search(r"\b(?:DEFAULT|GENERATED)\b", definition)
                    and self.has_rows(table)
                ):
                    column = _bare_name(match.group(2))
                    self.report(
                        "not-null-without-default",
                        statement,
                        f"column {table}.{column} is added NOT NULL without a DEFAULT"
                        f" on {self.size(table)}",
                    )
            elif (match := _DROP_COLUMN.match(action)) and (
                match.group(1) or _bare_name(match.group(2)) not in ("constraint", "default")
            ):
                self.drop_column(statement, table, _bare_name(match.group(2)), "drops")
            elif match := _RENAME_COLUMN.match(action):
                if _bare_name(match.group(1)) != "constraint":
                    self.drop_column(statement, table, _bare_name(match.group(1)), "renames")
            elif (match := _ALTER_TYPE.match(action)) and postgresql and self.has_rows(table):
                self.report(
                    "table-rewrite",
                    statement,
                    f"changing the type of {table}.{_bare_name(match.group(1))}"
                    f" rewrites {self.size(table)}",
                )
            elif (match := _SET_NOT_NULL.match(action)) and postgresql and self.has_rows(table):
                self.report(
                    "not-null-without-default",
                    statement,
                    f"SET NOT NULL on {table}.{_bare_name(match.group(1))} scans"
                    f" {self.size(table)} and fails on any NULL",
                )

    def drop_table(self, statement: Statement, table: str, verb: str) -> None:
        users = self.context.used.tables.get(table)
        if verb == "drops" and table in self.recreated:
            # A dropped column of the new table fails the dry-run's report query check.
            logger.debug("%s: %s is rebuilt under its name", self.migration.path, table)
            return
        if users and table not in self.created:
            self.report(
                "drop-used-object",
                statement,
                f"the statement {verb} table {table}, which {', '.join(sorted(users))} read(s)",
            )

    def drop_column(self, statement: Statement, table: str, column: str, verb: str) -> None:
        users = self.context.used.columns.get((table, column))
        if users and table not in self.created:
            self.report(
                "drop-used-object",
                statement,
                f"the statement {verb} column {table}.{column}, which"
                f" {', '.join(sorted(users))} read(s)",
            )


def _acknowledge(migration: Migration, dialect: str, findings: list[Finding]) -> list[Finding]:
    """Turn acknowledged findings into warnings; report malformed or unused acknowledgments.

    Each `-- lint-ack RULE: REASON` comment covers the first finding of RULE on
    a later line that no earlier comment covers.
    """
    problems: list[Finding] = []
    reasons: dict[int, str] = {}
    for line, comment in line_comments(migration.text, dialect):
        match = _ACK.match(comment)
        if match is None:
            continue
        rule, rest = match["rule"], match["rest"].strip()
        if rule not in RULES:
            problems.append(
                Finding(
                    rule="lint.ack",
                    file=migration.path,
                    line=line,
                    message=f"expected a lint rule id after lint-ack, found {rule!r};"
                    f" known rules: {', '.join(RULES)}",
                )
            )
            continue
        if rest and not rest.startswith(":"):
            problems.append(
                Finding(
                    rule="lint.ack",
                    file=migration.path,
                    line=line,
                    message=f"expected ':' and a reason after lint-ack {rule}, found {rest!r};"
                    f" write '-- lint-ack {rule}: REASON'",
                )
            )
            continue
        reason = rest.removeprefix(":").strip()
        if not reason:
            problems.append(
                Finding(
                    rule="lint.ack",
                    file=migration.path,
                    line=line,
                    message=f"lint-ack {rule} has no reason; write '-- lint-ack {rule}: REASON'",
                )
            )
            continue
        covered = next(
            (
                index
                for index, finding in enumerate(findings)
                if finding.rule == f"lint.{rule}"
                and (finding.line or 0) > line
                and index not in reasons
            ),
            None,
        )
        if covered is None:
            # A portable file's acknowledgment may concern a rule of the other dialect.
            logger.debug("%s:%d: no %s finding after lint-ack", migration.path, line, rule)
        else:
            reasons[covered] = reason
    result: list[Finding] = []
    for index, finding in enumerate(findings):
        reason = reasons.get(index)
        if reason is None:
            result.append(finding)
        else:
            message = f"acknowledged ({reason}): {finding.message.split(': ', 1)[0]}"
            result.append(
                Finding(finding.rule, finding.file, message, finding.line, severity="warning")
            )
    return problems + result


def lint_migration(migration: Migration, context: LintContext) -> list[Finding]:
    """Lint one migration for one dialect; acknowledged findings become warnings.

    Raises:
        MigrationError: the file does not split into statements.
    """
    return lint_migrations([migration], context)


def lint_migrations(migrations: Sequence[Migration], context: LintContext) -> list[Finding]:
    """Lint migrations in order; a table created by one counts as empty for the later ones.

    Raises:
        MigrationError: a file does not split into statements.
    """
    findings: list[Finding] = []
    counts = dict(context.row_counts) if context.row_counts is not None else None
    for migration in migrations:
        current = dataclasses.replace(context, row_counts=counts)
        linter = _Linter(migration, current)
        findings.extend(
            _acknowledge(
                migration,
                current.dialect,
                linter.lint(split_statements(migration.text, current.dialect)),
            )
        )
        if counts is not None:
            for table in linter.created:
                counts.setdefault(table, 0)
    return findings


def lint_repository(root: Path) -> list[Finding]:
    """Lint every migration of a content tree for both dialects, without a database.

    Every table that a migration did not create itself counts as having rows
    and as large, because production tables do.
    """
    queries, _ = load_report_queries(root)
    used = used_objects(root, queries)
    findings: list[Finding] = []
    try:
        lock_timeout_ms = load_config(root).lock_timeout_ms
    except ConfigError as exc:
        # Validate loads no settings of its own, so the lint reports them. It goes on with
        # the default, so no finding blames the migrations for what the setting got wrong.
        pyproject = root / "pyproject.toml"
        message = str(exc).removeprefix(f"{pyproject}: ")
        findings.append(Finding(rule="config", file="pyproject.toml", message=message))
        lock_timeout_ms = Config(root).lock_timeout_ms
    for dialect in DIALECTS:
        try:
            migrations = load_migrations(root, dialect)
        except MigrationError as exc:
            logger.debug("lint skipped for %s: %s", dialect, exc)
            continue
        context = LintContext(dialect, used, lock_timeout_ms=lock_timeout_ms)
        for finding in lint_migrations(migrations, context):
            if finding not in findings:
                findings.append(finding)
    return findings
