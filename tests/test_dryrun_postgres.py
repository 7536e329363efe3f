"""Dry-runs and the runner on a real PostgreSQL server: locks, deferred keys, templates."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import ended_process_id, git, remove_catalog_rows, running, stop, wait_until

from pipeline import dryrun
from pipeline.apply_store import ensure_tables, load_catalog
from pipeline.config import Config, SampleDatabase
from pipeline.database import (
    HISTORY_TABLE,
    StatementError,
    check_integrity,
    open_database,
    run_migrations,
)
from pipeline.errors import MigrationError
from pipeline.migrations import load_migrations
from pipeline.samples import (
    PLANS,
    drop_sample,
    ensure_sample,
    is_valid_bin,
    is_valid_iban,
)

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_content(root: Path, extra: dict[str, str] | None = None) -> Path:
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    for name, text in (extra or {}).items():
        (root / "migrations" / name).write_text(text, encoding="utf-8")
    return root


def database_names(server: str, pattern: str) -> list[str]:
    with psycopg.connect(server, autocommit=True) as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))
        return [str(row[0]) for row in rows.fetchall()]


@pytest.fixture
def sample_url(postgres_server: str) -> Iterator[str]:
    """URL of a sample database name that does not exist yet; dropped after the test."""
    name = f"parus_sample_test_{uuid.uuid4().hex[:10]}"
    yield f"{postgres_server.rsplit('/', 1)[0]}/{name}"
    drop_sample(f"{postgres_server.rsplit('/', 1)[0]}/{name}")
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        leftovers = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}_loading_%",)
        ).fetchall()
        for (leftover,) in leftovers:
            admin.execute(f'DROP DATABASE IF EXISTS "{leftover}" WITH (FORCE)')


@pytest.fixture
def generated_sample(tmp_path: Path, sample_url: str) -> tuple[Path, str]:
    root = make_content(tmp_path / "content")
    assert ensure_sample(root, SampleDatabase(sample_url, generate="small")) is True
    return root, sample_url


def clone_names(caplog: pytest.LogCaptureFixture) -> list[str]:
    return re.findall(r"into (pipeline_dry_run_\w+)", caplog.text)


def test_sample_is_loaded_once_as_template(
    generated_sample: tuple[Path, str], postgres_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, url = generated_sample
    caplog.set_level(logging.DEBUG, logger="pipeline")
    sample = SampleDatabase(url, generate="small")
    assert ensure_sample(root, sample) is False
    config = Config(root=root, sample_databases=(sample,))
    first = dryrun.dry_run(config, bundle_version="2026.12.0")
    second = dryrun.dry_run(config)
    assert first.passed
    assert second.passed
    assert [run.version for run in first.results[0].applied] == ["0002", "0003"]
    assert first.results[0].engine == "postgresql"
    assert first.results[0].engine_version.split(".")[0].isdigit()
    clones = clone_names(caplog)
    assert len(clones) == 2
    assert database_names(postgres_server, "pipeline_dry_run_%").count(clones[0]) == 0
    assert database_names(postgres_server, "pipeline_dry_run_%").count(clones[1]) == 0
    with open_database(url, root) as db:
        assert db.execute(f"SELECT version FROM {HISTORY_TABLE}") == [("0001",)]
        assert db.execute("SELECT count(*) FROM payment_documents") == [(600,)]


def test_generated_postgres_sample_rows(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    with open_database(url, root) as db:
        documents = db.execute("SELECT count(*) FROM payment_documents")[0][0]
        organizations = db.execute("SELECT count(*) FROM organizations")[0][0]
        bins = [str(row[0]) for row in db.execute("SELECT bin FROM organizations")]
        ibans = [str(row[0]) for row in db.execute("SELECT iban FROM accounts")]
        knp = db.execute("SELECT knp_code FROM payment_documents WHERE id = 1")
        duplicates = db.execute(
            "SELECT count(*) FROM (SELECT account_id, doc_number, doc_date FROM payment_documents"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1) AS d"
        )
        null_kk = db.execute("SELECT count(*) FROM organizations WHERE name_kk IS NULL")
    assert documents == PLANS["small"].payment_documents
    assert organizations == PLANS["small"].organizations
    assert [value for value in bins if not is_valid_bin(value)] == []
    assert [value for value in ibans if not is_valid_iban(value)] == []
    assert knp[0][0] is None or len(knp[0][0]) == 3
    assert duplicates[0][0] >= 1
    assert null_kk[0][0] >= 1


def test_interrupt_drops_clone(
    generated_sample: tuple[Path, str],
    postgres_server: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, url = generated_sample
    caplog.set_level(logging.DEBUG, logger="pipeline")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dryrun, "run_migrations", interrupted)
    config = Config(root=root, sample_databases=(SampleDatabase(url),))
    with pytest.raises(KeyboardInterrupt):
        dryrun.dry_run(config)
    (clone,) = clone_names(caplog)
    assert clone not in database_names(postgres_server, "pipeline_dry_run_%")


def test_interrupt_before_comment_drops_clone(
    generated_sample: tuple[Path, str],
    postgres_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, url = generated_sample

    def interrupted(*args: object) -> str:
        raise KeyboardInterrupt

    # The clone exists then, but has no comment by which a later run would find it.
    monkeypatch.setattr(dryrun, "clone_comment", interrupted)
    config = Config(root=root, sample_databases=(SampleDatabase(url),))
    with pytest.raises(KeyboardInterrupt):
        dryrun.dry_run(config)
    assert database_names(postgres_server, f"pipeline\\_dry\\_run\\_{os.getpid()}\\_%") == []


def test_sigterm_drops_clone(
    generated_sample: tuple[Path, str],
    postgres_server: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, url = generated_sample
    caplog.set_level(logging.DEBUG, logger="pipeline")

    def terminated(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(dryrun, "run_migrations", terminated)
    config = Config(root=root, sample_databases=(SampleDatabase(url),))
    with pytest.raises(KeyboardInterrupt):
        dryrun.dry_run(config)
    (clone,) = clone_names(caplog)
    assert clone not in database_names(postgres_server, "pipeline_dry_run_%")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sample_is_marked_as_template(
    generated_sample: tuple[Path, str], postgres_server: str
) -> None:
    _, url = generated_sample
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
        ).fetchall()
    assert rows == [(True,)]


def test_template_in_use_fails_only_its_result(
    generated_sample: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = generated_sample
    from pipeline.samples import generate_sample

    generate_sample(root, root / "other.sqlite", "small")
    config = Config(
        root=root,
        sample_databases=(SampleDatabase(url), SampleDatabase("sqlite:///other.sqlite")),
    )
    with psycopg.connect(url):
        result = dryrun.dry_run(config)
    assert not result.passed
    busy, other = result.results
    name = url.rsplit("/", 1)[1]
    assert busy.database == name
    assert not busy.passed
    assert busy.error is not None
    assert f"cannot copy sample database {url}: source database" in busy.error
    assert "is being accessed by other users" in busy.error
    assert "no other session may be connected to the sample" in busy.error
    assert other.passed


def test_errors_name_sample_not_copy(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    (root / "migrations" / "0004_broken.sql").write_text(
        "INSERT INTO knp VALUES (NULL, 'x', 'y');\n", "utf-8"
    )
    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))
    (database,) = result.results
    name = url.rsplit("/", 1)[1]
    assert database.error is not None
    assert f"statement failed on {name}:" in database.error
    assert "pipeline_dry_run_" not in database.error
    assert all("pipeline_dry_run_" not in line for line in result.summary())


STOPPABLE_RUN = """
import logging, sys
from pathlib import Path
from pipeline.config import Config, SampleDatabase
from pipeline.dryrun import dry_run

