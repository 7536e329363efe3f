"""The validate cache: blob ids, reuse of unchanged items, and invalidation."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline import cache as cache_module
from pipeline import catalogs, definitions, migrations
from pipeline.cache import (
    CACHE_FOLDER,
    MISSING,
    ResultCache,
    blob_id,
    blob_id_of_bytes,
    cache_path,
    package_fingerprint,
)
from pipeline.findings import Finding
from pipeline.validate import validate
from tests.conftest import REPO_ROOT, git

CATALOG_DATA = REPO_ROOT / "tests" / "data" / "catalogs"


@pytest.fixture
def content(git_repo: Path) -> Path:
    """A content repository with five valid catalogs (knp_kbe references knp and kbe)."""
    shutil.copytree(CATALOG_DATA / "valid" / "catalogs", git_repo / "catalogs")
    shutil.copytree(REPO_ROOT / "migrations", git_repo / "migrations")
    shutil.copytree(REPO_ROOT / "packages" / "reports", git_repo / "packages" / "reports")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "Add content")
    return git_repo


@pytest.fixture
def check_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the real check functions that validate calls, by item."""
    calls: Counter[str] = Counter()

    def counting(function: Callable[..., list[Finding]], name_of: Callable[..., str]) -> Any:
        def wrapper(*args: Any) -> list[Finding]:
            calls[name_of(*args)] += 1
            return function(*args)

        return wrapper

    monkeypatch.setattr(
        catalogs,
        "check_catalog",
        counting(catalogs.check_catalog, lambda root, item: f"catalog:{item}"),
    )
    monkeypatch.setattr(
        migrations,
        "check_migrations",
        counting(migrations.check_migrations, lambda root: "migrations"),
    )
    monkeypatch.setattr(
        definitions,
        "check_definition",
        counting(definitions.check_definition, lambda root, kind, item: f"{kind.value}:{item}"),
    )
    return calls


def append_row(path: Path, row: str) -> None:
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write(row + "\n")


@pytest.mark.parametrize(
    "data",
    [b"", b"code,name\n010,x\n", "Қазақстан\r\n".encode(), bytes(range(256)) * 300],
    ids=["empty", "ascii", "kazakh-crlf", "binary"],
)
def test_blob_id_matches_git_hash_object(git_repo: Path, data: bytes) -> None:
    path = git_repo / "file.bin"
    path.write_bytes(data)
    expected = git(git_repo, "hash-object", "file.bin").strip()

    assert blob_id(path) == expected
    assert blob_id_of_bytes(data) == expected


def test_blob_id_of_missing_file(tmp_path: Path) -> None:
    assert blob_id(tmp_path / "absent.csv") == MISSING
    assert blob_id(tmp_path) == MISSING


def test_second_run_reuses_every_item(content: Path, check_calls: Counter[str]) -> None:
    first = validate(content, use_cache=True)
    checked_first = sum(check_calls.values())
    second = validate(content, use_cache=True)

    assert first.cached == 0
    assert checked_first == len(first.cases)
    assert second.cached == len(second.cases)
    assert sum(check_calls.values()) == checked_first
    assert (content / CACHE_FOLDER / "validate.json").is_file()


def test_cache_off_checks_everything(content: Path, check_calls: Counter[str]) -> None:
    validate(content, use_cache=True)
    check_calls.clear()
    result = validate(content)

    assert result.cached == 0
    assert sum(check_calls.values()) == len(result.cases)


def test_changed_catalog_is_rechecked(content: Path, check_calls: Counter[str]) -> None:
    validate(content, use_cache=True)
    check_calls.clear()
    append_row(content / "catalogs" / "kato" / "rows.csv", "99,0,999999999,Тест")

    result = validate(content, use_cache=True)

    assert check_calls == Counter({"catalog:kato": 1})
    assert result.cached == len(result.cases) - 1


