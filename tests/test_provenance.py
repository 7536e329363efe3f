"""Tests of the in-toto provenance statement that every bundle carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import git
from test_build import build, commit_all, make_content_repo

from pipeline.errors import BundleError
from pipeline.provenance import (
    BUILDER_ID,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    check_provenance,
    source_repository,
)


@pytest.fixture
def content_repo(git_repo: Path) -> Path:
    return make_content_repo(git_repo)


def statement_of(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def test_statement_names_commit_and_subjects(content_repo: Path, tmp_path: Path) -> None:
    built = build(content_repo, tmp_path / "out", "2026.12.0")
    statement = statement_of(built.provenance_path)

    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    listed = {f["path"]: f["sha256"] for f in built.manifest["files"]}
    del listed["provenance.json"]
    assert subjects == listed
    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["version"] == "2026.12.0"
    assert definition["externalParameters"]["full"] is True
    assert (
        definition["externalParameters"]["source"]["commit"] == built.manifest["source"]["commit"]
    )
    assert definition["resolvedDependencies"] == [
        {"name": "source", "digest": {"gitCommit": built.manifest["source"]["commit"]}}
    ]
    assert (
        definition["internalParameters"]["compression"] == built.manifest["build"]["compression"]
    )
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["id"] == BUILDER_ID
    assert run["builder"]["version"] == built.manifest["build"]["tools"]
    assert run["metadata"] == {}


def test_statement_records_base_and_repository(content_repo: Path, tmp_path: Path) -> None:
    build(content_repo, tmp_path / "first", "2026.12.0", work=tmp_path / "w1")
    git(content_repo, "tag", "release/2026.12.0")
    git(content_repo, "remote", "add", "origin", "https://git.parus-kaz.example/content.git")
    (content_repo / "migrations/0002_note.sql").write_text(
        "CREATE TABLE note (id TEXT);\n", encoding="utf-8"
    )
    commit_all(content_repo, "Add a migration", "2026-12-10T09:00:00Z")

    built = build(content_repo, tmp_path / "second", "2026.12.1")
    definition = statement_of(built.provenance_path)["predicate"]["buildDefinition"]

    source, base = definition["resolvedDependencies"]
    assert source["uri"] == "git+https://git.parus-kaz.example/content.git"
    assert base == {
        "name": "base",
        "uri": "git+https://git.parus-kaz.example/content.git@refs/tags/release/2026.12.0",
        "digest": {"gitCommit": built.manifest["source"]["base_commit"]},
    }
    assert definition["externalParameters"]["source"]["base_tag"] == "release/2026.12.0"


def test_configured_repository_wins(content_repo: Path) -> None:
    git(content_repo, "remote", "add", "origin", "git@git.parus-kaz.example:content.git")
    assert source_repository(content_repo, "https://configured.example/c.git") == (
        "https://configured.example/c.git"
    )
    assert source_repository(content_repo, None) == "git.parus-kaz.example:content.git"


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        (
            "https://qa:s3cr3t-token@git.parus-kaz.example/parus/content.git",
            "https://git.parus-kaz.example/parus/content.git",
        ),
        (
            "https://glpat-s3cr3t@git.parus-kaz.example:8443/content.git",
            "https://git.parus-kaz.example:8443/content.git",
        ),
        (
            "https://git.parus-kaz.example/content.git?private_token=s3cr3t#main",
            "https://git.parus-kaz.example/content.git",
        ),
        (
            "ssh://deploy:s3cr3t@git.parus-kaz.example:2222/parus/content.git",
            "ssh://git.parus-kaz.example:2222/parus/content.git",
        ),
        ("git+ssh://git@[2001:db8::1]/content.git", "git+ssh://[2001:db8::1]/content.git"),
        (
            "deploy:s3cr3t@git.parus-kaz.example:parus/content.git",
            "git.parus-kaz.example:parus/content.git",
        ),
        ("git@git.parus-kaz.example:parus/c@1.git", "git.parus-kaz.example:parus/c@1.git"),
        ("deploy:p@ss@git.parus-kaz.example:content.git", "git.parus-kaz.example:content.git"),
        (
            "https://git.parus-kaz.example/p;v=1/content.git;auth=s3cr3t",
            "https://git.parus-kaz.example/p/content.git",
        ),
        ("https:/qa:s3cr3t@git.parus-kaz.example/c.git", "https://git.parus-kaz.example/c.git"),
        ("https:///qa:s3cr3t@git.parus-kaz.example/c.git", "https://git.parus-kaz.example/c.git"),
        ("HTTPS:qa:s3cr3t@git.parus-kaz.example/c.git", "https://git.parus-kaz.example/c.git"),
    ],
    ids=[
        "https-password",
        "https-token",
        "https-query",
        "ssh-password",
        "ssh-ipv6",
        "scp-password",
        "scp-at-in-path",
        "scp-at-in-password",
        "path-parameters",
        "one-slash",
        "three-slashes",
        "no-slash",
    ],
)
def test_origin_credentials_stripped(content_repo: Path, url: str, recorded: str) -> None:
    git(content_repo, "remote", "add", "origin", url)

    assert source_repository(content_repo, None) == recorded


def test_configured_credentials_stripped(content_repo: Path) -> None:
    configured = "https://ci:s3cr3t@git.parus-kaz.example/content.git?token=s3cr3t"

    assert source_repository(content_repo, configured) == (
        "https://git.parus-kaz.example/content.git"
    )


def test_provenance_has_no_credentials(content_repo: Path, tmp_path: Path) -> None:
    origin = "https://qa:s3cr3t-token@git.parus-kaz.example/parus/content.git"
    git(content_repo, "remote", "add", "origin", origin)

    built = build(content_repo, tmp_path / "out", "2026.12.0")

    text = built.provenance_path.read_text(encoding="utf-8")
    assert "s3cr3t" not in text
    assert "qa@" not in text
    source = statement_of(built.provenance_path)["predicate"]["buildDefinition"][
        "externalParameters"
    ]["source"]
    assert source["repository"] == "https://git.parus-kaz.example/parus/content.git"


@pytest.mark.parametrize(
    "origin",
    ["{tmp}/upstream", "file://{tmp}/upstream", "FILE:///{tmp}/upstream", "file:upstream", "C:/x"],
    ids=["path", "file-url", "file-url-upper", "file-no-slash", "drive-letter"],
)
def test_local_origin_not_recorded(content_repo: Path, tmp_path: Path, origin: str) -> None:
    git(content_repo, "remote", "add", "origin", origin.format(tmp=tmp_path))
    assert source_repository(content_repo, None) is None


def test_local_configured_repository_not_recorded(content_repo: Path, tmp_path: Path) -> None:
    assert source_repository(content_repo, f"file://{tmp_path}/upstream") is None
    assert source_repository(content_repo, str(tmp_path / "upstream")) is None


def test_check_rejects_changed_subject(content_repo: Path, tmp_path: Path) -> None:
    built = build(content_repo, tmp_path / "out", "2026.12.0")
    statement = statement_of(built.provenance_path)
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    data = json.dumps(statement).encode()

    with pytest.raises(BundleError, match=r"p\.json: subjects differ from the manifest's files"):
        check_provenance(data, built.manifest, "p.json")


def test_check_rejects_other_commit(content_repo: Path, tmp_path: Path) -> None:
    built = build(content_repo, tmp_path / "out", "2026.12.0")
    manifest = dict(built.manifest, source=dict(built.manifest["source"], commit="f" * 40))

    with pytest.raises(BundleError, match=r"source commit [0-9a-f]{40} differs from the manifest"):
        check_provenance(built.provenance_path.read_bytes(), manifest, "p.json")


def test_check_rejects_non_statement(content_repo: Path, tmp_path: Path) -> None:
    built = build(content_repo, tmp_path / "out", "2026.12.0")

    with pytest.raises(BundleError, match=r"p\.json: expected an in-toto statement"):
        check_provenance(b'{"_type": 1}', built.manifest, "p.json")
