"""The dry-run cache: reuse of an unchanged sample's result, invalidation, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest

from pipeline import dryrun, dryrun_kept, sample_checks
from pipeline.apply_store import ensure_tables, load_catalog
from pipeline.cache import CACHE_FOLDER, EDGE_BYTES, MISSING, WHOLE_HASH_BYTES, file_identity
from pipeline.config import Config, SampleDatabase
from pipeline.database import Database, SQLiteDatabase, run_migrations
from pipeline.dryrun import DatabaseResult, DryRunResult, dry_run
from pipeline.dryrun_kept import FOLDER
from pipeline.sample_checks import SampleChecks
from pipeline.samples import generate_sample

REPO_ROOT = Path(__file__).resolve().parent.parent
QUERY = "SELECT kbk_code, sum(amount) FROM payment_documents GROUP BY kbk_code"


def write_report(root: Path, code: str, sql: str) -> None:
    folder = root / "packages" / "reports" / code
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"code": code, "query": sql}), "utf-8")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    root = tmp_path / "content"
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    write_report(root, "payments_by_kbk", QUERY)
    generate_sample(root, root / "sample.sqlite", "small")
    return Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The samples that were really dry-run, in order."""
    seen: list[str] = []
    original: Callable[..., DatabaseResult] = dryrun._dry_run_one

    def counting(
        sample: SampleDatabase, inputs: object, progress: object = None
    ) -> DatabaseResult:
        seen.append(sample.url)
        return original(sample, inputs, progress)

    monkeypatch.setattr(dryrun, "_dry_run_one", counting)
    return seen


def test_second_run_reuses_result(config: Config, runs: list[str]) -> None:
    first = dry_run(config, use_cache=True)
    second = dry_run(config, use_cache=True)

    assert runs == ["sqlite:///sample.sqlite"]
    assert first.cached == 0
    assert second.cached == 1
    assert second.passed
    assert second.to_json()["results"] == first.to_json()["results"]
    assert (config.root / CACHE_FOLDER / "dry-run.json").is_file()


def test_cache_off_runs_every_time(config: Config, runs: list[str]) -> None:
    dry_run(config, use_cache=True)
    result = dry_run(config)

    assert len(runs) == 2
    assert result.cached == 0


def test_cache_off_writes_no_file(config: Config, runs: list[str]) -> None:
    shutil.rmtree(config.root / CACHE_FOLDER)

    dry_run(config)

    assert not (config.root / CACHE_FOLDER).exists()


# --------------------------------------------------------------------------- sample checks


@pytest.fixture
def integrity_calls(monkeypatch: pytest.MonkeyPatch) -> list[set[str] | None]:
    """The `tables` argument of every SQLite integrity check, in order."""
    calls: list[set[str] | None] = []
    original = SQLiteDatabase.integrity_problems

    def recording(self: SQLiteDatabase, tables: Collection[str] | None = None) -> list[str]:
        calls.append(None if tables is None else set(tables))
        return original(self, tables)

    monkeypatch.setattr(SQLiteDatabase, "integrity_problems", recording)
    return calls


def test_generated_sample_is_recorded_checked(config: Config) -> None:
    sample = config.root / "sample.sqlite"

    assert SampleChecks(config.root).passed(sample)


def test_checked_sample_gets_changed_tables_only(
    config: Config, integrity_calls: list[set[str] | None]
) -> None:
    result = dry_run(config, use_cache=True)

    assert result.passed
    assert not result.results[0].sample_checked
    # 0002 adds a table and a column, 0003 adds a table: SQLite checked those itself.
    assert integrity_calls == [set()]
    assert result.results[0].checked_tables == []
    assert (
        "  checks after the migrations: changed tables only (none);"
        " the sample passed the full checks before"
    ) in result.summary()


def test_migration_writing_rows_checks_that_table(
    config: Config, integrity_calls: list[set[str] | None]
) -> None:
    (config.root / "migrations" / "0004_touch_names.sql").write_text(
        "UPDATE organizations SET name_ru = name_ru || '' WHERE id < 10;\n", encoding="utf-8"
    )

    result = dry_run(config, use_cache=True)

    assert result.passed
    assert integrity_calls == [{"organizations"}]