def test_referenced_catalog_change_rechecks_referrer(
    content: Path, check_calls: Counter[str]
) -> None:
    validate(content, use_cache=True)
    check_calls.clear()
    append_row(content / "catalogs" / "knp" / "rows.csv", "999,Сынақ,Тест")

    validate(content, use_cache=True)

    assert set(check_calls) == {"catalog:knp", "catalog:knp_kbe"}


def test_changed_migration_and_report_rechecked(content: Path, check_calls: Counter[str]) -> None:
    validate(content, use_cache=True)
    check_calls.clear()
    with (content / "migrations" / "0001_baseline.sql").open("a", encoding="utf-8") as handle:
        handle.write("\n-- a comment changes the blob id\n")
    report = next((content / "packages" / "reports").iterdir())
    (report / "notes.txt").write_text("an extra file in the report folder\n", encoding="utf-8")

    validate(content, use_cache=True)

    assert set(check_calls) == {"migrations", f"report:{report.name}"}


def test_finding_same_with_and_without_cache(content: Path) -> None:
    rows = content / "catalogs" / "knp" / "rows.csv"
    append_row(rows, "010,Қайталанған,Повтор")

    uncached = validate(content)
    validate(content, use_cache=True)
    cached = validate(content, use_cache=True)

    assert cached.cached == len(cached.cases)
    assert uncached.errors
    assert cached.findings == uncached.findings
    assert any(f.rule == "catalog.duplicate-key" and f.line is not None for f in cached.errors)
    assert cached.to_json() == uncached.to_json()


def test_other_fingerprint_invalidates(content: Path, check_calls: Counter[str]) -> None:
    validate(content, use_cache=True)
    path = cache_path(content, "validate")
    document = json.loads(path.read_text(encoding="utf-8"))
    document["fingerprint"] = "written-by-another-pipeline"
    path.write_text(json.dumps(document), encoding="utf-8")
    check_calls.clear()

    result = validate(content, use_cache=True)

    assert result.cached == 0
    assert sum(check_calls.values()) == len(result.cases)


def test_schema_change_changes_fingerprint(tmp_path: Path) -> None:
    package = tmp_path / "pipeline"
    shutil.copytree(REPO_ROOT / "pipeline", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = package_fingerprint(package, "0.1.0")
    schema = package / "schemas" / "catalog.schema.json"
    schema.write_text(schema.read_text(encoding="utf-8") + "\n", encoding="utf-8")

    assert package_fingerprint(package, "0.1.0") != before
    assert package_fingerprint(package, "0.2.0") != package_fingerprint(package, "0.1.0")


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"format": 99}',
        '{"format": 1, "fingerprint": "%s", "entries": []}',
        '{"format": 1, "fingerprint": "%s", "entries": {"catalog:knp": {"key": 1}}}',
    ],
    ids=["invalid-json", "list", "other-format", "entries-list", "entry-key-number"],
)
def test_corrupt_cache_counts_as_empty(
    content: Path, check_calls: Counter[str], text: str
) -> None:
    expected = validate(content)
    check_calls.clear()
    path = cache_path(content, "validate")
    path.parent.mkdir()
    path.write_text(text.replace("%s", cache_module.pipeline_fingerprint()), encoding="utf-8")

    result = validate(content, use_cache=True)

    assert result.cached == 0
    assert sum(check_calls.values()) == len(result.cases)
    assert result.findings == expected.findings
    assert validate(content, use_cache=True).cached == len(result.cases)


def test_corrupt_finding_entry_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "validate.json"
    cache = ResultCache(path, fingerprint="f")
    cache.put("catalog:knp", "key-1", [Finding("catalog.type", "catalogs/knp/rows.csv", "bad")])
    cache.save()
    document = json.loads(path.read_text(encoding="utf-8"))
    document["entries"]["catalog:knp"]["findings"][0]["line"] = "three"
    path.write_text(json.dumps(document), encoding="utf-8")

    reloaded = ResultCache(path, fingerprint="f")

    assert reloaded.get("catalog:knp", "key-1") is None
    assert reloaded.misses == 1


