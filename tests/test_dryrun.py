"""Dry-run of migrations and report queries on copies of real SQLite sample databases."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import under_ci

from pipeline.config import Config, SampleDatabase
from pipeline.database import StatementError, open_database, run_migrations
from pipeline.dryrun import dry_run
from pipeline.errors import ConfigError
from pipeline.migrations import load_migrations
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
    (finding,) = database.findings
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


def test_missing_sample_without_generate(tmp_path: Path) -> None:
    root = make_content(tmp_path / "content")
    config = Config(root=root, sample_databases=(SampleDatabase("sqlite:///absent.sqlite"),))
    with pytest.raises(ConfigError) as caught:
        dry_run(config)
    assert f"sample database {root / 'absent.sqlite'} not found" in str(caught.value)
    assert 'generate = "small"' in str(caught.value)


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
