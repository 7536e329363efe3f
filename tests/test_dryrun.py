"""Dry-run of migrations and report queries on copies of real SQLite sample databases."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    add_catalog_column,
    ended_process_id,
    git,
    running,
    stop,
    under_ci,
    wait_until,
)

from pipeline import dryrun
from pipeline.cache import cache_path
from pipeline.config import Config, SampleDatabase
from pipeline.database import SQLiteDatabase, StatementError, open_database, run_migrations
from pipeline.dryrun import Shard, dry_run
from pipeline.dryrun_catalogs import loaded_catalogs, shipped_catalogs
from pipeline.errors import ConfigError, ValidationError
from pipeline.findings import write_json_report, write_junit_report
from pipeline.migrations import FOREIGN_KEYS_MESSAGE, load_migrations
from pipeline.report_merge import merge_reports
from pipeline.samples import generate_sample

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_content(root: Path, queries: dict[str, str] | None = None) -> Path:
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    for code, sql in (queries or {}).items():
        folder = root / "packages" / "reports" / code
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"code": code, "query": sql}), "utf-8")
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that receives every temporary file, so the test can see what is left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_demo_migrations_pass_on_small_sample(tmp_path: Path, private_tmp: Path) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "payments_by_kbk": "SELECT kbk_code, sum(amount) FROM payment_documents"
            " WHERE doc_date BETWEEN :from AND :to GROUP BY kbk_code"
        },
    )
    sample = generate_sample(root, root / ".samples" / "small.sqlite", "small")
    before = sha256(sample)
    config = Config(
        root=root, sample_databases=(SampleDatabase("sqlite:///.samples/small.sqlite"),)
    )
    result = dry_run(config, bundle_version="2026.12.0")
    assert result.passed
    (database,) = result.results
    assert database.error is None
    assert database.findings == []
    assert [run.version for run in database.applied] == ["0002", "0003"]
    assert database.engine == "sqlite"
    assert sha256(sample) == before
    assert list(private_tmp.iterdir()) == []
    assert json.loads(json.dumps(result.to_json()))["passed"] is True


def test_no_base_release_needs_no_export_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    prefixes: list[str | None] = []
    original = tempfile.TemporaryDirectory

    def recording(*args: Any, **kwargs: Any) -> Any:
        prefixes.append(kwargs.get("prefix"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recording)

    result = dry_run(config)

    assert result.passed
    assert dryrun.copies_prefix() in prefixes
    assert dryrun.copies_prefix().startswith(f"pipeline-dry-run-{os.getpid()}-")
    assert "pipeline-base-" not in prefixes


def test_failing_migration_leaves_sample_unchanged(tmp_path: Path, private_tmp: Path) -> None:
    root = make_content(tmp_path / "content")
    sample = generate_sample(root, root / "sample.sqlite", "small")
    before = sha256(sample)
    (root / "migrations" / "0004_broken.sql").write_text(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY);\nINSERT INTO audit SELECT no_such_column"
        " FROM organizations;\n",
        "utf-8",
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    result = dry_run(config)
    assert not result.passed
    (database,) = result.results
    assert database.error is not None
    assert "migrations/0004_broken.sql:2" in database.error
    assert "no such column: no_such_column" in database.error
    assert [f.file for f in database.findings] == ["migrations/0004_broken.sql"]
    assert database.findings[0].line == 2
    assert [run.version for run in database.applied] == ["0002", "0003"]
    assert sha256(sample) == before
    assert list(private_tmp.iterdir()) == []


def test_query_on_dropped_column_names_report(tmp_path: Path) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "payments_by_purpose": "SELECT purpose, amount FROM payment_documents"
            " WHERE account_id = :account",
            "organizations_list": "SELECT bin, name_ru FROM organizations",
        },
    )
    sample = generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_drop_purpose.sql").write_text(
        "ALTER TABLE payment_documents DROP COLUMN purpose;\n", "utf-8"
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    before = sha256(sample)
    result = dry_run(config)
    assert not result.passed
    (database,) = result.results
    assert database.error is None
    lint, finding = database.findings
    assert lint.rule == "lint.drop-used-object"
    assert lint.file == "migrations/0004_drop_purpose.sql"
    assert "drops column payment_documents.purpose, which report payments_by_purpose" in (
        lint.message
    )
    assert finding.rule == "dry-run.query"
    assert finding.file == "packages/reports/payments_by_purpose/report.json"
    assert "report payments_by_purpose" in finding.message
    assert "no such column: purpose" in finding.message
    assert sha256(sample) == before


def test_missing_sample_is_generated(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    sample = SampleDatabase("sqlite:///.samples/new.sqlite", generate="small")
    result = dry_run(Config(root=root, sample_databases=(sample,)))
    assert result.passed
    assert (root / ".samples" / "new.sqlite").is_file()
    assert [run.version for run in result.results[0].applied] == ["0002", "0003"]


def test_missing_sample_fails_only_its_result(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "present.sqlite", "small")
    config = Config(
        root=root,
        sample_databases=(
            SampleDatabase("sqlite:///absent.sqlite"),
            SampleDatabase("sqlite:///present.sqlite"),
        ),
    )
    result = dry_run(config)
    assert not result.passed
    absent, present = result.results
    assert absent.database == "absent.sqlite"
    assert not absent.passed
    assert absent.error is not None
    assert f"sample database {root / 'absent.sqlite'} not found" in absent.error
    assert 'generate = "small"' in absent.error
    assert absent.applied == []
    assert present.passed
    assert [run.version for run in present.applied] == ["0002", "0003"]
    assert json.loads(json.dumps(result.to_json()))["passed"] is False


def test_no_sample_database_is_an_error(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    with pytest.raises(ConfigError) as caught:
        dry_run(Config(root=root, sample_databases=()))
    assert "no sample database to dry-run on" in str(caught.value)
    assert "set sample_databases in [tool.pipeline] of" in str(caught.value)
    assert "or pass --database URL" in str(caught.value)


def test_empty_shard_needs_explicit_flag(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    config = Config(
        root=root,
        sample_databases=(
            SampleDatabase("sqlite:///one.sqlite"),
            SampleDatabase("sqlite:///two.sqlite"),
        ),
    )
    with pytest.raises(ConfigError) as caught:
        dry_run(config, shard=Shard.parse("3/3"))
    assert "no sample database to dry-run on: shard 3/3 of 2 sample database(s)" in str(
        caught.value
    )
    assert "--allow-empty-shard" in str(caught.value)
    result = dry_run(config, shard=Shard.parse("3/3"), allow_empty_shard=True)
    assert result.passed
    assert result.results == []
    assert result.summary() == [
        "shard 3/3: no sample database in this shard, passed because empty shards are allowed"
    ]


# -- PostgreSQL on the local test server ---------------------------------------------------------

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_sample() -> Iterator[str]:
    """A sample database created on the local server for one test and dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"pipeline_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if under_ci():
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.postgres
def test_postgres_dry_run_uses_template_copy(tmp_path: Path, postgres_sample: str) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "statements": "SELECT statement_date, closing_balance FROM treasury_statements"
            " WHERE account_id = :account AND imported_at > :since"
        },
    )
    with open_database(postgres_sample, root) as db:
        run_migrations(db, load_migrations(root, "postgresql")[:1])
        db.execute("INSERT INTO knp VALUES ('010', 'Пенсионные взносы', 'Зейнетақы жарналары')")
    config = Config(root=root, sample_databases=(SampleDatabase(postgres_sample),))
    result = dry_run(config, bundle_version="2026.12.0")
    (database,) = result.results
    assert database.error is None
    assert database.findings == []
    assert result.passed
    assert database.engine == "postgresql"
    assert [run.path for run in database.applied] == [
        "migrations/0002_budget_classification.sql",
        "migrations/0003_treasury_statements.postgresql.sql",
    ]
    with open_database(postgres_sample, root) as db:
        assert db.execute("SELECT version FROM pipeline_migrations") == [("0001",)]
        assert db.execute("SELECT code FROM knp") == [("010",)]