def test_deleted_cache_is_harmless(content: Path, check_calls: Counter[str]) -> None:
    validate(content, use_cache=True)
    shutil.rmtree(content / CACHE_FOLDER)
    check_calls.clear()

    result = validate(content, use_cache=True)

    assert result.cached == 0
    assert sum(check_calls.values()) == len(result.cases)
    assert (content / CACHE_FOLDER / "validate.json").is_file()


def test_removed_item_leaves_cache(content: Path) -> None:
    validate(content, use_cache=True)
    shutil.rmtree(content / "catalogs" / "rates")

    validate(content, use_cache=True)

    entries = json.loads(cache_path(content, "validate").read_text(encoding="utf-8"))["entries"]
    assert "catalog:rates" not in entries
    assert "catalog:kato" in entries


def test_uncommitted_file_is_keyed_by_its_bytes(content: Path) -> None:
    rows = content / "catalogs" / "kbe" / "rows.csv"
    committed = git(content, "rev-parse", "HEAD:catalogs/kbe/rows.csv").strip()

    assert blob_id(rows) == committed
    append_row(rows, "29,false,9,Сынақ,Тест")
    assert blob_id(rows) == git(content, "hash-object", "catalogs/kbe/rows.csv").strip()
    assert blob_id(rows) != committed


def test_settings_change_checks_migrations_again(content: Path, check_calls: Counter[str]) -> None:
    validate(content, use_cache=True)
    (content / "pyproject.toml").write_text("[tool.pipeline]\nlock_timeout_ms = -5\n", "utf-8")
    check_calls.clear()

    result = validate(content, use_cache=True)

    assert check_calls["migrations"] == 1
    assert [str(f) for f in result.errors if f.rule == "config"] == [
        "pyproject.toml: [tool.pipeline] lock_timeout_ms: expected a positive integer, found -5"
    ]


def test_report_query_change_checks_migrations_again(
    content: Path, check_calls: Counter[str]
) -> None:
    # The migration lint reads the report queries and the catalog descriptions.
    validate(content, use_cache=True)
    check_calls.clear()
    report = next(path for path in (content / "packages" / "reports").iterdir() if path.is_dir())
    definition = report / "report.json"
    document = json.loads(definition.read_text(encoding="utf-8"))
    document["query"] = document["query"] + " "
    definition.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    description = content / "catalogs" / "kato" / "catalog.json"

    validate(content, use_cache=True)
    after_report = check_calls["migrations"]
    description.write_text(description.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    validate(content, use_cache=True)

    assert after_report == 1
    assert check_calls["migrations"] == 2


def test_unchanged_cache_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "validate.json"
    first = ResultCache(path, fingerprint="f")
    first.put("catalog:knp", "key-1", [])
    first.save()
    written = path.stat().st_ino

    second = ResultCache(path, fingerprint="f")
    assert second.get("catalog:knp", "key-1") == []
    second.save()

    assert path.stat().st_ino == written


def test_changed_cache_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "validate.json"
    first = ResultCache(path, fingerprint="f")
    first.put("catalog:knp", "key-1", [])
    first.save()
    second = ResultCache(path, fingerprint="f")
    second.put("catalog:knp", "key-2", [])
    second.save()
    second.put("catalog:knp", "key-3", [])
    second.save()

    reloaded = ResultCache(path, fingerprint="f")

    assert reloaded.get("catalog:knp", "key-3") == []
    assert reloaded.get("catalog:knp", "key-2") is None


def test_unused_entries_are_dropped_on_save(tmp_path: Path) -> None:
    path = tmp_path / "validate.json"
    first = ResultCache(path, fingerprint="f")
    first.put("catalog:knp", "key-1", [])
    first.save()

    ResultCache(path, fingerprint="f").save()

    assert json.loads(path.read_text(encoding="utf-8"))["entries"] == {}
