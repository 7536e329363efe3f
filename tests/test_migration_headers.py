"""Header marks of migrations: misspelled `-- pipeline:` lines are errors, not comments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.errors import MigrationError
from pipeline.migrations import check_migrations, header_problems, load_migrations

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPECTED = "expected '-- pipeline: no-transaction' or '-- pipeline: rebuild-tables'"


@pytest.mark.parametrize(
    "line",
    [
        "-- pipeline: rebuild-table",
        "-- pipeline: no-transactions",
        "-- pipline: no-transaction",
        "-- pipelines: rebuild-tables",
        "-- pipeline no-transaction",
        "-- pipeline : no-transaction",
        "-- pipeline: no-transaction, rebuild-tables",
        "-- no-transaction",
        "-- runner: no-transaction",
    ],
)
def test_misspelled_mark_named(line: str) -> None:
    text = f"-- Add an index to payments.\n{line}\n\nCREATE INDEX x ON t (a);\n"

    (finding,) = header_problems(text, "migrations/0004_x.sql")

    assert finding.file == "migrations/0004_x.sql"
    assert finding.line == 2
    assert finding.message == (
        f"{EXPECTED}, found {line!r}; correct the mark, or reword the comment if it is no mark"
    )


@pytest.mark.parametrize(
    "line",
    [
        "-- pipeline: no-transaction",
        "-- pipeline: rebuild-tables",
        "--pipeline:no-transaction",
        "-- PIPELINE: Rebuild-Tables",
        "-- Note: no transaction is needed for the index",
        "-- Purpose: rebuild tables of accounts",
        "-- The pipeline runs this migration on every sample.",
    ],
)
def test_valid_mark_or_comment_accepted(line: str) -> None:
    text = f"{line}\nCREATE INDEX x ON t (a);\n"

    assert header_problems(text, "migrations/0004_x.sql") == []


def test_mark_after_first_statement_ignored() -> None:
    # Only the leading comment block contains marks, so a later comment is prose.
    text = "CREATE INDEX x ON t (a);\n-- pipline: no-transaction\n"

    assert header_problems(text, "migrations/0004_x.sql") == []


def make_content(root: Path, name: str, text: str) -> Path:
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    (root / "migrations" / name).write_text(text, encoding="utf-8")
    return root


def test_validate_names_misspelled_mark(tmp_path: Path) -> None:
    root = make_content(
        tmp_path, "0004_index.sql", "-- pipline: no-transaction\nCREATE INDEX x ON knp (code);\n"
    )

    findings = [f for f in check_migrations(root) if f.rule == "migration.header"]

    assert [str(finding) for finding in findings] == [
        f"migrations/0004_index.sql:1: {EXPECTED}, found '-- pipline: no-transaction';"
        " correct the mark, or reword the comment if it is no mark"
    ]


def test_load_rejects_misspelled_mark(tmp_path: Path) -> None:
    root = make_content(
        tmp_path,
        "0004_index.postgresql.sql",
        "-- pipeline: rebuild-table\nCREATE INDEX x ON knp (code);\n",
    )
    (root / "migrations" / "0004_index.sqlite.sql").write_text("SELECT 1;\n", "utf-8")

    with pytest.raises(MigrationError) as caught:
        load_migrations(root, "postgresql")

    assert str(caught.value) == (
        f"migrations/0004_index.postgresql.sql:1: {EXPECTED}, found '-- pipeline:"
        " rebuild-table'; correct the mark, or reword the comment if it is no mark"
    )
    assert len(load_migrations(root, "sqlite")) == 4
