"""Migration files, statement splitting and the runner against real SQLite files."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from pipeline.database import (
    HISTORY_TABLE,
    Database,
    RunResult,
    SQLiteDatabase,
    StatementError,
    open_database,
    run_migrations,
    touched_tables,
)
from pipeline.errors import MigrationError, ValidationError
from pipeline.migrations import (
    check_migrations,
    load_migrations,
    query_parameters,
    schema_version,
    split_statements,
)

DATA = Path(__file__).parent / "data" / "migrations"
REPO_ROOT = Path(__file__).resolve().parent.parent


def write_migrations(root: Path, files: dict[str, str | bytes]) -> Path:
    folder = root / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (folder / name).write_bytes(data)
    return root


def open_sqlite(root: Path, name: str = "app.sqlite") -> Database:
    return open_database(f"sqlite:///{name}", root, create=True)


def dump(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


BASELINE = """
CREATE TABLE knp (code TEXT PRIMARY KEY, name_ru TEXT);
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    knp_code TEXT REFERENCES knp (code),
    amount INTEGER NOT NULL
);
INSERT INTO knp VALUES ('010', 'Пенсионные взносы');
"""


# -- naming rules --------------------------------------------------------------------------------


def test_check_reports_gap() -> None:
    findings = check_migrations(DATA / "gap_after_0001")
    assert [f.rule for f in findings] == ["migration.gap"]
    assert findings[0].file == "migrations/0003_third.sql"
    assert "version 0002 is missing before 0003" in findings[0].message


def test_check_reports_duplicate_number() -> None:
    findings = check_migrations(DATA / "duplicate_number")
    assert [f.rule for f in findings] == ["migration.duplicate"]
    assert "0002_first.sql" in findings[0].message
    assert "0002_second.sql" in findings[0].message


def test_check_reports_missing_dialect_file() -> None:
    findings = check_migrations(DATA / "postgresql_file_missing")
    assert [f.rule for f in findings] == ["migration.dialect"]
    assert str(findings[0]) == (
        "migrations/0002_statements.sqlite.sql: expected 0002_statements.sqlite.sql together"
        " with 0002_statements.postgresql.sql, or one portable 0002_statements.sql, found only"
        " 0002_statements.sqlite.sql; add migrations/0002_statements.postgresql.sql, or rename"
        " this file to migrations/0002_statements.sql if its SQL runs on both SQLite and"
        " PostgreSQL"
    )


def test_missing_sqlite_file_named(tmp_path: Path) -> None:
    root = write_migrations(
        tmp_path, {"0001_baseline.sql": BASELINE, "0002_index.postgresql.sql": "SELECT 1;\n"}
    )
    findings = check_migrations(root)
    assert [f.rule for f in findings] == ["migration.dialect"]
    assert str(findings[0]) == (
        "migrations/0002_index.postgresql.sql: expected 0002_index.sqlite.sql together with"
        " 0002_index.postgresql.sql, or one portable 0002_index.sql, found only"
        " 0002_index.postgresql.sql; add migrations/0002_index.sqlite.sql, or rename this"
        " file to migrations/0002_index.sql if its SQL runs on both SQLite and PostgreSQL"
    )
    with pytest.raises(MigrationError) as caught:
        load_migrations(root, "sqlite")
    assert f"invalid migration files: {findings[0]}" in str(caught.value)


def test_check_reports_bad_name() -> None:
    findings = check_migrations(DATA / "bad_name")
    assert [f.rule for f in findings] == ["migration.name"]
    assert findings[0].file == "migrations/2_Add-Column.sql"
    assert "expected NNNN_slug.sql" in findings[0].message


def test_check_reports_non_utf8_line() -> None:
    findings = check_migrations(DATA / "not_utf8")
    assert [f.rule for f in findings] == ["encoding"]
    assert str(findings[0]).startswith("migrations/0001_cp1251_comment.sql:2: expected UTF-8")
    assert findings[0].line == 2
    assert "0xc1" in findings[0].message


def test_check_reports_unterminated_string() -> None:
    findings = check_migrations(DATA / "unterminated_string")
    assert {f.rule for f in findings} == {"migration.split"}
    assert "unterminated string literal starting at line 1" in findings[0].message


def test_check_reports_foreign_keys_pragma() -> None:
    findings = check_migrations(DATA / "foreign_keys_pragma")
    assert [f.rule for f in findings] == ["migration.pragma"]
    assert findings[0].line == 2


@pytest.mark.parametrize(
    ("sql", "rejected"),
    [
        ("CREATE TABLE pipeline_definitions (kind TEXT, item TEXT)", True),
        ("CREATE TEMP TABLE IF NOT EXISTS catalog_knp (code TEXT)", True),
        ('ALTER TABLE "catalog_knp" ADD COLUMN note TEXT', True),
        ("ALTER TABLE main.Pipeline_Migrations RENAME TO old_history", True),
        ("DROP TABLE IF EXISTS [pipeline_catalogs]", True),
        ("ALTER TABLE knp_notes RENAME TO `Catalog_Notes`", True),
        ("ALTER TABLE knp_notes RENAME COLUMN code TO catalog_code", False),
        ("CREATE VIEW knp_names AS SELECT code, name_ru FROM catalog_knp", False),
        ("UPDATE catalog_knp SET name_ru = 'x' WHERE code = '999'", True),
        ("INSERT OR REPLACE INTO main.catalog_knp (code) VALUES ('1')", True),
        ("DELETE FROM \"pipeline_migrations\" WHERE version = '0002'", True),
        ("TRUNCATE TABLE catalog_kbe", True),
        ("TRUNCATE knp_notes, catalog_knp", True),
        ("WITH gone AS (SELECT 1) DELETE FROM catalog_knp WHERE code = '999'", True),
        ("WITH v AS (SELECT 2) UPDATE pipeline_migrations SET checksum = 'x'", True),
        ("EXPLAIN ANALYZE UPDATE catalog_knp SET name_ru = 'x'", True),
        (
            "MERGE INTO ONLY public.catalog_knp USING knp ON true WHEN MATCHED THEN DO NOTHING",
            True,
        ),
        ("SELECT code INTO catalog_copy FROM knp", True),
        ("DO $$ BEGIN DELETE FROM catalog_knp; END $$", True),
        (
            "CREATE TRIGGER knp_mirror AFTER INSERT ON knp"
            " BEGIN INSERT INTO catalog_knp (code) VALUES (new.code); END",
            True,
        ),
        (
            "CREATE TRIGGER knp_seen AFTER UPDATE OF name_ru ON catalog_knp BEGIN SELECT 1; END",
            False,
        ),
        ("INSERT INTO knp_notes (note) VALUES ('UPDATE catalog_knp SET x = 1')", False),
        ("UPDATE knp SET name_ru = 'x' /* then UPDATE catalog_knp */", False),
        ("INSERT INTO knp_notes (code) SELECT code FROM catalog_knp", False),
        ("UPDATE knp SET name_ru = 'x' WHERE code IN (SELECT code FROM catalog_knp)", False),
        ("CREATE TABLE catalogue (code TEXT)", False),
        ("CREATE TABLE knp_notes (code TEXT REFERENCES catalog_knp (code))", False),
    ],
)
def test_pipeline_tables_reserved(tmp_path: Path, sql: str, rejected: bool) -> None:
    write_migrations(tmp_path, {"0001_base.sql": BASELINE, "0002_x.sql": f"-- x\n{sql};\n"})

    findings = check_migrations(tmp_path)

    if rejected:
        (finding,) = findings
        assert finding.rule == "migration.statement"
        assert finding.file == "migrations/0002_x.sql"
        assert finding.line == 2
        assert "pipeline_* or catalog_*" in finding.message
    else:
        assert findings == []


@pytest.mark.parametrize(
    ("sql", "rejected"),
    [
        ("INSERT INTO knp_notes (note) VALUES ($$DELETE FROM catalog_knp$$)", False),
        ("COMMENT ON TABLE knp IS $$never UPDATE catalog_knp by hand$$", False),
        ("DO $$ BEGIN RAISE NOTICE 'do not UPDATE catalog_knp'; END $$", False),
        (
            "CREATE FUNCTION knp_purge() RETURNS void LANGUAGE sql"
            " AS 'DELETE FROM catalog_knp WHERE code = ''999'''",
            True,
        ),
        (
            "CREATE FUNCTION knp_purge() RETURNS void LANGUAGE plpgsql"
            " AS $body$ BEGIN DELETE FROM catalog_knp; END $body$",
            True,
        ),
    ],
)
def test_postgresql_reserved_writes(tmp_path: Path, sql: str, rejected: bool) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE,
            "0002_x.postgresql.sql": f"-- x\n{sql};\n",
            "0002_x.sqlite.sql": "-- x\nSELECT 1;\n",
        },
    )

    findings = check_migrations(tmp_path)

    # Dollar-quoted text is a body after AS or DO, and a string anywhere else.
    if rejected:
        (finding,) = findings
        assert finding.file == "migrations/0002_x.postgresql.sql"
        assert "pipeline_* or catalog_*" in finding.message
    else:
        assert findings == []


def test_load_rejects_misnumbered_files() -> None:
    with pytest.raises(MigrationError) as caught:
        load_migrations(DATA / "gap_after_0001", "sqlite")
    assert "0003_third.sql" in str(caught.value)


def test_demo_migrations_pass_checks() -> None:
    findings = check_migrations(REPO_ROOT)
    assert [f for f in findings if f.severity == "error"] == []
    # The one acknowledged lint finding stays visible as a warning.
    assert [f.rule for f in findings] == ["lint.index-without-concurrently"]
    assert schema_version(REPO_ROOT) == "0003"


def test_load_picks_dialect_file(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": "CREATE TABLE a (id INTEGER);",
            "0002_x.sqlite.sql": "CREATE TABLE s (id INTEGER);",
            "0002_x.postgresql.sql": "CREATE TABLE p (id BIGINT);",
        },
    )
    sqlite = load_migrations(tmp_path, "sqlite")
    postgresql = load_migrations(tmp_path, "postgresql")
    assert [m.path for m in sqlite] == ["migrations/0001_base.sql", "migrations/0002_x.sqlite.sql"]
    assert postgresql[1].path == "migrations/0002_x.postgresql.sql"
    assert postgresql[1].dialect == "postgresql"
    assert sqlite[0].dialect is None


def test_crlf_and_bom_keep_checksum(tmp_path: Path) -> None:
    text = "-- KNP codes\nCREATE TABLE knp (code TEXT);\n"
    write_migrations(tmp_path / "lf", {"0001_knp.sql": text})
    crlf = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8")
    write_migrations(tmp_path / "crlf", {"0001_knp.sql": crlf})
    (lf_migration,) = load_migrations(tmp_path / "lf", "sqlite")
    (crlf_migration,) = load_migrations(tmp_path / "crlf", "sqlite")
    assert crlf_migration.text == text
    assert crlf_migration.checksum == lf_migration.checksum
    assert lf_migration.checksum == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_no_transaction_header(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": "-- Builds the index outside a transaction.\n"
            "-- pipeline: no-transaction\nCREATE TABLE a (id INTEGER);\n",
            "0002_late.sql": "CREATE TABLE b (id INTEGER);\n-- pipeline: no-transaction\n",
        },
    )
    first, second = load_migrations(tmp_path, "sqlite")
    assert first.transactional is False
    assert second.transactional is True


# -- splitting -----------------------------------------------------------------------------------


def test_split_sqlite_trigger_strings_comments() -> None:
    text = (
        "-- leading comment; with a semicolon\n"
        "CREATE TABLE a (x TEXT); /* block; comment */\n"
        "INSERT INTO a VALUES ('one; two', 'it''s');\n"
        "CREATE TRIGGER a_copy AFTER INSERT ON a BEGIN\n"
        "    INSERT INTO b VALUES (NEW.x);\n"
        "    UPDATE c SET n = n + 1;\n"
        "END;\n"
        'SELECT "odd;name", [br;acket], `back;tick` FROM a'
    )
    statements = split_statements(text, "sqlite")
    assert [s.line for s in statements] == [2, 3, 4, 8]
    assert statements[0].sql == "CREATE TABLE a (x TEXT)"
    assert statements[1].sql == "INSERT INTO a VALUES ('one; two', 'it''s')"
    assert statements[2].sql.startswith("CREATE TRIGGER a_copy")
    assert statements[2].sql.endswith("UPDATE c SET n = n + 1;\nEND")
    assert statements[3].sql.startswith('SELECT "odd;name"')


def test_split_postgresql_dollar_quotes() -> None:
    text = (
        "CREATE FUNCTION touch() RETURNS trigger AS $$\n"
        "BEGIN NEW.updated := now(); RETURN NEW; END;\n"
        "$$ LANGUAGE plpgsql;\n"
        "DO $body$ BEGIN PERFORM 1; RAISE NOTICE '$$;'; END $body$;\n"
        "SELECT E'back\\'slash;', $1::text, amount::bigint FROM t;\n"
        "/* outer /* nested; */ still comment; */ SELECT 2;"
    )
    statements = split_statements(text, "postgresql")
    assert [s.line for s in statements] == [1, 4, 5, 6]
    assert statements[0].sql.endswith("$$ LANGUAGE plpgsql")
    assert statements[1].sql.endswith("END $body$")
    assert statements[2].sql == "SELECT E'back\\'slash;', $1::text, amount::bigint FROM t"
    assert statements[3].sql == "SELECT 2"


def test_split_unterminated_dollar_quote() -> None:
    with pytest.raises(MigrationError) as caught:
        split_statements("SELECT 1;\nSELECT $tag$ never closed;", "postgresql")
    assert "unterminated dollar quote $tag$ starting at line 2" in str(caught.value)


def test_split_trigger_without_end() -> None:
    with pytest.raises(MigrationError) as caught:
        split_statements(
            "CREATE TABLE a (x);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1;", "sqlite"
        )
    assert "statement starting at line 2 never ends" in str(caught.value)


def test_query_parameters_skip_casts_and_strings() -> None:
    sql = "SELECT ':not_me', x::date FROM t WHERE a = :from AND b < :to AND c = :from -- :no"
    assert query_parameters(sql, "postgresql") == ["from", "to"]


# -- runner --------------------------------------------------------------------------------------


def test_runner_applies_and_records(tmp_path: Path) -> None:
    write_migrations(tmp_path, {"0001_base.sql": BASELINE})
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        result = run_migrations(db, migrations, bundle_version="2026.12.0")
        again = run_migrations(db, migrations)
        history = db.execute(f"SELECT version, checksum, bundle_version FROM {HISTORY_TABLE}")
    assert [run.version for run in result.applied] == ["0001"]
    assert result.applied[0].transactional is True
    assert result.findings == []
    assert again.applied == []
    assert history == [("0001", migrations[0].checksum, "2026.12.0")]


def test_interrupted_statement_keeps_its_error(tmp_path: Path) -> None:
    # An interrupted statement makes SQLite roll back the whole transaction,
    # savepoints included, so the runner must not fail on the savepoint it set.
    slow = (
        "CREATE TABLE slow AS WITH RECURSIVE n(x) AS"
        " (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000000) SELECT x FROM n;"
    )
    write_migrations(tmp_path, {"0001_base.sql": BASELINE, "0002_slow.sql": slow})
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        run_migrations(db, migrations[:1])
        assert isinstance(db, SQLiteDatabase)
        timer = threading.Timer(0.5, db.connection.interrupt)
        timer.start()
        try:
            with pytest.raises(StatementError) as caught:
                run_migrations(db, migrations)
        finally:
            timer.cancel()
        history = db.execute(f"SELECT version FROM {HISTORY_TABLE}")
        in_transaction = db.in_transaction
    assert caught.value.database_message == "interrupted"
    assert caught.value.path == "migrations/0002_slow.sql"
    assert history == [("0001",)]
    assert not in_transaction


def test_runner_rejects_edited_migration(tmp_path: Path) -> None:
    write_migrations(tmp_path, {"0001_base.sql": BASELINE})
    with open_sqlite(tmp_path) as db:
        applied = load_migrations(tmp_path, "sqlite")
        run_migrations(db, applied)
        write_migrations(tmp_path, {"0001_base.sql": BASELINE + "\nCREATE TABLE extra (x);\n"})
        edited = load_migrations(tmp_path, "sqlite")
        with pytest.raises(MigrationError) as caught:
            run_migrations(db, edited)
    message = str(caught.value)
    assert "migration 0001_base.sql was modified after it was applied" in message
    assert f"database has {applied[0].checksum}" in message
    assert f"file has {edited[0].checksum}" in message


def test_failed_statement_rolls_back(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE,
            "0002_broken.sql": "-- Adds a column, then inserts into a table that is missing.\n"
            "ALTER TABLE payments ADD COLUMN kbk_code TEXT;\n"
            "INSERT INTO missing_table VALUES (1);\n",
        },
    )
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        run_migrations(db, migrations[:1])
    before = dump(tmp_path / "app.sqlite")
    with open_sqlite(tmp_path) as db, pytest.raises(StatementError) as caught:
        run_migrations(db, migrations)
    assert dump(tmp_path / "app.sqlite") == before
    assert caught.value.path == "migrations/0002_broken.sql"
    assert caught.value.line == 3
    assert "migrations/0002_broken.sql:3" in str(caught.value)
    assert "no such table: missing_table" in str(caught.value)


def test_foreign_keys_pragma_rejected(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {"0001_base.sql": BASELINE, "0002_off.sql": "PRAGMA foreign_keys = OFF;\n"},
    )
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db, pytest.raises(MigrationError) as caught:
        run_migrations(db, migrations)
    assert "migrations/0002_off.sql:1: PRAGMA foreign_keys is not allowed" in str(caught.value)


def test_immediate_orphan_fails_statement(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE,
            "0002_orphan.sql": "INSERT INTO payments VALUES (1, '010', 500);\nDELETE FROM knp;\n",
        },
    )
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        run_migrations(db, migrations[:1])
    before = dump(tmp_path / "app.sqlite")
    with open_sqlite(tmp_path) as db, pytest.raises(StatementError) as caught:
        run_migrations(db, migrations)
    assert dump(tmp_path / "app.sqlite") == before
    assert caught.value.line == 2
    assert "migrations/0002_orphan.sql:2" in str(caught.value)
    assert "FOREIGN KEY constraint failed" in str(caught.value)


def test_deferred_orphan_fails_foreign_key_check(tmp_path: Path) -> None:
    # A deferred foreign key lets the orphan through the statements, so only
    # the check before COMMIT catches it, naming table, rowid and parent table.
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": "CREATE TABLE knp (code TEXT PRIMARY KEY);\n"
            "CREATE TABLE payments (id INTEGER PRIMARY KEY, knp_code TEXT"
            " REFERENCES knp (code) DEFERRABLE INITIALLY DEFERRED);\n",
            "0002_orphan.sql": "INSERT INTO payments VALUES (7, '999');\n",
        },
    )
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        run_migrations(db, migrations[:1])
    with open_sqlite(tmp_path) as db, pytest.raises(MigrationError) as caught:
        run_migrations(db, migrations)
    message = str(caught.value)
    assert "migrations/0002_orphan.sql: foreign key check failed" in message
    assert "table payments foreign key (knp_code) -> knp(code)" in message
    assert "1 row(s) have no matching row in parent table knp, rowid 7" in message
    with open_sqlite(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM payments") == [(0,)]
        assert db.execute(f"SELECT version FROM {HISTORY_TABLE}") == [("0001",)]


def test_transaction_control_rejected(tmp_path: Path) -> None:
    write_migrations(tmp_path, {"0001_base.sql": "BEGIN;\nCREATE TABLE a (x);\nCOMMIT;\n"})
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db, pytest.raises(MigrationError) as caught:
        run_migrations(db, migrations)
    assert "migrations/0001_base.sql:1: transaction control (BEGIN)" in str(caught.value)


def test_non_transactional_migration(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE,
            "0002_vacuum.sql": "-- pipeline: no-transaction\nVACUUM;\n",
        },
    )
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        result = run_migrations(db, migrations)
    assert [run.transactional for run in result.applied] == [True, False]


REBUILD_KNP = """-- pipeline: rebuild-tables
CREATE TABLE knp_new (code TEXT PRIMARY KEY, name_ru TEXT NOT NULL);
INSERT INTO knp_new SELECT code, coalesce(name_ru, '') FROM knp;
DROP TABLE knp;
ALTER TABLE knp_new RENAME TO knp;
"""


def test_rebuild_turns_foreign_keys_on_again(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE + "INSERT INTO payments VALUES (1, '010', 500);\n",
            "0002_rebuild_knp.sql": REBUILD_KNP,
            "0003_orphan.sql": "INSERT INTO payments VALUES (2, '999', 700);\n",
        },
    )
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        with pytest.raises(StatementError) as caught:
            run_migrations(db, migrations)
        enforcement = db.execute("PRAGMA foreign_keys")
        history = db.execute(f"SELECT version FROM {HISTORY_TABLE} ORDER BY version")
        orphans = db.execute("PRAGMA foreign_key_check")
    assert "migrations/0003_orphan.sql:1" in str(caught.value)
    assert "FOREIGN KEY constraint failed" in str(caught.value)
    assert enforcement == [(1,)]
    assert history == [("0001",), ("0002",)]
    assert orphans == []


def test_explain_query_names_missing_column(tmp_path: Path) -> None:
    write_migrations(tmp_path, {"0001_base.sql": BASELINE})
    with open_sqlite(tmp_path) as db:
        run_migrations(db, load_migrations(tmp_path, "sqlite"))
        db.explain_query("SELECT amount FROM payments WHERE knp_code = :knp AND amount > :min")
        with pytest.raises(ValidationError) as missing:
            db.explain_query("SELECT kbk_code FROM payments WHERE amount > :min")
        with pytest.raises(ValidationError) as not_select:
            db.explain_query("DELETE FROM payments")
    assert "no such column: kbk_code" in str(missing.value)
    assert "expected a single SELECT statement" in str(not_select.value)


def test_missing_sqlite_file_is_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationError) as caught:
        open_database("sqlite:///absent.sqlite", tmp_path)
    assert f"SQLite database {tmp_path / 'absent.sqlite'} not found" in str(caught.value)


def test_demo_migrations_apply(tmp_path: Path) -> None:
    migrations = load_migrations(REPO_ROOT, "sqlite")
    with open_sqlite(tmp_path) as db:
        result = run_migrations(db, migrations)
        columns = [row[1] for row in db.execute("PRAGMA table_info(payment_documents)")]
    assert [run.version for run in result.applied] == ["0001", "0002", "0003"]
    assert "kbk_code" in columns
    assert result.findings == []


def test_touched_tables_limit_foreign_key_check() -> None:
    statements = split_statements(
        "CREATE TABLE kbk (code TEXT PRIMARY KEY);\n"
        "ALTER TABLE payments ADD COLUMN kbk_code TEXT REFERENCES kbk (code);\n"
        "CREATE INDEX payments_kbk ON payments (kbk_code);\n"
        "ALTER TABLE old_name RENAME TO new_name;\n"
        "INSERT OR REPLACE INTO \"knp\" VALUES ('010', 'x');\n",
        "sqlite",
    )
    # The new table has no rows, and SQLite checks the added column against every row.
    assert touched_tables(statements) == {"old_name", "new_name", "knp"}
    copied = split_statements("CREATE TABLE kbk_copy AS SELECT * FROM kbk;\n", "sqlite")
    assert touched_tables(copied) == {"kbk_copy"}
    trigger = split_statements(
        "CREATE TRIGGER t AFTER INSERT ON payments BEGIN DELETE FROM knp; END;", "sqlite"
    )
    assert touched_tables(trigger) is None


@pytest.mark.parametrize(
    "column",
    [
        "b INTEGER DEFAULT 5 CHECK (b < 3)",
        "b INTEGER NOT NULL",
        "b INTEGER REFERENCES parent (id) DEFAULT 7",
        "b INTEGER DEFAULT 1 UNIQUE",
    ],
)
def test_sqlite_checks_added_column_against_rows(column: str) -> None:
    # touched_tables leaves ADD COLUMN out of the checks after a migration
    # because SQLite rejects a column that an existing row would break.
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    connection.execute("CREATE TABLE child (a INTEGER)")
    connection.execute("INSERT INTO child VALUES (1)")

    with pytest.raises(sqlite3.OperationalError):
        connection.execute(f"ALTER TABLE child ADD COLUMN {column}")
    assert [row[1] for row in connection.execute("PRAGMA table_info(child)")] == ["a"]


@pytest.mark.parametrize(
    "column",
    [
        "currency_code TEXT AS (coalesce(currency, 'KZT')) REFERENCES currencies (code)",
        "currency_code TEXT GENERATED ALWAYS AS (currency) VIRTUAL",
        "currency_code TEXT GENERATED ALWAYS AS (currency) STORED",
        "currency_code TEXT as(currency) CHECK (currency_code <> 'RUB')",
        "currency_code TEXT /* derived */ AS /* from currency */ (currency)",
        "currency_code TEXT DEFAULT 'RUB' REFERENCES currencies (code)",
        "currency_code TEXT DEFAULT (upper('rub'))",
        "rate INTEGER NOT NULL DEFAULT 0",
    ],
)
def test_touched_tables_count_unchecked_added_column(column: str) -> None:
    statements = split_statements(f"ALTER TABLE accounts ADD COLUMN {column};\n", "sqlite")

    assert touched_tables(statements) == {"accounts"}


@pytest.mark.parametrize(
    "column",
    [
        "currency_code TEXT REFERENCES currencies (code)",
        "currency_code TEXT DEFAULT NULL REFERENCES currencies (code)",
        "currency_code TEXT DEFAULT ( NULL ) COLLATE NOCASE",
        "currency_code TEXT CHECK (currency_code <> 'RUB')",
    ],
)
def test_touched_tables_skip_checked_added_column(column: str) -> None:
    statements = split_statements(f"ALTER TABLE accounts ADD {column};\n", "sqlite")

    assert touched_tables(statements) == set()


ORPHAN = [("child", 1, "parent", 0)]


@pytest.mark.parametrize(
    ("foreign_keys", "table", "column", "orphans", "integrity"),
    [
        ("ON", "", "b INTEGER AS (a + 1) REFERENCES parent (id)", ORPHAN, ["ok"]),
        ("OFF", "", "b INTEGER AS (a + 1) REFERENCES parent (id)", ORPHAN, ["ok"]),
        ("OFF", "", "b INTEGER DEFAULT 7 REFERENCES parent (id)", ORPHAN, ["ok"]),
        ("ON", "STRICT", "b INTEGER DEFAULT 'seven'", [], ["non-INTEGER value in child.b"]),
        ("ON", "STRICT", "b INTEGER AS ('seven')", [], ["non-INTEGER value in child.b"]),
    ],
)
def test_sqlite_accepts_added_column_breaking_rows(
    foreign_keys: str, table: str, column: str, orphans: list[object], integrity: list[str]
) -> None:
    # The added columns that touched_tables counts as touching their table:
    # SQLite 3.40 adds them although the existing row breaks a constraint.
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute(f"PRAGMA foreign_keys = {foreign_keys}")
    connection.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    connection.execute(f"CREATE TABLE child (a INTEGER) {table}")
    connection.execute("INSERT INTO child VALUES (1)")

    connection.execute(f"ALTER TABLE child ADD COLUMN {column}")

    assert connection.execute("PRAGMA foreign_key_check").fetchall() == orphans
    assert [row[0] for row in connection.execute("PRAGMA integrity_check")] == integrity


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("DROP TABLE платежи№2", {"платежи№2"}),
        ("INSERT INTO main.платежи№2 VALUES (1)", {"платежи№2"}),
        ('UPDATE "a""b" SET x = 1', {'a"b'}),
        ("DELETE FROM `a``b`", {"a`b"}),
        ("DELETE FROM main.[plan items]", {"plan items"}),
        ('DELETE FROM "pay.docs"', {"pay.docs"}),
        ("ALTER TABLE итоги RENAME TO итоги№2", {"итоги", "итоги№2"}),
    ],
)
def test_touched_tables_read_whole_names(sql: str, tables: set[str]) -> None:
    statements = split_statements(f"{sql};\n", "sqlite")

    assert touched_tables(statements) == tables


def test_touched_tables_new_table_non_ascii_name() -> None:
    statements = split_statements(
        "DROP TABLE платежи№2;\nCREATE TABLE платежи№2 (amount INTEGER);\n", "sqlite"
    )

    assert touched_tables(statements) == {"платежи№2"}


# -- schema check after the migrations -----------------------------------------------------------

PROGRAMS = """
CREATE TABLE programs (id INTEGER PRIMARY KEY, code TEXT NOT NULL);
CREATE UNIQUE INDEX programs_code ON programs (code);
CREATE TABLE plans (id INTEGER PRIMARY KEY, program_code TEXT REFERENCES programs (code));
INSERT INTO programs VALUES (1, '001');
INSERT INTO plans VALUES (1, '001');
"""


def migrate_twice(root: Path, checked_before: bool) -> RunResult:
    """Apply 0001, then the rest with `checked_before`, as after a sample's full checks."""
    migrations = load_migrations(root, "sqlite")
    with open_sqlite(root) as db:
        run_migrations(db, migrations[:1])
        return run_migrations(db, migrations, checked_before=checked_before)


