"""Applying bundles: real releases of temporary git repositories on real SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, git, require_tool, running, wait_until

from pipeline import apply as apply_module
from pipeline import apply_store, signing
from pipeline.apply import (
    PAUSE_ENV,
    TESTING_ENV,
    apply_bundle,
    database_lock,
    installed_version,
    journal_path,
    recover,
)
from pipeline.apply_store import load_catalog, load_definitions
from pipeline.catalog_model import load_description
from pipeline.config import Config, SampleDatabase
from pipeline.database import SQLiteDatabase, open_database, run_migrations
from pipeline.dryrun import dry_run
from pipeline.errors import ApplyError, MigrationError, PipelineError, VerificationError
from pipeline.migrations import load_migrations
from pipeline.release import release
from pipeline.samples import generate_sample
from pipeline.trust import TrustedKey, trusted_keys_from_public_key
from pipeline.versions import Version

CLI = str(Path(sys.executable).parent / "parus-release")
DEMO_FOLDERS = ("catalogs", "migrations", "packages")
PIPELINE_TABLE = """\
[tool.pipeline]
product = "parus-kaz-budget"
sample_databases = [{ url = "sqlite:///.samples/small.sqlite", generate = "small" }]
"""
# A KNP code that no sample or catalog has; a test inserts it to make a migration fail.
RESERVED_KNP = "999"
RESERVED_KNP_MIGRATION = (
    "INSERT INTO knp (code, name_ru, name_kk) VALUES ('999', 'Резерв', 'Резерв');\n"
)
NO_TRANSACTION_MIGRATION = (
    "-- pipeline: no-transaction\nCREATE TABLE audit_log (id INTEGER PRIMARY KEY, note TEXT);\n"
)
OLD_PAYLOAD = "Reports/Templates/платёжное_поручение.xml"


@dataclass(frozen=True)
class Bundles:
    """Signed bundles of two release lines and the key that signed them."""

    first: Path
    second: Path
    # 2026.12.1 built with `full=True` on the base release 2026.12.0.
    second_full: Path
    no_transaction: Path
    public: signing.PublicKey
    public_file: Path
    repo: Path


def _content_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "core.autocrlf", "false")
    for folder in DEMO_FOLDERS:
        shutil.copytree(REPO_ROOT / folder, path / folder)
    (path / "pyproject.toml").write_text(PIPELINE_TABLE, encoding="utf-8")
    (path / ".gitignore").write_text(".samples/\n", encoding="utf-8")
    return path


def _commit(repo: Path, message: str, date: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, "--date", date)


def _change_knp(repo: Path) -> None:
    """Add 912's neighbour 914, rename 311 and remove 019."""
    path = repo / "catalogs/knp/rows.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    rows = [row for row in rows if row["code"] != "019"]
    for row in rows:
        if row["code"] == "311":
            row["name_ru"] = "Выплата заработной платы работникам"
    rows.append({"code": "914", "name_kk": "Өсімпұл", "name_ru": "Пеня"})
    rows.sort(key=lambda row: row["code"])
    out = io.StringIO()
    writer = csv.DictWriter(out, ["code", "name_kk", "name_ru"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")


def build_bundles(base: Path) -> Bundles:
    """Release the demo content twice, and a variant with a no-transaction migration once."""
    signing.generate_keypair(base / "release.key", base / "minisign.pub")
    secret = signing.load_secret_key(base / "release.key")

    repo = _content_repo(base / "content")
    _commit(repo, "Add the demo content", "2026-12-01T09:00:00Z")
    first = release(repo, base / "first", secret, version=Version.parse("2026.12.0"))
    git(repo, "tag", "release/2026.12.0")
    _change_knp(repo)
    (repo / "migrations/0004_reserved_knp.sql").write_text(
        RESERVED_KNP_MIGRATION, encoding="utf-8"
    )
    _commit(repo, "Change KNP and reserve a code", "2026-12-05T09:00:00Z")
    second = release(repo, base / "second", secret, version=Version.parse("2026.12.1"))
    second_full = release(
        repo, base / "second-full", secret, version=Version.parse("2026.12.1"), full=True
    )

    other = _content_repo(base / "other")
    (other / "migrations/0004_audit_log.sql").write_text(NO_TRANSACTION_MIGRATION, "utf-8")
    (other / "migrations/0005_reserved_knp.sql").write_text(RESERVED_KNP_MIGRATION, "utf-8")
    _commit(other, "Add the demo content with an audit log", "2026-12-01T09:00:00Z")
    no_transaction = release(other, base / "other-out", secret, version=Version.parse("2026.12.0"))
    return Bundles(
        first=base / "first" / first.build.bundle.name,
        second=base / "second" / second.build.bundle.name,
        second_full=base / "second-full" / second_full.build.bundle.name,
        no_transaction=base / "other-out" / no_transaction.build.bundle.name,
        public=secret.public,
        public_file=base / "minisign.pub",
        repo=repo,
    )


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    return build_bundles(tmp_path_factory.mktemp("apply-bundles"))


@pytest.fixture
def sample(bundles: Bundles, tmp_path: Path) -> Path:
    """A small SQLite sample database at schema version 0001, as customers had it."""
    return generate_sample(bundles.repo, tmp_path / "customer.sqlite", "small")


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reserve_knp(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO knp (code, name_ru, name_kk) VALUES (?, 'x', 'x')", (RESERVED_KNP,)
        )
    connection.close()


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def change_sample(path: Path, script: str) -> None:
    """Run `script` on the SQLite database at `path` and commit, as a customer's own change."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(script)
    finally:
        connection.close()


# -- SQLite ------------------------------------------------------------------------------------


def test_apply_full_bundle(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    install = tmp_path / "install"
    result = apply_bundle(bundles.first, url_of(sample), [bundles.public], install_dir=install)

    assert result.status == "applied"
    assert result.bundle_version == "2026.12.0"
    assert result.from_version is None
    assert [run.version for run in result.migrations] == ["0002", "0003"]
    knp_rows = len(query(sample, "SELECT code FROM catalog_knp"))
    assert result.catalogs["knp"] == {"added": 7, "changed": 0, "removed": 0, "rows": 7}
    assert knp_rows == 7
    assert query(sample, "SELECT code FROM catalog_knp WHERE code = '010'") == [("010",)]
    assert result.backup is not None and result.backup.is_file()
    assert result.backup_sha256 == sha256(result.backup)
    assert installed_version(url_of(sample)) == "2026.12.0"


def test_apply_records_history_and_definitions(
    bundles: Bundles, sample: Path, tmp_path: Path
) -> None:
    result = apply_bundle(
        bundles.first, url_of(sample), [bundles.public], install_dir=tmp_path / "install"
    )
    history = query(
        sample,
        "SELECT version, from_version, bundle_sha256, backup_path, backup_sha256, status"
        " FROM pipeline_updates",
    )
    assert history == [
        (
            "2026.12.0",
            None,
            sha256(bundles.first),
            str(result.backup),
            result.backup_sha256,
            "applied",
        )
    ]
    kinds = dict(query(sample, "SELECT kind, COUNT(*) FROM pipeline_definitions GROUP BY kind"))
    assert kinds["report"] == 1
    assert kinds["form"] == 1
    assert kinds["fix"] == 3
    assert kinds.get("treasury", 0) >= 1
    (document,) = query(
        sample, "SELECT document FROM pipeline_definitions WHERE item = 'knp-payments-monthly'"
    )[0]
    assert json.loads(str(document))["code"] == "knp-payments-monthly"
    versions = [row[0] for row in query(sample, "SELECT version FROM pipeline_migrations")]
    assert versions == ["0001", "0002", "0003"]


def test_apply_installs_payload(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    install = tmp_path / "install"
    (install / OLD_PAYLOAD).parent.mkdir(parents=True)
    (install / OLD_PAYLOAD).write_text("old template", encoding="utf-8")

    result = apply_bundle(bundles.first, url_of(sample), [bundles.public], install_dir=install)

    assert OLD_PAYLOAD in result.payload
    shipped = REPO_ROOT / "packages/fixes/payment-order-total-rounding/payload/templates"
    assert (install / OLD_PAYLOAD).read_bytes() == (
        shipped / "платёжное_поручение.xml"
    ).read_bytes()
    assert (install / "Config/Казначейство/encodings.ini").is_file()
    assert not journal_path(url_of(sample), Path(".")).exists()


def test_apply_twice_is_noop(bundles: Bundles, sample: Path) -> None:
    apply_bundle(bundles.first, url_of(sample), [bundles.public])
    before = sha256(sample)

    again = apply_bundle(bundles.first, url_of(sample), [bundles.public])

    assert again.status == "already-applied"
    assert again.backup is None
    assert sha256(sample) == before


def test_apply_update_bundle(bundles: Bundles, sample: Path) -> None:
    apply_bundle(bundles.first, url_of(sample), [bundles.public])

    result = apply_bundle(bundles.second, url_of(sample), [bundles.public])

    assert result.from_version == "2026.12.0"
    assert [run.version for run in result.migrations] == ["0004"]
    assert result.catalogs["knp"] == {"added": 1, "changed": 1, "removed": 1, "rows": 7}
    assert "kato" not in result.catalogs
    rows = dict(query(sample, "SELECT code, name_ru FROM catalog_knp"))
    assert rows["311"] == "Выплата заработной платы работникам"
    assert "019" not in rows
    assert rows["914"] == "Пеня"
    assert installed_version(url_of(sample)) == "2026.12.1"


def test_update_rejected_without_base(bundles: Bundles, sample: Path) -> None:
    before = sha256(sample)
    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.second, url_of(sample), [bundles.public])
    assert "updates release 2026.12.0" in str(error.value)
    assert "no release installed" in str(error.value)
    assert sha256(sample) == before


def test_full_bundle_applies_to_new_database(bundles: Bundles, tmp_path: Path) -> None:
    database = tmp_path / "new.sqlite"

    result = apply_bundle(bundles.second_full, url_of(database), [bundles.public], create=True)

    assert result.status == "applied"
    assert result.from_version is None
    assert installed_version(url_of(database)) == "2026.12.1"
    rows = dict(query(database, "SELECT code, name_ru FROM catalog_knp"))
    assert rows["311"] == "Выплата заработной платы работникам"
    assert rows["914"] == "Пеня"
    assert "019" not in rows


def test_full_bundle_skips_base_release(bundles: Bundles, sample: Path) -> None:
    result = apply_bundle(bundles.second_full, url_of(sample), [bundles.public])

    assert result.status == "applied"
    assert result.from_version is None
    assert [run.version for run in result.migrations] == ["0002", "0003", "0004"]
    assert installed_version(url_of(sample)) == "2026.12.1"


def test_delta_rejected_on_new_database(bundles: Bundles, tmp_path: Path) -> None:
    database = tmp_path / "new.sqlite"

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.second, url_of(database), [bundles.public], create=True)

    assert str(error.value) == (
        "bundle 2026.12.1 updates release 2026.12.0, but the database has no release"
        " installed; apply the full release bundle first"
    )
    assert sorted(path.name for path in tmp_path.iterdir() if "new.sqlite" in path.name) == []
    assert not (tmp_path / "backups").exists()


def test_downgrade_needs_flag(bundles: Bundles, sample: Path) -> None:
    apply_bundle(bundles.first, url_of(sample), [bundles.public])
    apply_bundle(bundles.second, url_of(sample), [bundles.public])

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, url_of(sample), [bundles.public])
    assert "older than the installed version 2026.12.1" in str(error.value)
    assert "--allow-downgrade" in str(error.value)

    result = apply_bundle(bundles.first, url_of(sample), [bundles.public], allow_downgrade=True)
    assert result.status == "applied"
    assert result.catalogs["knp"] == {"added": 1, "changed": 1, "removed": 1, "rows": 7}
    assert installed_version(url_of(sample)) == "2026.12.0"
    versions = [row[0] for row in query(sample, "SELECT version FROM pipeline_migrations")]
    assert versions[-1] == "0004"


def test_failed_migration_leaves_same_bytes(
    bundles: Bundles, sample: Path, tmp_path: Path
) -> None:
    apply_bundle(bundles.first, url_of(sample), [bundles.public])
    reserve_knp(sample)
    install = tmp_path / "install"
    (install / OLD_PAYLOAD).parent.mkdir(parents=True)
    (install / OLD_PAYLOAD).write_text("old template", encoding="utf-8")
    before = sha256(sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.second, url_of(sample), [bundles.public], install_dir=install)

    message = str(error.value)
    assert "migrations/0004_reserved_knp.sql:1" in message
    assert "the database is as before" in message
    assert sha256(sample) == before
    assert installed_version(url_of(sample)) == "2026.12.0"
    assert not journal_path(url_of(sample), Path(".")).exists()


def limit_knp_names(path: Path) -> None:
    """Rebuild the customer's knp table with names of at most 40 characters."""
    with sqlite3.connect(path) as connection:
        connection.executescript(
            "CREATE TABLE knp_new (code TEXT PRIMARY KEY,"
            " name_ru TEXT NOT NULL CHECK (length(name_ru) <= 40), name_kk TEXT NOT NULL);"
            "INSERT INTO knp_new SELECT code, name_ru, name_kk FROM knp;"
            "DROP TABLE knp;"
            "ALTER TABLE knp_new RENAME TO knp;"
        )
    connection.close()


def test_catalog_row_breaking_constraint_named(bundles: Bundles, sample: Path) -> None:
    limit_knp_names(sample)
    before = sha256(sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, url_of(sample), [bundles.public])

    message = str(error.value)
    assert "the database is as before" in message
    assert (
        "catalog knp: row code=019 of catalogs/knp/rows.csv cannot be written into"
        " table knp: CHECK constraint failed: length(name_ru) <= 40"
    ) in message
    assert sha256(sample) == before


def test_catalog_key_mismatch_named(bundles: Bundles, sample: Path) -> None:
    # The key references a column of the catalog table that is not unique, so
    # SQLite rejects every write to that table.
    change_sample(
        sample,
        "CREATE TABLE knp_notes (id INTEGER PRIMARY KEY,"
        " knp_name TEXT REFERENCES catalog_knp (name_ru))",
    )
    before = sha256(sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, url_of(sample), [bundles.public])

    message = str(error.value)
    assert "the database is as before" in message
    assert 'catalog knp: foreign key mismatch - "knp_notes" referencing "catalog_knp"' in message
    assert sha256(sample) == before


def test_release_dry_run_loads_shipped_catalogs(tmp_path: Path) -> None:
    signing.generate_keypair(tmp_path / "release.key", tmp_path / "minisign.pub")
    secret = signing.load_secret_key(tmp_path / "release.key")
    repo = _content_repo(tmp_path / "content")
    (repo / "migrations/0004_knp_name_length.sqlite.sql").write_text(
        "-- pipeline: rebuild-tables\n"
        "CREATE TABLE knp_new (code TEXT PRIMARY KEY,"
        " name_ru TEXT NOT NULL CHECK (length(name_ru) <= 40), name_kk TEXT NOT NULL);\n"
        "INSERT INTO knp_new SELECT code, name_ru, name_kk FROM knp;\n"
        "DROP TABLE knp;\n"
        "ALTER TABLE knp_new RENAME TO knp;\n",
        encoding="utf-8",
    )
    (repo / "migrations/0004_knp_name_length.postgresql.sql").write_text(
        "ALTER TABLE knp ADD CONSTRAINT knp_name_ru_length CHECK (char_length(name_ru) <= 40);\n",
        encoding="utf-8",
    )
    _commit(repo, "Limit KNP names", "2026-12-01T09:00:00Z")

    with pytest.raises(MigrationError) as error:
        release(repo, tmp_path / "out", secret, version=Version.parse("2026.12.0"))

    message = str(error.value)
    assert "dry-run failed on 1 of 1 sample databases" in message
    assert "catalogs/knp/rows.csv: on small.sqlite: catalog knp: row code=019" in message
    assert "CHECK constraint failed: length(name_ru) <= 40" in message
    assert not (tmp_path / "out").exists()


def test_no_transaction_failure_restores_backup(
    bundles: Bundles, sample: Path, tmp_path: Path
) -> None:
    reserve_knp(sample)
    install = tmp_path / "install"
    (install / OLD_PAYLOAD).parent.mkdir(parents=True)
    (install / OLD_PAYLOAD).write_text("old template", encoding="utf-8")
    before = sha256(sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.no_transaction, url_of(sample), [bundles.public], install_dir=install)

    assert "0005_reserved_knp.sql" in str(error.value)
    assert sha256(sample) == before
    assert query(sample, "SELECT name FROM sqlite_master WHERE name = 'audit_log'") == []
    assert (install / OLD_PAYLOAD).read_text(encoding="utf-8") == "old template"


def test_dry_run_changes_nothing(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    install = tmp_path / "install"
    before = sha256(sample)

    result = apply_bundle(
        bundles.first, url_of(sample), [bundles.public], dry_run=True, install_dir=install
    )

    assert result.status == "dry-run"
    assert [run.version for run in result.migrations] == ["0002", "0003"]
    assert result.catalogs["kato"]["added"] == 34
    assert sha256(sample) == before
    assert not (install / OLD_PAYLOAD).exists()
    assert installed_version(url_of(sample)) is None


def test_dry_run_of_no_transaction_bundle(bundles: Bundles, sample: Path) -> None:
    before = sha256(sample)
    result = apply_bundle(bundles.no_transaction, url_of(sample), [bundles.public], dry_run=True)
    assert result.status == "dry-run"
    assert [run.transactional for run in result.migrations] == [True, True, False, True]
    assert sha256(sample) == before


def test_lock_timeout(bundles: Bundles, sample: Path) -> None:
    before = sha256(sample)
    with (
        database_lock(url_of(sample), Path("."), timeout=1.0),
        pytest.raises(ApplyError) as error,
    ):
        apply_bundle(bundles.first, url_of(sample), [bundles.public], lock_timeout=0.2)
    assert "another apply holds the lock of customer.sqlite" in str(error.value)
    assert "--lock-timeout" in str(error.value)
    assert sha256(sample) == before


def test_lock_between_two_processes(bundles: Bundles, sample: Path) -> None:
    """A second apply process waits for the first, or fails once its timeout has passed."""
    arguments = [
        CLI,
        "apply",
        str(bundles.first),
        "--database",
        url_of(sample),
        "--trusted-keys",
        str(bundles.public_file),
    ]
    environment = {**os.environ, "CI": "true"}
    first = subprocess.Popen(
        arguments,
        env={**environment, PAUSE_ENV: "backup", TESTING_ENV: "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), "the first apply never reached its pause point"

        rejected = subprocess.run(
            [*arguments, "--lock-timeout", "0.5"],
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        assert rejected.returncode == 1
        assert "another apply holds the lock of customer.sqlite" in rejected.stderr
        assert "waited 0.5 s" in rejected.stderr

        waiting = subprocess.Popen(
            [*arguments, "--lock-timeout", "600"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first.send_signal(signal.SIGCONT)
        first_out, first_err = first.communicate()
        waiting_out, waiting_err = waiting.communicate()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, first_err
    assert "applied 2026.12.0 (from none)" in first_out
    assert waiting.returncode == 0, waiting_err
    assert "2026.12.0 is already installed; nothing to do" in waiting_out
    assert installed_version(url_of(sample)) == "2026.12.0"


def test_missing_sqlite_leaves_no_lock(bundles: Bundles, tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, url_of(missing), [bundles.public])
    assert f"{missing}: SQLite database not found" in str(error.value)
    assert not missing.exists()
    assert not (tmp_path / "missing.sqlite.apply-lock").exists()


def test_backups_pruned_to_keep(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    other = folder / "other-none-to-2026.12.0-20260101T000000000000Z.sqlite"
    folder.mkdir()
    other.write_bytes(b"a backup of another database")
    results = [
        apply_bundle(
            bundles.first,
            url_of(sample),
            [bundles.public],
            dry_run=True,
            backup_dir=folder,
            keep_backups=2,
        )
        for _ in range(4)
    ]
    kept = sorted(p.name for p in folder.glob("customer-*.sqlite"))
    assert len(kept) == 2
    assert kept == sorted(r.backup.name for r in results[-2:] if r.backup)
    assert other.is_file()


def test_cli_lock_timeout_invalid(bundles: Bundles, sample: Path) -> None:
    completed = subprocess.run(
        [
            CLI,
            "apply",
            str(bundles.first),
            "--database",
            url_of(sample),
            "--trusted-keys",
            str(bundles.public_file),
            "--lock-timeout",
            "abc",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )
    assert completed.returncode == 1
    assert "--lock-timeout 'abc': expected a number of seconds" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    ("task", "description"),
    [
        ("apply", "seconds to wait for another apply"),
        ("qa", "test database URL"),
        ("db.recover", "folder for backups and the apply journal"),
    ],
)
def test_cli_help_describes_options(task: str, description: str) -> None:
    completed = subprocess.run([CLI, task, "--help"], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert description in " ".join(completed.stdout.split())


@pytest.mark.parametrize("task", ["apply", "db.recover"])
def test_cli_backup_dir_flag(task: str) -> None:
    completed = subprocess.run([CLI, task, "--help"], capture_output=True, text=True, check=False)
    lines = [line.strip() for line in completed.stdout.splitlines() if "--backup-dir" in line]
    assert len(lines) == 1
    assert lines[0].startswith("--backup-dir=STRING")


def test_wrong_key_rejected(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    signing.generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    other = signing.load_public_key(tmp_path / "other.pub")
    with pytest.raises(VerificationError) as error:
        apply_bundle(bundles.first, url_of(sample), [other])
    assert "check 1 (archive signature)" in str(error.value)
    assert installed_version(url_of(sample)) is None


def test_revoked_trusted_key_rejected(bundles: Bundles, sample: Path) -> None:
    (key,) = trusted_keys_from_public_key(bundles.public_file)
    revoked = TrustedKey(public=key.public, valid_from=key.valid_from, revoked=True)
    with pytest.raises(Exception) as error:
        apply_bundle(bundles.first, url_of(sample), [revoked])
    assert "is revoked" in str(error.value)
    assert installed_version(url_of(sample)) is None


def test_existing_journal_blocks_apply(bundles: Bundles, sample: Path) -> None:
    journal = journal_path(url_of(sample), Path("."))
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text("{}", encoding="utf-8")
    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, url_of(sample), [bundles.public])
    assert "half-done apply" in str(error.value)
    assert "inv db.recover" in str(error.value)


# -- catalog deltas ----------------------------------------------------------------------------


def _delta_folder(tmp_path: Path, document: dict[str, object]) -> Path:
    folder = tmp_path / "bundle"
    shutil.copytree(REPO_ROOT / "catalogs/knp", folder / "catalogs/knp")
    (folder / "catalogs/knp/rows.csv").unlink()
    (folder / "catalogs/knp/delta.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


def _knp_database(tmp_path: Path) -> Path:
    path = tmp_path / "knp.sqlite"
    source = tmp_path / "full"
    shutil.copytree(REPO_ROOT / "catalogs/knp", source / "catalogs/knp")
    with open_database(url_of(path), Path("."), create=True) as db:
        from pipeline.apply_store import ensure_tables

        ensure_tables(db)
        load_catalog(db, source, {"id": "knp", "mode": "full"}, "2026.12.0")
    return path


def _rows_hash(rows: list[dict[str, str]]) -> str:
    from pipeline.apply_store import canonical_digest

    return canonical_digest(["code", "name_kk", "name_ru"], ["code"], rows)


def test_catalog_delta_applies(tmp_path: Path) -> None:
    path = _knp_database(tmp_path)
    base = [
        dict(zip(("code", "name_kk", "name_ru"), row, strict=True))
        for row in query(path, "SELECT code, name_kk, name_ru FROM catalog_knp")
    ]
    added = {"code": "914", "name_kk": "Өсімпұл", "name_ru": "Пеня"}
    result = [row for row in base if row["code"] != "019"] + [added]
    document = {
        "format": 1,
        "catalog": "knp",
        "key": ["code"],
        "columns": ["code", "name_kk", "name_ru"],
        "base": {"rows": len(base), "sha256": _rows_hash(base)},
        "result": {"rows": len(result), "sha256": _rows_hash(result)},
        "added": [added],
        "changed": [],
        "removed": [["019"]],
    }
    folder = _delta_folder(tmp_path, document)
    entry = {"id": "knp", "mode": "delta", "path": "catalogs/knp/delta.json"}

    with open_database(url_of(path), Path(".")) as db:
        counts = load_catalog(db, folder, entry, "2026.12.1")

    assert counts == {"added": 1, "changed": 0, "removed": 1, "rows": len(result)}
    codes = [row[0] for row in query(path, "SELECT code FROM catalog_knp ORDER BY code")]
    assert "914" in codes
    assert "019" not in codes


def test_catalog_delta_wrong_base(tmp_path: Path) -> None:
    path = _knp_database(tmp_path)
    document = {
        "format": 1,
        "catalog": "knp",
        "key": ["code"],
        "columns": ["code", "name_kk", "name_ru"],
        "base": {"rows": 1, "sha256": "0" * 64},
        "result": {"rows": 1, "sha256": "1" * 64},
        "added": [],
        "changed": [],
        "removed": [],
    }
    folder = _delta_folder(tmp_path, document)
    entry = {"id": "knp", "mode": "delta", "path": "catalogs/knp/delta.json"}
    with open_database(url_of(path), Path(".")) as db, pytest.raises(ApplyError) as error:
        load_catalog(db, folder, entry, "2026.12.1")
    message = str(error.value)
    assert "rows of table catalog_knp differ from the rows the delta starts from" in message
    assert "expected SHA-256 " + "0" * 64 in message
    assert "found " + _rows_hash(_knp_rows(path)) in message
    assert "SELECT * FROM catalog_knp ORDER BY code" in message
    assert "apply the base release first" not in message


def _knp_rows(path: Path) -> list[dict[str, str]]:
    rows = query(path, "SELECT code, name_kk, name_ru FROM catalog_knp")
    return [dict(zip(("code", "name_kk", "name_ru"), row, strict=True)) for row in rows]


def test_catalog_delta_on_edited_table(tmp_path: Path) -> None:
    path = _knp_database(tmp_path)
    base = _knp_rows(path)
    document = {
        "format": 1,
        "catalog": "knp",
        "key": ["code"],
        "columns": ["code", "name_kk", "name_ru"],
        "base": {"rows": len(base), "sha256": _rows_hash(base)},
        "result": {"rows": len(base), "sha256": _rows_hash(base)},
        "added": [],
        "changed": [],
        "removed": [],
    }
    folder = _delta_folder(tmp_path, document)
    entry = {"id": "knp", "mode": "delta", "path": "catalogs/knp/delta.json"}
    connection = sqlite3.connect(path)
    try:
        connection.execute("UPDATE catalog_knp SET name_ru = 'правка' WHERE code = '010'")
        connection.commit()
    finally:
        connection.close()
    with open_database(url_of(path), Path(".")) as db, pytest.raises(ApplyError) as error:
        load_catalog(db, folder, entry, "2026.12.1")
    message = str(error.value)
    assert "was changed in the database after release 2026.12.0 loaded it" in message
    assert "expected SHA-256 " + _rows_hash(base) in message


def test_catalog_delta_result_mismatch(tmp_path: Path) -> None:
    path = _knp_database(tmp_path)
    document = {
        "format": 1,
        "catalog": "knp",
        "key": ["code"],
        "columns": ["code", "name_kk", "name_ru"],
        "added": [],
        "changed": [{"code": "010", "name_kk": "жаңа", "name_ru": "новое"}],
        "removed": [],
        "result": {"rows": 7, "sha256": "2" * 64},
    }
    folder = _delta_folder(tmp_path, document)
    entry = {"id": "knp", "mode": "delta", "path": "catalogs/knp/delta.json"}
    with open_database(url_of(path), Path(".")) as db, pytest.raises(ApplyError) as error:
        load_catalog(db, folder, entry, "2026.12.1")
    assert "expected " + "2" * 64 in str(error.value)


def test_catalog_delta_missing_key(tmp_path: Path) -> None:
    path = _knp_database(tmp_path)
    document = {
        "key": ["code"],
        "columns": ["code", "name_kk", "name_ru"],
        "removed": [["555"]],
    }
    folder = _delta_folder(tmp_path, document)
    entry = {"id": "knp", "mode": "delta", "path": "catalogs/knp/delta.json"}
    with open_database(url_of(path), Path(".")) as db, pytest.raises(ApplyError) as error:
        load_catalog(db, folder, entry, "2026.12.1")
    assert "removes key 555, which the database does not have" in str(error.value)


def test_catalog_description_is_kept(tmp_path: Path) -> None:
    path = _knp_database(tmp_path)
    description = load_description(REPO_ROOT, "knp")
    stored = query(path, "SELECT key_columns, columns, row_count FROM pipeline_catalogs")
    assert stored == [('["code"]', json.dumps(list(description.column_names)), 7)]


def test_catalog_rename_reaches_report_query(bundles: Bundles, sample: Path) -> None:
    apply_bundle(bundles.first, url_of(sample), [bundles.public])
    account, organization = query(sample, "SELECT id, organization_id FROM accounts LIMIT 1")[0]
    connection = sqlite3.connect(sample)
    try:
        connection.execute(
            "INSERT INTO payment_documents (id, account_id, doc_date, amount, knp_code)"
            " VALUES (95001, ?, '2031-05-15', 12345, '311')",
            (account,),
        )
        connection.commit()
    finally:
        connection.close()

    apply_bundle(bundles.second, url_of(sample), [bundles.public])

    with open_database(url_of(sample), Path(".")) as db:
        document = load_definitions(db, "report")["knp-payments-monthly"]
        rows = db.execute(
            document["query"],
            {"organization_id": organization, "date_from": "2031-05-01", "date_to": "2031-05-31"},
        )
    assert [(row[0], row[1]) for row in rows] == [("311", "Выплата заработной платы работникам")]
    assert query(sample, "SELECT name_ru FROM knp WHERE code = '914'") == [("Пеня",)]
    assert query(sample, "SELECT COUNT(*) FROM knp WHERE code = '019'") == [(1,)]


# -- interruption ------------------------------------------------------------------------------


def run_paused(point: str, *args: str) -> int:
    """Run `parus-release apply` until it stops at `point`, then SIGKILL it; return its pid."""
    env = {**os.environ, PAUSE_ENV: point, TESTING_ENV: "1", "CI": "true"}
    process = subprocess.Popen(
        [CLI, "apply", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        _, err = process.communicate()
        raise AssertionError(f"apply never reached {point}: {err.decode()[-2000:]}")
    process.send_signal(signal.SIGKILL)
    os.waitpid(process.pid, 0)
    process.returncode = -signal.SIGKILL
    process.communicate()
    return process.pid


def sqlite_state(path: Path) -> str:
    """Open the database (which rolls back a hot journal) and return the file's SHA-256."""
    query(path, "SELECT COUNT(*) FROM sqlite_master")
    return sha256(path)


# A count that SQLite would run for hours, in a trigger on the knp rows the catalog load writes.
SLOW_KNP_TRIGGER = (
    "CREATE TRIGGER knp_slow AFTER UPDATE ON knp BEGIN SELECT count(*) FROM"
    " (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000000)"
    " SELECT x FROM n); END"
)


@pytest.mark.parametrize(
    ("number", "code", "message"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_signal_stops_long_statement(
    bundles: Bundles, sample: Path, tmp_path: Path, number: int, code: int, message: str
) -> None:
    change_sample(sample, SLOW_KNP_TRIGGER)
    before = sha256(sample)
    journal = journal_path(url_of(sample), Path("."))
    report = tmp_path / "apply.json"
    command = [CLI, "apply", str(bundles.first), "--database", url_of(sample)]
    command += ["--trusted-keys", str(bundles.public_file), "--install-dir", str(tmp_path / "i")]
    command += ["--json", str(report)]
    log = tmp_path / "apply.log"
    env = {**os.environ, "CI": "true", "PIPELINE_LOG": "INFO"}

    with log.open("w") as errors, running(command, tmp_path, env=env, stderr=errors) as process:
        # The catalogs load in the order kato, kbe, knp, and knp's rows start the trigger.
        wait_until(process, lambda: "catalog kbe (full)" in log.read_text(), "kbe was loaded")
        time.sleep(1)
        process.send_signal(number)
        # Without the interrupt, the trigger's statement runs for hours and this times out.
        process.wait(timeout=120)
    output = log.read_text()

    assert process.returncode == code
    assert output.strip().endswith(message)
    assert json.loads(report.read_text(encoding="utf-8"))["status"] == message
    assert "catalog knp (full)" not in output
    assert "Traceback" not in output
    assert not journal.exists()
    assert sha256(sample) == before
    assert installed_version(url_of(sample)) is None


@pytest.mark.parametrize(
    "point",
    [
        "backup",
        "migration-statement",
        "migration",
        "catalog-load",
        "catalog",
        "definitions",
        "payload",
    ],
)
def test_kill_before_commit_is_undone(
    bundles: Bundles, sample: Path, tmp_path: Path, point: str
) -> None:
    install = tmp_path / "install"
    (install / OLD_PAYLOAD).parent.mkdir(parents=True)
    (install / OLD_PAYLOAD).write_text("old template", encoding="utf-8")
    before = sha256(sample)
    keys_file = str(bundles.public_file)

    run_paused(
        point,
        str(bundles.first),
        "--database",
        url_of(sample),
        "--trusted-keys",
        keys_file,
        "--install-dir",
        str(install),
    )

    assert sqlite_state(sample) == before
    assert journal_path(url_of(sample), Path(".")).exists()
    result = recover(url_of(sample))
    assert result.action == "undone"
    assert result.bundle_version == "2026.12.0"
    assert sha256(sample) == before
    assert (install / OLD_PAYLOAD).read_text(encoding="utf-8") == "old template"
    assert not (install / "Config/Казначейство/encodings.ini").exists()
    assert not journal_path(url_of(sample), Path(".")).exists()
    assert apply_bundle(bundles.first, url_of(sample), [bundles.public]).status == "applied"


def test_kill_after_commit_is_finished(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    install = tmp_path / "install"
    run_paused(
        "commit",
        str(bundles.first),
        "--database",
        url_of(sample),
        "--trusted-keys",
        str(bundles.public_file),
        "--install-dir",
        str(install),
    )
    assert installed_version(url_of(sample)) == "2026.12.0"

    result = recover(url_of(sample))

    assert result.action == "finished"
    assert (install / OLD_PAYLOAD).is_file()
    assert not journal_path(url_of(sample), Path(".")).exists()
    assert installed_version(url_of(sample)) == "2026.12.0"


def test_kill_between_commit_and_journal_is_finished(
    bundles: Bundles, sample: Path, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    (install / OLD_PAYLOAD).parent.mkdir(parents=True)
    (install / OLD_PAYLOAD).write_text("old template", encoding="utf-8")
    journal = journal_path(url_of(sample), Path("."))
    run_paused(
        "after-commit",
        str(bundles.first),
        "--database",
        url_of(sample),
        "--trusted-keys",
        str(bundles.public_file),
        "--install-dir",
        str(install),
    )
    assert installed_version(url_of(sample)) == "2026.12.0"
    assert json.loads(journal.read_text(encoding="utf-8"))["phase"] == "started"
    new_payload = (install / OLD_PAYLOAD).read_bytes()
    assert new_payload != b"old template"

    result = recover(url_of(sample))

    assert result.action == "finished"
    assert installed_version(url_of(sample)) == "2026.12.0"
    assert (install / OLD_PAYLOAD).read_bytes() == new_payload
    assert (install / "Config/Казначейство/encodings.ini").is_file()
    assert not journal.with_suffix(".files").exists()
    assert not journal.exists()
    assert apply_bundle(bundles.first, url_of(sample), [bundles.public]).status == (
        "already-applied"
    )


def test_dry_run_leaves_install_folder_alone(
    bundles: Bundles, sample: Path, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    (install / OLD_PAYLOAD).parent.mkdir(parents=True)
    (install / OLD_PAYLOAD).write_text("old template", encoding="utf-8")
    before = sorted(p.relative_to(install) for p in install.rglob("*"))
    run_paused(
        "payload",
        str(bundles.first),
        "--database",
        url_of(sample),
        "--trusted-keys",
        str(bundles.public_file),
        "--install-dir",
        str(install),
        "--dry-run",
    )

    assert (install / OLD_PAYLOAD).read_text(encoding="utf-8") == "old template"
    assert sorted(p.relative_to(install) for p in install.rglob("*")) == before
    assert recover(url_of(sample)).action == "undone"
    assert (install / OLD_PAYLOAD).read_text(encoding="utf-8") == "old template"


def test_dry_run_lists_payload_it_would_install(
    bundles: Bundles, sample: Path, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    install.mkdir()
    result = apply_bundle(
        bundles.first, url_of(sample), [bundles.public], install_dir=install, dry_run=True
    )
    assert result.status == "dry-run"
    assert OLD_PAYLOAD in result.payload
    assert list(install.iterdir()) == []


def test_kill_after_no_transaction_step_is_restored(bundles: Bundles, sample: Path) -> None:
    before = sha256(sample)
    run_paused(
        "no-transaction",
        str(bundles.no_transaction),
        "--database",
        url_of(sample),
        "--trusted-keys",
        str(bundles.public_file),
    )
    assert query(sample, "SELECT name FROM sqlite_master WHERE name = 'audit_log'") != []

    result = recover(url_of(sample))

    assert result.action == "restored"
    assert sha256(sample) == before
    assert recover(url_of(sample)).action == "nothing"


def test_cli_apply_and_recover(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    report = tmp_path / "apply.json"
    applied = subprocess.run(
        [
            CLI,
            "apply",
            str(bundles.first),
            "--database",
            url_of(sample),
            "--trusted-keys",
            str(bundles.public_file),
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )
    assert applied.returncode == 0, applied.stderr
    assert "applied 2026.12.0 (from none)" in applied.stdout
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["status"] == "applied"
    assert data["bundle"] == str(bundles.first)
    assert data["database"] == url_of(sample)
    again = subprocess.run(
        [
            CLI,
            "apply",
            str(bundles.first),
            "--database",
            url_of(sample),
            "--trusted-keys",
            str(bundles.public_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "2026.12.0 is already installed; nothing to do" in again.stdout
    recovered = subprocess.run(
        [CLI, "db.recover", "--database", url_of(sample)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert "nothing to do" in recovered.stdout


def run_apply(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "apply", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )


def test_cli_apply_needs_manifest_signature(
    bundles: Bundles, sample: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "unsigned-manifest"
    folder.mkdir()
    bundle = folder / bundles.first.name
    shutil.copy(bundles.first, bundle)
    shutil.copy(bundles.first.with_name(bundles.first.name + ".minisig"), folder)
    before = sha256(sample)
    keys = str(bundles.public_file)

    rejected = run_apply(str(bundle), "--database", url_of(sample), "--trusted-keys", keys)

    assert rejected.returncode == 1
    assert f"no manifest signature: expected {folder / 'manifest.json.minisig'}" in (
        rejected.stderr
    )
    assert "--allow-unsigned-manifest" in rejected.stderr
    assert sha256(sample) == before
    allowed = run_apply(
        str(bundle),
        "--database",
        url_of(sample),
        "--trusted-keys",
        keys,
        "--allow-unsigned-manifest",
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "manifest signature: not checked" in allowed.stdout
    assert installed_version(url_of(sample)) == "2026.12.0"


# -- PostgreSQL --------------------------------------------------------------------------------


def postgres_sample(url: str, repo: Path) -> None:
    """Migrate a PostgreSQL database to schema 0001 and add a few rows."""
    with open_database(url, Path(".")) as db:
        run_migrations(db, load_migrations(repo, "postgresql")[:1])
        db.execute("INSERT INTO knp (code, name_ru, name_kk) VALUES ('010', 'a', 'b')")
        db.execute("INSERT INTO organizations (id, bin, name_ru) VALUES (1, '000000000001', 'x')")


def pg_dump(url: str) -> str:
    """Return the plain dump of a database without the random key of its \\restrict lines."""
    tool = require_tool("pg_dump")
    result = subprocess.run([tool, url], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    return "\n".join(line for line in lines if not line.startswith(("\\restrict", "\\unrestrict")))


@pytest.fixture
def pg_sample(postgres_database: str, bundles: Bundles) -> Iterator[str]:
    postgres_sample(postgres_database, bundles.repo)
    yield postgres_database


@pytest.mark.postgres
def test_postgres_apply_and_noop(bundles: Bundles, pg_sample: str, tmp_path: Path) -> None:
    result = apply_bundle(bundles.first, pg_sample, [bundles.public], backup_dir=tmp_path)
    assert result.status == "applied"
    assert result.backup is not None and result.backup.suffix == ".dump"
    assert result.catalogs["kato"]["rows"] == 34
    assert installed_version(pg_sample) == "2026.12.0"
    dump = pg_dump(pg_sample)

    again = apply_bundle(bundles.first, pg_sample, [bundles.public], backup_dir=tmp_path)

    assert again.status == "already-applied"
    assert pg_dump(pg_sample) == dump
    second = apply_bundle(bundles.second, pg_sample, [bundles.public], backup_dir=tmp_path)
    assert second.catalogs["knp"] == {"added": 1, "changed": 1, "removed": 1, "rows": 7}


@pytest.mark.postgres
def test_postgres_catalog_row_breaking_constraint_named(
    bundles: Bundles, pg_sample: str, tmp_path: Path
) -> None:
    with open_database(pg_sample, Path(".")) as db:
        db.execute(
            "ALTER TABLE knp ADD CONSTRAINT knp_name_ru_length CHECK (char_length(name_ru) <= 40)"
        )
    before = pg_dump(pg_sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, pg_sample, [bundles.public], backup_dir=tmp_path)

    message = str(error.value)
    assert "the database is as before" in message
    assert "catalog knp: row code=019 of catalogs/knp/rows.csv cannot be written" in message
    assert 'violates check constraint "knp_name_ru_length"' in message
    assert "DETAIL: Failing row contains (019, " in message
    assert pg_dump(pg_sample) == before


@pytest.mark.postgres
def test_postgres_failure_same_dump(bundles: Bundles, pg_sample: str, tmp_path: Path) -> None:
    apply_bundle(bundles.first, pg_sample, [bundles.public], backup_dir=tmp_path)
    with open_database(pg_sample, Path(".")) as db:
        db.execute(f"INSERT INTO knp (code, name_ru, name_kk) VALUES ('{RESERVED_KNP}', 'x', 'x')")
    before = pg_dump(pg_sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.second, pg_sample, [bundles.public], backup_dir=tmp_path)

    assert "0004_reserved_knp.sql" in str(error.value)
    assert pg_dump(pg_sample) == before


@pytest.mark.postgres
def test_postgres_failure_resets_sequences(
    bundles: Bundles, pg_sample: str, tmp_path: Path
) -> None:
    apply_bundle(bundles.first, pg_sample, [bundles.public], backup_dir=tmp_path)
    with open_database(pg_sample, Path(".")) as db:
        # A trigger that draws from a sequence before the failing insert fails:
        # nextval is not rolled back, so the apply must set the sequence back.
        db.execute("CREATE SEQUENCE knp_audit")
        db.execute(
            "CREATE FUNCTION knp_audit() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM nextval('knp_audit'); RETURN NEW; END $$"
        )
        db.execute(
            "CREATE TRIGGER knp_audit BEFORE INSERT ON knp"
            " FOR EACH ROW EXECUTE FUNCTION knp_audit()"
        )
        db.execute(f"INSERT INTO knp (code, name_ru, name_kk) VALUES ('{RESERVED_KNP}', 'x', 'x')")
    before = pg_dump(pg_sample)

    with pytest.raises(ApplyError):
        apply_bundle(bundles.second, pg_sample, [bundles.public], backup_dir=tmp_path)

    assert pg_dump(pg_sample) == before


@pytest.mark.postgres
def test_postgres_lock_timeout(bundles: Bundles, pg_sample: str, tmp_path: Path) -> None:
    with (
        database_lock(pg_sample, Path("."), timeout=1.0),
        pytest.raises(ApplyError) as error,
    ):
        apply_bundle(
            bundles.first, pg_sample, [bundles.public], lock_timeout=0.2, backup_dir=tmp_path
        )
    assert "another apply holds the lock" in str(error.value)
    assert installed_version(pg_sample) is None


@pytest.mark.postgres
def test_postgres_backup_lock_timeout(bundles: Bundles, pg_sample: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(pg_sample) as holder:
        # Should the backup wait without a limit, the server ends the lock after 30 s.
        holder.execute("SET idle_in_transaction_session_timeout = '30s'")
        holder.execute("LOCK TABLE knp IN ACCESS EXCLUSIVE MODE")
        holder_pid = holder.info.backend_pid
        with pytest.raises(PipelineError) as error:
            apply_bundle(
                bundles.first, pg_sample, [bundles.public], lock_timeout=0.3, backup_dir=tmp_path
            )
        holder.rollback()
    message = str(error.value)
    name = pg_sample.rsplit("/", 1)[1]
    assert message.startswith(f"backup of {name} timed out:")
    assert "no lock on table public.knp was granted within the lock timeout (300 ms)" in message
    assert f"because process {holder_pid} holds AccessExclusiveLock on it" in message
    assert "wait for that session to finish, or end it, then run again" in message
    assert installed_version(pg_sample) is None
    assert list(tmp_path.glob("*.dump")) == []


@pytest.mark.postgres
def test_postgres_no_transaction_restored(
    bundles: Bundles, pg_sample: str, tmp_path: Path
) -> None:
    with open_database(pg_sample, Path(".")) as db:
        db.execute(f"INSERT INTO knp (code, name_ru, name_kk) VALUES ('{RESERVED_KNP}', 'x', 'x')")
    before = pg_dump(pg_sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.no_transaction, pg_sample, [bundles.public], backup_dir=tmp_path)

    assert "0005_reserved_knp.sql" in str(error.value)
    assert pg_dump(pg_sample) == before


@pytest.mark.postgres
def test_postgres_kill_mid_catalog(bundles: Bundles, pg_sample: str, tmp_path: Path) -> None:
    before = pg_dump(pg_sample)
    run_paused(
        "catalog",
        str(bundles.first),
        "--database",
        pg_sample,
        "--trusted-keys",
        str(bundles.public_file),
        "--backup-dir",
        str(tmp_path),
    )

    result = recover(pg_sample, backup_dir=tmp_path)

    assert result.action == "undone"
    assert pg_dump(pg_sample) == before
    assert installed_version(pg_sample) is None


# -- table rebuilds ----------------------------------------------------------------------------

# Accounts that old installers created as placeholders; no sample has these values.
PLACEHOLDER_BIN = "000000000000"
PLACEHOLDER_IBAN = "KZ000000000000000000"
REBUILD_ACCOUNTS = f"""\
-- pipeline: rebuild-tables
-- Makes the currency of every account required (KZT by default) and drops the
-- placeholder account. SQLite cannot add NOT NULL to a column, so the table is
-- rebuilt while payment documents and statements reference it.
CREATE TABLE accounts_new (
    id INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id),
    iban TEXT UNIQUE NOT NULL,
    currency TEXT NOT NULL DEFAULT 'KZT'
);
INSERT INTO accounts_new SELECT id, organization_id, iban, coalesce(currency, 'KZT')
    FROM accounts WHERE iban <> '{PLACEHOLDER_IBAN}';
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
CREATE INDEX accounts_organization ON accounts (organization_id);
"""
REBUILD_ACCOUNTS_POSTGRESQL = f"""\
-- lint-ack not-null-without-default: the UPDATE before it sets every NULL to KZT
DELETE FROM accounts WHERE iban = '{PLACEHOLDER_IBAN}';
UPDATE accounts SET currency = 'KZT' WHERE currency IS NULL;
ALTER TABLE accounts ALTER COLUMN currency SET DEFAULT 'KZT',
    ALTER COLUMN currency SET NOT NULL;
"""
REBUILD_FILE = "migrations/0004_currency_required.sqlite.sql"
DELETE_PLACEHOLDER_ORGANIZATION = f"DELETE FROM organizations WHERE bin = '{PLACEHOLDER_BIN}';\n"
LATER_FILE = "migrations/0005_placeholder_organization.sql"


@dataclass(frozen=True)
class RebuildBundle:
    """A signed bundle whose 0004 rebuilds the referenced table accounts, and its content."""

    bundle: Path
    repo: Path


@pytest.fixture(scope="session")
def rebuild_bundle(bundles: Bundles, tmp_path_factory: pytest.TempPathFactory) -> RebuildBundle:
    base = tmp_path_factory.mktemp("rebuild-bundle")
    secret = signing.load_secret_key(bundles.public_file.parent / "release.key")
    repo = _content_repo(base / "content")
    migrations = repo / "migrations"
    (migrations / "0004_currency_required.sqlite.sql").write_text(REBUILD_ACCOUNTS, "utf-8")
    (migrations / "0004_currency_required.postgresql.sql").write_text(
        REBUILD_ACCOUNTS_POSTGRESQL, "utf-8"
    )
    (migrations / "0005_placeholder_organization.sql").write_text(
        DELETE_PLACEHOLDER_ORGANIZATION, "utf-8"
    )
    _commit(repo, "Require the currency of accounts", "2026-12-01T09:00:00Z")
    built = release(repo, base / "out", secret, version=Version.parse("2026.12.0"))
    return RebuildBundle(base / "out" / built.build.bundle.name, repo)


def add_placeholder_organization(path: Path) -> None:
    """Give the placeholder organization an account, so deleting it breaks a foreign key."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO organizations (id, bin, name_ru) VALUES (990001, ?, 'Заглушка')",
            (PLACEHOLDER_BIN,),
        )
        connection.execute(
            "INSERT INTO accounts (id, organization_id, iban, currency)"
            " VALUES (990001, 990001, 'KZ990000000000000001', 'KZT')"
        )
    connection.close()


def add_placeholder_account(path: Path) -> None:
    """Book a payment document to the placeholder account that the rebuild drops."""
    with sqlite3.connect(path) as connection:
        (organization,) = connection.execute("SELECT min(id) FROM organizations").fetchone()
        connection.execute(
            "INSERT INTO accounts (id, organization_id, iban) VALUES (990002, ?, ?)",
            (organization, PLACEHOLDER_IBAN),
        )
        connection.execute(
            "INSERT INTO payment_documents (id, account_id, doc_date, amount)"
            " VALUES (990003, 990002, '2026-11-30', 100)"
        )
    connection.close()


def test_rebuild_of_referenced_table_applies(
    bundles: Bundles, rebuild_bundle: RebuildBundle, sample: Path
) -> None:
    documents = query(sample, "SELECT count(*) FROM payment_documents")

    result = apply_bundle(rebuild_bundle.bundle, url_of(sample), [bundles.public])

    assert result.status == "applied"
    assert [run.version for run in result.migrations] == ["0002", "0003", "0004", "0005"]
    history = query(sample, "SELECT version, bundle_version FROM pipeline_migrations")
    assert ("0004", "2026.12.0") in history
    assert ("0005", "2026.12.0") in history
    assert query(sample, "PRAGMA foreign_key_check") == []
    assert query(sample, "SELECT count(*) FROM payment_documents") == documents
    assert query(sample, "SELECT count(*) FROM accounts WHERE currency IS NULL") == [(0,)]
    columns = {row[1]: row[3] for row in query(sample, "PRAGMA table_info(accounts)")}
    assert columns["currency"] == 1
    assert installed_version(url_of(sample)) == "2026.12.0"
    assert not journal_path(url_of(sample), Path(".")).exists()


def test_rebuild_then_failure_restores_backup(
    bundles: Bundles, rebuild_bundle: RebuildBundle, sample: Path, tmp_path: Path
) -> None:
    add_placeholder_organization(sample)
    install = tmp_path / "install"
    (install / OLD_PAYLOAD).parent.mkdir(parents=True)
    (install / OLD_PAYLOAD).write_text("old template", encoding="utf-8")
    before = sha256(sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(rebuild_bundle.bundle, url_of(sample), [bundles.public], install_dir=install)

    message = str(error.value)
    # Enforcement is on again after the rebuild, so the statement itself fails.
    assert f"{LATER_FILE}:1: statement failed on customer.sqlite" in message
    assert "FOREIGN KEY constraint failed" in message
    assert "the database is as before" in message
    assert sha256(sample) == before
    assert installed_version(url_of(sample)) is None
    assert (install / OLD_PAYLOAD).read_text(encoding="utf-8") == "old template"
    assert not journal_path(url_of(sample), Path(".")).exists()


def test_rebuild_orphan_names_table_and_key(
    bundles: Bundles, rebuild_bundle: RebuildBundle, sample: Path
) -> None:
    add_placeholder_account(sample)
    before = sha256(sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(rebuild_bundle.bundle, url_of(sample), [bundles.public])

    message = str(error.value)
    assert f"{REBUILD_FILE}: foreign key check failed after the migration" in message
    assert "table payment_documents foreign key (account_id) -> accounts(id)" in message
    assert "1 row(s) have no matching row in parent table accounts, rowid 990003" in message
    assert sha256(sample) == before
    assert installed_version(url_of(sample)) is None


def test_rebuild_apply_dry_run_changes_nothing(
    bundles: Bundles, rebuild_bundle: RebuildBundle, sample: Path
) -> None:
    before = sha256(sample)

    result = apply_bundle(rebuild_bundle.bundle, url_of(sample), [bundles.public], dry_run=True)

    assert result.status == "dry-run"
    assert [run.version for run in result.migrations] == ["0002", "0003", "0004", "0005"]
    assert sha256(sample) == before
    assert not journal_path(url_of(sample), Path(".")).exists()


@pytest.mark.parametrize(
    ("prepare", "failing_file"),
    [
        (None, None),
        (add_placeholder_organization, LATER_FILE),
        (add_placeholder_account, REBUILD_FILE),
    ],
)
def test_rebuild_dry_run_agrees_with_apply(
    bundles: Bundles,
    rebuild_bundle: RebuildBundle,
    sample: Path,
    prepare: Callable[[Path], None] | None,
    failing_file: str | None,
) -> None:
    if prepare is not None:
        prepare(sample)
    config = Config(root=rebuild_bundle.repo, sample_databases=(SampleDatabase(url_of(sample)),))

    (dry,) = dry_run(config).results
    try:
        apply_bundle(rebuild_bundle.bundle, url_of(sample), [bundles.public])
        apply_error = None
    except ApplyError as exc:
        apply_error = str(exc)

    assert dry.passed is (failing_file is None)
    assert (apply_error is None) is (failing_file is None)
    if failing_file is not None:
        assert dry.error is not None
        assert failing_file in dry.error
        assert apply_error is not None
        assert failing_file in apply_error


def test_rebuild_failure_with_open_wal_database(
    bundles: Bundles, rebuild_bundle: RebuildBundle, sample: Path
) -> None:
    add_placeholder_organization(sample)
    query(sample, "PRAGMA journal_mode = WAL")
    before = sha256(sample)
    journal = journal_path(url_of(sample), Path("."))
    # An application that keeps the database open keeps its -wal file too, so
    # replacing the file would not bring the old contents back.
    application = sqlite3.connect(sample)
    try:
        application.execute("SELECT count(*) FROM accounts").fetchall()
        with pytest.raises(ApplyError) as error:
            apply_bundle(rebuild_bundle.bundle, url_of(sample), [bundles.public])
    finally:
        application.close()

    message = str(error.value)
    assert f"{LATER_FILE}:1: statement failed on customer.sqlite" in message
    assert "could not be undone" in message
    assert "the database is as before" not in message
    assert f"write-ahead log {sample}-wal is not empty" in message
    assert "run `inv db.recover`" in message
    assert journal.exists()
    assert recover(url_of(sample)).action == "restored"
    assert sha256(sample) == before
    assert not journal.exists()


@pytest.mark.parametrize("point", ["step-commit", "rebuild-tables"])
def test_kill_around_rebuild_is_restored(
    bundles: Bundles, rebuild_bundle: RebuildBundle, sample: Path, point: str
) -> None:
    before = sha256(sample)
    run_paused(
        point,
        str(rebuild_bundle.bundle),
        "--database",
        url_of(sample),
        "--trusted-keys",
        str(bundles.public_file),
    )
    journal = journal_path(url_of(sample), Path("."))
    assert json.loads(journal.read_text(encoding="utf-8"))["phase"] == "partial"

    result = recover(url_of(sample))

    assert result.action == "restored"
    assert sha256(sample) == before
    assert not journal.exists()
    applied = apply_bundle(rebuild_bundle.bundle, url_of(sample), [bundles.public])
    assert applied.status == "applied"


@pytest.mark.postgres
def test_postgres_rebuild_bundle_applies(
    bundles: Bundles, rebuild_bundle: RebuildBundle, pg_sample: str, tmp_path: Path
) -> None:
    result = apply_bundle(rebuild_bundle.bundle, pg_sample, [bundles.public], backup_dir=tmp_path)
    assert result.status == "applied"
    assert [run.version for run in result.migrations] == ["0002", "0003", "0004", "0005"]
    assert all(run.transactional for run in result.migrations)
    assert installed_version(pg_sample) == "2026.12.0"


@pytest.mark.postgres
def test_postgres_rebuild_failure_same_dump(
    bundles: Bundles, rebuild_bundle: RebuildBundle, pg_sample: str, tmp_path: Path
) -> None:
    with open_database(pg_sample, Path(".")) as db:
        db.execute(
            "INSERT INTO organizations (id, bin, name_ru) VALUES (990001, %s, 'x')",
            (PLACEHOLDER_BIN,),
        )
        db.execute(
            "INSERT INTO accounts (id, organization_id, iban) VALUES (990001, 990001, 'KZ99')"
        )
    before = pg_dump(pg_sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(rebuild_bundle.bundle, pg_sample, [bundles.public], backup_dir=tmp_path)

    assert f"{LATER_FILE}:1" in str(error.value)
    assert pg_dump(pg_sample) == before


def test_interrupted_row_write_keeps_its_error(tmp_path: Path) -> None:
    db = open_database("sqlite:///app.sqlite", tmp_path, create=True)
    db.execute("CREATE TABLE t (x INTEGER)")
    db.execute("BEGIN")
    assert isinstance(db, SQLiteDatabase)
    timer = threading.Timer(0.3, db.connection.interrupt)
    timer.start()
    # SQLite rolls back the whole transaction on the interrupt, savepoint included.
    stopped = pytest.raises(sqlite3.OperationalError, match=r"^interrupted$")
    try:
        with stopped, apply_store._savepoint(db):
            db.execute(
                "INSERT INTO t WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL"
                " SELECT x + 1 FROM n WHERE x < 10000000000) SELECT x FROM n"
            )
    finally:
        timer.cancel()
    in_transaction = db.in_transaction
    rows = db.execute("SELECT count(*) FROM t")
    db.close()

    assert not in_transaction
    assert rows == [(0,)]


def test_rolled_back_row_write_probes_nothing(bundles: Bundles, sample: Path) -> None:
    # The kbe catalog writes its rows into an application table of its name.
    change_sample(
        sample,
        "CREATE TABLE kbe (code TEXT PRIMARY KEY, name_ru TEXT);"
        "CREATE TRIGGER kbe_guard BEFORE INSERT ON kbe WHEN new.code = '13'"
        " BEGIN SELECT RAISE(ROLLBACK, 'kbe 13 is not allowed'); END;",
    )
    before = sha256(sample)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, url_of(sample), [bundles.public])

    # SQLite ended the transaction, so no row is written again to find the culprit.
    message = str(error.value)
    assert "the database is as before" in message
    assert "catalog kbe: the rows of catalogs/kbe/rows.csv cannot be written into table kbe:" in (
        message
    )
    assert "kbe 13 is not allowed" in message
    assert "SQLite rolled back the whole transaction" in message
    assert sha256(sample) == before


# A customer's trigger that rejects the catalog load's update of the knp rows.
FROZEN_KNP = (
    "CREATE TRIGGER knp_guard BEFORE UPDATE ON knp"
    " BEGIN SELECT RAISE(ABORT, 'knp rows are frozen'); END"
)


def test_cli_failed_apply_writes_report(bundles: Bundles, sample: Path, tmp_path: Path) -> None:
    report = tmp_path / "apply.json"
    change_sample(sample, FROZEN_KNP)
    command = [CLI, "apply", str(bundles.first), "--database", url_of(sample)]
    command += ["--trusted-keys", str(bundles.public_file), "--json", str(report)]

    failed = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, "CI": "true"}
    )

    assert failed.returncode == 1
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["status"] == "failed"
    assert data["bundle"] == str(bundles.first)
    assert data["database"] == url_of(sample)
    assert "knp rows are frozen" in data["error"]
    assert data["error"] in failed.stderr


def test_cli_missing_bundle_named(tmp_path: Path) -> None:
    report = tmp_path / "apply.json"
    missing = tmp_path / "parus-kaz-budget-2026.12.0.7z"
    command = [CLI, "apply", str(missing), "--database", url_of(tmp_path / "c.sqlite")]

    failed = subprocess.run(
        [*command, "--json", str(report)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )

    assert failed.returncode == 1
    assert f"error: bundle {missing} not found" in failed.stderr
    assert json.loads(report.read_text(encoding="utf-8"))["status"] == "failed"


def test_second_interrupt_during_undo_ignored(
    bundles: Bundles, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change_sample(sample, FROZEN_KNP)
    before = sha256(sample)
    undo = apply_module._undo

    def interrupted_undo(*args: Any) -> None:
        # A second Ctrl+C arrives while the failed apply is being undone.
        os.kill(os.getpid(), signal.SIGINT)
        undo(*args)

    monkeypatch.setattr(apply_module, "_undo", interrupted_undo)

    with pytest.raises(ApplyError) as error:
        apply_bundle(bundles.first, url_of(sample), [bundles.public])

    assert "failed and was undone; the database is as before" in str(error.value)
    assert sha256(sample) == before
    assert not journal_path(url_of(sample), Path(".")).exists()


# Objects over the knp catalog's table, made by a migration of the first release.
KNP_AUDIT_SQLITE = (
    "CREATE TABLE knp_audit (code TEXT);\n"
    "CREATE TRIGGER knp_audit_insert AFTER INSERT ON catalog_knp"
    " BEGIN INSERT INTO knp_audit VALUES (new.code); END;\n"
    "CREATE VIEW knp_names AS SELECT code, name_ru FROM catalog_knp;\n"
)
KNP_AUDIT_POSTGRESQL = (
    "CREATE TABLE knp_audit (code TEXT);\n"
    "CREATE VIEW knp_names AS SELECT code, name_ru FROM catalog_knp;\n"
)


def test_catalog_table_objects_install_fresh(bundles: Bundles, tmp_path: Path) -> None:
    secret = signing.load_secret_key(bundles.public_file.parent / "release.key")
    repo = _content_repo(tmp_path / "content")
    (repo / "migrations/0004_knp_audit.sqlite.sql").write_text(KNP_AUDIT_SQLITE, "utf-8")
    (repo / "migrations/0004_knp_audit.postgresql.sql").write_text(KNP_AUDIT_POSTGRESQL, "utf-8")
    _commit(repo, "Audit the knp catalog", "2026-12-01T09:00:00Z")
    built = release(repo, tmp_path / "out", secret, version=Version.parse("2026.12.0"))
    database = tmp_path / "new.sqlite"

    result = apply_bundle(
        tmp_path / "out" / built.build.bundle.name, url_of(database), [bundles.public], create=True
    )

    # Apply creates the catalog tables before the migrations and fills them after.
    assert result.status == "applied"
    knp_rows = query(database, "SELECT count(*) FROM catalog_knp")
    assert query(database, "SELECT count(*) FROM knp_audit") == knp_rows
    assert query(database, "SELECT count(*) FROM knp_names") == knp_rows