def test_unchecked_sample_checked_whole_first(
    config: Config, integrity_calls: list[set[str] | None]
) -> None:
    shutil.rmtree(config.root / CACHE_FOLDER)

    first = dry_run(config, use_cache=True)
    second = dry_run(config, use_cache=True)

    assert first.results[0].sample_checked
    assert second.cached == 1
    assert integrity_calls == [None, set()]
    assert SampleChecks(config.root).passed(config.root / "sample.sqlite")


def test_changed_sample_checked_whole_again(
    config: Config, integrity_calls: list[set[str] | None]
) -> None:
    sample = config.root / "sample.sqlite"
    connection = sqlite3.connect(sample, isolation_level=None)
    connection.execute("UPDATE organizations SET name_ru = 'x' WHERE id = 1")
    connection.close()

    result = dry_run(config, use_cache=True)

    assert result.results[0].sample_checked
    assert integrity_calls[0] is None


def test_sample_failing_own_checks_fails_dry_run(config: Config) -> None:
    sample = config.root / "sample.sqlite"
    connection = sqlite3.connect(sample, isolation_level=None)
    connection.execute("PRAGMA foreign_keys = OFF")
    connection.execute(
        "DELETE FROM organizations WHERE id = (SELECT organization_id FROM accounts LIMIT 1)"
    )
    connection.close()

    result = dry_run(config, use_cache=True)

    outcome = result.results[0]
    assert not result.passed
    assert outcome.error == "sample.sqlite fails its own integrity checks"
    assert outcome.applied == []
    assert outcome.findings[0].rule == "database.foreign-key"
    assert outcome.findings[0].message.startswith(
        "the sample before the migrations: foreign key check: table accounts foreign key"
        " (organization_id) -> organizations(id)"
    )
    assert not SampleChecks(config.root).passed(sample)


def test_changed_migration_runs_again(config: Config, runs: list[str]) -> None:
    dry_run(config, use_cache=True)
    (config.root / "migrations" / "0004_audit.sql").write_text(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY);\n", "utf-8"
    )

    result = dry_run(config, use_cache=True)

    assert len(runs) == 2
    assert result.cached == 0
    assert [run.version for run in result.results[0].applied] == ["0002", "0003", "0004"]


def test_changed_query_runs_again(config: Config, runs: list[str]) -> None:
    dry_run(config, use_cache=True)
    write_report(config.root, "payments_by_kbk", "SELECT no_such_column FROM payment_documents")

    result = dry_run(config, use_cache=True)

    assert len(runs) == 2
    assert not result.passed
    assert "no such column: no_such_column" in result.results[0].findings[0].message


def test_changed_sample_runs_again(config: Config, runs: list[str]) -> None:
    dry_run(config, use_cache=True)
    sample = config.root / "sample.sqlite"
    generate_sample(config.root, config.root / "other.sqlite", "small")
    os.replace(config.root / "other.sqlite", sample)
    status = sample.stat()
    os.utime(sample, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))

    result = dry_run(config, use_cache=True)

    assert len(runs) == 2
    assert result.cached == 0


def test_failure_never_cached(config: Config, runs: list[str]) -> None:
    (config.root / "migrations" / "0004_broken.sql").write_text(
        "INSERT INTO organizations SELECT no_such_column FROM organizations;\n", "utf-8"
    )

    first = dry_run(config, use_cache=True)
    second = dry_run(config, use_cache=True)

    assert len(runs) == 2
    assert not first.passed
    assert not second.passed
    assert second.cached == 0
    document = json.loads((config.root / CACHE_FOLDER / "dry-run.json").read_text("utf-8"))
    assert document["entries"] == {}


def test_parallel_reuses_cached_samples(config: Config) -> None:
    names = ["sample", "second", "third"]
    for name in names[1:]:
        generate_sample(config.root, config.root / f"{name}.sqlite", "small")
    three = Config(
        root=config.root,
        sample_databases=tuple(SampleDatabase(f"sqlite:///{name}.sqlite") for name in names),
    )
    dry_run(config, use_cache=True)

    result = dry_run(three, jobs=2, use_cache=True)
    again = dry_run(three, jobs=2, use_cache=True)

    assert result.cached == 1
    assert [r.database for r in result.results] == [f"{name}.sqlite" for name in names]
    assert [r.passed for r in result.results] == [True, True, True]
    assert again.cached == 3