if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    root = Path(sys.argv[1])
    samples = tuple(SampleDatabase(url) for url in sys.argv[2:])
    dry_run(Config(root=root, sample_databases=samples), jobs=2)
"""


def running_sleeps(server: str) -> int:
    with psycopg.connect(server, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%'"
        ).fetchall()
    return int(rows[0][0])


def test_sigterm_stops_parallel_workers(
    generated_sample: tuple[Path, str], postgres_server: str, tmp_path: Path
) -> None:
    root, url = generated_sample
    second = f"{url}_copy"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(
            f'CREATE DATABASE "{second.rsplit("/", 1)[1]}" TEMPLATE "{url.rsplit("/", 1)[1]}"'
        )
    try:
        (root / "migrations" / "0004_wait.postgresql.sql").write_text(
            "SELECT pg_sleep(600);\n", "utf-8"
        )
        (root / "migrations" / "0004_wait.sqlite.sql").write_text("SELECT 1;\n", "utf-8")
        before = set(database_names(postgres_server, "pipeline_dry_run_%"))
        script = tmp_path / "run.py"
        script.write_text(STOPPABLE_RUN, "utf-8")
        command = [sys.executable, str(script), str(root), url, second]
        with running(command, REPO_ROOT) as process:
            wait_until(
                process,
                lambda: running_sleeps(postgres_server) >= 2,
                "both workers wait in pg_sleep",
            )
            errors = stop(process)
        assert process.returncode != 0
        assert "Terminated: signal 15" in errors
        assert running_sleeps(postgres_server) == 0
        assert set(database_names(postgres_server, "pipeline_dry_run_%")) - before == set()
    finally:
        drop_sample(second)


def test_new_not_null_meets_null_rows(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    (root / "migrations" / "0004_kk_required.sql").write_text(
        "-- lint-ack not-null-without-default: shows what the rows do\n"
        "ALTER TABLE organizations ALTER COLUMN name_kk SET NOT NULL;\n",
        encoding="utf-8",
    )
    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))
    (database,) = result.results
    assert not database.passed
    assert database.error is not None
    assert "migrations/0004_kk_required.sql:2" in database.error
    assert 'column "name_kk" of relation "organizations" contains null values' in database.error


def test_unique_index_meets_duplicates(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    (root / "migrations" / "0004_unique_number.sql").write_text(
        "CREATE UNIQUE INDEX payment_documents_number"
        " ON payment_documents (account_id, doc_number, doc_date);\n",
        encoding="utf-8",
    )
    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))
    (database,) = result.results
    assert database.error is not None
    assert "could not create unique index" in database.error


def test_unique_index_error_names_duplicate_key(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    (root / "migrations" / "0004_unique_number.sql").write_text(
        "CREATE UNIQUE INDEX payment_documents_number"
        " ON payment_documents (account_id, doc_number);\n",
        encoding="utf-8",
    )

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    error = result.results[0].error or ""
    assert 'could not create unique index "payment_documents_number"' in error
    assert "DETAIL: Key (account_id, doc_number)=(" in error
    assert "is duplicated." in error


def test_drop_error_names_dependent_objects(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    (root / "migrations" / "0004_drop_knp.sql").write_text("DROP TABLE knp;\n", "utf-8")

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    error = result.results[0].error or ""
    assert "cannot drop table knp because other objects depend on it" in error
    assert "constraint payment_documents_knp_code_fkey on table payment_documents" in error


def test_missing_template_advises_samples(tmp_path: Path, postgres_server: str) -> None:
    root = make_content(tmp_path / "content")
    url = f"{postgres_server.rsplit('/', 1)[0]}/parus_sample_absent_{uuid.uuid4().hex[:8]}"

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    error = result.results[0].error or ""
    assert "does not exist" in error
    assert f"create it with `inv samples --database {url} --size small`" in error
    assert "no other session" not in error


def test_refused_connection_advises_server_check(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = make_content(tmp_path / "content")
    url = f"postgresql://postgres@127.0.0.1:{port}/parus_sample"

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    error = result.results[0].error or ""
    assert "Connection refused" in error
    assert f"check that a PostgreSQL server listens on 127.0.0.1:{port}" in error
    assert "no other session" not in error


def create_clone(server: str, name: str, comment: str | None) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        if comment is not None:
            admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")


def test_clone_of_dead_process_dropped(
    generated_sample: tuple[Path, str], postgres_server: str
) -> None:
    root, url = generated_sample
    # A process that has ended and been reaped, so its id names no process.
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    names = {
        "dead": f"pipeline_dry_run_{dead.pid}_{uuid.uuid4().hex[:8]}",
        "alive": f"pipeline_dry_run_{os.getpid()}_{uuid.uuid4().hex[:8]}",
        "elsewhere": f"pipeline_dry_run_{dead.pid}_{uuid.uuid4().hex[:8]}",
        "unmarked": f"pipeline_dry_run_{uuid.uuid4().hex[:12]}",
    }
    create_clone(postgres_server, names["dead"], dryrun.clone_comment("s", dead.pid, host))
    create_clone(postgres_server, names["alive"], dryrun.clone_comment("s", os.getpid(), host))
    create_clone(
        postgres_server, names["elsewhere"], dryrun.clone_comment("s", dead.pid, "other-host")
    )
    create_clone(postgres_server, names["unmarked"], None)
    try:
        result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))
        left = set(database_names(postgres_server, "pipeline_dry_run_%"))
    finally:
        for name in names.values():
            with psycopg.connect(postgres_server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')

    assert result.passed
    assert names["dead"] not in left
    assert names["alive"] in left
    assert names["elsewhere"] in left
    assert names["unmarked"] in left


# -- the runner on a plain test database ----------------------------------------------------------


def test_lock_held_by_other_session(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(
        tmp_path / "content",
        {"0004_status.sql": "ALTER TABLE organizations ADD COLUMN status TEXT;\n"},
    )
    migrations = load_migrations(root, "postgresql")
    with open_database(postgres_database, root) as db:
        run_migrations(db, migrations[:3])
    with psycopg.connect(postgres_database) as holder:
        holder.execute("SELECT count(*) FROM organizations").fetchall()
        holder_pid = holder.info.backend_pid
        with open_database(
            postgres_database, root, lock_timeout_ms=300, statement_timeout_ms=20_000
        ) as db:
            # The margin is what the same migrations take without the lock, so a
            # failure after the 20 s statement timeout cannot pass.
            started = time.monotonic()
            with pytest.raises(StatementError) as caught:
                run_migrations(db, migrations)
            elapsed = time.monotonic() - started
            columns = db.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'organizations' AND column_name = 'status'"
            )
        holder.rollback()
    message = str(caught.value)
    assert "migrations/0004_status.sql:1" in message
    assert "canceling statement due to lock timeout" in message
    assert "no lock was granted within lock_timeout (300 ms)" in message
    assert f"table organizations is locked in AccessShareLock by process {holder_pid}" in message
    assert columns == []
    assert elapsed < 0.3 + unlocked_seconds(root, postgres_database) + 1.0


def unlocked_seconds(root: Path, url: str) -> float:
    """Return how long the pending migrations of `root` take on `url` with no lock held."""
    with open_database(url, root) as db:
        started = time.monotonic()
        run_migrations(db, load_migrations(root, "postgresql"))
        return time.monotonic() - started


def test_session_lock_timeout_reset_per_migration(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "0004_no_lock_timeout.postgresql.sql": "SET lock_timeout = 0;\nSELECT 1;\n",
            "0004_no_lock_timeout.sqlite.sql": "SELECT 1;\n",
            "0005_status.sql": "ALTER TABLE organizations ADD COLUMN status TEXT;\n",
        },
    )
    migrations = load_migrations(root, "postgresql")
    with open_database(postgres_database, root) as db:
        run_migrations(db, migrations[:3])
    with psycopg.connect(postgres_database) as holder:
        holder.execute("SELECT count(*) FROM organizations").fetchall()
        with open_database(
            postgres_database, root, lock_timeout_ms=300, statement_timeout_ms=20_000
        ) as db:
            started = time.monotonic()
            with pytest.raises(StatementError) as caught:
                run_migrations(db, migrations)
            elapsed = time.monotonic() - started
            applied = db.execute(f"SELECT version FROM {HISTORY_TABLE} ORDER BY version")
            setting = db.execute("SHOW lock_timeout")
        holder.rollback()
    message = str(caught.value)
    assert "migrations/0005_status.sql:1" in message
    assert "canceling statement due to lock timeout" in message
    assert "no lock was granted within lock_timeout (300 ms)" in message
    assert applied[-1] == ("0004",)
    assert setting == [("300ms",)]
    # Without the reset the statement waits for the 20 s statement timeout.
    assert elapsed < 0.3 + unlocked_seconds(root, postgres_database) + 1.0


def test_migration_times_include_sleep(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(tmp_path / "content", {"0004_slow.sql": "SELECT pg_sleep(0.2);\n"})
    with open_database(postgres_database, root) as db:
        result = run_migrations(db, load_migrations(root, "postgresql"))
    (slow,) = [run for run in result.applied if run.version == "0004"]
    assert slow.seconds >= 0.2


def test_new_enum_value_in_same_transaction(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "0004_status.sql": "CREATE TYPE document_status AS ENUM ('draft');\n",
            "0005_sent.sql": "ALTER TYPE document_status ADD VALUE 'sent';\n"
            "SELECT 'sent'::document_status;\n",
        },
    )
    with open_database(postgres_database, root) as db:
        with pytest.raises(StatementError) as caught:
            run_migrations(db, load_migrations(root, "postgresql"))
        labels = db.execute(
            "SELECT enumlabel FROM pg_enum JOIN pg_type ON pg_type.oid = enumtypid"
            " WHERE typname = 'document_status'"
        )
    message = str(caught.value)
    assert "migrations/0005_sent.sql:2" in message
    assert 'unsafe use of new value "sent" of enum type document_status' in message
    assert "add the value in a migration of its own marked" in message
    assert labels == [("draft",)]


def enum_content(root: Path, mark: str) -> Path:
    """Add a type in 0004, a value to it in 0005 (after `mark`) and use the value in 0006."""
    return make_content(
        root,
        {
            "0004_status.sql": "CREATE TYPE document_status AS ENUM ('draft');\n",
            "0005_sent.sql": mark + "ALTER TYPE document_status ADD VALUE 'sent';\n",
            "0006_use_sent.sql": "SELECT 'sent'::document_status;\n",
        },
    )


def test_new_enum_value_in_earlier_migration(tmp_path: Path, postgres_database: str) -> None:
    # The pending migrations share one transaction, as in apply.
    root = enum_content(tmp_path / "content", "")
    with open_database(postgres_database, root) as db, pytest.raises(StatementError) as caught:
        run_migrations(db, load_migrations(root, "postgresql"))
    message = str(caught.value)
    assert "migrations/0006_use_sent.sql:1" in message
    assert 'unsafe use of new value "sent" of enum type document_status' in message
    assert "'-- pipeline: no-transaction'" in message


def test_enum_value_added_without_transaction(tmp_path: Path, postgres_database: str) -> None:
    root = enum_content(tmp_path / "content", "-- pipeline: no-transaction\n")
    with open_database(postgres_database, root) as db:
        result = run_migrations(db, load_migrations(root, "postgresql"))
    assert [run.version for run in result.applied][-3:] == ["0004", "0005", "0006"]
    assert [run.transactional for run in result.applied][-3:] == [True, False, True]


def test_deferred_constraint_checked_before_commit(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "0004_deferred.sql": "CREATE TABLE audit (\n"
            "    id INTEGER PRIMARY KEY,\n"
            "    organization_id INTEGER REFERENCES organizations (id)"
            " DEFERRABLE INITIALLY DEFERRED\n);\n"
            "INSERT INTO audit VALUES (1, 999999);\n"
        },
    )
    with open_database(postgres_database, root) as db:
        with pytest.raises(MigrationError) as caught:
            run_migrations(db, load_migrations(root, "postgresql"))
        tables = db.execute("SELECT tablename FROM pg_tables WHERE tablename = 'audit'")
    message = str(caught.value)
    assert "migrations/0004_deferred.sql: a deferred constraint fails at the end" in message
    assert 'violates foreign key constraint "audit_organization_id_fkey"' in message
    assert tables == []


def test_deferred_constraint_stays_deferred(tmp_path: Path, postgres_database: str) -> None:
    # The check at the end of 0004 must not make the key immediate for 0005,
    # which shares its transaction and inserts the child row before the parent.
    root = make_content(
        tmp_path / "content",
        {
            "0004_audit.sql": "CREATE TABLE audit (\n"
            "    id INTEGER PRIMARY KEY,\n"
            "    organization_id INTEGER REFERENCES organizations (id)"
            " DEFERRABLE INITIALLY DEFERRED\n);\n",
            "0005_audit_first.sql": "INSERT INTO audit VALUES (1, 990001);\n"
            "INSERT INTO organizations (id, bin, name_ru) VALUES (990001, '990001', 'x');\n",
        },
    )
    with open_database(postgres_database, root) as db:
        result = run_migrations(db, load_migrations(root, "postgresql"))
        rows = db.execute("SELECT id, organization_id FROM audit")
    assert [run.version for run in result.applied][-2:] == ["0004", "0005"]
    assert result.findings == []
    assert rows == [(1, 990001)]


def test_orphans_and_not_valid_constraints(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "0004_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY,"
            " organization_id INTEGER, amount INTEGER);\n"
            "INSERT INTO audit VALUES (1, 424242, -5), (2, NULL, 3);\n"
            "ALTER TABLE audit ADD CONSTRAINT audit_organization_fk FOREIGN KEY"
            " (organization_id) REFERENCES organizations (id) NOT VALID;\n"
            "ALTER TABLE audit ADD CONSTRAINT audit_amount_positive CHECK (amount > 0)"
            " NOT VALID;\n"
        },
    )
    with open_database(postgres_database, root) as db:
        result = run_migrations(db, load_migrations(root, "postgresql"))
        again = check_integrity(db)
    messages = [f.message for f in result.findings]
    assert [f.rule for f in result.findings] == [
        "database.integrity",
        "database.integrity",
        "database.foreign-key",
    ]
    assert (
        "table audit constraint audit_amount_positive (NOT VALID) fails validation"
        in (messages[0])
    )
    assert (
        "table audit constraint audit_organization_fk (NOT VALID) fails validation"
        in (messages[1])
    )
    assert messages[2] == (
        "foreign key check: table audit constraint audit_organization_fk: 1 row(s) have no"
        " matching row in parent table organizations(id):"
        " row (id)=(1) has key (organization_id)=(424242)"
    )
    # Validation is rolled back: the constraints stay NOT VALID and are found again.
    assert [f.message for f in again] == messages


def test_orphans_named_by_primary_key(tmp_path: Path, postgres_database: str) -> None:
    with open_database(postgres_database, tmp_path) as db:
        db.execute("CREATE TABLE organizations (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, organization_id INTEGER)")
        db.execute("INSERT INTO organizations VALUES (1)")
        # Rows 12 to 18 are orphans, inserted out of order; 10 has a parent, 11 has no key.
        db.execute(
            "INSERT INTO audit VALUES (10, 1), (11, NULL), (18, 424243), (17, 424243),"
            " (12, 424242), (13, 424242), (14, 424242), (15, 424242), (16, 424242)"
        )
        db.execute(
            "ALTER TABLE audit ADD CONSTRAINT audit_organization_fk FOREIGN KEY"
            " (organization_id) REFERENCES organizations (id) NOT VALID"
        )
        violations = db.foreign_key_violations()
    assert violations == [
        "table audit constraint audit_organization_fk: 7 row(s) have no matching row in"
        " parent table organizations(id):"
        " row (id)=(12) has key (organization_id)=(424242);"
        " row (id)=(13) has key (organization_id)=(424242);"
        " row (id)=(14) has key (organization_id)=(424242);"
        " row (id)=(15) has key (organization_id)=(424242);"
        " row (id)=(16) has key (organization_id)=(424242);"
        " and 2 more row(s)"
    ]


def test_orphans_without_primary_key_by_ctid(tmp_path: Path, postgres_database: str) -> None:
    with open_database(postgres_database, tmp_path) as db:
        db.execute("CREATE TABLE organizations (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE audit_log (organization_id INTEGER, note TEXT)")
        db.execute("INSERT INTO audit_log VALUES (424242, 'a'), (NULL, 'b'), (424243, 'c')")
        db.execute(
            "ALTER TABLE audit_log ADD CONSTRAINT audit_log_organization_fk FOREIGN KEY"
            " (organization_id) REFERENCES organizations (id) NOT VALID"
        )
        violations = db.foreign_key_violations()
    assert violations == [
        "table audit_log constraint audit_log_organization_fk: 2 row(s) have no matching"
        " row in parent table organizations(id):"
        " row ctid (0,1) has key (organization_id)=(424242);"
        " row ctid (0,3) has key (organization_id)=(424243)"
    ]


def test_orphans_in_quoted_tables(tmp_path: Path, postgres_database: str) -> None:
    # Capitals, spaces and a double quote in names; composite primary and foreign keys.
    with open_database(postgres_database, tmp_path) as db:
        db.execute(
            'CREATE TABLE "Org Unit" ("Region" TEXT, "Org Id" INTEGER,'
            ' PRIMARY KEY ("Region", "Org Id"))'
        )
        db.execute(
            'CREATE TABLE "Audit Log" ("Log Day" DATE, "Line No" INTEGER, "Region" TEXT,'
            ' "Org Id" INTEGER, PRIMARY KEY ("Log Day", "Line No"))'
        )
        db.execute("""INSERT INTO "Org Unit" VALUES ('KZ-ALA', 1)""")
        db.execute(
            """INSERT INTO "Audit Log" VALUES ('2025-01-31', 2, 'KZ-AST', 1),"""
            " ('2025-01-31', 1, 'KZ-ALA', 1), ('2025-01-30', 5, 'KZ-ALA', 7)"
        )
        db.execute(
            'ALTER TABLE "Audit Log" ADD CONSTRAINT "Audit ""Org"" FK"'
            ' FOREIGN KEY ("Region", "Org Id") REFERENCES "Org Unit" ("Region", "Org Id")'
            " NOT VALID"
        )
        everything = db.foreign_key_violations()
        # The tables of a migration come unquoted from `touched_tables`.
        named = db.foreign_key_violations({"Audit Log"})
        other = db.foreign_key_violations({"audit log2"})
        validation = db.integrity_problems()
    expected = (
        'table "Audit Log" constraint "Audit ""Org"" FK": 2 row(s) have no matching row in'
        ' parent table "Org Unit"("Region", "Org Id"):'
        ' row ("Log Day", "Line No")=(2025-01-30, 5) has key ("Region", "Org Id")=(KZ-ALA, 7);'
        ' row ("Log Day", "Line No")=(2025-01-31, 2) has key ("Region", "Org Id")=(KZ-AST, 1)'
    )
    assert everything == [expected]
    assert named == [expected]
    assert other == []
    assert len(validation) == 1
    assert validation[0].startswith(
        'table "Audit Log" constraint "Audit ""Org"" FK" (NOT VALID) fails validation:'
        ' insert or update on table "Audit Log" violates foreign key constraint'
    )


def test_statement_timeout_named(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(tmp_path / "content", {"0004_slow.sql": "SELECT pg_sleep(5);\n"})
    with (
        open_database(postgres_database, root, statement_timeout_ms=200) as db,
        pytest.raises(StatementError) as caught,
    ):
        run_migrations(db, load_migrations(root, "postgresql"))
    assert "canceling statement due to statement timeout" in str(caught.value)
    assert "statement_timeout (200 ms) cancelled the statement" in str(caught.value)


def test_concurrent_index_with_header_runs(tmp_path: Path, postgres_database: str) -> None:
    root = make_content(
        tmp_path / "content",
        {
            "0004_index.postgresql.sql": "-- pipeline: no-transaction\n"
            "CREATE INDEX CONCURRENTLY payment_documents_amount ON payment_documents (amount);\n",
            "0004_index.sqlite.sql": "CREATE INDEX payment_documents_amount"
            " ON payment_documents (amount);\n",
        },
    )
    with open_database(postgres_database, root) as db:
        result = run_migrations(db, load_migrations(root, "postgresql"))
        indexes = db.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname = 'payment_documents_amount'"
        )
    assert [(run.version, run.transactional) for run in result.applied][-1] == ("0004", False)
    assert indexes == [("payment_documents_amount",)]


def test_catalog_row_breaking_constraint_named(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_knp_name_length.sql").write_text(
        "ALTER TABLE knp ADD CONSTRAINT knp_name_ru_length CHECK (char_length(name_ru) <= 40);\n",
        "utf-8",
    )

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    (database,) = result.results
    assert not database.passed
    (finding,) = database.findings
    assert finding.file == "catalogs/knp/rows.csv"
    assert "catalog knp: row code=019 of catalogs/knp/rows.csv cannot be written" in (
        finding.message
    )
    assert 'violates check constraint "knp_name_ru_length"' in finding.message


def test_unshipped_catalog_rows_meet_migration(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_knp_name_length.sql").write_text(
        "ALTER TABLE knp ADD CONSTRAINT knp_name_ru_length CHECK (char_length(name_ru) <= 40);\n",
        "utf-8",
    )

    result = dryrun.dry_run(
        Config(root=root, sample_databases=(SampleDatabase(url),)), catalogs=[]
    )

    # Customers hold knp's rows before the migration, and row 019 breaks the new constraint.
    (database,) = result.results
    assert not database.passed
    assert database.catalogs_before == ["knp"]
    (finding,) = database.findings
    assert finding.rule == "dry-run.migration"
    assert finding.file == "migrations/0004_knp_name_length.sql"
    assert 'check constraint "knp_name_ru_length"' in finding.message
    assert "is violated by some row" in finding.message


def test_altered_domain_meets_unshipped_rows(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE DOMAIN short_name AS TEXT")
        connection.execute("ALTER TABLE knp ALTER COLUMN name_ru TYPE short_name")
    (root / "migrations" / "0004_name_length.sql").write_text(
        "ALTER DOMAIN short_name ADD CONSTRAINT short_name_length CHECK (length(VALUE) <= 40);\n",
        "utf-8",
    )

    result = dryrun.dry_run(
        Config(root=root, sample_databases=(SampleDatabase(url),)), catalogs=[]
    )

    # The domain is the type of knp.name_ru, so customers' knp rows meet the new constraint.
    (database,) = result.results
    assert database.catalogs_before == ["knp"]
    assert not database.passed
    (finding,) = database.findings
    assert finding.file == "migrations/0004_name_length.sql"
    assert "violate the new constraint" in finding.message


def test_catalog_into_enum_column_loads(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_kbe.postgresql.sql").write_text(
        "CREATE TYPE residency AS ENUM ('true', 'false');\n"
        "CREATE TABLE kbe (code TEXT PRIMARY KEY, resident residency NOT NULL,"
        " sector TEXT NOT NULL, name_kk TEXT NOT NULL, name_ru TEXT NOT NULL);\n",
        "utf-8",
    )
    (root / "migrations" / "0004_kbe.sqlite.sql").write_text(
        "CREATE TABLE kbe (code TEXT PRIMARY KEY, resident TEXT NOT NULL,"
        " sector TEXT NOT NULL, name_kk TEXT NOT NULL, name_ru TEXT NOT NULL);\n",
        "utf-8",
    )

    result = dryrun.dry_run(
        Config(root=root, sample_databases=(SampleDatabase(url),)), catalogs=["kbe"]
    )

    (database,) = result.results
    assert database.findings == []
    assert database.passed


def test_too_long_catalog_value_rejected(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("ALTER TABLE knp ALTER COLUMN name_ru TYPE VARCHAR(80)")
    with (root / "catalogs" / "knp" / "rows.csv").open("a", encoding="utf-8") as rows:
        rows.write("914,Айыппұлдар," + "Ш" * 95 + "\n")

    result = dryrun.dry_run(
        Config(root=root, sample_databases=(SampleDatabase(url),)), catalogs=["knp"]
    )

    # A cast to varchar(80) would cut the name to fit; the column must reject it.
    (database,) = result.results
    assert not database.passed
    (finding,) = database.findings
    assert "row code=914" in finding.message
    assert "value too long for type character varying(80)" in finding.message


def test_domain_under_column_domain_loads_catalog(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE DOMAIN classifier_name AS TEXT")
        connection.execute("CREATE DOMAIN knp_name AS classifier_name")
        connection.execute("ALTER TABLE knp ALTER COLUMN name_ru TYPE knp_name")
    (root / "migrations" / "0004_name_length.sql").write_text(
        "ALTER DOMAIN classifier_name ADD CONSTRAINT classifier_name_length"
        " CHECK (length(VALUE) <= 40);\n",
        "utf-8",
    )

    result = dryrun.dry_run(
        Config(root=root, sample_databases=(SampleDatabase(url),)), catalogs=[]
    )

    (database,) = result.results
    assert database.catalogs_before == ["knp"]
    assert not database.passed
    assert "violate the new constraint" in database.findings[0].message


def test_forkserver_workers_log_at_pipeline_level(
    generated_sample: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = generated_sample
    from pipeline.samples import generate_sample

    generate_sample(root, root / "other.sqlite", "small")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "invoke",
            "--search-root",
            str(REPO_ROOT),
            "dry-run",
            "--repo",
            str(root),
            "--database",
            url,
            "--database",
            "sqlite:///other.sqlite",
            "--jobs",
            "2",
            "--no-cache",
        ],
        cwd=root,
        env={**os.environ, "PIPELINE_LOG": "INFO"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    # `_dry_run_one` logs this line in the worker process that runs the sample.
    assert f"INFO pipeline.dryrun: dry-run on {url}" in completed.stderr
    assert "INFO pipeline.dryrun: dry-run on sqlite:///other.sqlite" in completed.stderr


def test_forkserver_workers_show_their_steps(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    from pipeline.console import Progress
    from pipeline.samples import generate_sample

    generate_sample(root, root / "other.sqlite", "small")
    stream = io.StringIO()
    progress = Progress("dry-run", enabled=True, stream=stream)
    config = Config(
        root=root,
        sample_databases=(SampleDatabase(url), SampleDatabase("sqlite:///other.sqlite")),
    )

    dryrun.dry_run(config, jobs=2, progress=progress)

    output = stream.getvalue()
    name = url.rsplit("/", 1)[1]
    assert f"{name}: copying" in output
    assert f"{name}: report queries" in output
    assert "other.sqlite: report queries" in output
    assert "dry-run 2/2 (100%)" in output


def test_clone_without_comment_dropped_by_name(
    generated_sample: tuple[Path, str], postgres_server: str
) -> None:
    root, url = generated_sample
    ended = ended_process_id()
    ours = f"pipeline_dry_run_{ended}_{dryrun._host_tag()}_0badc0de"
    elsewhere = f"pipeline_dry_run_{ended}_00000000_0badc0de"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        for name in (ours, elsewhere):
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))
        left = database_names(postgres_server, "pipeline\\_dry\\_run\\_%\\_0badc0de")
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            for name in (ours, elsewhere):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    assert result.passed
    # Another host's clone may still be in the making, so only this host's goes.
    assert left == [elsewhere]


def test_sigterm_ends_sqlite_worker_of_mixed_run(
    generated_sample: tuple[Path, str], postgres_server: str, tmp_path: Path
) -> None:
    root, url = generated_sample
    from pipeline.samples import generate_sample

    generate_sample(root, root / "other.sqlite", "small")
    (root / "migrations" / "0004_wait.postgresql.sql").write_text(
        "SELECT pg_sleep(600);\n", "utf-8"
    )
    # Hours inside one SQLite statement, which no Python signal handler interrupts.
    (root / "migrations" / "0004_wait.sqlite.sql").write_text(
        "CREATE TABLE slow AS WITH RECURSIVE n(x) AS"
        " (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000000) SELECT x FROM n;\n",
        "utf-8",
    )
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    script = tmp_path / "run.py"
    script.write_text(STOPPABLE_RUN, "utf-8")
    command = [sys.executable, str(script), str(root), url, "sqlite:///other.sqlite"]
    with running(command, REPO_ROOT, env={**os.environ, "TMPDIR": str(temporary)}) as process:
        wait_until(
            process,
            lambda: (
                running_sleeps(postgres_server) >= 1
                and bool(list(temporary.glob("pipeline-dry-run-*/**/other.sqlite")))
            ),
            "both workers reached their migrations",
        )
        errors = stop(process)
    assert process.returncode != 0
    assert "Terminated: signal 15" in errors
    assert running_sleeps(postgres_server) == 0
    assert list(temporary.glob("pipeline-dry-run-*")) == []


KNP_VIEW = "CREATE VIEW knp_names AS SELECT code, name_ru FROM catalog_knp;\n"


def test_view_over_unshipped_catalog_table(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_knp_names.sql").write_text(KNP_VIEW, "utf-8")
    config = Config(root=root, sample_databases=(SampleDatabase(url),))

    unshipped = dryrun.dry_run(config, catalogs=[])
    shipped = dryrun.dry_run(config)

    # Customers hold catalog_knp from earlier releases, so it is there before the migration.
    (database,) = unshipped.results
    assert database.findings == []
    assert database.catalogs_before == ["knp"]
    assert unshipped.passed
    # In a first release apply creates catalog_knp empty before the migrations.
    (database,) = shipped.results
    assert database.findings == []
    assert database.catalogs_before == []
    assert shipped.passed


def test_writes_checked_by_foreign_keys(tmp_path: Path, postgres_database: str) -> None:
    with open_database(postgres_database, tmp_path) as db:
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute(
            "CREATE TABLE child (id INTEGER PRIMARY KEY,"
            " parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        db.execute("INSERT INTO parent VALUES (1)")
        db.execute("BEGIN")
        db.execute("INSERT INTO child VALUES (1, 1)")
        clean = db.writes_checked()
        # Deferred: the orphan fails only at COMMIT or SET CONSTRAINTS.
        db.execute("INSERT INTO child VALUES (2, 7)")
        orphan = db.writes_checked()
        pending = db.execute("SELECT count(*) FROM child")[0][0]
        db.execute("ROLLBACK")
        db.execute("ALTER TABLE child DISABLE TRIGGER ALL")
        disabled = db.writes_checked()
        db.execute("ALTER TABLE child ENABLE TRIGGER ALL")
        db.execute("SET session_replication_role = replica")
        replica = db.writes_checked()

    assert clean is True
    assert orphan is False
    # The failed check leaves the transaction usable, with its rows.
    assert pending == 2
    # A disabled trigger or the replica role lets a write skip its foreign key check.
    assert disabled is False
    assert replica is False


def test_catalog_load_orphans_of_deferred_key(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    # Customers hold catalog_knp from an earlier release, code 311 included.
    with open_database(url, root) as db:
        db.execute("BEGIN")
        ensure_tables(db)
        load_catalog(db, root, {"id": "knp", "path": "catalogs/knp/rows.csv"}, "2025.1")
        db.execute("COMMIT")
    (root / "migrations" / "0004_payment_purpose.sql").write_text(
        "CREATE TABLE payment_purposes (id INTEGER PRIMARY KEY,"
        " knp_code TEXT NOT NULL REFERENCES catalog_knp (code) DEFERRABLE INITIALLY DEFERRED);\n"
        "INSERT INTO payment_purposes VALUES (1, '311');\n",
        "utf-8",
    )
    remove_catalog_rows(root, "knp", "311,")

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    # The load deletes 311 from catalog_knp, and only the deferred check at the end finds it.
    (database,) = result.results
    assert not database.passed
    (finding,) = database.findings
    assert finding.rule == "database.foreign-key"
    assert finding.message.startswith(
        "foreign key check: table payment_purposes constraint payment_purposes_knp_code_fkey:"
        " 1 row(s) have no matching row in parent table catalog_knp(code)"
    )


DEFERRED_UNIQUE_LOG = """\
CREATE TABLE knp_log (
    entry TEXT,
    CONSTRAINT knp_log_once UNIQUE (entry) DEFERRABLE INITIALLY DEFERRED
);
CREATE FUNCTION knp_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO knp_log VALUES ('written');
    RETURN NEW;
