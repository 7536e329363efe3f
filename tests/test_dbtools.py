"""Database tools on real SQLite samples and real PostgreSQL databases."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT

from pipeline.database import SQLiteDatabase, open_database
from pipeline.db_backup import backup_database, compare_databases, restore_database, verify_backup
from pipeline.db_schema import database_checksums, foreign_keys
from pipeline.dbtools import (
    check_database,
    reindex_database,
    repair_database,
    transfer_database,
)
from pipeline.errors import DatabaseToolError
from pipeline.migrations import schema_version
from pipeline.samples import generate_sample

CLI = str(Path(sys.executable).parent / "parus-release")


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory, migrations_root: Path) -> Path:
    """A small sample at the newest schema version, generated once."""
    folder = tmp_path_factory.mktemp("dbtools")
    return generate_sample(
        migrations_root, folder / "sample.sqlite", "small", upto=schema_version(REPO_ROOT)
    )


@pytest.fixture
def sample(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "sample.sqlite"
    path.write_bytes(template.read_bytes())
    return path


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def raw(path: Path, *statements: str) -> None:
    """Run statements with foreign keys off, as a buggy client would."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


def raw_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return list(connection.execute(sql).fetchall())
    finally:
        connection.close()


def count(path: Path, sql: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute(sql).fetchone()[0])
    finally:
        connection.close()


def add_orphans(path: Path) -> None:
    """Add an account of a missing organization, with a payment, and a payment of no account."""
    raw(
        path,
        "INSERT INTO accounts (id, organization_id, iban, currency)"
        " VALUES (90001, 777777, 'KZ000000000000000001', 'KZT')",
        "INSERT INTO payment_documents (id, account_id, doc_date, amount)"
        " VALUES (90001, 90001, '2026-01-01', 100)",
        "INSERT INTO payment_documents (id, account_id, doc_date, amount)"
        " VALUES (90002, 88888, '2026-01-01', 100)",
    )


# -- backup and restore ------------------------------------------------------------------------


def test_backup_verifies(sample: Path, tmp_path: Path) -> None:
    backup = backup_database(url_of(sample), Path("."), tmp_path / "b" / "sample.backup")
    assert backup.path.is_file()
    assert backup.engine == "sqlite"
    comparison = verify_backup(backup.path, url_of(sample), Path("."))
    assert comparison.equal
    assert comparison.tables["payment_documents"].rows == count(
        sample, "SELECT COUNT(*) FROM payment_documents"
    )


def test_restore_brings_back_rows(sample: Path, tmp_path: Path) -> None:
    backup = backup_database(url_of(sample), Path("."), tmp_path / "sample.backup")
    with open_database(url_of(sample), Path(".")) as db:
        before = database_checksums(db)
    raw(sample, "DELETE FROM payment_documents WHERE id % 2 = 0")

    comparison = restore_database(backup.path, url_of(sample), Path("."))

    assert comparison.equal
    with open_database(url_of(sample), Path(".")) as db:
        assert database_checksums(db) == before


def test_restore_missing_backup(sample: Path, tmp_path: Path) -> None:
    with pytest.raises(DatabaseToolError) as error:
        restore_database(tmp_path / "missing.backup", url_of(sample), Path("."))
    assert "missing.backup not found" in str(error.value)


