"""Tests of the streamed catalog comparison against the in-memory rows hash and delta."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import git

from pipeline import bundle_delta
from pipeline.catalog_delta import diff_rows
from pipeline.errors import BundleError, CatalogError

COLUMNS = ["region", "code", "name"]
KEY = ["region", "code"]
NEWLINE = "\n"
BASE_ROWS = [
    ["01", "001", "Астана"],
    ["01", "002", 'Есиль, "район"'],
    ["02", "001", "Алматы"],
    ["02", "003", "две" + NEWLINE + "строки"],
    ["10", "001", "Шымкент"],
]
CURRENT_ROWS = [
    ["01", "001", "Астана"],
    ["01", "002", "Есіл ауданы"],
    ["02", "002", "Медеу"],
    ["02", "003", "две" + NEWLINE + "строки"],
    ["10", "001", "Шымкент"],
    ["9", "001", "Ақтөбе"],
]


def csv_text(rows: list[list[str]], columns: list[str] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def as_dicts(rows: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def write_rows(root: Path, rows: list[list[str]], columns: list[str] = COLUMNS) -> None:
    folder = root / "catalogs" / "kato"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.csv").write_text(csv_text(rows, columns), encoding="utf-8")


def commit_base(repo: Path, rows: list[list[str]], columns: list[str] = COLUMNS) -> str:
    write_rows(repo, rows, columns)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add the base catalog")
    return git(repo, "rev-parse", "HEAD").strip()


def compare(
    repo: Path, content: Path, base: str | None, keep: bool = True
) -> bundle_delta.CatalogComparison:
    return bundle_delta.compare_catalog(content, "kato", KEY, repo, base, keep_changes=keep)


@pytest.mark.parametrize(
    ("base_order", "current_order"),
    [
        ("sorted", "sorted"),
        ("reversed", "sorted"),
        ("sorted", "reversed"),
        ("reversed", "reversed"),
    ],
)
def test_comparison_matches_in_memory(
    git_repo: Path, tmp_path: Path, base_order: str, current_order: str
) -> None:
    base_rows = BASE_ROWS if base_order == "sorted" else BASE_ROWS[::-1]
    current_rows = CURRENT_ROWS if current_order == "sorted" else CURRENT_ROWS[::-1]
    base = commit_base(git_repo, base_rows)
    content = tmp_path / "snapshot"
    write_rows(content, current_rows)

    comparison = compare(git_repo, content, base)

    assert comparison.base is not None
    assert comparison.base.rows == len(BASE_ROWS)
    assert comparison.base.sha256 == bundle_delta.rows_hash(COLUMNS, as_dicts(BASE_ROWS), KEY)
    assert comparison.current.rows == len(CURRENT_ROWS)
    assert comparison.current.sha256 == bundle_delta.rows_hash(
        COLUMNS, as_dicts(CURRENT_ROWS), KEY
    )
    expected = diff_rows(as_dicts(BASE_ROWS), as_dicts(CURRENT_ROWS), KEY, catalog_id="kato")
    assert comparison.delta == expected
    assert comparison.counts == {"added": 2, "changed": 1, "removed": 1}


def test_document_applies_to_base(git_repo: Path, tmp_path: Path) -> None:
    base = commit_base(git_repo, BASE_ROWS[::-1])
    content = tmp_path / "snapshot"
    write_rows(content, CURRENT_ROWS)

    document = bundle_delta.delta_document(compare(git_repo, content, base))

    assert document["added"] == as_dicts([CURRENT_ROWS[2], CURRENT_ROWS[5]])
    assert document["changed"] == as_dicts([CURRENT_ROWS[1]])
    assert document["removed"] == [["02", "001"]]
    result = bundle_delta.apply_delta(as_dicts(BASE_ROWS), document, "catalogs/kato/delta.json")
    assert result == sorted(as_dicts(CURRENT_ROWS), key=lambda row: (row["region"], row["code"]))


def test_full_mode_keeps_counts_only(git_repo: Path, tmp_path: Path) -> None:
    base = commit_base(git_repo, BASE_ROWS)
    content = tmp_path / "snapshot"
    write_rows(content, CURRENT_ROWS[::-1])

    comparison = compare(git_repo, content, base, keep=False)

    assert comparison.counts == {"added": 2, "changed": 1, "removed": 1}
    assert comparison.delta is None
    with pytest.raises(BundleError, match="catalog kato: no delta to write"):
        bundle_delta.delta_document(comparison)


def test_duplicate_key_ships_full(git_repo: Path, tmp_path: Path) -> None:
    base = commit_base(git_repo, BASE_ROWS)
    content = tmp_path / "snapshot"
    duplicated = [*CURRENT_ROWS, ["01", "001", "Астана, второй раз"]]
    write_rows(content, duplicated)

    comparison = compare(git_repo, content, base)

    assert comparison.counts is None
    assert comparison.delta is None
    assert comparison.current.rows == len(duplicated)
    assert comparison.current.sha256 == bundle_delta.rows_hash(COLUMNS, as_dicts(duplicated), KEY)


def test_other_columns_have_no_base(git_repo: Path, tmp_path: Path) -> None:
    base = commit_base(git_repo, [row[:2] for row in BASE_ROWS], COLUMNS[:2])
    content = tmp_path / "snapshot"
    write_rows(content, CURRENT_ROWS)

    comparison = compare(git_repo, content, base)

    assert comparison.base is None
    assert comparison.counts is None
    assert comparison.current.rows == len(CURRENT_ROWS)


def test_missing_base_catalog_has_no_base(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "README.md").write_text("каталоги\n", encoding="utf-8")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "Start without catalogs")
    base = git(git_repo, "rev-parse", "HEAD").strip()
    content = tmp_path / "snapshot"
    write_rows(content, CURRENT_ROWS)

    comparison = compare(git_repo, content, base)

    assert comparison.base is None
    assert comparison.current.rows == len(CURRENT_ROWS)


def test_base_wrong_field_count_named(git_repo: Path, tmp_path: Path) -> None:
    folder = git_repo / "catalogs" / "kato"
    folder.mkdir(parents=True)
    (folder / "rows.csv").write_text("region,code,name\n01,001,Астана\n01,002\n", encoding="utf-8")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "Add a base row with two fields")
    base = git(git_repo, "rev-parse", "HEAD").strip()
    content = tmp_path / "snapshot"
    write_rows(content, CURRENT_ROWS)

    with pytest.raises(CatalogError) as caught:
        compare(git_repo, content, base)

    assert f"catalogs/kato/rows.csv at {base[:12]}:3" in str(caught.value)
    assert "expected 3 fields, found 2" in str(caught.value)


def test_key_outside_columns_rejected(git_repo: Path, tmp_path: Path) -> None:
    content = tmp_path / "snapshot"
    write_rows(content, CURRENT_ROWS)

    with pytest.raises(CatalogError, match="key column 'id' is not among the columns"):
        bundle_delta.compare_catalog(content, "kato", ["id"], git_repo, None)


def test_changed_key_has_no_base(git_repo: Path, tmp_path: Path) -> None:
    folder = git_repo / "catalogs" / "kato"
    folder.mkdir(parents=True)
    (folder / "catalog.json").write_text(json.dumps({"id": "kato", "key": COLUMNS[:1]}), "utf-8")
    base = commit_base(git_repo, BASE_ROWS)
    content = tmp_path / "snapshot"
    write_rows(content, BASE_ROWS)

    comparison = compare(git_repo, content, base)

    # The rows are the same, but a table keyed otherwise cannot take a delta of the old one.
    assert comparison.base is None
    assert comparison.delta is None
    assert comparison.counts is None