def test_file_identity_sees_size_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "large.bin"
    assert file_identity(path) == MISSING
    data = bytearray(WHOLE_HASH_BYTES + 3 * EDGE_BYTES)
    path.write_bytes(data)
    status = path.stat()
    first = file_identity(path)

    data[-1] = 1
    path.write_bytes(data)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert file_identity(path) != first

    data[-1] = 0
    data[0] = 1
    path.write_bytes(data)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert file_identity(path) != first

    data[0] = 0
    path.write_bytes(data)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert file_identity(path) == first


def test_reference_to_non_unique_column_fails_cached_run(config: Config) -> None:
    (config.root / "migrations" / "0004_payer_name.sql").write_text(
        "ALTER TABLE payment_documents ADD COLUMN payer_name TEXT"
        " REFERENCES organizations (name_ru);\n",
        "utf-8",
    )

    result = dry_run(config, use_cache=True)

    outcome = result.results[0]
    assert not result.passed
    assert outcome.checked_tables == []
    assert [f.rule for f in outcome.findings] == ["database.schema"]
    message = outcome.findings[0].message
    assert "table payment_documents foreign key (payer_name) -> organizations(name_ru)" in message
    assert "every INSERT into payment_documents and every DELETE from organizations" in message


def test_dropped_unique_parent_index_fails_cached_run(config: Config) -> None:
    (config.root / "migrations" / "0004_plain_kbk_index.sql").write_text(
        "CREATE TABLE kbk_copy (code TEXT PRIMARY KEY);\n"
        "CREATE UNIQUE INDEX kbk_copy_code ON kbk_copy (code);\n"
        "ALTER TABLE payment_documents ADD COLUMN kbk_copy_code TEXT"
        " REFERENCES kbk_copy (code);\n",
        "utf-8",
    )
    (config.root / "migrations" / "0005_drop_primary.sql").write_text(
        "-- pipeline: rebuild-tables\n"
        "CREATE TABLE kbk_copy_new (code TEXT);\n"
        "DROP TABLE kbk_copy;\n"
        "ALTER TABLE kbk_copy_new RENAME TO kbk_copy;\n",
        "utf-8",
    )

    result = dry_run(config, use_cache=True)

    assert not result.passed
    messages = [f.message for f in result.results[0].findings]
    assert any(
        "table payment_documents foreign key (kbk_copy_code) -> kbk_copy(code)" in message
        for message in messages
    )


def migrate_checked_sample(config: Config, setup: str, migration: str) -> DatabaseResult:
    """Change the sample with `setup`, record its full checks, then dry-run `migration`.

    The second dry-run checks only the tables the migrations change; the test
    compares its findings with those of a run with the cache off.
    """
    connection = sqlite3.connect(config.root / "sample.sqlite", isolation_level=None)
    connection.executescript(setup)
    connection.close()
    first = dry_run(config, use_cache=True)
    assert first.passed, first.summary()
    assert first.results[0].sample_checked
    (config.root / "migrations" / "0004_change.sql").write_text(migration, "utf-8")

    result = dry_run(config, use_cache=True)

    assert result.results[0].sample_checked is False
    assert result.results[0].findings == dry_run(config).results[0].findings
    return result.results[0]