@pytest.mark.parametrize("checked_before", [True, False])
def test_reference_to_non_unique_column_is_finding(tmp_path: Path, checked_before: bool) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE,
            "0002_knp_name.sql": "ALTER TABLE payments ADD COLUMN knp_name TEXT"
            " REFERENCES knp (name_ru);\n",
        },
    )

    result = migrate_twice(tmp_path, checked_before)

    assert [f.rule for f in result.findings] == ["database.schema"]
    message = result.findings[0].message
    assert "table payments foreign key (knp_name) -> knp(name_ru)" in message
    assert 'foreign key mismatch - "payments" referencing "knp"' in message
    assert "every INSERT into payments and every DELETE from knp fails" in message
    assert "PRIMARY KEY or a UNIQUE index" in message
    assert result.findings[0].file == "app.sqlite"


def test_dropped_unique_parent_index_is_finding(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": PROGRAMS,
            "0002_plain_index.sql": "DROP INDEX programs_code;\n"
            "CREATE INDEX programs_code ON programs (code);\n",
        },
    )

    result = migrate_twice(tmp_path, checked_before=True)

    assert result.checked_tables == []
    assert [f.rule for f in result.findings] == ["database.schema"]
    message = result.findings[0].message
    assert "table plans foreign key (program_code) -> programs(code)" in message
    assert 'foreign key mismatch - "plans" referencing "programs"' in message


