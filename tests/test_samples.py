"""Generated sample databases: determinism and data that look like a customer's."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from pipeline.database import HISTORY_TABLE
from pipeline.errors import ConfigError, MigrationError
from pipeline.samples import (
    NAME_MAX_LENGTH,
    bin_check_digit,
    generate_sample,
    iban_check_digits,
    is_valid_bin,
    is_valid_iban,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory, migrations_root: Path) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    return generate_sample(migrations_root, folder / "small.sqlite", "small", upto="0003")


def test_generation_is_deterministic(tmp_path: Path, migrations_root: Path) -> None:
    first = generate_sample(migrations_root, tmp_path / "first.sqlite", "small")
    second = generate_sample(migrations_root, tmp_path / "second.sqlite", "small")
    assert first.read_bytes() == second.read_bytes()


def test_default_version_is_first_migration(tmp_path: Path, migrations_root: Path) -> None:
    path = generate_sample(migrations_root, tmp_path / "base.sqlite", "small")
    assert query(path, f"SELECT version FROM {HISTORY_TABLE}") == [("0001",)]
    tables = {row[0] for row in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "kbk" not in tables


def test_sample_row_counts(small_sample: Path) -> None:
    assert query(small_sample, "SELECT count(*) FROM payment_documents") == [(600,)]
    assert query(small_sample, "SELECT count(*) FROM organizations") == [(40,)]
    assert query(small_sample, "SELECT count(*) FROM treasury_statements") == [(120,)]


def test_bins_are_valid(small_sample: Path) -> None:
    bins = [str(row[0]) for row in query(small_sample, "SELECT bin FROM organizations")]
    invalid = [value for value in bins if not is_valid_bin(value)]
    assert invalid == []
    assert all(len(value) == 12 for value in bins)


def test_ibans_have_valid_check_digits(small_sample: Path) -> None:
    ibans = [str(row[0]) for row in query(small_sample, "SELECT iban FROM accounts")]
    assert ibans
    assert all(iban.startswith("KZ") and len(iban) == 20 for iban in ibans)
    assert [iban for iban in ibans if not is_valid_iban(iban)] == []


def test_codes_keep_leading_zeros(small_sample: Path) -> None:
    knp = query(small_sample, "SELECT DISTINCT typeof(knp_code), knp_code FROM payment_documents")
    assert ("text", "010") in knp
    assert {kind for kind, _ in knp} <= {"text", "null"}
    kato = [str(row[0]) for row in query(small_sample, "SELECT code FROM kato")]
    assert all(len(code) == 9 and code.isdigit() for code in kato)
    kbe = [row[0] for row in query(small_sample, "SELECT DISTINCT kbe FROM payment_documents")]
    assert all(value is None or (len(value) == 2 and value.isdigit()) for value in kbe)


def test_edge_values_present(small_sample: Path) -> None:
    zero = query(small_sample, "SELECT count(*) FROM payment_documents WHERE amount = 0")
    assert zero[0][0] > 0
    nulls = query(small_sample, "SELECT count(*) FROM payment_documents WHERE purpose IS NULL")
    assert nulls[0][0] > 0
    longest = query(small_sample, "SELECT max(length(name_ru)) FROM organizations")
    assert longest == [(NAME_MAX_LENGTH,)]
    kazakh = query(small_sample, "SELECT count(*) FROM organizations WHERE name_kk LIKE '%ң%'")
    assert kazakh[0][0] > 0
    dates = query(small_sample, "SELECT min(doc_date), max(doc_date) FROM payment_documents")
    assert dates[0][0] >= "2022-01-01"
    assert dates[0][1] <= "2026-12-31"


def test_sample_passes_integrity_checks(small_sample: Path) -> None:
    assert query(small_sample, "PRAGMA integrity_check") == [("ok",)]
    assert query(small_sample, "PRAGMA foreign_key_check") == []


def test_iban_check_digits_known_value() -> None:
    # The example IBAN of the ISO 13616 registry entry for Kazakhstan.
    assert iban_check_digits("KZ", "125KZT5004100100") == "86"
    assert is_valid_iban("KZ86125KZT5004100100")
    assert not is_valid_iban("KZ87125KZT5004100100")


def test_bin_check_digit_passes() -> None:
    # 1 * 10 = 10 with the first weights, so the second weights decide: 1 * 1 = 1.
    assert bin_check_digit("00000000010") == 1
    # Both weight sets give 10: 2*9 + 8*10 + 1*11 = 109 and 2*11 + 8*1 + 1*2 = 32.
    assert bin_check_digit("00000000281") is None
    assert is_valid_bin("000000000101")
    assert not is_valid_bin("000000000102")


def test_unknown_size_and_version(tmp_path: Path, migrations_root: Path) -> None:
    with pytest.raises(ConfigError) as size:
        generate_sample(migrations_root, tmp_path / "x.sqlite", "huge")
    with pytest.raises(MigrationError) as version:
        generate_sample(migrations_root, tmp_path / "x.sqlite", "small", upto="0042")
    assert "unknown sample size 'huge'" in str(size.value)
    assert "no migration with version '0042'" in str(version.value)
    assert not (tmp_path / "x.sqlite").exists()


def test_edge_rows_break_not_null_and_unique(small_sample: Path) -> None:
    duplicates = query(
        small_sample,
        "SELECT count(*) FROM payment_documents AS a JOIN payment_documents AS b"
        " ON a.id < b.id AND a.account_id = b.account_id AND a.doc_number = b.doc_number"
        " AND a.doc_date = b.doc_date",
    )
    assert duplicates[0][0] >= 1
    assert query(small_sample, "SELECT name_kk FROM organizations WHERE id = 2") == [(None,)]
    assert query(small_sample, "SELECT currency FROM accounts WHERE id = 2") == [(None,)]
    assert query(small_sample, "SELECT purpose FROM payment_documents WHERE id = 2") == [(None,)]


def test_large_sample_has_a_million_rows(tmp_path: Path, migrations_root: Path) -> None:
    path = generate_sample(migrations_root, tmp_path / "large.sqlite", "large")
    assert query(path, "SELECT count(*) FROM payment_documents") == [(1_000_000,)]
    assert query(path, "SELECT count(*) FROM organizations") == [(10_000,)]
    bins = [str(row[0]) for row in query(path, "SELECT bin FROM organizations")]
    assert [value for value in bins if not is_valid_bin(value)] == []
    years = query(path, "SELECT DISTINCT substr(doc_date, 1, 4) FROM payment_documents ORDER BY 1")
    assert years == [("2022",), ("2023",), ("2024",), ("2025",), ("2026",)]
    assert query(path, "PRAGMA foreign_key_check") == []


def test_migration_over_catalog_table_builds(tmp_path: Path, migrations_root: Path) -> None:
    root = tmp_path / "content"
    shutil.copytree(migrations_root / "migrations", root / "migrations")
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    (root / "migrations" / "0004_knp_names.sql").write_text(
        "CREATE VIEW knp_names AS SELECT code, name_ru FROM catalog_knp;\n", "utf-8"
    )

    path = generate_sample(root, tmp_path / "s.sqlite", "small", upto="0004")

    # As on a new database, the catalog tables exist, empty, before the migrations.
    assert query(path, "SELECT count(*) FROM knp_names") == [(0,)]
    assert query(path, f"SELECT version FROM {HISTORY_TABLE} ORDER BY version")[-1] == ("0004",)
