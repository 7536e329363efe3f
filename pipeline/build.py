"""The build stage: stage the payload, write the notes and the manifest, pack the archive.

The bundle `<product>-<version>.7z` holds, grouped by kind::

    manifest.json
    notes/kk.md, notes/ru.md
    catalogs/<id>/...      migrations/<file>.sql
    fixes/<id>/...         reports/<code>/...
    forms/<code>/...       treasury/<id>/...

A release with a base tag ships the items changed since that tag; the first
release ships every item. Every migration ships, so a database at any older
schema version can be brought up to date. The archive's timestamps are the
release commit's time, or `SOURCE_DATE_EPOCH` when set, so one commit always
gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import __version__, archive, catalogs, migrations
from pipeline.collect import Change, ChangeSet
from pipeline.config import Config
from pipeline.content import DEFINITION_FILES, KIND_FOLDERS, Kind, list_items
from pipeline.errors import BundleError
from pipeline.fsutil import atomic_write_bytes
from pipeline.manifest import MANIFEST_FORMAT, MANIFEST_NAME, file_entry, manifest_bytes
from pipeline.notes import LANGUAGES, NoteEntry, NotesInput, render_notes, render_notes_html
from pipeline.schema import load_json
from pipeline.versions import Version

logger = logging.getLogger(__name__)

# Folder of each kind inside the archive.
ARCHIVE_FOLDERS: dict[Kind, str] = {
    Kind.CATALOG: "catalogs",
    Kind.MIGRATION: "migrations",
    Kind.FIX: "fixes",
    Kind.REPORT: "reports",
    Kind.FORM: "forms",
    Kind.TREASURY: "treasury",
}


@dataclass(frozen=True)
class BuildResult:
    """The files one build wrote and the manifest it wrote into the bundle."""

    bundle: Path
    manifest_path: Path
    manifest: dict[str, Any]


def bundle_name(product: str, version: Version) -> str:
    return f"{product}-{version}.7z"


def build_bundle(
    config: Config,
    content: Path,
    changes: ChangeSet,
    version: Version,
    out: Path,
    dry_run: Sequence[dict[str, Any]] = (),
) -> BuildResult:
    """Build the bundle of `changes` from the content tree `content` into the folder `out`.

    `content` is the release commit's tree (see pipeline.snapshot). `dry_run`
    lists the sample databases the dry-run passed on, as
    `{"database", "engine", "result"}` entries.

    Raises:
        BundleError: the version is not newer than the base release, or the
            content cannot be staged.
    """
    _check_version(version, changes.base_tag)
    staging = out / ".staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        shipped = _stage_items(content, changes, staging)
        catalog_entries, notes_rows = _catalog_entries(content, changes, shipped[Kind.CATALOG])
        migration_entries = _migration_entries(content)
        notes = _notes_input(content, changes, version, shipped, notes_rows, migration_entries)
        for language in LANGUAGES:
            atomic_write_bytes(
                staging / "notes" / f"{language}.md", render_notes(notes, language).encode()
            )
            atomic_write_bytes(
                staging / "notes" / f"{language}.html",
                render_notes_html(notes, language).encode(),
            )
        compression = archive.Compression()
        manifest = {
            "format": MANIFEST_FORMAT,
            "product": config.product,
            "version": str(version),
            "source": {
                "commit": changes.commit,
                "commit_time": _iso(changes.commit_time),
                "base_tag": changes.base_tag,
                "base_commit": changes.base_commit,
            },
            "schema": {"from": notes.schema_before, "to": notes.schema_after},
            "changes": {
                kind.value: [_change_json(c) for c in items]
                for kind, items in changes.by_kind().items()
                if items
            },
            "catalogs": catalog_entries,
            "migrations": migration_entries,
            "dry_run": sorted(dry_run, key=lambda d: (str(d["engine"]), str(d["database"]))),
            "build": {
                "tool": f"parus-kaz-release {__version__}",
                "compression": archive.describe(compression),
            },
            "files": [
                file_entry(staging, path)
                for path in sorted(staging.rglob("*"), key=lambda p: p.relative_to(staging).as_posix().encode())
                if path.is_file()
            ],
        }
        data = manifest_bytes(manifest)
        atomic_write_bytes(staging / MANIFEST_NAME, data)
        bundle = out / bundle_name(config.product, version)
        archive.write_archive(staging, bundle, _archive_mtime(changes.commit_time), compression)
        manifest_path = out / MANIFEST_NAME
        atomic_write_bytes(manifest_path, data)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built %s", bundle.name)
    return BuildResult(bundle=bundle, manifest_path=manifest_path, manifest=manifest)


def _check_version(version: Version, base_tag: str | None) -> None:
    if base_tag is None:
        return
    base = Version.from_tag(base_tag)
    if base is not None and version <= base:
        raise BundleError(
            f"version {version} is not newer than the base release {base_tag};"
            f" choose a version greater than {base}"
        )


def _archive_mtime(commit_time: int) -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return commit_time
    try:
        return int(epoch)
    except ValueError as exc:
        raise BundleError(f"SOURCE_DATE_EPOCH: expected unix seconds, found {epoch!r}") from exc


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _change_json(change: Change) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "item": change.item,
        "path": change.path,
        "change": change.change,
        "commits": list(change.commits),
    }
    if change.old_path:
        entry["old_path"] = change.old_path
    return entry


def _shipped_items(content: Path, changes: ChangeSet, kind: Kind) -> list[str]:
    present = set(list_items(content, kind))
    if changes.base_tag is None:
        return sorted(present)
    return sorted(set(changes.items(kind)) & present)


def _stage_items(content: Path, changes: ChangeSet, staging: Path) -> dict[Kind, list[str]]:
    shipped: dict[Kind, list[str]] = {}
    for kind in DEFINITION_FILES:
        shipped[kind] = _shipped_items(content, changes, kind)
        for item in shipped[kind]:
            source = content / KIND_FOLDERS[kind] / item
            shutil.copytree(source, staging / ARCHIVE_FOLDERS[kind] / item, symlinks=True)
    migration_folder = content / KIND_FOLDERS[Kind.MIGRATION]
    shipped[Kind.MIGRATION] = []
    if migration_folder.is_dir():
        for path in sorted(migration_folder.glob("*.sql")):
            target = staging / ARCHIVE_FOLDERS[Kind.MIGRATION] / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            shipped[Kind.MIGRATION].append(path.name)
    for path in staging.rglob("*"):
        if path.is_symlink():
            raise BundleError(
                f"{path.relative_to(staging)}: links cannot ship in a bundle; commit the file itself"
            )
    return shipped


def _catalog_entries(
    content: Path, changes: ChangeSet, shipped: list[str]
) -> tuple[list[dict[str, Any]], dict[str, tuple[int, dict[str, int] | None]]]:
    entries = []
    notes_rows: dict[str, tuple[int, dict[str, int] | None]] = {}
    for catalog_id in shipped:
        rows, digest = catalogs.catalog_digest(content, catalog_id)
        entries.append(
            {"id": catalog_id, "rows": rows, "sha256": digest, "path": f"catalogs/{catalog_id}/rows.csv"}
        )
        notes_rows[catalog_id] = (rows, _catalog_delta_counts(content, changes, catalog_id))
    return entries, notes_rows


def _catalog_delta_counts(content: Path, changes: ChangeSet, catalog_id: str) -> dict[str, int] | None:
    """Count rows added, changed and removed since the base release, or None without one."""
    if changes.base_commit is None:
        return None
    path = f"{KIND_FOLDERS[Kind.CATALOG]}/{catalog_id}/rows.csv"
    shown = subprocess.run(
        ["git", "show", f"{changes.base_commit}:{path}"],
        cwd=changes.repo,
        capture_output=True,
        check=False,
    )
    if shown.returncode != 0:
        return None
    old_rows = csv.DictReader(io.StringIO(shown.stdout.decode("utf-8-sig")))
    key = catalogs.load_description(content, catalog_id).key
    delta = catalogs.diff_rows(old_rows, catalogs.read_rows(content, catalog_id), key)
    return {"added": len(delta.added), "changed": len(delta.changed), "removed": len(delta.removed)}


def _migration_entries(content: Path) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for dialect in ("sqlite", "postgresql"):
        for migration in migrations.load_migrations(content, dialect):
            seen[migration.path] = {
                "version": migration.version,
                "path": f"migrations/{Path(migration.path).name}",
                "dialect": migration.dialect,
                "checksum": migration.checksum,
            }
    return sorted(seen.values(), key=lambda m: (m["version"], m["path"]))


def _notes_input(
    content: Path,
    changes: ChangeSet,
    version: Version,
    shipped: dict[Kind, list[str]],
    catalog_rows: dict[str, tuple[int, dict[str, int] | None]],
    migration_entries: list[dict[str, Any]],
) -> NotesInput:
    base_schema = None
    if changes.base_commit is not None:
        base_versions = [
            c.item[:4] for c in changes.by_kind().get(Kind.MIGRATION, []) if c.change == "added"
        ]
        all_versions = sorted({m["version"] for m in migration_entries})
        older = [v for v in all_versions if v not in base_versions]
        base_schema = older[-1] if older else None
    after = migration_entries[-1]["version"] if migration_entries else None
    notes = NotesInput(
        version=str(version),
        commit=changes.commit,
        base_tag=changes.base_tag,
        schema_before=base_schema,
        schema_after=after,
    )
    for kind in (Kind.FIX, Kind.CATALOG, Kind.REPORT, Kind.FORM, Kind.TREASURY):
        notes.entries[kind.value] = _note_entries(content, changes, kind, shipped[kind], catalog_rows)
    notes.entries[Kind.MIGRATION.value] = [
        NoteEntry(item=c.item, change=c.change)
        for c in changes.by_kind().get(Kind.MIGRATION, [])
    ] if changes.base_tag else [NoteEntry(item=name, change="added") for name in shipped[Kind.MIGRATION]]
    return notes


def _note_entries(
    content: Path,
    changes: ChangeSet,
    kind: Kind,
    shipped: Sequence[str],
    catalog_rows: dict[str, tuple[int, dict[str, int] | None]],
) -> list[NoteEntry]:
    changed: dict[str, list[Change]] = {}
    for c in changes.by_kind().get(kind, []):
        changed.setdefault(c.item, []).append(c)
    entries = []
    for item in sorted(set(shipped) | set(changed)):
        path = content / KIND_FOLDERS[kind] / item / DEFINITION_FILES[kind]
        definition, _ = load_json(path, str(path)) if path.is_file() else (None, [])
        change = _item_change(changed.get(item, []), DEFINITION_FILES[kind], path.is_file())
        rows, delta = catalog_rows.get(item, (None, None))
        entries.append(
            NoteEntry(item=item, change=change, definition=definition, rows=rows, delta=delta)
        )
    return entries


def _item_change(file_changes: list[Change], definition_name: str, present: bool) -> str:
    """Sum up the changes of an item's files as one change of the item.

    An item is added or renamed when its definition file was, deleted when its
    definition is gone, and modified otherwise.
    """
    if not present:
        return "deleted"
    for change in file_changes:
        if change.path.endswith("/" + definition_name) and change.change in ("added", "renamed"):
            return change.change
    return "modified" if file_changes else "added"