@pytest.mark.postgres
def test_postgres_failed_statement_rolls_back(tmp_path: Path, postgres_sample: str) -> None:
    root = make_content(tmp_path / "content")
    (root / "migrations" / "0004_broken.sql").write_text(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY);\nINSERT INTO audit VALUES ('x');\n",
        "utf-8",
    )
    with open_database(postgres_sample, root) as db:
        with pytest.raises(StatementError) as caught:
            run_migrations(db, load_migrations(root, "postgresql"))
        tables = db.execute("SELECT tablename FROM pg_tables WHERE tablename = 'audit'")
        versions = db.execute("SELECT version FROM pipeline_migrations ORDER BY version")
    assert caught.value.line == 2
    assert "migrations/0004_broken.sql:2" in str(caught.value)
    assert "invalid input syntax for type integer" in str(caught.value)
    assert tables == []
    assert versions == [("0001",), ("0002",), ("0003",)]


# -- edge rows, parallel runs, shards and reports ------------------------------------------------


def test_unique_index_meets_duplicate_rows(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_unique_number.sql").write_text(
        "CREATE UNIQUE INDEX payment_documents_number"
        " ON payment_documents (account_id, doc_number, doc_date);\n",
        "utf-8",
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    (database,) = dry_run(config).results
    assert database.error is not None
    assert "migrations/0004_unique_number.sql:1" in database.error
    assert "UNIQUE constraint failed: payment_documents.account_id" in database.error


def test_rebuilt_table_meets_null_rows(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_kk_required.sql").write_text(
        "CREATE TABLE organizations_new (id INTEGER PRIMARY KEY, bin TEXT UNIQUE NOT NULL,"
        " name_ru TEXT NOT NULL, name_kk TEXT NOT NULL, kato_code TEXT);\n"
        "INSERT INTO organizations_new SELECT * FROM organizations;\n",
        "utf-8",
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    (database,) = dry_run(config).results
    assert database.error is not None
    assert "migrations/0004_kk_required.sql:2" in database.error
    assert "NOT NULL constraint failed: organizations_new.name_kk" in database.error


REBUILD_ACCOUNTS = (
    "CREATE TABLE accounts_new (id INTEGER PRIMARY KEY,"
    " organization_id INTEGER NOT NULL REFERENCES organizations (id),"
    " iban TEXT UNIQUE NOT NULL, currency TEXT NOT NULL DEFAULT 'KZT');\n"
    "INSERT INTO accounts_new SELECT id, organization_id, iban, coalesce(currency, 'KZT')"
    " FROM accounts{where};\n"
    "DROP TABLE accounts;\n"
    "ALTER TABLE accounts_new RENAME TO accounts;\n"
    "CREATE INDEX accounts_organization ON accounts (organization_id);\n"
)


def rebuild_content(tmp_path: Path, header: str, where: str = "") -> Config:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_currency_required.sqlite.sql").write_text(
        header + REBUILD_ACCOUNTS.format(where=where), "utf-8"
    )
    (root / "migrations" / "0004_currency_required.postgresql.sql").write_text(
        "ALTER TABLE accounts ALTER COLUMN currency SET DEFAULT 'KZT';\n", "utf-8"
    )
    return Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))


def test_rebuild_of_referenced_table_passes(tmp_path: Path) -> None:
    config = rebuild_content(tmp_path, "-- pipeline: rebuild-tables\n")
    result = dry_run(config)
    (database,) = result.results
    assert database.error is None
    assert database.findings == []
    assert [run.version for run in database.applied] == ["0002", "0003", "0004"]
    assert result.passed