def test_compare_names_differences(sample: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    other.write_bytes(sample.read_bytes())
    raw(other, "DELETE FROM knp WHERE code = '010'")
    raw(other, "UPDATE kato SET name_ru = 'x' WHERE code = (SELECT MIN(code) FROM kato)")
    with (
        open_database(url_of(sample), Path(".")) as first,
        open_database(url_of(other), Path(".")) as second,
    ):
        comparison = compare_databases(first, second)
    assert not comparison.equal
    assert any(d.startswith("table knp: ") and "rows in" in d for d in comparison.differences)
    assert "table kato: same row count" in " ".join(comparison.differences)


def test_backup_times_out_on_locked_sqlite(sample: Path, tmp_path: Path) -> None:
    holder = sqlite3.connect(sample, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    # Should the backup wait without a limit, the lock ends after 30 s and the test fails.
    release = threading.Timer(30, holder.rollback)
    release.start()
    try:
        with pytest.raises(DatabaseToolError) as error:
            backup_database(url_of(sample), Path("."), tmp_path / "b.sqlite", lock_timeout_ms=200)
    finally:
        release.cancel()
        holder.rollback()
        holder.close()
    message = str(error.value)
    assert message.startswith(f"backup of {sample} timed out:")
    assert "no read lock was granted within the lock timeout (200 ms)" in message
    assert "another connection is writing to it" in message
    assert message.endswith(
        "wait for that write to finish, or close the program that makes it,"
        " then run again, or raise --lock-timeout"
    )
    assert not (tmp_path / "b.sqlite").exists()


@pytest.mark.postgres
def test_backup_times_out_on_locked_postgres(postgres_database: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(postgres_database, autocommit=True) as setup:
        setup.execute("CREATE TABLE knp (code TEXT PRIMARY KEY)")
    with psycopg.connect(postgres_database) as holder:
        # Should the backup wait without a limit, the server ends the lock after 30 s.
        holder.execute("SET idle_in_transaction_session_timeout = '30s'")
        holder.execute("LOCK TABLE knp IN ACCESS EXCLUSIVE MODE")
        holder_pid = holder.info.backend_pid
        with pytest.raises(DatabaseToolError) as error:
            backup_database(
                postgres_database, Path("."), tmp_path / "pg.dump", lock_timeout_ms=300
            )
        holder.rollback()
    message = str(error.value)
    name = postgres_database.rsplit("/", 1)[1]
    assert message.startswith(f"backup of {name} timed out:")
    assert "no lock on table public.knp was granted within the lock timeout (300 ms)" in message
    assert f"process {holder_pid} holds AccessExclusiveLock on it (idle in transaction:" in message
    assert message.endswith(
        "wait for that session to finish, or end it, then run again, or raise --lock-timeout"
    )
    assert not (tmp_path / "pg.dump").exists()


@pytest.mark.postgres
def test_postgres_backup_and_restore(sample: Path, postgres_database: str, tmp_path: Path) -> None:
    transfer_database(url_of(sample), postgres_database, repo=REPO_ROOT)
    backup = backup_database(postgres_database, Path("."), tmp_path / "pg.dump")
    assert backup.engine == "postgresql"
    assert verify_backup(backup.path, postgres_database, Path(".")).equal
    with open_database(postgres_database, Path(".")) as db:
        before = database_checksums(db)
        db.execute("DELETE FROM payment_documents")

    restore_database(backup.path, postgres_database, Path("."))

    with open_database(postgres_database, Path(".")) as db:
        assert database_checksums(db) == before


# -- check and repair --------------------------------------------------------------------------


def test_check_clean_sample(sample: Path) -> None:
    report = check_database(url_of(sample))
    assert report.passed
    assert report.findings() == []


def test_check_finds_orphans(sample: Path) -> None:
    add_orphans(sample)
    report = check_database(url_of(sample))
    assert not report.passed
    by_table = {group.key.table: group for group in report.orphans}
    assert by_table["accounts"].count == 1
    assert by_table["accounts"].samples == ["id=90001"]
    assert by_table["accounts"].key.parent == "organizations"
    assert by_table["payment_documents"].count == 1
    assert by_table["payment_documents"].samples == ["id=90002"]
    text = "\n".join(str(f) for f in report.findings())
    assert "table accounts (organization_id) -> organizations(id): 1 orphan row(s)" in text


def test_check_reports_foreign_key_mismatch(sample: Path) -> None:
    raw(
        sample,
        "ALTER TABLE payment_documents ADD COLUMN payer_name TEXT"
        " REFERENCES organizations (name_ru)",
    )

    report = check_database(url_of(sample))

    assert not report.passed
    assert [f.rule for f in report.integrity] == ["database.schema"]
    message = report.integrity[0].message
    assert "table payment_documents foreign key (payer_name) -> organizations(name_ru)" in message
    assert "foreign key mismatch" in message


def test_check_finds_duplicate_catalog_keys(sample: Path) -> None:
    raw(
        sample,
        "CREATE TABLE pipeline_catalogs (id TEXT PRIMARY KEY, key_columns TEXT NOT NULL,"
        " columns TEXT NOT NULL, row_count INTEGER NOT NULL, sha256 TEXT NOT NULL,"
        " version TEXT NOT NULL)",
        "INSERT INTO pipeline_catalogs VALUES ('knp', '[\"code\"]', '[\"code\",\"name\"]',"
        " 3, 'x', '2026.12.0')",
        "CREATE TABLE catalog_knp (code TEXT, name TEXT)",
        "INSERT INTO catalog_knp VALUES ('010', 'a'), ('010', 'b'), ('012', 'c')",
    )
    report = check_database(url_of(sample))
    assert len(report.duplicates) == 1
    assert report.duplicates[0].table == "catalog_knp"
    assert report.duplicates[0].samples == ["010"]
    assert "key value(s) of (code) occur more than once" in str(report.findings()[0])


def test_repair_writes_script_only(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    before = sample.read_bytes()
    script = tmp_path / "repair.sql"

    result = repair_database(url_of(sample), script)

    assert not result.applied
    assert sample.read_bytes() == before
    text = script.read_text(encoding="utf-8")
    assert text.splitlines()[-1] == "COMMIT;"
    assert 'DELETE FROM "accounts" WHERE (("accounts"."organization_id" IS NOT NULL' in text
    assert "-- table accounts (organization_id) -> organizations(id): 1 orphan row(s)" in text
    assert text.index('DELETE FROM "payment_documents"') < text.index('DELETE FROM "accounts"')


def test_repair_apply_deletes_cascade(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    result = repair_database(url_of(sample), tmp_path / "repair.sql", apply=True)
    assert result.applied
    assert result.backup is not None and result.backup.path.is_file()
    assert result.remaining is not None and result.remaining.passed
    assert count(sample, "SELECT COUNT(*) FROM payment_documents WHERE id IN (90001, 90002)") == 0
    assert count(sample, "SELECT COUNT(*) FROM accounts WHERE id = 90001") == 0


def test_repair_relink_and_null(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    raw(sample, "UPDATE organizations SET kato_code = '000000000' WHERE id = 1")
    first_organization = count(sample, "SELECT MIN(id) FROM organizations")
    result = repair_database(
        url_of(sample),
        tmp_path / "repair.sql",
        policies={
            "accounts.organization_id": f"relink:{first_organization}",
            "organizations": "null",
        },
        apply=True,
    )
    assert result.remaining is not None
    assert result.remaining.orphans == []
    assert count(sample, "SELECT organization_id FROM accounts WHERE id = 90001") == (
        first_organization
    )
    assert count(sample, "SELECT COUNT(*) FROM organizations WHERE kato_code IS NULL") >= 1
    assert count(sample, "SELECT COUNT(*) FROM payment_documents WHERE id = 90001") == 1
    assert count(sample, "SELECT COUNT(*) FROM payment_documents WHERE id = 90002") == 0


def test_repair_failure_rolls_back(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    before = sample.read_bytes()
    with pytest.raises(DatabaseToolError) as error:
        repair_database(
            url_of(sample),
            tmp_path / "repair.sql",
            policies={"payment_documents": "null"},
            apply=True,
        )
    assert "NOT NULL constraint failed: payment_documents.account_id" in str(error.value)
    assert "rolled back" in str(error.value)
    assert sample.read_bytes() == before


def test_repair_relink_needs_placeholder(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    with pytest.raises(DatabaseToolError) as error:
        repair_database(
            url_of(sample),
            tmp_path / "r.sql",
            policies={"accounts.organization_id": "relink:424242"},
        )
    assert "placeholder organizations.id = '424242' does not exist" in str(error.value)


def test_repair_rejects_unknown_policy(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    with pytest.raises(DatabaseToolError) as error:
        repair_database(url_of(sample), tmp_path / "r.sql", policies={"accounts": "drop"})
    assert "expected one of delete, null, relink:VALUE, found 'drop'" in str(error.value)


# -- reindex -----------------------------------------------------------------------------------


def test_reindex_reports_sizes(sample: Path) -> None:
    raw(sample, "DELETE FROM payment_documents WHERE id % 3 <> 0")
    result = reindex_database(url_of(sample))
    assert result.engine == "sqlite"
    assert result.size_after < result.size_before
    assert result.size_after == sample.stat().st_size
    indexes = [
        row[0] for row in raw_rows(sample, "SELECT name FROM sqlite_master WHERE type = 'index'")
    ]
    assert indexes
    assert result.indexes_before is not None and result.indexes_after is not None
    assert sorted(result.indexes_before) == sorted(indexes)
    assert sorted(result.indexes_after) == sorted(indexes)
    assert all(size > 0 for size in result.indexes_after.values())
    assert result.index_size_before == sum(result.indexes_before.values())
    assert result.index_size_after == sum(result.indexes_after.values())
    assert result.index_note is None


def test_reindex_without_dbstat(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite build without the dbstat table: sizes of the file only, and a note saying why."""
    original = SQLiteDatabase.execute

    def execute(self: SQLiteDatabase, sql: str, parameters: Any = ()) -> list[Any]:
        if "dbstat" in sql:
            raise sqlite3.OperationalError("no such table: dbstat")
        return original(self, sql, parameters)

    monkeypatch.setattr(SQLiteDatabase, "execute", execute)
    result = reindex_database(url_of(sample))
    assert result.indexes_before is None
    assert result.index_size_before is None
    assert result.index_note is not None
    assert "dbstat" in result.index_note


@pytest.mark.postgres
def test_postgres_reindex(sample: Path, postgres_database: str) -> None:
    transfer_database(url_of(sample), postgres_database, repo=REPO_ROOT)
    result = reindex_database(postgres_database)
    assert result.engine == "postgresql"
    assert result.index_size_before is not None and result.index_size_before > 0
    assert result.index_size_after is not None and result.index_size_after > 0


# -- transfer ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_transfer_round_trip(sample: Path, postgres_database: str, tmp_path: Path) -> None:
    to_postgres = transfer_database(url_of(sample), postgres_database, repo=REPO_ROOT)
    assert to_postgres.tables["payment_documents"].rows == count(
        sample, "SELECT COUNT(*) FROM payment_documents"
    )
    back = tmp_path / "back.sqlite"

    transfer_database(postgres_database, url_of(back), repo=REPO_ROOT)

    with (
        open_database(url_of(sample), Path(".")) as first,
        open_database(url_of(back), Path(".")) as second,
    ):
        comparison = compare_databases(first, second, skip=frozenset({"pipeline_migrations"}))
        assert comparison.equal, comparison.differences
        assert len(foreign_keys(second)) == len(foreign_keys(first))


def test_transfer_sqlite_to_sqlite(sample: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.sqlite"
    result = transfer_database(url_of(sample), url_of(target), repo=REPO_ROOT)
    assert result.rows > 0
    assert "pipeline_migrations" not in result.tables
    assert check_database(url_of(target)).passed


def test_transfer_needs_empty_target(sample: Path, tmp_path: Path) -> None:
    target = tmp_path / "busy.sqlite"
    raw(target, "CREATE TABLE something (id INTEGER)")
    with pytest.raises(DatabaseToolError) as error:
        transfer_database(url_of(sample), url_of(target), repo=REPO_ROOT)
    assert "is not empty: it has tables something" in str(error.value)


# -- tasks -------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )


def test_cli_check_fails_on_orphans(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    junit = tmp_path / "check.xml"
    checked = run_cli("db.check", "--database", url_of(sample), "--junit", str(junit))
    assert checked.returncode == 1
    assert "table accounts (organization_id) -> organizations(id)" in checked.stdout
    assert "<failure" in junit.read_text(encoding="utf-8")


def test_cli_backup_verify_and_reindex(sample: Path, tmp_path: Path) -> None:
    backup = tmp_path / "sample.backup"
    done = run_cli("db.backup", "--database", url_of(sample), "--out", str(backup), "--verify")
    assert done.returncode == 0, done.stderr
    assert "tables match a scratch restore" in done.stdout
    reindexed = run_cli("db.reindex", "--database", url_of(sample))
    assert reindexed.returncode == 0, reindexed.stderr
    assert "bytes" in reindexed.stdout
    assert "  index payment_documents_account_date: " in reindexed.stdout


def test_cli_backup_lock_timeout(sample: Path, tmp_path: Path) -> None:
    holder = sqlite3.connect(sample, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = run_cli(
            "db.backup", "--database", url_of(sample), "--out", str(tmp_path / "b.sqlite"),
            "--lock-timeout", "0.2",
        )  # fmt: skip
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 1
    assert f"error: backup of {sample} timed out: no read lock was granted" in done.stderr
    assert "within the lock timeout (200 ms)" in done.stderr


def add_knp_orphan(path: Path) -> None:
    """Add a payment of an existing account whose KNP code is missing from knp."""
    account = count(path, "SELECT MIN(id) FROM accounts")
    raw(
        path,
        "INSERT INTO payment_documents (id, account_id, doc_date, amount, knp_code)"
        f" VALUES (90003, {account}, '2026-01-01', 100, '555')",
    )


def test_repair_table_relink_with_several_keys_rejected(sample: Path, tmp_path: Path) -> None:
    add_knp_orphan(sample)
    with pytest.raises(DatabaseToolError) as error:
        repair_database(
            url_of(sample), tmp_path / "r.sql", policies={"payment_documents": "relink:010"}
        )
    message = str(error.value)
    assert "payment_documents has several foreign keys" in message
    assert "account_id" in message
    assert "knp_code" in message
    assert "payment_documents.knp_code=relink:VALUE" in message


def test_repair_relink_column_leaves_other_keys(sample: Path, tmp_path: Path) -> None:
    add_knp_orphan(sample)
    account = count(sample, "SELECT account_id FROM payment_documents WHERE id = 90003")
    result = repair_database(
        url_of(sample),
        tmp_path / "r.sql",
        policies={"payment_documents.knp_code": "relink:010"},
        apply=True,
    )
    assert result.remaining is not None
    assert result.remaining.orphans == []
    rows = raw_rows(sample, "SELECT knp_code, account_id FROM payment_documents WHERE id = 90003")
    assert rows == [("010", account)]
    assert result.relinked == ["payment_documents.knp_code: 1 row(s) relinked to '010'"]


def test_repair_relink_placeholder_type_checked(sample: Path, tmp_path: Path) -> None:
    add_orphans(sample)
    first_organization = count(sample, "SELECT MIN(id) FROM organizations")
    padded = f"0{first_organization}"
    with pytest.raises(DatabaseToolError) as error:
        repair_database(
            url_of(sample),
            tmp_path / "r.sql",
            policies={"accounts.organization_id": f"relink:{padded}"},
        )
    message = str(error.value)
    assert f"placeholder '{padded}' for organizations.id" in message
    assert "expected an integer" in message
    assert f"relink:{first_organization}" in message


def test_transfer_after_data_migration(tmp_path: Path) -> None:
    repo = tmp_path / "content"
    shutil.copytree(REPO_ROOT / "migrations", repo / "migrations")
    number = int(sorted(p.name for p in (repo / "migrations").glob("*.sql"))[-1][:4]) + 1
    (repo / f"migrations/{number:04d}_seed_note.sql").write_text(
        "CREATE TABLE seed_note (id INTEGER PRIMARY KEY, text TEXT NOT NULL);\n"
        "INSERT INTO seed_note (id, text) VALUES (1, 'first'), (2, 'second');\n",
        encoding="utf-8",
    )
    source = generate_sample(repo, tmp_path / "source.sqlite", "small", upto=f"{number:04d}")
    raw(source, "UPDATE seed_note SET text = 'edited' WHERE id = 2")
    target = tmp_path / "target.sqlite"
    result = transfer_database(url_of(source), url_of(target), repo=repo)
    assert "seed_note" in result.tables
    with sqlite3.connect(target) as connection:
        rows = connection.execute("SELECT id, text FROM seed_note ORDER BY id").fetchall()
    assert rows == [(1, "first"), (2, "edited")]
