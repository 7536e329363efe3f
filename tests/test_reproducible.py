"""Two builds of one commit give byte-identical bundles, manifests and provenance."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import git
from test_build import build, make_content_repo

from pipeline.build import build_bundle
from pipeline.collect import collect
from pipeline.config import load_config
from pipeline.snapshot import export_commit
from pipeline.versions import Version

OUTPUTS = ("parus-kaz-budget-2026.12.0.7z", "manifest.json", "provenance.json")


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """Restore the umask and the time zone that a test changes."""
    umask = os.umask(0o022)
    os.umask(umask)
    zone = os.environ.get("TZ")
    try:
        yield
    finally:
        os.umask(umask)
        if zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = zone
        time.tzset()


def copy_in_reverse_order(source: Path, dest: Path) -> None:
    """Copy a tree creating folders and files in the reverse of sorted order."""
    paths = sorted(source.rglob("*"), reverse=True)
    for path in paths:
        target = dest / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.is_file():
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def test_two_builds_are_byte_identical(
    git_repo: Path, tmp_path: Path, restore_process_state: None
) -> None:
    repo = make_content_repo(git_repo)
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)

    os.environ["TZ"] = "Asia/Almaty"
    time.tzset()
    os.umask(0o022)
    first = build(repo, tmp_path / "out-a", "2026.12.0", work=tmp_path / "work-a")

    os.environ["TZ"] = "America/Los_Angeles"
    time.tzset()
    os.umask(0o077)
    changes = collect(clone)
    exported = export_commit(clone, changes.commit, tmp_path / "work-b" / "exported")
    content = tmp_path / "work-b" / "reversed"
    copy_in_reverse_order(exported, content)
    second = build_bundle(
        load_config(content),
        content,
        changes,
        Version.parse("2026.12.0"),
        tmp_path / "deeper" / "out-b",
    )

    for name in OUTPUTS:
        a = (first.bundle.parent / name).read_bytes()
        b = (second.bundle.parent / name).read_bytes()
        assert a == b, f"{name} differs between the two builds"


def test_bundle_holds_no_run_specific_values(git_repo: Path, tmp_path: Path) -> None:
    repo = make_content_repo(git_repo)
    built = build(repo, tmp_path / "out", "2026.12.0")

    for name in OUTPUTS:
        data = (built.bundle.parent / name).read_bytes()
        for value in (str(tmp_path), str(repo), getpass.getuser(), socket.gethostname()):
            assert value.encode() not in data, f"{name} contains {value!r}"


def test_source_date_epoch_changes_only_time(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_content_repo(git_repo)
    first = build(repo, tmp_path / "a", "2026.12.0", work=tmp_path / "wa")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    second = build(repo, tmp_path / "b", "2026.12.0", work=tmp_path / "wb")
    third = build(repo, tmp_path / "c", "2026.12.0", work=tmp_path / "wc")

    assert first.bundle.read_bytes() != second.bundle.read_bytes()
    assert second.bundle.read_bytes() == third.bundle.read_bytes()
    first_manifest = dict(first.manifest, build=None, files=None)
    second_manifest = dict(second.manifest, build=None, files=None)
    assert first_manifest == second_manifest
    assert second.manifest["build"]["source_date_epoch"] == 1_800_000_000


def test_clone_with_other_origin_builds_same(git_repo: Path, tmp_path: Path) -> None:
    repo = make_content_repo(git_repo)
    mirror = tmp_path / "mirror"
    shutil.copytree(repo, mirror)
    git(mirror, "remote", "add", "origin", str(tmp_path / "somewhere-else"))
    first = build(repo, tmp_path / "a", "2026.12.0", work=tmp_path / "wa")
    second = build(mirror, tmp_path / "b", "2026.12.0", work=tmp_path / "wb")

    assert first.provenance_path.read_bytes() == second.provenance_path.read_bytes()
    assert first.bundle.read_bytes() == second.bundle.read_bytes()


def set_crlf_attributes(clone: Path) -> None:
    (clone / ".git" / "info" / "attributes").write_text("*.sql text eol=crlf\n", encoding="utf-8")


def set_autocrlf(clone: Path) -> None:
    git(clone, "config", "core.autocrlf", "true")


@pytest.mark.parametrize("configure", [set_autocrlf, set_crlf_attributes])
def test_local_line_ending_settings_ignored(
    git_repo: Path, tmp_path: Path, configure: Callable[[Path], None]
) -> None:
    repo = make_content_repo(git_repo)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    configure(clone)
    first = build(repo, tmp_path / "a", "2026.12.0", work=tmp_path / "wa")
    second = build(clone, tmp_path / "b", "2026.12.0", work=tmp_path / "wb")

    migration = tmp_path / "wb" / "content" / "migrations" / "0001_baseline.sql"
    assert b"\r" not in migration.read_bytes()
    for name in OUTPUTS:
        a = (first.bundle.parent / name).read_bytes()
        b = (second.bundle.parent / name).read_bytes()
        assert a == b, f"{name} differs between the two builds"
