"""Lint rules for dangerous migrations, their acknowledgment and the pre-run rejections."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline import migration_lint
from pipeline.database import HISTORY_TABLE, open_database, run_migrations
from pipeline.errors import MigrationError
from pipeline.migration_lint import (
    RULES,
    LintContext,
    ReportQuery,
    UsedObjects,
    lint_migrations,
    load_report_queries,
    used_objects,
)
from pipeline.migrations import check_migrations, load_migrations

BASELINE = """
CREATE TABLE organizations (id INTEGER PRIMARY KEY, bin TEXT NOT NULL, name_kk TEXT);
CREATE TABLE payment_documents (
    id INTEGER PRIMARY KEY,
    organization_id INTEGER REFERENCES organizations (id),
    amount BIGINT NOT NULL,
    purpose TEXT
);
"""


def write_content(root: Path, migrations: dict[str, str], query: str | None = None) -> Path:
    folder = root / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {"0001_base.sql": BASELINE, **migrations}.items():
        (folder / name).write_text(text, encoding="utf-8")
    if query:
        report = root / "packages" / "reports" / "payments"
        report.mkdir(parents=True)
        (report / "report.json").write_text(json.dumps({"code": "payments", "query": query}))
    return root


def lint(
    root: Path,
    dialect: str = "postgresql",
    counts: dict[str, int] | None = None,
    lock_timeout_ms: int | None = 5000,
) -> list[tuple[str, str, int | None, str]]:
    queries, _ = load_report_queries(root)
    context = LintContext(
        dialect, used_objects(root, queries), counts, lock_timeout_ms=lock_timeout_ms
    )
    pending = load_migrations(root, dialect)[1:]
    return [(f.rule, f.severity, f.line, f.message) for f in lint_migrations(pending, context)]


ROWS = {"organizations": 40, "payment_documents": 600}
LARGE = {"organizations": 40, "payment_documents": 1_000_000}


def test_rules_have_reason_and_fix() -> None:
    assert sorted(RULES) == [
        "drop-used-object",
        "index-without-concurrently",
        "missing-lock-timeout",
        "not-null-without-default",
        "session-timeout",
        "table-rewrite",
    ]
    assert all(rule.reason and rule.fix for rule in RULES.values())


def test_not_null_without_default_on_rows(tmp_path: Path) -> None:
    root = write_content(
        tmp_path, {"0002_status.sql": "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;"}
    )
    ((rule, severity, line, message),) = lint(root, "sqlite", ROWS)
    assert rule == "lint.not-null-without-default"
    assert severity == "error"
    assert line == 1
    assert "column organizations.status is added NOT NULL without a DEFAULT on 40 rows" in message
    assert "'-- lint-ack not-null-without-default: REASON'" in message


def test_not_null_passes_on_empty_or_default(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_status.sql": "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;\n"
            "ALTER TABLE payment_documents ADD COLUMN kind TEXT NOT NULL DEFAULT 'order';\n"
        },
    )
    assert lint(root, "sqlite", {"organizations": 0, "payment_documents": 600}) == []


def test_not_null_assumed_rows_without_database(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_status.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);\n"
            "ALTER TABLE audit ADD COLUMN who TEXT NOT NULL;\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;\n"
        },
    )
    findings = lint(root, "sqlite", None)
    assert [(rule, line) for rule, _, line, _ in findings] == [
        ("lint.not-null-without-default", 3)
    ]
    assert "on an existing table" in findings[0][3]


def test_set_not_null_on_postgresql(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {"0002_kk.sql": "ALTER TABLE organizations ALTER COLUMN name_kk SET NOT NULL;"},
    )
    ((rule, _, _, message),) = lint(root, "postgresql", ROWS)
    assert rule == "lint.not-null-without-default"
    assert "SET NOT NULL on organizations.name_kk scans 40 rows" in message


def test_drop_column_used_by_report(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {"0002_drop.sql": "ALTER TABLE payment_documents DROP COLUMN purpose;"},
        query="SELECT p.purpose, o.bin FROM payment_documents AS p"
        " JOIN organizations AS o ON o.id = p.organization_id WHERE p.id = :id",
    )
    ((rule, _, line, message),) = lint(root, "sqlite", ROWS)
    assert rule == "lint.drop-used-object"
    assert line == 1
    assert "drops column payment_documents.purpose, which report payments read(s)" in message


def test_drop_unused_column_passes(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {"0002_drop.sql": "ALTER TABLE payment_documents DROP COLUMN purpose;"},
        query="SELECT o.bin FROM organizations AS o",
    )
    assert lint(root, "sqlite", ROWS) == []


def test_rename_and_drop_table_used(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_rename.sql": "ALTER TABLE organizations RENAME COLUMN bin TO bin_code;\n"
            "DROP TABLE IF EXISTS payment_documents;\n"
        },
        query="SELECT bin FROM organizations WHERE id IN (SELECT organization_id"
        " FROM payment_documents)",
    )
    findings = lint(root, "sqlite", ROWS)
    assert [(rule, line) for rule, _, line, _ in findings] == [
        ("lint.drop-used-object", 1),
        ("lint.drop-used-object", 2),
    ]
    assert "renames column organizations.bin" in findings[0][3]
    assert "drops table payment_documents, which report payments read(s)" in findings[1][3]


def test_drop_column_used_by_catalog(tmp_path: Path) -> None:
    root = write_content(
        tmp_path, {"0002_drop.sql": "ALTER TABLE organizations DROP COLUMN name_kk;"}
    )
    catalog = root / "catalogs" / "organizations"
    catalog.mkdir(parents=True)
    document = {"id": "organizations", "columns": [{"name": "bin"}, {"name": "name_kk"}]}
    (catalog / "catalog.json").write_text(json.dumps(document), encoding="utf-8")
    ((rule, _, _, message),) = lint(root, "sqlite", ROWS)
    assert rule == "lint.drop-used-object"
    assert "column organizations.name_kk, which catalog organizations read(s)" in message


def test_type_change_rewrites_on_postgresql_only(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_amount.postgresql.sql": "ALTER TABLE payment_documents"
            " ALTER COLUMN amount TYPE NUMERIC(18, 2);",
            "0002_amount.sqlite.sql": "SELECT 1;",
        },
    )
    ((rule, _, _, message),) = lint(root, "postgresql", ROWS)
    assert rule == "lint.table-rewrite"
    assert "changing the type of payment_documents.amount rewrites 600 rows" in message
    assert lint(root, "sqlite", ROWS) == []


def test_index_without_concurrently_on_large_table(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {"0002_index.sql": "CREATE INDEX payment_documents_amount ON payment_documents (amount);"},
    )
    ((rule, _, _, message),) = lint(root, "postgresql", LARGE)
    assert rule == "lint.index-without-concurrently"
    assert "CREATE INDEX on payment_documents (1,000,000 rows) without CONCURRENTLY" in message
    assert lint(root, "postgresql", ROWS) == []
    assert lint(root, "sqlite", LARGE) == []


def test_concurrent_index_passes(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_index.postgresql.sql": "-- pipeline: no-transaction\n"
            "CREATE INDEX CONCURRENTLY payment_documents_amount ON payment_documents (amount);",
            "0002_index.sqlite.sql": "CREATE INDEX payment_documents_amount"
            " ON payment_documents (amount);",
        },
    )
    assert lint(root, "postgresql", LARGE) == []


def test_missing_lock_timeout(tmp_path: Path) -> None:
    root = write_content(
        tmp_path, {"0002_status.sql": "ALTER TABLE organizations ADD COLUMN status TEXT;"}
    )
    ((rule, _, _, message),) = lint(root, "postgresql", ROWS, lock_timeout_ms=None)
    assert rule == "lint.missing-lock-timeout"
    assert "ALTER locks organizations with no lock_timeout in force" in message
    assert lint(root, "postgresql", ROWS, lock_timeout_ms=5000) == []


def test_lock_timeout_switched_off_in_file(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_off.postgresql.sql": "SET LOCAL lock_timeout = 0;\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT;\n"
            "SET LOCAL lock_timeout = '2s';\n"
            "ALTER TABLE organizations ADD COLUMN region TEXT;\n",
            "0002_off.sqlite.sql": "SELECT 1;",
        },
    )
    findings = check_migrations(root)
    assert [(f.rule, f.file, f.line) for f in findings] == [
        ("lint.missing-lock-timeout", "migrations/0002_off.postgresql.sql", 2)
    ]


def test_set_local_in_no_transaction_file(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_off.postgresql.sql": "-- pipeline: no-transaction\n"
            "SET LOCAL lock_timeout = '2s';\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT;\n",
            "0002_off.sqlite.sql": "SELECT 1;",
        },
    )
    # SET LOCAL outside a transaction changes nothing, so the runner's missing timeout counts.
    findings = lint(root, "postgresql", ROWS, lock_timeout_ms=None)
    assert [(rule, line) for rule, _, line, _ in findings] == [("lint.missing-lock-timeout", 3)]


def test_acknowledged_finding_is_warning(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_status.sql": "-- lint-ack not-null-without-default: the table is empty in"
            " every customer database\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;\n"
        },
    )
    ((rule, severity, line, message),) = lint(root, "sqlite", ROWS)
    assert rule == "lint.not-null-without-default"
    assert severity == "warning"
    assert line == 2
    assert message.startswith(
        "acknowledged (the table is empty in every customer database): column organizations"
    )


def test_malformed_acknowledgments(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_status.sql": "-- lint-ack not-null-without-default\n"
            "-- lint-ack no-such-rule: because\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;\n"
        },
    )
    findings = lint(root, "sqlite", ROWS)
    assert [(rule, severity, line) for rule, severity, line, _ in findings] == [
        ("lint.ack", "error", 1),
        ("lint.ack", "error", 2),
        ("lint.not-null-without-default", "error", 3),
    ]
    assert "lint-ack not-null-without-default has no reason" in findings[0][3]
    assert "expected a lint rule id after lint-ack, found 'no-such-rule'" in findings[1][3]


KNOWN_RULES = ", ".join(RULES)


@pytest.mark.parametrize(
    ("comment", "message"),
    [
        (
            "-- lint-ack session-timeout reason without colon",
            "expected ':' and a reason after lint-ack session-timeout, found"
            " 'reason without colon'; write '-- lint-ack session-timeout: REASON'",
        ),
        (
            "-- lint-ack session-timeout, the runner sets it again",
            "expected ':' and a reason after lint-ack session-timeout, found"
            " ', the runner sets it again'; write '-- lint-ack session-timeout: REASON'",
        ),
        (
            "-- lint-ack sessiontimeout: the runner sets it again",
            f"expected a lint rule id after lint-ack, found 'sessiontimeout'; known rules:"
            f" {KNOWN_RULES}",
        ),
        (
            "-- lint-ack sessiontimeout the runner sets it again",
            f"expected a lint rule id after lint-ack, found 'sessiontimeout'; known rules:"
            f" {KNOWN_RULES}",
        ),
        (
            "-- lint-ack: the runner sets it again",
            f"expected a lint rule id after lint-ack, found ''; known rules: {KNOWN_RULES}",
        ),
    ],
)
def test_malformed_ack_named(tmp_path: Path, comment: str, message: str) -> None:
    root = write_content(
        tmp_path, {"0002_timeout.sql": f"{comment}\nSET statement_timeout = 0;\n"}
    )

    findings = [str(f) for f in check_migrations(root) if f.rule == "lint.ack"]

    assert findings == [f"migrations/0002_timeout.sql:1: {message}"]


def test_validate_names_bad_lock_timeout_setting(tmp_path: Path) -> None:
    root = write_content(
        tmp_path, {"0002_index.sql": "CREATE INDEX organizations_bin ON organizations (bin);\n"}
    )
    (root / "pyproject.toml").write_text("[tool.pipeline]\nlock_timeout_ms = -5\n", "utf-8")

    findings = check_migrations(root)

    assert [str(f) for f in findings if f.rule == "config"] == [
        "pyproject.toml: [tool.pipeline] lock_timeout_ms: expected a positive integer, found -5"
    ]
    # The lint goes on with the default lock timeout instead of reporting none in force.
    assert [f for f in findings if f.rule == "lint.missing-lock-timeout"] == []


def test_ack_inside_string_literal_ignored(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_status.sql": "INSERT INTO organizations (id, bin, name_kk) VALUES (1, '1', '\n"
            "-- lint-ack not-null-without-default: text in a literal, not a comment\n"
            "');\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;\n"
        },
    )
    findings = lint(root, "sqlite", ROWS)
    assert [(rule, severity, line) for rule, severity, line, _ in findings] == [
        ("lint.not-null-without-default", "error", 4)
    ]


def test_ack_covers_next_finding_only(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_status.sql": "-- lint-ack not-null-without-default: filled by the importer\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;\n"
            "ALTER TABLE payment_documents ADD COLUMN kbe TEXT NOT NULL;\n"
        },
    )
    findings = lint(root, "sqlite", ROWS)
    assert [(rule, severity, line) for rule, severity, line, _ in findings] == [
        ("lint.not-null-without-default", "warning", 2),
        ("lint.not-null-without-default", "error", 3),
    ]


def test_ack_without_finding_after_it(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_status.sql": "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL;\n"
            "-- lint-ack not-null-without-default: written after the statement\n"
        },
    )
    findings = lint(root, "sqlite", ROWS)
    assert [(rule, severity, line) for rule, severity, line, _ in findings] == [
        ("lint.not-null-without-default", "error", 1),
    ]


@pytest.mark.parametrize(
    ("statement", "setting"),
    [
        ("SET lock_timeout = 0", "lock_timeout"),
        ("SET SESSION lock_timeout TO '10s'", "lock_timeout"),
        ("SET statement_timeout = '1min'", "statement_timeout"),
        ("RESET statement_timeout", "statement_timeout"),
    ],
)
def test_session_timeout_reported(tmp_path: Path, statement: str, setting: str) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_timeouts.postgresql.sql": f"{statement};\nSELECT 1;\n",
            "0002_timeouts.sqlite.sql": "SELECT 1;",
        },
    )
    findings = [f for f in lint(root, "postgresql", ROWS) if f[0] == "lint.session-timeout"]
    assert [(rule, line) for rule, _, line, _ in findings] == [("lint.session-timeout", 1)]
    assert f"{setting} stays in force for the rest of the session" in findings[0][3]
    assert "SET LOCAL" in findings[0][3]


def test_set_local_timeout_passes(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_timeouts.postgresql.sql": "SET LOCAL lock_timeout = '2s';\n"
            "SET LOCAL statement_timeout = '1min';\n"
            "ALTER TABLE organizations ADD COLUMN status TEXT;\n",
            "0002_timeouts.sqlite.sql": "SELECT 1;",
        },
    )
    assert lint(root, "postgresql", ROWS) == []


def test_recreated_table_not_a_drop(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_rebuild.sql": "CREATE TABLE payment_documents_new (id INTEGER PRIMARY KEY,"
            " organization_id INTEGER, amount BIGINT NOT NULL, purpose TEXT);\n"
            "INSERT INTO payment_documents_new SELECT * FROM payment_documents;\n"
            "DROP TABLE payment_documents;\n"
            "ALTER TABLE payment_documents_new RENAME TO payment_documents;\n"
        },
        query="SELECT purpose FROM payment_documents",
    )
    assert lint(root, "sqlite", ROWS) == []
    dropped = write_content(
        tmp_path / "dropped",
        {"0002_drop.sql": "DROP TABLE payment_documents;\n"},
        query="SELECT purpose FROM payment_documents",
    )
    assert [rule for rule, _, _, _ in lint(dropped, "sqlite", ROWS)] == ["lint.drop-used-object"]


def test_validate_lints_without_database(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {"0002_index.sql": "CREATE INDEX payment_documents_amount ON payment_documents (amount);"},
    )
    findings = check_migrations(root)
    assert [(f.rule, f.file, f.line, f.severity) for f in findings] == [
        ("lint.index-without-concurrently", "migrations/0002_index.sql", 1, "error")
    ]
    assert "on payment_documents (an existing table)" in findings[0].message


def test_used_objects_resolve_aliases(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {},
        query="SELECT p.amount, o.bin FROM payment_documents AS p"
        " JOIN organizations AS o ON o.id = p.organization_id",
    )
    queries, _ = load_report_queries(root)
    used = used_objects(root, queries)
    assert isinstance(used, UsedObjects)
    assert ("payment_documents", "amount") in used.columns
    assert ("organizations", "bin") in used.columns
    assert ("organizations", "amount") not in used.columns


def test_used_objects_parse_when_first_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_content(tmp_path, {}, query="SELECT amount FROM payment_documents")
    queries, _ = load_report_queries(root)
    parsed: list[str] = []
    original = migration_lint._add_query

    def counting(used: UsedObjects, query: ReportQuery) -> None:
        parsed.append(query.code)
        original(used, query)

    monkeypatch.setattr(migration_lint, "_add_query", counting)

    used = used_objects(root, queries)
    before = list(parsed)
    tables = used.tables

    assert before == []
    assert len(parsed) == 1
    assert "payment_documents" in tables


# -- rejected before anything runs ----------------------------------------------------------------


def test_concurrently_needs_no_transaction_header(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_index.postgresql.sql": "CREATE INDEX CONCURRENTLY payment_documents_amount"
            " ON payment_documents (amount);",
            "0002_index.sqlite.sql": "SELECT 1;",
        },
    )
    findings = [f for f in check_migrations(root) if f.rule == "migration.concurrently"]
    assert [(f.file, f.line) for f in findings] == [("migrations/0002_index.postgresql.sql", 1)]
    assert "CREATE INDEX CONCURRENTLY cannot run inside a transaction block" in (
        findings[0].message
    )
    assert "'-- pipeline: no-transaction'" in findings[0].message


def test_runner_rejects_concurrently_in_transaction(tmp_path: Path) -> None:
    root = write_content(
        tmp_path,
        {"0002_index.sql": "CREATE INDEX CONCURRENTLY amounts ON payment_documents (amount);"},
    )
    with open_database("sqlite:///app.sqlite", root, create=True) as db:
        with pytest.raises(MigrationError) as caught:
            run_migrations(db, load_migrations(root, "sqlite"))
        history = db.execute(f"SELECT version FROM {HISTORY_TABLE}")
    assert "migrations/0002_index.sql:1: CREATE INDEX CONCURRENTLY cannot run" in str(caught.value)
    assert history == [("0001",)]


def test_drop_column_needs_sqlite_3_35(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_content(
        tmp_path,
        {
            "0002_drop.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);\n"
            "ALTER TABLE payment_documents DROP COLUMN purpose;\n"
        },
    )
    migrations = load_migrations(root, "sqlite")
    with open_database("sqlite:///app.sqlite", root, create=True) as db:
        run_migrations(db, migrations[:1])
        monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
        with pytest.raises(MigrationError) as caught:
            run_migrations(db, migrations)
        tables = db.execute("SELECT name FROM sqlite_master WHERE name = 'audit'")
    message = str(caught.value)
    assert message.startswith("migrations/0002_drop.sql:2: ALTER TABLE ... DROP COLUMN")
    assert "needs SQLite 3.35.0 or newer, but this Python uses SQLite 3.34.1" in message
    # Rejected before the first statement ran.
    assert tables == []


def test_drop_column_runs_on_current_sqlite(tmp_path: Path) -> None:
    root = write_content(
        tmp_path, {"0002_drop.sql": "ALTER TABLE payment_documents DROP COLUMN purpose;\n"}
    )
    if sqlite3.sqlite_version_info < (3, 35, 0):
        pytest.skip(f"SQLite {sqlite3.sqlite_version} is older than 3.35.0")
    with open_database("sqlite:///app.sqlite", root, create=True) as db:
        result = run_migrations(db, load_migrations(root, "sqlite"))
        columns = [row[1] for row in db.execute("PRAGMA table_info(payment_documents)")]
    assert [run.version for run in result.applied] == ["0001", "0002"]
    assert "purpose" not in columns
