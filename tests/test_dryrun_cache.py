"""The dry-run cache: reuse of an unchanged sample's result, invalidation, failures."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from pipeline import dryrun
from pipeline.cache import CACHE_FOLDER, EDGE_BYTES, MISSING, WHOLE_HASH_BYTES, file_identity
from pipeline.config import Config, SampleDatabase
from pipeline.database import SQLiteDatabase
from pipeline.dryrun import DatabaseResult, dry_run
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


def test_stale_sample_check_record_dropped(config: Config) -> None:
    generate_sample(config.root, config.root / "second.sqlite", "small")
    (config.root / "second.sqlite").unlink()
    generate_sample(config.root, config.root / "third.sqlite", "small")

    document = json.loads((config.root / CACHE_FOLDER / "sample-checks.json").read_text("utf-8"))

    assert sorted(Path(name).name for name in document["entries"]) == [
        "sample.sqlite",
        "third.sqlite",
    ]


# --------------------------------------------------------------------------- what a cached run reads


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
    assert [f.file for f in first.results[0].findings] == [
        "packages/reports/broken/report.json"
    ]
    assert second.results[0].findings == first.results[0].findings
