"""Layout of a content repository: which path belongs to which kind of content.

| kind      | folder              | one item                                   |
|-----------|---------------------|--------------------------------------------|
| catalog   | `catalogs/`         | `catalogs/<id>/catalog.json` + `rows.csv`  |
| migration | `migrations/`       | `migrations/NNNN_slug[.dialect].sql`       |
| fix       | `packages/fixes/`   | `packages/fixes/<id>/fix.json` + `payload/`|
| report    | `packages/reports/` | `packages/reports/<code>/report.json`      |
| form      | `packages/forms/`   | `packages/forms/<code>/form.json`          |
| treasury  | `packages/treasury/`| `packages/treasury/<id>/format.json`       |

Every other file of an item's folder (payload, samples, query files) belongs
to that item. Paths are POSIX strings relative to the repository root.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


class Kind(enum.StrEnum):
    CATALOG = "catalog"
    MIGRATION = "migration"
    FIX = "fix"
    REPORT = "report"
    FORM = "form"
    TREASURY = "treasury"


KIND_FOLDERS: dict[Kind, str] = {
    Kind.CATALOG: "catalogs",
    Kind.MIGRATION: "migrations",
    Kind.FIX: "packages/fixes",
    Kind.REPORT: "packages/reports",
    Kind.FORM: "packages/forms",
    Kind.TREASURY: "packages/treasury",
}

DEFINITION_FILES: dict[Kind, str] = {
    Kind.CATALOG: "catalog.json",
    Kind.FIX: "fix.json",
    Kind.REPORT: "report.json",
    Kind.FORM: "form.json",
    Kind.TREASURY: "format.json",
}

# Kind by folder, looked up with a path's first one or two parts, because collect
# classifies every changed path. No kind's folder is inside another's.
_KIND_BY_FOLDER = {folder: kind for kind, folder in KIND_FOLDERS.items()}


@dataclass(frozen=True)
class ContentPath:
    """A repository path classified as content: its kind and the item it belongs to."""

    kind: Kind
    item: str
    path: str


def classify(path: str) -> ContentPath | None:
    """Return the kind and item of a repository path, or None when it is not content.

    A migration's item is its file name. Files directly inside a kind's folder
    of a folder-per-item kind (a README, say) are not content.
    """
    parts = _parts(path)
    if not parts:
        return None
    depth = 1
    kind = _KIND_BY_FOLDER.get(parts[0])
    if kind is None and len(parts) > 1:
        depth = 2
        kind = _KIND_BY_FOLDER.get(f"{parts[0]}/{parts[1]}")
    if kind is None:
        return None
    rest = parts[depth:]
    if kind is Kind.MIGRATION:
        if len(rest) == 1 and rest[0].endswith(".sql"):
            return ContentPath(kind, rest[0], path)
        return None
    if len(rest) >= 2:
        return ContentPath(kind, rest[0], path)
    return None


def _parts(path: str) -> tuple[str, ...]:
    """Split `path` like PurePosixPath(path).parts, without building a path object.

    Git prints normalized paths, which split on "/" directly. Only a path with
    an empty or "." part goes through PurePosixPath.
    """
    parts = path.split("/")
    if "" in parts or "." in parts:
        return PurePosixPath(path).parts
    return tuple(parts)


def item_folder(root: Path, kind: Kind, item: str) -> Path:
    """Return the folder of a folder-per-item kind's item."""
    return root / KIND_FOLDERS[kind] / item


def definition_path(root: Path, kind: Kind, item: str) -> Path:
    """Return the path of an item's definition file."""
    return item_folder(root, kind, item) / DEFINITION_FILES[kind]


def list_items(root: Path, kind: Kind) -> list[str]:
    """List the items of a folder-per-item kind in the work tree, sorted by id.

    A folder counts as an item when it contains the kind's definition file.
    """
    folder = root / KIND_FOLDERS[kind]
    if not folder.is_dir():
        return []
    name = DEFINITION_FILES[kind]
    # A dry-run lists these folders about ten times. With os.scandir and string
    # paths a listing takes about a quarter less time than with Path objects.
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if _is_file(os.path.join(entry.path, name)))


def _is_file(path: str) -> bool:
    """Tell whether `path` is a regular file, following symlinks, as `Path.is_file` does.

    A missing path, a path under a file and a symlink loop are no file.
    Any other error of `os.stat`, such as a denied permission, is raised.
    """
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return False
        raise
    except ValueError:
        return False


def require_content_root(root: Path) -> None:
    """Raise ConfigError unless `root` is a folder holding at least one kind's folder.

    A mistyped `--repo` would otherwise validate an empty tree and pass.
    """
    from pipeline.errors import ConfigError

    if not root.is_dir():
        raise ConfigError(f"content repository {root} does not exist or is not a folder")
    if not any((root / folder).is_dir() for folder in KIND_FOLDERS.values()):
        expected = ", ".join(
            sorted({folder.split("/")[0] + "/" for folder in KIND_FOLDERS.values()})
        )
        raise ConfigError(
            f"{root} is not a content repository: expected at least one of {expected};"
            " pass --repo PATH of a repository with the content layout"
        )