def test_broken_trigger_and_view_are_findings(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE + "CREATE TABLE knp_log (code TEXT);\n"
            "CREATE TRIGGER knp_logged AFTER INSERT ON knp BEGIN\n"
            "    INSERT INTO knp_log VALUES (new.code);\nEND;\n"
            "CREATE VIEW knp_log_view AS SELECT code FROM knp_log;\n",
            "0002_drop_log.sql": "DROP TABLE knp_log;\n",
        },
    )

    result = migrate_twice(tmp_path, checked_before=True)

    assert result.checked_tables == ["knp_log"]
    messages = [f.message for f in result.findings if f.rule == "database.schema"]
    assert len(messages) == 2
    assert "table knp: INSERT does not compile: no such table: main.knp_log" in messages[0]
    assert "triggers of table knp: knp_logged" in messages[0]
    assert "view knp_log_view does not compile: no such table: main.knp_log" in messages[1]


def test_sound_schema_has_no_schema_findings(tmp_path: Path) -> None:
    migrations = load_migrations(REPO_ROOT, "sqlite")
    with open_sqlite(tmp_path) as db:
        run_migrations(db, migrations)
        assert db.schema_problems() == []


# -- statements rejected in a migration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "PRAGMA ignore_check_constraints = ON",
            "PRAGMA ignore_check_constraints is not allowed in a migration",
        ),
        (
            "PRAGMA main.writable_schema = 1",
            "PRAGMA writable_schema is not allowed in a migration",
        ),
        ("ATTACH DATABASE '{root}/other.sqlite' AS other", "ATTACH is not allowed in a migration"),
        ("DETACH DATABASE other", "DETACH is not allowed in a migration"),
        ("VACUUM INTO '{root}/copy.sqlite'", "VACUUM INTO is not allowed in a migration"),
        ("PRAGMA /* off */ foreign_keys = OFF", "PRAGMA foreign_keys is not allowed"),
    ],
)
def test_rejected_statement_names_file_and_line(
    tmp_path: Path, statement: str, expected: str
) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE,
            "0002_rejected.sql": f"-- a comment\n{statement.format(root=tmp_path)};\n",
        },
    )
    migrations = load_migrations(tmp_path, "sqlite")

    with open_sqlite(tmp_path) as db, pytest.raises(MigrationError) as caught:
        run_migrations(db, migrations)
    findings = check_migrations(tmp_path)

    assert f"migrations/0002_rejected.sql:2: {expected}" in str(caught.value)
    assert not (tmp_path / "other.sqlite").exists()
    assert not (tmp_path / "copy.sqlite").exists()
    assert [(f.file, f.line) for f in findings] == [("migrations/0002_rejected.sql", 2)]
    assert expected in findings[0].message