def test_rebuild_losing_rows_names_orphans(tmp_path: Path) -> None:
    config = rebuild_content(tmp_path, "-- pipeline: rebuild-tables\n", " WHERE id % 2 = 0")
    (database,) = dry_run(config).results
    assert database.error is not None
    assert "migrations/0004_currency_required.sqlite.sql: foreign key check failed" in (
        database.error
    )
    assert "table payment_documents foreign key (account_id) -> accounts(id):" in (database.error)
    assert "rowid " in database.error
    assert [run.version for run in database.applied] == ["0002", "0003"]


def test_rebuild_with_defer_foreign_keys(tmp_path: Path) -> None:
    config = rebuild_content(tmp_path, "PRAGMA defer_foreign_keys = ON;\n")
    (database,) = dry_run(config).results
    assert database.error is not None
    assert "COMMIT failed" in database.error
    assert "PRAGMA foreign_key_check finds no orphan rows" in database.error
    assert "'-- pipeline: rebuild-tables'" in database.error


def test_rebuild_with_defer_names_orphans(tmp_path: Path) -> None:
    config = rebuild_content(tmp_path, "PRAGMA defer_foreign_keys = ON;\n", " WHERE id % 2 = 0")
    (database,) = dry_run(config).results
    assert database.error is not None
    assert "table payment_documents foreign key (account_id) -> accounts(id):" in (database.error)
    assert "COMMIT failed" not in database.error


def test_summary_shows_failure_once(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_broken.sql").write_text(
        "SELECT no_such_column FROM organizations;\n", "utf-8"
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    summary = dry_run(config).summary()
    failures = [line for line in summary if "no such column: no_such_column" in line]
    assert len(failures) == 1
    assert "migrations/0004_broken.sql:1" in failures[0]


def three_samples(root: Path) -> Config:
    samples = []
    for name in ("first", "second", "third"):
        generate_sample(root, root / f"{name}.sqlite", "small")
        samples.append(SampleDatabase(f"sqlite:///{name}.sqlite"))
    return Config(root=root, sample_databases=tuple(samples))


def test_parallel_matches_serial(tmp_path: Path) -> None:
    config = three_samples(make_content(tmp_path / "content"))
    serial = dry_run(config)
    parallel = dry_run(config, jobs=2)
    assert [r.database for r in parallel.results] == [
        "first.sqlite",
        "second.sqlite",
        "third.sqlite",
    ]
    assert [r.passed for r in parallel.results] == [True, True, True]
    assert [[run.version for run in r.applied] for r in parallel.results] == [
        [run.version for run in r.applied] for r in serial.results
    ]
    assert len({r.worker for r in serial.results}) == 1
    assert serial.results[0].worker.startswith(f"pid {os.getpid()} thread ")
    assert len({r.worker for r in parallel.results}) == 2
    # With no other thread running, the workers are forked processes.
    assert all(not r.worker.startswith(f"pid {os.getpid()} ") for r in parallel.results)


def test_threads_beside_another_thread(tmp_path: Path) -> None:
    config = three_samples(make_content(tmp_path / "content"))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        parallel = dry_run(config, jobs=2)
    finally:
        stop.set()
        other.join()
    assert [r.passed for r in parallel.results] == [True, True, True]
    workers = {r.worker for r in parallel.results}
    assert len(workers) == 2
    assert all(worker.startswith(f"pid {os.getpid()} thread ") for worker in workers)


STOPPABLE_RUN = """
import logging, sys
from pathlib import Path
from pipeline.config import Config, SampleDatabase
from pipeline.dryrun import dry_run

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
root = Path(sys.argv[1])
samples = tuple(SampleDatabase(f"sqlite:///{name}") for name in sys.argv[3:])
dry_run(Config(root=root, sample_databases=samples), jobs=2, use_cache=sys.argv[2] == "cache")
"""


COUNT_FOR_HOURS = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000000)"
    " SELECT x FROM n"
)
SLOW_MIGRATIONS = {
    "migration": f"CREATE TABLE slow AS {COUNT_FOR_HOURS};\n",
    # The catalog load writes the knp rows into the application table knp.
    "catalog load": "CREATE TRIGGER knp_slow AFTER UPDATE ON knp"
    f" BEGIN SELECT count(*) FROM ({COUNT_FOR_HOURS}); END;\n",
}


