"""A snapshot of the release commit's tree, so every stage reads what ships.

The release validates, dry-runs and bundles the committed content, never the
work tree: uncommitted edits can neither slip into a bundle nor hide a
validation error.
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
from pathlib import Path

import git

from pipeline.errors import CollectError

logger = logging.getLogger(__name__)


def export_commit(repo_path: Path, commit: str, dest: Path) -> Path:
    """Write the tree of `commit` into the empty or missing folder `dest` and return it.

    Raises:
        CollectError: the repository or the commit cannot be read.
    """
    dest.mkdir(parents=True, exist_ok=True)
    # A temporary file, not memory: a content tree can hold catalogs of hundreds of MB.
    with tempfile.TemporaryFile() as buffer:
        try:
            git.Repo(repo_path).archive(buffer, treeish=commit, format="tar")
        except (git.GitError, ValueError) as exc:
            raise CollectError(f"cannot export commit {commit} of {repo_path}: {exc}") from exc
        buffer.seek(0)
        with tarfile.open(fileobj=buffer, mode="r:") as archive:
            # The "data" filter rejects absolute paths, `..` and links that leave `dest`.
            try:
                archive.extractall(dest, filter="data")
            except tarfile.FilterError as exc:
                raise CollectError(
                    f"{repo_path} at {commit[:12]}: {exc}; content must be regular files"
                ) from exc
    logger.debug("exported %s of %s to %s", commit[:12], repo_path, dest)
    return dest