def test_reset_session_enforces_check_constraints(tmp_path: Path) -> None:
    with open_sqlite(tmp_path) as db:
        db.execute("CREATE TABLE amounts (value INTEGER CHECK (value >= 0))")
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.reset_session()
        with pytest.raises(sqlite3.IntegrityError) as caught:
            db.execute("INSERT INTO amounts VALUES (-100)")
    assert "CHECK constraint failed" in str(caught.value)


def test_whole_check_after_scoped_run_reported(tmp_path: Path) -> None:
    write_migrations(
        tmp_path,
        {
            "0001_base.sql": BASELINE,
            "0002_knp_note.sql": "ALTER TABLE knp ADD COLUMN note TEXT;\n",
            "0003_rebuild.sql": "-- pipeline: rebuild-tables\n"
            "CREATE TABLE knp_new (code TEXT PRIMARY KEY, name_ru TEXT, note TEXT);\n"
            "INSERT INTO knp_new (code, name_ru, note) SELECT code, name_ru, note FROM knp;\n"
            "DROP TABLE knp;\n"
            "ALTER TABLE knp_new RENAME TO knp;\n",
        },
    )
    migrations = load_migrations(tmp_path, "sqlite")
    with open_sqlite(tmp_path) as db:
        run_migrations(db, migrations[:1])
        result = run_migrations(db, migrations[:2], checked_before=True)
        scoped = result.checked_tables
        run_migrations(db, migrations, result=result, checked_before=True)

    # A rebuild brings back the checks of the whole database, and the result reports it.
    assert scoped == []
    assert result.checked_tables is None
