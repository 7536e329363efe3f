"""Tests of the build stage on small real content repositories: deltas, full bundles, times."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import py7zr
import pytest
from conftest import REPO_ROOT, git

from pipeline import archive, bundle_delta
from pipeline.build import BuildResult, build_bundle, source_date_epoch
from pipeline.collect import collect
from pipeline.config import load_config
from pipeline.errors import BundleError
from pipeline.manifest import parse_manifest
from pipeline.snapshot import export_commit
from pipeline.versions import Version

MIGRATION = "CREATE TABLE knp (code TEXT PRIMARY KEY, name_kk TEXT, name_ru TEXT);\n"
PIPELINE_TABLE = '[tool.pipeline]\nproduct = "parus-kaz-budget"\n'
COMMIT_DATE = "2026-12-01T09:00:00Z"
COMMIT_TIME = 1_796_115_600  # 2026-12-01T09:00:00Z


def commit_all(repo: Path, message: str, date: str = COMMIT_DATE) -> None:
    """Commit every change with `date` as author and committer date."""
    git(repo, "add", "-A")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Release Tests",
        "GIT_AUTHOR_EMAIL": "tests@parus-kaz.example",
        "GIT_COMMITTER_NAME": "Release Tests",
        "GIT_COMMITTER_EMAIL": "tests@parus-kaz.example",
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }
    subprocess.run(
        ["git", "commit", "-q", "-m", message], cwd=repo, env=env, check=True, capture_output=True
    )


def make_content_repo(repo: Path) -> Path:
    """Fill `repo` with the demo KNP catalog and one migration, committed at COMMIT_DATE."""
    shutil.copytree(REPO_ROOT / "catalogs" / "knp", repo / "catalogs" / "knp")
    (repo / "migrations").mkdir()
    (repo / "migrations" / "0001_baseline.sql").write_text(MIGRATION, encoding="utf-8")
    (repo / "pyproject.toml").write_text(PIPELINE_TABLE, encoding="utf-8")
    commit_all(repo, "Add the KNP catalog")
    return repo


@pytest.fixture
def content_repo(git_repo: Path) -> Path:
    return make_content_repo(git_repo)


def build(
    repo: Path, out: Path, version: str, work: Path | None = None, **options: Any
) -> BuildResult:
    """Collect, export and build `repo` at HEAD like the build task does."""
    changes = collect(repo)
    content = export_commit(repo, changes.commit, (work or out.parent / "work") / "content")
    config = load_config(content)
    return build_bundle(config, content, changes, Version.parse(version), out, **options)


def read_member(bundle: Path, name: str) -> bytes:
    return archive.read_file(bundle, name, 64 * 1024 * 1024)


def rows_of(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def edit_rows(repo: Path) -> tuple[str, str]:
    """Change one KNP row, remove another and add a third; return the old and new rows.csv."""
    path = repo / "catalogs" / "knp" / "rows.csv"
    old = path.read_text(encoding="utf-8")
    lines = old.splitlines()
    changed = lines[1].split(",")
    changed[2] = changed[2] + " (изменено)"
    new_lines = [lines[0], ",".join(changed), *lines[3:], "999,Сынақ коды,Тестовый код"]
    header = new_lines[0]
    body = sorted(new_lines[1:])
    new = "\n".join([header, *body]) + "\n"
    path.write_text(new, encoding="utf-8")
    return old, new


@dataclass
class TwoReleases:
    repo: Path
    first: BuildResult
    old_rows: str
    new_rows: str


@pytest.fixture
def two_releases(content_repo: Path, tmp_path: Path) -> TwoReleases:
    first = build(content_repo, tmp_path / "first", "2026.12.0", work=tmp_path / "w1")
    git(content_repo, "tag", "release/2026.12.0")
    old, new = edit_rows(content_repo)
    commit_all(content_repo, "Refresh KNP", "2026-12-10T09:00:00Z")
    return TwoReleases(content_repo, first, old, new)


# --------------------------------------------------------------------------- first release


def test_first_release_is_full(content_repo: Path, tmp_path: Path) -> None:
    built = build(content_repo, tmp_path / "out", "2026.12.0")
    manifest = built.manifest

    assert manifest["full"] is True
    assert manifest["min_from_version"] is None
    [entry] = manifest["catalogs"]
    assert entry["mode"] == "full"
    assert entry["path"] == "catalogs/knp/rows.csv"
    assert entry["base_sha256"] is None
    assert entry["counts"] is None
    header, rows = rows_of((content_repo / "catalogs/knp/rows.csv").read_text(encoding="utf-8"))
    assert entry["rows"] == len(rows)
    assert entry["sha256"] == bundle_delta.rows_hash(header, rows, ["code"])
    assert parse_manifest(read_member(built.bundle, "manifest.json")) == manifest


def test_manifest_lists_folders_and_build_facts(content_repo: Path, tmp_path: Path) -> None:
    built = build(content_repo, tmp_path / "out", "2026.12.0")
    manifest = built.manifest

    assert manifest["folders"] == ["catalogs", "catalogs/knp", "migrations", "notes"]
    assert manifest["provenance"] == "provenance.json"
    assert "provenance.json" in {entry["path"] for entry in manifest["files"]}
    assert manifest["next_trusted_keys"] is None
    assert manifest["build"]["source_date_epoch"] == COMMIT_TIME
    assert manifest["build"]["encrypted"] is False
    assert manifest["build"]["tools"]["py7zr"] == py7zr.__version__
    assert set(manifest["build"]["tools"]) == {"parus-kaz-release", "python", "liblzma", "py7zr"}
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", manifest["build"]["tools"]["liblzma"])
    assert manifest["build"]["compression"]["filter"] == "LZMA2"


def test_outputs_beside_bundle_match_archive(content_repo: Path, tmp_path: Path) -> None:
    built = build(content_repo, tmp_path / "out", "2026.12.0")

    assert built.manifest_path.read_bytes() == read_member(built.bundle, "manifest.json")
    assert built.provenance_path.read_bytes() == read_member(built.bundle, "provenance.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json",
        "parus-kaz-budget-2026.12.0.7z",
        "provenance.json",
    ]


# --------------------------------------------------------------------------- deltas


def test_changed_catalog_ships_as_delta(two_releases: TwoReleases, tmp_path: Path) -> None:
    built = build(two_releases.repo, tmp_path / "second", "2026.12.1")
    manifest = built.manifest

    assert manifest["full"] is False
    assert manifest["min_from_version"] == "2026.12.0"
    [entry] = manifest["catalogs"]
    assert entry["mode"] == "delta"
    assert entry["path"] == "catalogs/knp/delta.json"
    assert entry["counts"] == {"added": 1, "changed": 1, "removed": 1}
    paths = {f["path"] for f in manifest["files"]}
    assert "catalogs/knp/delta.json" in paths
    assert "catalogs/knp/rows.csv" not in paths
    old_header, old_rows = rows_of(two_releases.old_rows)
    new_header, new_rows = rows_of(two_releases.new_rows)
    assert entry["base_sha256"] == bundle_delta.rows_hash(old_header, old_rows, ["code"])
    assert entry["sha256"] == bundle_delta.rows_hash(new_header, new_rows, ["code"])
    assert entry["rows"] == len(new_rows)


def test_delta_applied_to_base_gives_result(two_releases: TwoReleases, tmp_path: Path) -> None:
    built = build(two_releases.repo, tmp_path / "second", "2026.12.1")
    document = json.loads(read_member(built.bundle, "catalogs/knp/delta.json"))
    _, old_rows = rows_of(two_releases.old_rows)
    _, new_rows = rows_of(two_releases.new_rows)

    result = bundle_delta.apply_delta(old_rows, document, "catalogs/knp/delta.json")

    assert result == sorted(new_rows, key=lambda row: row["code"])
    assert document["removed"] == [[old_rows[1]["code"]]]
    assert document["added"] == [
        {"code": "999", "name_kk": "Сынақ коды", "name_ru": "Тестовый код"}
    ]


def test_delta_rejects_wrong_base(two_releases: TwoReleases, tmp_path: Path) -> None:
    built = build(two_releases.repo, tmp_path / "second", "2026.12.1")
    document = json.loads(read_member(built.bundle, "catalogs/knp/delta.json"))
    _, new_rows = rows_of(two_releases.new_rows)

    with pytest.raises(
        BundleError, match=r"catalogs/knp/delta\.json: the installed catalog has rows hash"
    ):
        bundle_delta.apply_delta(new_rows, document, "catalogs/knp/delta.json")


def test_rows_hash_ignores_row_order_and_quoting() -> None:
    columns = ["code", "name"]
    rows = [{"code": "2", "name": "b"}, {"code": "1", "name": 'a,"x"'}]
    assert bundle_delta.rows_hash(columns, rows, ["code"]) == bundle_delta.rows_hash(
        columns, list(reversed(rows)), ["code"]
    )
    assert bundle_delta.rows_hash(columns, rows, ["code"]) != bundle_delta.rows_hash(
        columns, rows[:1], ["code"]
    )


def test_full_option_ships_whole_catalogs(two_releases: TwoReleases, tmp_path: Path) -> None:
    built = build(two_releases.repo, tmp_path / "second", "2026.12.1", full=True)
    manifest = built.manifest

    assert manifest["full"] is True
    assert manifest["min_from_version"] is None
    assert manifest["schema"] == {"from": None, "to": "0001"}
    [entry] = manifest["catalogs"]
    assert entry["mode"] == "full"
    assert entry["counts"] == {"added": 1, "changed": 1, "removed": 1}
    assert read_member(built.bundle, "catalogs/knp/rows.csv").decode() == two_releases.new_rows


def test_changed_columns_ship_full(content_repo: Path, tmp_path: Path) -> None:
    build(content_repo, tmp_path / "first", "2026.12.0", work=tmp_path / "w1")
    git(content_repo, "tag", "release/2026.12.0")
    path = content_repo / "catalogs/knp/rows.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(line + ",x" for line in lines) + "\n", encoding="utf-8")
    commit_all(content_repo, "Add a column", "2026-12-10T09:00:00Z")

    built = build(content_repo, tmp_path / "second", "2026.12.1")

    [entry] = built.manifest["catalogs"]
    assert entry["mode"] == "full"
    assert entry["counts"] is None
    assert built.manifest["min_from_version"] == "2026.12.0"


def test_unchanged_catalog_not_shipped(content_repo: Path, tmp_path: Path) -> None:
    build(content_repo, tmp_path / "first", "2026.12.0", work=tmp_path / "w1")
    git(content_repo, "tag", "release/2026.12.0")
    (content_repo / "migrations/0002_note.sql").write_text(
        "CREATE TABLE note (id TEXT);\n", encoding="utf-8"
    )
    commit_all(content_repo, "Add a migration", "2026-12-10T09:00:00Z")

    built = build(content_repo, tmp_path / "second", "2026.12.1")

    assert built.manifest["catalogs"] == []
    assert built.manifest["schema"] == {"from": "0001", "to": "0002"}


# --------------------------------------------------------------------------- versions and times


def test_version_not_newer_rejected(two_releases: TwoReleases, tmp_path: Path) -> None:
    with pytest.raises(
        BundleError, match=r"version 2026\.12\.0 is not newer than the base release"
    ):
        build(two_releases.repo, tmp_path / "second", "2026.12.0")


def test_source_date_epoch_honoured(
    content_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = build(content_repo, tmp_path / "out", "2026.12.0")

    assert built.manifest["build"]["source_date_epoch"] == 1_700_000_000
    with py7zr.SevenZipFile(built.bundle) as handle:
        times = {info.creationtime.timestamp() for info in handle.list()}
    assert times == {1_700_000_000}


def test_invalid_source_date_epoch_rejected(
    content_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(
        BundleError, match=r"SOURCE_DATE_EPOCH: expected unix seconds .* 'yesterday'"
    ):
        build(content_repo, tmp_path / "out", "2026.12.0")


@pytest.mark.parametrize("value", ["99999999999999999999", "253402300800"])
def test_huge_source_date_epoch_rejected(
    content_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(BundleError) as error:
        build(content_repo, tmp_path / "out", "2026.12.0")
    assert str(error.value) == (
        "SOURCE_DATE_EPOCH: expected unix seconds from 0 to 253402300799"
        f" (9999-12-31T23:59:59Z), found '{value}'"
    )


@pytest.mark.parametrize("value", [" 1800000000", "1800000000 ", "+1800000000", "1_800_000_000"])
def test_padded_source_date_epoch_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(BundleError) as error:
        source_date_epoch(0)
    assert str(error.value) == (
        f"SOURCE_DATE_EPOCH: expected unix seconds (an integer >= 0), found {value!r}"
    )


def test_last_source_date_epoch_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "253402300799")
    assert source_date_epoch(0) == 253_402_300_799


def test_empty_password_rejected(content_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="the archive password is empty"):
        build(content_repo, tmp_path / "out", "2026.12.0", password="")
    assert not (tmp_path / "out" / "parus-kaz-budget-2026.12.0.7z").exists()


def test_encrypted_build_is_reproducible(content_repo: Path, tmp_path: Path) -> None:
    first = build(
        content_repo, tmp_path / "a", "2026.12.0", work=tmp_path / "wa", password="s3cret"
    )
    second = build(
        content_repo, tmp_path / "b", "2026.12.0", work=tmp_path / "wb", password="s3cret"
    )
    assert first.bundle.read_bytes() == second.bundle.read_bytes()
    with pytest.raises(BundleError):
        read_member(first.bundle, "manifest.json")
    assert (
        archive.read_file(first.bundle, "manifest.json", 1 << 20, password="s3cret")
        == (tmp_path / "a" / "manifest.json").read_bytes()
    )


def test_notes_name_deleted_format_by_title(content_repo: Path, tmp_path: Path) -> None:
    format_id = "mt942-bank-interim-import"
    folder = content_repo / "packages" / "treasury" / format_id
    shutil.copytree(REPO_ROOT / "packages" / "treasury" / format_id, folder)
    commit_all(content_repo, "Add the MT942 format")
    build(content_repo, tmp_path / "first", "2026.12.0", work=tmp_path / "w1")
    git(content_repo, "tag", "release/2026.12.0")
    shutil.rmtree(folder)
    commit_all(content_repo, "Remove the MT942 format", "2026-12-10T09:00:00Z")
    built = build(content_repo, tmp_path / "second", "2026.12.1", work=tmp_path / "w2")
    title = json.loads((REPO_ROOT / "packages/treasury" / format_id / "format.json").read_text())[
        "title"
    ]
    ru = read_member(built.bundle, "notes/ru.md").decode("utf-8")
    kk = read_member(built.bundle, "notes/kk.md").decode("utf-8")
    assert f"- удалено: **{format_id}** — {title['ru']}\n" in ru
    assert f"- **{format_id}** — {title['kk']} (жойылды)\n" in kk