END
$$;
CREATE TRIGGER knp_logged AFTER INSERT OR UPDATE ON knp FOR EACH ROW EXECUTE FUNCTION knp_logged();
"""


def test_catalog_load_breaks_deferred_unique(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_knp_log.sql").write_text(DEFERRED_UNIQUE_LOG, "utf-8")

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    # Each knp row the load writes logs the same entry; COMMIT would reject the second.
    (database,) = result.results
    assert not database.passed
    (finding,) = database.findings
    assert finding.rule == "database.integrity"
    assert finding.message.startswith(
        "deferred constraint check after the catalog load: duplicate key value violates"
        ' unique constraint "knp_log_once"'
    )
    assert "Key (entry)=(written) already exists" in finding.message


def test_released_view_on_catalog_table_replayed(generated_sample: tuple[Path, str]) -> None:
    root, url = generated_sample
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    git(root, "init", "-q", "-b", "main")
    commits = [
        ("release/2026.12.0", None),
        ("release/2026.12.1", ("0004_knp_view.sql", KNP_VIEW)),
        (None, ("0005_note.sql", "ALTER TABLE organizations ADD COLUMN note TEXT;\n")),
    ]
    for tag, migration in commits:
        if migration is not None:
            (root / "migrations" / migration[0]).write_text(migration[1], "utf-8")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"Release {tag}" if tag else "Add a note")
        if tag is not None:
            git(root, "tag", tag)

    result = dryrun.dry_run(Config(root=root, sample_databases=(SampleDatabase(url),)))

    # Customers created the view after 2026.12.0 had loaded knp, so the sample gets it first.
    (database,) = result.results
    assert database.findings == []
    assert result.passed
    assert database.catalogs_before == ["knp"]