def processes_running(script: Path) -> list[int]:
    """Return the ids of the processes whose command line names `script`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(script).encode() in arguments:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
@pytest.mark.parametrize("cache", ["cache", "no-cache"])
def test_sigterm_stops_forked_workers(tmp_path: Path, cache: str) -> None:
    root = make_content(tmp_path / "content")
    # A statement that would run for hours: SIGTERM waits for a statement to
    # end, so only the SIGKILL that stops forked workers ends this one.
    slow = root / "migrations" / "0004_slow.sql"
    slow.write_text(SLOW_MIGRATIONS["migration"], "utf-8")
    names = ["first.sqlite", "second.sqlite", "third.sqlite"]
    for name in names:
        generate_sample(root, root / name, "small")
    before = [sha256(root / name) for name in names]
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    script = tmp_path / "run.py"
    script.write_text(STOPPABLE_RUN, "utf-8")

    command = [sys.executable, str(script), str(root), cache, *names]
    environment = {**os.environ, "TMPDIR": str(temporary), "PYTHONPATH": str(REPO_ROOT)}
    with running(command, REPO_ROOT, env=environment) as process:
        # Both workers run the slow migration once the second worker's copy exists.
        wait_until(
            process,
            lambda: (
                len(list(temporary.glob("pipeline-dry-run-*/**/*.sqlite")))
                + len(list((root / ".pipeline-cache").glob("dry-run-samples/.*.tmp")))
                >= 2
            ),
            "both workers copied their samples",
        )
        workers = set(processes_running(script)) - {process.pid}
        assert len(workers) == 2
        errors = stop(process)

    assert process.returncode != 0
    assert "Terminated: signal 15" in errors
    for worker in workers:
        assert f"stopping dry-run worker process {worker} (SIGKILL)" in errors
    assert processes_running(script) == []
    assert list(temporary.iterdir()) == []
    assert [sha256(root / name) for name in names] == before
    # The next run makes its copies anew and clears what the killed workers left.
    slow.unlink()
    config = Config(
        root=root, sample_databases=tuple(SampleDatabase(f"sqlite:///{n}") for n in names)
    )
    again = dry_run(config, jobs=2, use_cache=cache == "cache")
    assert [result.passed for result in again.results] == [True, True, True]
    assert list((root / ".pipeline-cache").glob("dry-run-samples/.*.tmp")) == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_sigterm_exit_code_is_143(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    (root / "migrations" / "0004_slow.sql").write_text(SLOW_MIGRATIONS["migration"], "utf-8")
    for name in ("first.sqlite", "second.sqlite"):
        generate_sample(root, root / name, "small")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "dry-run"]
    command += ["--repo", str(root), "--jobs", "2", "--no-cache"]
    command += ["--database", "sqlite:///first.sqlite", "--database", "sqlite:///second.sqlite"]

    with running(command, root, env={**os.environ, "TMPDIR": str(temporary)}) as process:
        wait_until(
            process,
            lambda: len(list(temporary.glob("pipeline-dry-run-*/**/*.sqlite"))) >= 2,
            "both workers copied their samples",
        )
        errors = stop(process)

    # As a shell reports a process that SIGTERM ended: 128 + 15.
    assert process.returncode == 143
    assert errors.strip().endswith("terminated")
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize(
    ("number", "code", "message"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
@pytest.mark.parametrize("cache", ["--cache", "--no-cache"])
@pytest.mark.parametrize("slow_step", sorted(SLOW_MIGRATIONS))
def test_signal_stops_statement_without_workers(
    tmp_path: Path, number: int, code: int, message: str, cache: str, slow_step: str
) -> None:
    root = make_content(tmp_path / "content")
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_slow.sql").write_text(SLOW_MIGRATIONS[slow_step], "utf-8")
    generate_sample(root, root / "first.sqlite", "small")
    before = sha256(root / "first.sqlite")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "dry-run"]
    command += ["--repo", str(root), cache, "--database", "sqlite:///first.sqlite"]
    staging = root / ".pipeline-cache" / "dry-run-samples"

    with running(command, root, env={**os.environ, "TMPDIR": str(temporary)}) as process:
        wait_until(
            process,
            lambda: bool(
                list(temporary.glob("pipeline-dry-run-*/*.sqlite")) + list(staging.glob(".*.tmp"))
            ),
            "the sample was copied",
        )
        # The steps before the slow statement take milliseconds on the small sample.
        time.sleep(1.5)
        errors = stop(process, number)

    assert process.returncode == code
    assert errors.strip().endswith(message)
    assert "Traceback" not in errors
    assert "Exception ignored" not in errors
    assert list(temporary.iterdir()) == []
    assert list(staging.glob(".*.tmp")) == []
    assert sha256(root / "first.sqlite") == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("SELECT RAISE(ROLLBACK, 'knp name rejected');", "knp name rejected"),
        # Once the trigger has run arm(), the progress handler interrupts its UPDATE.
        (f"SELECT arm(); SELECT count(*) FROM ({COUNT_FOR_HOURS});", "interrupted"),
    ],
)
def test_catalog_load_rolled_back_by_sqlite(tmp_path: Path, body: str, message: str) -> None:
    root = make_content(tmp_path / "content")
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    sample = generate_sample(root, root / "first.sqlite", "small")
    db = open_database(f"sqlite:///{sample}", root)
    assert isinstance(db, SQLiteDatabase)
    run_migrations(db, load_migrations(root, "sqlite"))
    armed: list[bool] = []
    db.connection.create_function("arm", 0, lambda: armed.append(True))
    db.connection.set_progress_handler(lambda: 1 if armed else 0, 1000)
    db.execute(f"CREATE TRIGGER knp_check AFTER UPDATE ON knp BEGIN {body} END")
    kato_rows = db.execute("SELECT count(*) FROM kato")

    with loaded_catalogs(db, root, ["kato", "knp"], None, blobs={}) as load:
        in_transaction = db.in_transaction
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    kato_after = db.execute("SELECT count(*) FROM kato")
    db.close()

    # kato loads first; knp fails, SQLite rolls back both, and the load stops there.
    assert load.loaded == ["kato", "knp"]
    (finding,) = [f for f in load.findings if f.rule == "dry-run.catalog"]
    assert finding.file == "catalogs/knp/rows.csv"
    assert message in finding.message
    assert "rolled back the whole catalog load" in finding.message
    assert load.record is None
    assert not in_transaction
    assert "catalog_kato" not in tables
    assert kato_after == kato_rows


def test_rolled_back_load_lists_catalogs_tried(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    # The kbe catalog writes its rows into an application table of its name.
    (root / "migrations" / "0004_kbe.sql").write_text(
        "CREATE TABLE kbe (code TEXT PRIMARY KEY);\n"
        "CREATE TRIGGER kbe_check AFTER INSERT ON kbe"
        " BEGIN SELECT RAISE(ROLLBACK, 'kbe code rejected'); END;\n",
        "utf-8",
    )
    generate_sample(root, root / "sample.sqlite", "small")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config)

    # kbe fails after kato, and SQLite rolls back the whole load, so knp never loads.
    (sample,) = result.results
    assert not result.passed
    assert sample.catalogs == ["kato", "kbe"]
    (finding,) = sample.findings
    assert finding.file == "catalogs/kbe/rows.csv"
    assert "kbe code rejected" in finding.message
    assert "  catalogs loaded after the migrations: kato, kbe" in result.summary()


def test_copies_of_ended_dry_run_removed(tmp_path: Path, private_tmp: Path) -> None:
    config = three_samples(make_content(tmp_path / "content"))
    host = dryrun._host_tag()
    ended = private_tmp / f"pipeline-dry-run-{ended_process_id()}-{host}-x1y2"
    (ended / "pipeline-dry-run-inner").mkdir(parents=True)
    (ended / "pipeline-dry-run-inner" / "first.sqlite").write_bytes(b"left by a killed run")
    huge = private_tmp / f"pipeline-dry-run-{10**20}-{host}-x1y2"
    huge.mkdir()
    untouched = [
        # A running process, another host, a name of another pattern, a link.
        private_tmp / f"pipeline-dry-run-{os.getppid()}-{host}-a3b4",
        private_tmp / f"pipeline-dry-run-{ended_process_id()}-00000000-a3b4",
        private_tmp / "pipeline-dry-run-no-process",
    ]
    for folder in untouched:
        folder.mkdir()
    link = private_tmp / f"pipeline-dry-run-{ended_process_id()}-{host}-link"
    link.symlink_to(untouched[0])
    staging = config.root / ".pipeline-cache" / "dry-run-samples"
    staging.mkdir(parents=True)
    (staging / f".0123456789abcdef0123.{ended_process_id()}.tmp").write_bytes(b"staging")

    result = dry_run(config)

    assert result.passed
    assert not ended.exists()
    assert not huge.exists()
    assert [folder.is_dir() for folder in untouched] == [True, True, True]
    assert link.is_symlink()
    assert list(staging.glob(".*.tmp")) == []


def test_lost_worker_fails_its_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = three_samples(make_content(tmp_path / "content"))
    original = dryrun._dry_run_one

    def die_on_second(sample: SampleDatabase, *args: object) -> object:
        if sample.url.endswith("second.sqlite"):
            # As the out-of-memory killer would, after the first sample is done.
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(sample, *args)

    monkeypatch.setattr(dryrun, "_dry_run_one", die_on_second)
    result = dry_run(config, jobs=2)

    first, second, third = result.results
    assert first.passed
    assert not result.passed
    assert second.database == "second.sqlite"
    assert second.error is not None
    assert "worker process of this sample ended before the sample finished" in second.error
    assert [finding.rule for finding in second.findings] == ["dry-run.worker"]
    # The pool stopped with the lost worker, and the third sample ran again alone.
    assert third.database == "third.sqlite"
    assert third.passed


def test_shards_split_samples(tmp_path: Path) -> None:
    config = three_samples(make_content(tmp_path / "content"))
    first = dry_run(config, shard=Shard.parse("1/2"))
    second = dry_run(config, shard=Shard.parse("2/2"))
    assert [r.database for r in first.results] == ["first.sqlite", "third.sqlite"]
    assert [r.database for r in second.results] == ["second.sqlite"]
    assert first.to_json()["shard"] == {"index": 1, "count": 2}


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_shard_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Shard.parse(text)
    assert f"--shard: expected I/N with 1 <= I <= N, such as 1/2, found {text!r}" == str(
        caught.value
    )


def test_merge_joins_shard_reports(tmp_path: Path) -> None:
    config = three_samples(make_content(tmp_path / "content"))
    paths = []
    for index in (2, 1):
        path = tmp_path / f"shard-{index}.json"
        write_json_report(path, dry_run(config, shard=Shard(index, 2)).to_json())
        paths.append(path)
    merged = merge_reports(paths)
    assert merged.passed
    assert [r.database for r in merged.results] == [
        "first.sqlite",
        "third.sqlite",
        "second.sqlite",
    ]
    assert merged.results[0].applied[0].path == "migrations/0002_budget_classification.sql"


def test_merge_rejects_missing_and_repeated_shards(tmp_path: Path) -> None:
    config = three_samples(make_content(tmp_path / "content"))
    first = tmp_path / "shard-1.json"
    whole = tmp_path / "whole.json"
    write_json_report(first, dry_run(config, shard=Shard(1, 3)).to_json())
    write_json_report(whole, {"passed": True, "shard": None, "results": []})
    with pytest.raises(ValidationError) as missing:
        merge_reports([first])
    with pytest.raises(ValidationError) as repeated:
        merge_reports([first, first])
    with pytest.raises(ValidationError) as mixed:
        merge_reports([first, whole])
    assert "shard(s) 2/3, 3/3 missing from the merge" in str(missing.value)
    assert f"shard 1/3 is given twice: {first} and {first}" in str(repeated.value)
    assert f"{whole}: expected a shard report like the others" in str(mixed.value)


def test_merge_rejects_broken_report(tmp_path: Path) -> None:
    broken = tmp_path / "truncated-report.json"
    broken.write_text('{"passed": true, "results": [', "utf-8")
    with pytest.raises(ValidationError) as caught:
        merge_reports([broken])
    assert f"{broken}: expected a UTF-8 JSON dry-run report" in str(caught.value)


def test_reports_name_engine_version_and_times(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    result = dry_run(config)
    data = json.loads(json.dumps(result.to_json()))
    (entry,) = data["results"]
    assert entry["engine"] == "sqlite"
    assert entry["engine_version"] == sqlite3.sqlite_version
    assert [run["version"] for run in entry["applied"]] == ["0002", "0003"]
    assert all(run["seconds"] >= 0 for run in entry["applied"])
    summary = result.summary()
    assert summary[0] == (
        f"sample.sqlite (sqlite {sqlite3.sqlite_version}): passed, 2 migration(s) applied"
    )
    assert summary[1].startswith("  migrations/0002_budget_classification.sql: ")
    assert summary[1].endswith(" s")
    junit = tmp_path / "dry-run.xml"
    write_junit_report(junit, "dry-run", result.cases())
    cases = ET.parse(junit).getroot().findall(".//testcase")
    engine = f"sqlite {sqlite3.sqlite_version}"
    assert [case.get("name") for case in cases] == [
        f"sample.sqlite ({engine}): migrations/0002_budget_classification.sql",
        f"sample.sqlite ({engine}): migrations/0003_treasury_statements.sqlite.sql",
        f"sample.sqlite ({engine}): checks",
    ]
    assert {case.get("classname") for case in cases} == {"dry-run.sqlite"}
    assert cases[0].get("time") == f"{entry['applied'][0]['seconds']:.3f}"


def test_lint_findings_in_dry_run_report(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_status.sql").write_text(
        "ALTER TABLE organizations ADD COLUMN status TEXT NOT NULL DEFAULT 'active';\n"
        "ALTER TABLE accounts ADD COLUMN opened DATE NOT NULL;\n",
        "utf-8",
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    (database,) = dry_run(config).results
    lint = [f for f in database.findings if f.rule.startswith("lint.")]
    assert [(f.rule, f.line) for f in lint] == [("lint.not-null-without-default", 2)]
    assert "accounts.opened is added NOT NULL without a DEFAULT on " in lint[0].message
    assert "Cannot add a NOT NULL column with default value NULL" in (database.error or "")


def test_medium_sample_dry_run(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    sample = generate_sample(root, root / "medium.sqlite", "medium")
    connection = sqlite3.connect(sample)
    try:
        documents = connection.execute("SELECT count(*) FROM payment_documents").fetchone()
        orphans = connection.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        connection.close()
    assert documents == (100_000,)
    assert orphans == []
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///medium.sqlite"),))
    result = dry_run(config)
    assert result.passed
    assert [run.version for run in result.results[0].applied] == ["0002", "0003"]


def run_task(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_tasks_samples_shards_and_merge(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    urls = ["sqlite:///one.sqlite", "sqlite:///two.sqlite"]
    databases = [part for url in urls for part in ("--database", url)]
    generated = run_task("samples", "--repo", str(root), "--size", "small", *databases)
    assert generated.returncode == 0, generated.stderr
    assert "sqlite:///one.sqlite: generated" in generated.stdout
    reports = []
    for index in (1, 2):
        report = tmp_path / f"shard-{index}.json"
        shard = run_task(
            "dry-run",
            "--repo",
            str(root),
            "--shard",
            f"{index}/2",
            "--json",
            str(report),
            *databases,
        )
        assert shard.returncode == 0, shard.stderr
        reports += ["--report", str(report)]
    first = json.loads((tmp_path / "shard-1.json").read_text("utf-8"))
    assert [result["database"] for result in first["results"]] == ["one.sqlite"]
    merged = run_task("report.merge", *reports, "--junit", str(tmp_path / "merged.xml"))
    assert merged.returncode == 0, merged.stderr
    assert f"one.sqlite (sqlite {sqlite3.sqlite_version}): passed" in merged.stdout
    assert "merged 2 report(s): 2 sample database(s)" in merged.stdout
    empty = run_task("dry-run", "--repo", str(root), "--shard", "3/3", *databases)
    assert empty.returncode == 1
    assert "no sample database to dry-run on: shard 3/3 of 2" in empty.stderr
    allowed = run_task(
        "dry-run", "--repo", str(root), "--shard", "3/3", "--allow-empty-shard", *databases
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "shard 3/3: no sample database in this shard" in allowed.stdout
    incomplete = run_task("report.merge", *reports[:2])
    assert incomplete.returncode == 1
    assert "shard(s) 2/2 missing from the merge" in incomplete.stderr


def test_wal_sample_copied_whole(tmp_path: Path, private_tmp: Path) -> None:
    root = make_content(tmp_path / "content")
    sample = generate_sample(root, root / "sample.sqlite", "small")
    connection = sqlite3.connect(sample)
    assert connection.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    connection.execute("CREATE TABLE only_in_wal (id INTEGER PRIMARY KEY)")
    connection.execute("INSERT INTO only_in_wal VALUES (7)")
    connection.commit()
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))
    (root / "migrations" / "0004_read_wal_table.sql").write_text(
        "INSERT INTO only_in_wal SELECT id + 1 FROM only_in_wal;\n", "utf-8"
    )

    result = dry_run(config)
    connection.close()

    assert result.passed
    assert [run.version for run in result.results[0].applied] == ["0002", "0003", "0004"]
    assert list(private_tmp.iterdir()) == []


def test_attach_in_migration_leaves_sample_unchanged(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    sample = generate_sample(root, root / "sample.sqlite", "small")
    before = sha256(sample)
    (root / "migrations" / "0004_attach.sql").write_text(
        f"ATTACH DATABASE '{sample}' AS s;\nUPDATE s.knp SET name_ru = 'changed';\n", "utf-8"
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config, use_cache=True)

    assert not result.passed
    assert "migrations/0004_attach.sql:1: ATTACH is not allowed in a migration" in (
        result.results[0].error or ""
    )
    assert sha256(sample) == before


def test_ignore_check_constraints_rejected(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_opening.sqlite.sql").write_text(
        "PRAGMA ignore_check_constraints = ON;\n"
        "INSERT INTO treasury_statements (account_id, statement_date, opening_balance,"
        " debit_turnover, credit_turnover, closing_balance)"
        " SELECT id, '2025-12-31', 0, -100, 0, 999 FROM accounts;\n",
        "utf-8",
    )
    (root / "migrations" / "0004_opening.postgresql.sql").write_text("SELECT 1;\n", "utf-8")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config)

    assert not result.passed
    assert (
        "migrations/0004_opening.sqlite.sql:1: PRAGMA ignore_check_constraints is not allowed"
        in (result.results[0].error or "")
    )


@pytest.mark.parametrize(
    "pragma", ["foreign_keys = OFF", "ignore_check_constraints = ON", "writable_schema = ON"]
)
@pytest.mark.parametrize(
    "name", ["0004_pragma.sql", "0004_pragma.sqlite.sql"], ids=["portable", "sqlite"]
)
def test_rejected_pragma_named(tmp_path: Path, name: str, pragma: str) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / name).write_text(
        f"-- Empty knp, which other tables reference.\nPRAGMA {pragma};\nDELETE FROM knp;\n",
        "utf-8",
    )
    if name.endswith(".sqlite.sql"):
        (root / "migrations" / "0004_pragma.postgresql.sql").write_text("SELECT 1;\n", "utf-8")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config)

    (database,) = result.results
    assert not database.passed
    assert database.applied == []
    (finding,) = database.findings
    assert finding.rule == "dry-run.migration"
    assert (finding.file, finding.line) == (f"migrations/{name}", 2)
    assert finding.message.startswith(f"PRAGMA {pragma.split()[0]} is not allowed in a migration:")
    assert database.error == f"migrations/{name}:2: {finding.message}"
    if pragma.startswith("foreign_keys"):
        assert finding.message == FOREIGN_KEYS_MESSAGE


def test_unterminated_quote_names_file(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_quote.sql").write_text(
        "-- A quote that never closes.\nINSERT INTO knp VALUES ('999', 'abc);\n", "utf-8"
    )
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config)

    (database,) = result.results
    assert database.error == (
        "migrations/0004_quote.sql: unterminated string literal starting at line 2"
    )
    (finding,) = database.findings
    assert finding.file == "migrations/0004_quote.sql"
    assert finding.message == "unterminated string literal starting at line 2"


def test_non_utf8_migration_named_once(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    (root / "migrations" / "0004_cp1251.sql").write_bytes(b"SELECT 1;\n-- \xc1\xc2\n")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config)

    (finding,) = result.results[0].findings
    assert (finding.file, finding.line) == ("migrations/0004_cp1251.sql", 2)
    assert finding.message == "expected UTF-8, found byte 0xc1; save the file as UTF-8"
    assert str(finding) == (
        "migrations/0004_cp1251.sql:2: expected UTF-8, found byte 0xc1; save the file as UTF-8"
    )


KNP_LIMIT_SQLITE = """-- pipeline: rebuild-tables
CREATE TABLE knp_new (
    code TEXT PRIMARY KEY,
    name_ru TEXT NOT NULL CHECK (length(name_ru) <= 40),
    name_kk TEXT NOT NULL
);
INSERT INTO knp_new SELECT code, name_ru, name_kk FROM knp;
DROP TABLE knp;
ALTER TABLE knp_new RENAME TO knp;
"""
KNP_LIMIT_POSTGRESQL = (
    "ALTER TABLE knp ADD CONSTRAINT knp_name_ru_length CHECK (char_length(name_ru) <= 40);\n"
)


def catalog_content(root: Path) -> Path:
    """Demo migrations and catalogs, and a migration that limits KNP names to 40 characters."""
    make_content(root)
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_knp_name_length.sqlite.sql").write_text(KNP_LIMIT_SQLITE, "utf-8")
    (root / "migrations" / "0004_knp_name_length.postgresql.sql").write_text(
        KNP_LIMIT_POSTGRESQL, "utf-8"
    )
    return root


def test_catalog_row_breaking_migration_fails(tmp_path: Path) -> None:
    root = catalog_content(tmp_path / "content")
    sample = generate_sample(root, root / "sample.sqlite", "small")
    before = sha256(sample)
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config, use_cache=True)

    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.rule == "dry-run.catalog"
    assert finding.file == "catalogs/knp/rows.csv"
    assert finding.message == (
        "on sample.sqlite: catalog knp: row code=019 of catalogs/knp/rows.csv cannot be"
        " written into table knp: CHECK constraint failed: length(name_ru) <= 40"
    )
    assert sha256(sample) == before


def test_catalogs_load_after_migrations(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    generate_sample(root, root / "sample.sqlite", "small")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config)
    without_knp = dry_run(config, catalogs=["kato", "kbe"])

    assert result.passed
    assert result.results[0].catalogs == ["kato", "kbe", "knp"]
    assert without_knp.results[0].catalogs == ["kato", "kbe"]
    assert "  catalogs loaded after the migrations: kato, kbe, knp" in result.summary()


def test_unshipped_catalog_of_changed_table_loads(tmp_path: Path) -> None:
    root = catalog_content(tmp_path / "content")
    generate_sample(root, root / "sample.sqlite", "small")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))

    result = dry_run(config, catalogs=["kbe"])

    # The migration rebuilds the knp table, which holds the rows of earlier releases.
    assert not result.passed
    (sample,) = result.results
    assert sample.catalogs_before == ["knp"]
    (finding,) = sample.findings
    assert finding.file == "migrations/0004_knp_name_length.sqlite.sql"
    assert "CHECK constraint failed" in finding.message


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def test_shipped_catalogs_follow_base_release(git_repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(REPO_ROOT / "catalogs", plain / "catalogs")
    shutil.copytree(REPO_ROOT / "catalogs", git_repo / "catalogs")
    commit_all(git_repo, "Add the catalogs")
    first_release = shipped_catalogs(git_repo)
    git(git_repo, "tag", "release/2026.12.0")
    with (git_repo / "catalogs/knp/rows.csv").open("a", encoding="utf-8") as rows:
        rows.write("914,Өсімпұл,Пеня\n")
    commit_all(git_repo, "Add KNP 914")
    committed = shipped_catalogs(git_repo)
    with (git_repo / "catalogs/kbe/rows.csv").open("a", encoding="utf-8") as rows:
        rows.write("99,false,9,Сынақ,Проба\n")
    shutil.copytree(git_repo / "catalogs/knp", git_repo / "catalogs/units")
    shutil.rmtree(git_repo / "catalogs/kato")

    assert shipped_catalogs(plain) == ["kato", "kbe", "knp"]
    assert first_release == ["kato", "kbe", "knp"]
    assert committed == ["knp"]
    assert shipped_catalogs(git_repo) == ["kbe", "knp", "units"]


# A view and a foreign key over the pipeline's table of the knp catalog.
KNP_VIEW = (
    "CREATE VIEW knp_names AS SELECT code, {column} FROM catalog_knp;\n"
    "CREATE TABLE knp_notes (id INTEGER PRIMARY KEY,"
    " knp_code TEXT REFERENCES catalog_knp (code), note TEXT);\n"
)


def view_content(root: Path, column: str = "name_ru", table: str = "catalog_knp") -> Config:
    make_content(root)
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    sql = KNP_VIEW.format(column=column).replace("catalog_knp", table)
    (root / "migrations" / "0004_knp_names.sql").write_text(sql, "utf-8")
    generate_sample(root, root / "sample.sqlite", "small")
    return Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))


@pytest.mark.parametrize("use_cache", [False, True])
def test_view_over_catalog_table_passes(tmp_path: Path, use_cache: bool) -> None:
    config = view_content(tmp_path / "content")

    first = dry_run(config, use_cache=use_cache)
    # With the cache on, the second run starts from the kept migrated copy.
    cache_path(config.root, "dry-run").unlink(missing_ok=True)
    second = dry_run(config, use_cache=use_cache)

    # The catalog load creates catalog_knp after the migrations, as apply does.
    for result in (first, second):
        assert result.results[0].findings == []
        assert result.passed
        assert result.results[0].catalogs == ["kato", "kbe", "knp"]
    assert second.results[0].catalogs_reused == (["kato", "kbe", "knp"] if use_cache else [])


def test_view_over_catalog_table_checked_after_load(tmp_path: Path) -> None:
    config = view_content(tmp_path / "content", column="name_en")

    result = dry_run(config)

    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.message == (
        "schema check: view knp_names does not compile: no such column: name_en;"
        " create the view again over the new schema"
    )


def test_view_over_unknown_catalog_table_fails(tmp_path: Path) -> None:
    config = view_content(tmp_path / "content", table="catalog_units")

    result = dry_run(config)

    # No catalog creates catalog_units, so the view and the foreign key stay broken.
    assert not result.passed
    messages = [finding.message for finding in result.results[0].findings]
    assert any(
        "view knp_names does not compile: no such table: main.catalog_units" in message
        for message in messages
    ), messages
    assert any(
        "table knp_notes: INSERT does not compile: no such table: main.catalog_units" in message
        for message in messages
    ), messages


def test_catalog_table_read_in_first_release(tmp_path: Path) -> None:
    config = view_content(tmp_path / "content")
    (config.root / "migrations" / "0005_knp_notes.sql").write_text(
        "INSERT INTO knp_notes (knp_code) SELECT code FROM catalog_knp;\n", "utf-8"
    )
    sample = config.root / "sample.sqlite"
    before = sha256(sample)

    result = dry_run(config)

    # No release has shipped knp: apply creates catalog_knp empty before the migrations.
    assert result.results[0].findings == []
    assert result.passed
    assert sha256(sample) == before


def test_view_over_unshipped_catalog_table_passes(tmp_path: Path) -> None:
    config = view_content(tmp_path / "content")

    result = dry_run(config, catalogs=["kato", "kbe"])

    # Customers hold catalog_knp from earlier releases, so its rows load before the migration.
    (sample,) = result.results
    assert sample.findings == []
    assert sample.catalogs_before == ["knp"]
    assert result.passed


def first_release(repo: Path) -> None:
    """Commit the demo migrations and catalogs to `repo` and tag them as release 2026.12.0."""
    make_content(repo)
    shutil.copytree(REPO_ROOT / "catalogs", repo / "catalogs")
    (repo / ".gitignore").write_text("*.sqlite\n.pipeline-cache/\n", "utf-8")
    commit_all(repo, "Add the demo content")
    git(repo, "tag", "release/2026.12.0")


def small_sample_config(root: Path) -> Config:
    """Generate a small sample at version 0001 in `root` and return a config with it alone."""
    generate_sample(root, root / "sample.sqlite", "small")
    return Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))


def test_released_migration_on_catalog_table_replayed(git_repo: Path) -> None:
    first_release(git_repo)
    (git_repo / "migrations" / "0004_knp_audit.sql").write_text(
        "CREATE TABLE knp_audit (code TEXT);\n"
        "CREATE TRIGGER knp_audit_insert AFTER INSERT ON catalog_knp"
        " BEGIN INSERT INTO knp_audit VALUES (new.code); END;\n",
        "utf-8",
    )
    commit_all(git_repo, "Audit the knp catalog")
    git(git_repo, "tag", "release/2026.12.1")
    (git_repo / "migrations" / "0005_organization_note.sql").write_text(
        "ALTER TABLE organizations ADD COLUMN note TEXT;\n", "utf-8"
    )
    commit_all(git_repo, "Add a note to organizations")
    result = dry_run(small_sample_config(git_repo))

    # Customers ran 0004 after 2026.12.0 had loaded knp, so the sample gets knp before it.
    (sample,) = result.results
    assert sample.findings == []
    assert result.passed
    assert sample.catalogs_before == ["knp"]
    assert [run.version for run in sample.applied] == ["0002", "0003", "0004", "0005"]


def test_view_over_new_catalog_column(git_repo: Path) -> None:
    first_release(git_repo)
    add_catalog_column(git_repo, "knp", "note")
    (git_repo / "migrations" / "0004_knp_notes.sql").write_text(
        "CREATE VIEW knp_notes AS SELECT code, note FROM catalog_knp;\n", "utf-8"
    )
    commit_all(git_repo, "Add a note to the KNP catalog and a view of it")
    result = dry_run(small_sample_config(git_repo))

    # Apply adds the column before the migrations, so the view compiles as at the customers.
    (sample,) = result.results
    assert sample.findings == []
    assert result.passed
    assert sample.catalogs_before == ["knp"]
