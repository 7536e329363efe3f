"""A snapshot of the release commit's tree, so every stage reads what ships.

The release validates, dry-runs and bundles the committed content, never the
work tree: uncommitted edits can neither slip into a bundle nor hide a
validation error.

The snapshot contains each blob exactly as the commit stores it. `git archive`
is not used because it applies `core.autocrlf`, `core.eol`, `.gitattributes`
and `.git/info/attributes` (line endings, `export-ignore`, `export-subst`),
so the same commit would give different bytes on differently configured
machines. Reading the tree with `git ls-tree` and the blobs with one
`git cat-file --batch` process applies no filter at all.
"""

from __future__ import annotations

import logging
import os
import posixpath
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from pipeline.errors import CollectError

logger = logging.getLogger(__name__)

# File modes as `git archive` with its default `tar.umask` and tarfile's "data"
# filter gave them. Folders get FOLDER_MODE. Neither depends on the umask.
FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755
FOLDER_MODE = 0o755
COPY_CHUNK = 1024 * 1024


def export_commit(repo_path: Path, commit: str, dest: Path, paths: Sequence[str] = ()) -> Path:
    """Write the tree of `commit` into the empty or missing folder `dest` and return it.

    `paths` limits the export to those files and folders of the tree.

    Raises:
        CollectError: the repository or the commit cannot be read, or the tree
            contains a path or a link that leaves it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    limit = ("--", *paths) if paths else ()
    listing = _run_git(repo_path, commit, "ls-tree", "-r", "-z", "--full-tree", commit, *limit)
    with _BlobReader(repo_path, commit) as blobs:
        for mode, kind, oid, path in _tree_entries(listing):
            target = dest / _safe_relative(repo_path, commit, path)
            _make_folder(dest, target.parent)
            if kind == "commit":
                # A submodule becomes an empty folder, as `git archive` gives it.
                _make_folder(dest, target)
            elif mode == "120000":
                link = blobs.read(oid)
                _write_link(repo_path, commit, dest, path, os.fsdecode(link))
            else:
                blobs.copy(oid, target)
                target.chmod(EXECUTABLE_MODE if mode == "100755" else FILE_MODE)
    logger.debug("exported %s of %s to %s", commit[:12], repo_path, dest)
    return dest


def _run_git(repo_path: Path, commit: str, *args: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo_path), *args], capture_output=True, check=False
        )
    except OSError as exc:
        raise CollectError(f"cannot export commit {commit} of {repo_path}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()
        raise CollectError(f"cannot export commit {commit} of {repo_path}: {detail}")
    return done.stdout


class _BlobReader:
    """One `git cat-file --batch` process that streams blobs by object id."""

    def __init__(self, repo_path: Path, commit: str) -> None:
        self._error = f"cannot export commit {commit} of {repo_path}"
        try:
            self._process = subprocess.Popen(
                ["git", "-C", str(repo_path), "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        except OSError as exc:
            raise CollectError(f"{self._error}: {exc}") from exc

    def __enter__(self) -> _BlobReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        self._process.stdout.close()
        self._process.wait()

    def read(self, oid: str) -> bytes:
        """Return the bytes of blob `oid`, for small blobs such as link targets."""
        stdout, size = self._request(oid)
        data = stdout.read(size)
        self._finish(oid, size - len(data))
        return data

    def copy(self, oid: str, target: Path) -> None:
        """Write blob `oid` to `target` in chunks, so a large catalog never sits in memory."""
        stdout, left = self._request(oid)
        with target.open("wb") as out:
            while left > 0:
                chunk = stdout.read(min(left, COPY_CHUNK))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
        self._finish(oid, left)

    def _request(self, oid: str) -> tuple[IO[bytes], int]:
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(oid.encode("ascii") + b"\n")
        stdin.flush()
        header = stdout.readline().decode("ascii", "replace").split()
        if len(header) != 3 or header[0] != oid or header[1] != "blob":
            raise CollectError(f"{self._error}: object {oid}: expected a blob, found {header}")
        return stdout, int(header[2])

    def _finish(self, oid: str, left: int) -> None:
        assert self._process.stdout is not None
        if left != 0 or self._process.stdout.read(1) != b"\n":
            raise CollectError(f"{self._error}: object {oid} is truncated, {left} bytes missing")


def _tree_entries(listing: bytes) -> list[tuple[str, str, str, str]]:
    """Split `git ls-tree -r -z` output into (mode, type, object id, path) tuples."""
    entries = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        header, path = record.split(b"\t", 1)
        mode, kind, oid = header.decode("ascii").split(" ")
        entries.append((mode, kind, oid, os.fsdecode(path)))
    return entries


def _safe_relative(repo_path: Path, commit: str, path: str) -> str:
    """Return `path` when it is a relative path without `.` or `..` parts."""
    parts = path.split("/")
    if path.startswith("/") or any(part in ("", ".", "..", ".git") for part in parts):
        raise CollectError(
            f"{repo_path} at {commit[:12]}: {path!r}: expected a relative path without"
            " empty, '.', '..' or '.git' parts; content must be regular files"
        )
    return path


def _make_folder(dest: Path, folder: Path) -> None:
    """Create `folder` and its missing parents below `dest` with FOLDER_MODE."""
    missing = []
    while folder != dest and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir()
        created.chmod(FOLDER_MODE)


def _write_link(repo_path: Path, commit: str, dest: Path, path: str, link: str) -> None:
    """Create the link `path` to `link`, which must stay inside `dest`."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
    if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
        raise CollectError(
            f"{repo_path} at {commit[:12]}: {path} links to {link!r}, outside the"
            " commit's tree; content must be regular files"
        )
    (dest / path).symlink_to(link)
