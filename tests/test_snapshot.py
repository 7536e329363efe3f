"""The snapshot contains the commit's blobs byte for byte, with their modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import git
from test_build import commit_all

from pipeline.errors import CollectError
from pipeline.snapshot import export_commit

CRLF_ATTRIBUTES = "* text eol=crlf\nskipped.txt export-ignore\nstamped.txt export-subst\n"


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def test_export_ignores_committed_attributes(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / ".gitattributes").write_text(CRLF_ATTRIBUTES, encoding="utf-8")
    (git_repo / "lines.txt").write_bytes(b"one\ntwo\n")
    (git_repo / "skipped.txt").write_bytes(b"kept\n")
    (git_repo / "stamped.txt").write_bytes(b"$Format:%H$\n")
    commit_all(git_repo, "Add files with export attributes")

    dest = export_commit(git_repo, head(git_repo), tmp_path / "out")

    assert (dest / "lines.txt").read_bytes() == b"one\ntwo\n"
    assert (dest / "skipped.txt").read_bytes() == b"kept\n"
    assert (dest / "stamped.txt").read_bytes() == b"$Format:%H$\n"
    assert (dest / ".gitattributes").read_text(encoding="utf-8") == CRLF_ATTRIBUTES


def test_export_keeps_modes_under_any_umask(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "bin").mkdir()
    (git_repo / "bin" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (git_repo / "bin" / "run.sh").chmod(0o755)
    (git_repo / "plain.txt").write_bytes(b"plain\n")
    commit_all(git_repo, "Add an executable and a plain file")

    umask = os.umask(0o077)
    try:
        dest = export_commit(git_repo, head(git_repo), tmp_path / "out")
    finally:
        os.umask(umask)

    assert stat.S_IMODE((dest / "bin" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "plain.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "bin").stat().st_mode) == 0o755


def test_export_keeps_inner_link(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "target.txt").write_bytes(b"target\n")
    (git_repo / "link.txt").symlink_to("target.txt")
    commit_all(git_repo, "Add a link inside the tree")

    dest = export_commit(git_repo, head(git_repo), tmp_path / "out")

    assert os.readlink(dest / "link.txt") == "target.txt"


@pytest.mark.parametrize("target", ["../../outside.txt", "/etc/passwd"])
def test_export_rejects_escaping_link(git_repo: Path, tmp_path: Path, target: str) -> None:
    (git_repo / "sub").mkdir()
    (git_repo / "sub" / "link.txt").symlink_to(target)
    commit_all(git_repo, "Add a link that leaves the tree")
    commit = head(git_repo)

    with pytest.raises(CollectError) as error:
        export_commit(git_repo, commit, tmp_path / "out")
    message = str(error.value)
    assert message.startswith(f"{git_repo} at {commit[:12]}: sub/link.txt")
    assert target in message
    assert message.endswith("content must be regular files")


def test_export_unknown_commit_rejected(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "a.txt").write_bytes(b"a\n")
    commit_all(git_repo, "Add a file")
    missing = "0" * 40

    with pytest.raises(CollectError, match=f"cannot export commit {missing} of {git_repo}"):
        export_commit(git_repo, missing, tmp_path / "out")