def test_added_generated_column_fails_cached_run(config: Config) -> None:
    outcome = migrate_checked_sample(
        config,
        "CREATE TABLE currencies (code TEXT PRIMARY KEY);"
        " INSERT INTO currencies VALUES ('KZT'), ('USD'), ('EUR');"
        " UPDATE accounts SET currency = 'KZT' WHERE currency NOT IN ('USD', 'EUR');"
        " UPDATE accounts SET currency = 'RUB' WHERE id = (SELECT min(id) FROM accounts);",
        "ALTER TABLE accounts ADD COLUMN currency_code TEXT"
        " AS (coalesce(currency, 'KZT')) REFERENCES currencies (code);\n",
    )

    # The foreign key check at the end of the migration covers the table now.
    assert not outcome.passed
    assert [f.rule for f in outcome.findings] == ["dry-run.migration"]
    assert outcome.findings[0].message.startswith(
        "migrations/0004_change.sql: foreign key check failed after the migration:"
        " table accounts foreign key (currency_code) -> currencies(code)"
    )


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 37, 0), reason="STRICT needs SQLite 3.37")
def test_added_default_of_wrong_type_fails_cached_run(config: Config) -> None:
    outcome = migrate_checked_sample(
        config,
        "CREATE TABLE rates (code TEXT PRIMARY KEY) STRICT; INSERT INTO rates VALUES ('KZT');",
        "ALTER TABLE rates ADD COLUMN rate INTEGER NOT NULL DEFAULT 'none';\n",
    )

    assert not outcome.passed
    assert outcome.checked_tables == ["rates"]
    assert [f.message for f in outcome.findings] == [
        "integrity check: non-INTEGER value in rates.rate"
    ]


def test_non_ascii_table_rebuilt_fails_cached_run(config: Config) -> None:
    outcome = migrate_checked_sample(
        config,
        'CREATE TABLE "платежи№2" (сумма INTEGER); INSERT INTO "платежи№2" VALUES (5);'
        " CREATE VIEW итоги№2 AS SELECT sum(сумма) AS всего FROM платежи№2;",
        "DROP TABLE платежи№2;\nCREATE TABLE платежи№2 (amount INTEGER);\n",
    )

    assert not outcome.passed
    assert outcome.checked_tables == ["платежи№2"]
    assert [f.message for f in outcome.findings] == [
        "schema check: view итоги№2 does not compile: no such column: сумма;"
        " create the view again over the new schema"
    ]


# --------------------------------------------------------------------------- sample-check records


def test_sample_check_records_of_every_sample_kept(config: Config) -> None:
    generate_sample(config.root, config.root / "second.sqlite", "small")
    generate_sample(config.root, config.root / "third.sqlite", "small")
    second_only = Config(
        root=config.root, sample_databases=(SampleDatabase("sqlite:///second.sqlite"),)
    )

    dry_run(second_only, use_cache=True)
    checks = SampleChecks(config.root)

    assert checks.passed(config.root / "sample.sqlite")
    assert checks.passed(config.root / "second.sqlite")
    assert checks.passed(config.root / "third.sqlite")


def test_saving_records_reads_no_other_sample(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_sample(config.root, config.root / "second.sqlite", "small")
    second_only = Config(
        root=config.root, sample_databases=(SampleDatabase("sqlite:///second.sqlite"),)
    )
    read: list[str] = []

    def recording(path: Path) -> str:
        read.append(path.name)
        return file_identity(path)

    monkeypatch.setattr(sample_checks, "file_identity", recording)
    monkeypatch.setattr(dryrun, "file_identity", recording)
    dry_run(second_only, use_cache=True)

    # The record of sample.sqlite is kept without reading that file, which may be large.
    assert "sample.sqlite" not in read
    assert "second.sqlite" in read
    assert SampleChecks(config.root).passed(config.root / "sample.sqlite")


def test_stale_sample_check_record_dropped(config: Config) -> None:
    generate_sample(config.root, config.root / "second.sqlite", "small")
    (config.root / "second.sqlite").unlink()
    generate_sample(config.root, config.root / "third.sqlite", "small")

    document = json.loads((config.root / CACHE_FOLDER / "sample-checks.json").read_text("utf-8"))

    assert sorted(Path(name).name for name in document["entries"]) == [
        "sample.sqlite",
        "third.sqlite",
    ]


# ------------------------------------------------------------------- what a cached run reads


def test_cached_run_parses_no_query(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    dry_run(config, use_cache=True)
    parsed: list[str] = []

    def recording(root: Path, queries: object) -> object:
        parsed.append(str(root))
        raise AssertionError("a run whose results all come from the cache parses no query")

    monkeypatch.setattr(dryrun, "used_objects", recording)
    monkeypatch.setattr(dryrun, "load_report_queries", recording)

    result = dry_run(config, use_cache=True)

    assert result.cached == 1
    assert parsed == []


def test_changed_loaded_catalog_runs_again(config: Config, runs: list[str]) -> None:
    shutil.copytree(REPO_ROOT / "catalogs", config.root / "catalogs")
    dry_run(config, use_cache=True)
    with (config.root / "catalogs/knp/rows.csv").open("a", encoding="utf-8") as rows:
        rows.write("914,Өсімпұл,Пеня\n")

    result = dry_run(config, use_cache=True)
    again = dry_run(config, use_cache=True, catalogs=["kbe"])

    assert len(runs) == 3
    assert result.cached == 0
    assert again.cached == 0
    assert result.results[0].catalogs == ["kato", "kbe", "knp"]


def test_query_warnings_kept_in_cached_result(config: Config) -> None:
    folder = config.root / "packages" / "reports" / "broken"
    folder.mkdir(parents=True)
    (folder / "report.json").write_bytes(b'{"code": "broken", "query": "\xff"}')

    first = dry_run(config, use_cache=True)
    second = dry_run(config, use_cache=True)

    assert second.cached == 1
    assert [f.file for f in first.results[0].findings] == ["packages/reports/broken/report.json"]
    assert second.results[0].findings == first.results[0].findings


# --------------------------------------------------------------------------- kept migrated copies


@pytest.fixture
def migrations_run(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sample copies made and the migration runs started, in order."""
    calls: list[str] = []
    copy = dryrun._copy_sqlite
    migrate = run_migrations

    def copying(source: Path, target: Path) -> None:
        calls.append(f"copy {source.name}")
        copy(source, target)

    def migrating(db: Database, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"migrate {db.label}")
        return migrate(db, *args, **kwargs)

    monkeypatch.setattr(dryrun, "_copy_sqlite", copying)
    monkeypatch.setattr(dryrun, "run_migrations", migrating)
    return calls


def kept_files(root: Path) -> list[Path]:
    return sorted((root / CACHE_FOLDER / FOLDER).glob("*.sqlite"))


def comparable(result: DryRunResult) -> list[tuple[object, ...]]:
    """The parts of each result that do not depend on timing or the worker."""
    return [
        (
            r.database,
            r.passed,
            r.error,
            [(run.version, run.path, run.transactional) for run in r.applied],
            r.findings,
            r.catalogs,
        )
        for r in result.results
    ]


def append_row(root: Path, catalog: str, line: str) -> None:
    with (root / "catalogs" / catalog / "rows.csv").open("a", encoding="utf-8") as rows:
        rows.write(line)


def test_changed_catalog_uses_kept_copy(config: Config, migrations_run: list[str]) -> None:
    shutil.copytree(REPO_ROOT / "catalogs", config.root / "catalogs")
    first = dry_run(config, use_cache=True)
    (kept,) = kept_files(config.root)
    kept_bytes = kept.read_bytes()
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    migrations_run.clear()

    result = dry_run(config, use_cache=True)

    assert first.passed
    assert migrations_run == []
    assert result.cached == 0
    assert result.passed
    assert kept.read_bytes() == kept_bytes
    assert comparable(result) == comparable(dry_run(config))


def test_kept_copy_finds_rejected_catalog_row(config: Config, migrations_run: list[str]) -> None:
    shutil.copytree(REPO_ROOT / "catalogs", config.root / "catalogs")
    # The sample itself limits the names, so no migration changes the knp table.
    with sqlite3.connect(config.root / "sample.sqlite") as connection:
        connection.executescript(
            "PRAGMA foreign_keys = OFF;\n"
            "CREATE TABLE knp_new (\n"
            "    code TEXT PRIMARY KEY,\n"
            "    name_ru TEXT NOT NULL CHECK (length(name_ru) <= 40),\n"
            "    name_kk TEXT NOT NULL\n"
            ");\n"
            "INSERT INTO knp_new SELECT code, name_ru, name_kk FROM knp;\n"
            "DROP TABLE knp;\n"
            "ALTER TABLE knp_new RENAME TO knp;\n"
        )
    dry_run(config, use_cache=True, catalogs=["kato"])
    (kept,) = kept_files(config.root)
    kept_bytes = kept.read_bytes()
    migrations_run.clear()

    result = dry_run(config, use_cache=True, catalogs=["kato", "knp"])

    assert migrations_run == []
    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.file == "catalogs/knp/rows.csv"
    assert finding.message == (
        "on sample.sqlite: catalog knp: row code=019 of catalogs/knp/rows.csv cannot be"
        " written into table knp: CHECK constraint failed: length(name_ru) <= 40"
    )
    assert kept.read_bytes() == kept_bytes
    assert comparable(result) == comparable(dry_run(config, catalogs=["kato", "knp"]))


def test_kept_copy_finds_orphans_of_removed_row(config: Config, migrations_run: list[str]) -> None:
    root = config.root
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    sample = SQLiteDatabase(
        "sqlite:///sample.sqlite", root / "sample.sqlite", create=False, lock_timeout_ms=1000
    )
    sample.execute("BEGIN")
    ensure_tables(sample)
    load_catalog(sample, root, {"id": "knp", "path": "catalogs/knp/rows.csv"}, "2025.1")
    sample.execute("COMMIT")
    sample.close()
    # Deferred, so the loader's DELETE passes and only a check of the rows finds the orphan.
    (root / "migrations" / "0004_payment_purpose.sql").write_text(
        "CREATE TABLE payment_purposes (\n"
        "    id INTEGER PRIMARY KEY,\n"
        "    knp_code TEXT NOT NULL REFERENCES catalog_knp (code)"
        " DEFERRABLE INITIALLY DEFERRED\n"
        ");\n"
        "INSERT INTO payment_purposes (knp_code) VALUES ('311');\n",
        "utf-8",
    )
    # knp ships in both runs: an unshipped knp would load before the migration,
    # which names its table, and a change of its rows would migrate a new copy.
    dry_run(config, use_cache=True, catalogs=["kato", "knp"])
    (kept,) = kept_files(root)
    kept_bytes = kept.read_bytes()
    rows = root / "catalogs" / "knp" / "rows.csv"
    rows.write_text(
        "".join(
            line
            for line in rows.read_text("utf-8").splitlines(True)
            if not line.startswith("311,")
        ),
        "utf-8",
    )
    migrations_run.clear()

    result = dry_run(config, use_cache=True, catalogs=["kato", "knp"])

    assert migrations_run == []
    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.rule == "database.foreign-key"
    assert finding.message.startswith(
        "foreign key check: table payment_purposes foreign key (knp_code) -> catalog_knp(code)"
    )
    assert kept.read_bytes() == kept_bytes
    assert comparable(result) == comparable(dry_run(config, catalogs=["kato", "knp"]))


def test_changed_migration_rebuilds_kept_copy(config: Config, migrations_run: list[str]) -> None:
    dry_run(config, use_cache=True)
    (kept,) = kept_files(config.root)
    (config.root / "migrations" / "0004_audit.sql").write_text(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY);\n", "utf-8"
    )
    migrations_run.clear()

    result = dry_run(config, use_cache=True)

    assert migrations_run == ["copy sample.sqlite", "migrate sample.sqlite"]
    assert result.passed
    assert kept_files(config.root) == [kept]
    with sqlite3.connect(kept) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "audit" in tables


def test_deleted_cache_folder_runs_full_path(config: Config, migrations_run: list[str]) -> None:
    dry_run(config, use_cache=True)
    shutil.rmtree(config.root / CACHE_FOLDER)
    migrations_run.clear()

    result = dry_run(config, use_cache=True)

    assert result.passed
    assert migrations_run == ["copy sample.sqlite", "migrate sample.sqlite"]
    assert len(kept_files(config.root)) == 1


def test_changed_kept_copy_not_used(config: Config, migrations_run: list[str]) -> None:
    dry_run(config, use_cache=True)
    (kept,) = kept_files(config.root)
    with sqlite3.connect(kept) as connection:
        connection.execute("DROP TABLE kbk")
    write_report(config.root, "payments_by_kbk", QUERY + " ORDER BY 1")
    migrations_run.clear()

    result = dry_run(config, use_cache=True)

    assert result.passed
    assert migrations_run == ["copy sample.sqlite", "migrate sample.sqlite"]


def test_kept_copy_with_changed_page_not_used(config: Config, migrations_run: list[str]) -> None:
    dry_run(config, use_cache=True)
    (kept,) = kept_files(config.root)
    content = bytearray(kept.read_bytes())
    # The last byte of the file: size and header stay, as after a lost write.
    content[-1] ^= 0xFF
    kept.write_bytes(bytes(content))
    # A new query makes the stored result stale, so the run turns to the kept copy.
    write_report(config.root, "payments_by_kbk", QUERY + " ORDER BY 1")
    migrations_run.clear()

    result = dry_run(config, use_cache=True)

    assert result.passed
    assert migrations_run == ["copy sample.sqlite", "migrate sample.sqlite"]


@pytest.mark.parametrize(("limit", "synced"), [(1 << 20, False), (0, True)])
def test_only_large_kept_copy_synced(
    config: Config, monkeypatch: pytest.MonkeyPatch, limit: int, synced: bool
) -> None:
    monkeypatch.setattr(dryrun, "WHOLE_DIGEST_BYTES", limit)
    monkeypatch.setattr(dryrun_kept, "WHOLE_DIGEST_BYTES", limit)
    synced_files: list[int] = []
    fsync = os.fsync

    def recording(descriptor: int) -> None:
        synced_files.append(descriptor)
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording)
    dry_run(config, use_cache=True)
    (kept,) = kept_files(config.root)
    record = json.loads(kept.with_suffix(".json").read_text("utf-8"))

    assert bool(synced_files) is synced
    assert ("sha256" in record) is not synced


CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from pipeline import dryrun, dryrun_catalogs
from pipeline.config import Config, SampleDatabase

# A small page cache makes SQLite write changed pages into the kept copy
# before the transaction ends.
dryrun.COPY_CACHE_KIB = 16
load = dryrun_catalogs.load_catalog

def load_then_die(db, *args):
    counts = load(db, *args)
    db.execute(
        "CREATE TABLE scratch AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
        " SELECT i + 1 FROM n WHERE i < 20000) SELECT i, randomblob(100) AS b FROM n"
    )
    os.kill(os.getpid(), signal.SIGKILL)

dryrun_catalogs.load_catalog = load_then_die
root = Path(sys.argv[1])
config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
dryrun.dry_run(config, use_cache=True)
"""


def test_crash_in_catalog_load_leaves_kept_copy(config: Config, migrations_run: list[str]) -> None:
    shutil.copytree(REPO_ROOT / "catalogs", config.root / "catalogs")
    first = dry_run(config, use_cache=True)
    (kept,) = kept_files(config.root)
    kept_bytes = kept.read_bytes()
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")

    child = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(config.root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    migrations_run.clear()
    written = kept.read_bytes() != kept_bytes
    journal = Path(f"{kept}-journal").is_file()
    result = dry_run(config, use_cache=True)

    assert child.returncode == -signal.SIGKILL, child.stderr
    assert written
    assert journal
    assert migrations_run == []
    assert result.passed
    assert comparable(result)[0][4] == comparable(first)[0][4]
    assert kept.read_bytes() == kept_bytes


def test_view_broken_on_checked_sample_found(config: Config) -> None:
    with sqlite3.connect(config.root / "sample.sqlite") as connection:
        connection.execute("CREATE VIEW knp_names AS SELECT name_ru FROM knp")
    dry_run(config, use_cache=True)
    (config.root / "migrations" / "0004_knp_titles.sql").write_text(
        "-- pipeline: rebuild-tables\n"
        "CREATE TABLE knp_old AS SELECT * FROM knp;\n"
        "DROP TABLE knp;\n"
        "CREATE TABLE knp (code TEXT PRIMARY KEY, title_ru TEXT, name_kk TEXT);\n"
        "INSERT INTO knp SELECT code, name_ru, name_kk FROM knp_old;\n"
        "DROP TABLE knp_old;\n",
        "utf-8",
    )

    result = dry_run(config, use_cache=True)

    # The sample passed the schema check before, so only what the migration changed is probed.
    (sample,) = result.results
    assert sample.sample_checked is False
    assert not result.passed
    messages = [finding.message for finding in sample.findings]
    assert (
        "schema check: view knp_names does not compile: no such column: name_ru;"
        " create the view again over the new schema"
    ) in messages
