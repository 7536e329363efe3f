"""The build stage: stage the payload, write the notes, provenance and manifest, pack the archive.

The bundle `<product>-<version>.7z` holds, grouped by kind::

    manifest.json          provenance.json
    notes/kk.md, notes/ru.md
    catalogs/<id>/catalog.json + rows.csv (full) or delta.json (delta)
    migrations/<file>.sql
    fixes/<id>/...         reports/<code>/...
    forms/<code>/...       treasury/<id>/...
    keys/trusted-keys.json + .minisig   (only in a bundle that rotates the key)

An incremental bundle, the default when a base release tag exists, ships the
items changed since that tag, and a changed catalog as a delta when the base
has it with the same columns (see pipeline.bundle_delta). A full bundle (the
first release, or `full=True`) ships every item whole. Every migration ships,
so a database at any older schema version can be brought up to date.

Two builds of one commit give the same bytes, whatever the output folder,
time zone, umask or file creation order. Entries are sorted and
pipeline.archive fixes their mode. Every entry's time is `SOURCE_DATE_EPOCH`
when set, or else the release commit's time. Nothing inside the archive
records the build's time, duration, host, user or any absolute path.
"""

from __future__ import annotations

import _lzma
import ctypes
import json
import logging
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import py7zr

from pipeline import __version__, archive, bundle_delta, catalogs, migrations
from pipeline.collect import Change, ChangeSet
from pipeline.config import Config
from pipeline.content import DEFINITION_FILES, KIND_FOLDERS, Kind, list_items
from pipeline.errors import BundleError
from pipeline.fsutil import atomic_write_bytes
from pipeline.manifest import MANIFEST_FORMAT, MANIFEST_NAME, file_entry, manifest_bytes
from pipeline.notes import LANGUAGES, NoteEntry, NotesInput, render_notes, render_notes_html
from pipeline.provenance import (
    PROVENANCE_NAME,
    REPOSITORY_SETTING,
    BuildInputs,
    provenance_bytes,
    provenance_statement,
    source_repository,
)
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
NEXT_TRUSTED_KEYS_PATH = "keys/trusted-keys.json"
NEXT_TRUSTED_KEYS_SIGNATURE_PATH = NEXT_TRUSTED_KEYS_PATH + ".minisig"
# Bound on the manifest read back from an encrypted archive to prove it is unreadable.
_MANIFEST_PROBE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SignedFile:
    """A file to ship with its minisign signature, both as bytes."""

    data: bytes
    signature: bytes


@dataclass(frozen=True)
class BuildResult:
    """The files one build wrote and the manifest it wrote into the bundle."""

    bundle: Path
    manifest_path: Path
    provenance_path: Path
    manifest: dict[str, Any]
    # Unpacked size of every entry divided by the archive's size, as verification computes it.
    ratio: float = 0.0


def bundle_name(product: str, version: Version) -> str:
    return f"{product}-{version}.7z"


def build_bundle(
    config: Config,
    content: Path,
    changes: ChangeSet,
    version: Version,
    out: Path,
    dry_run: Sequence[dict[str, Any]] = (),
    *,
    full: bool = False,
    password: str | None = None,
    next_trusted_keys: SignedFile | None = None,
) -> BuildResult:
    """Build the bundle of `changes` from the content tree `content` into the folder `out`.

    `content` is the release commit's tree (see pipeline.snapshot). `dry_run`
    lists the sample databases the dry-run passed on, as
    `{"database", "engine", "result"}` entries. `full` ships every item whole
    instead of the changes since the base release. `password` encrypts the
    archive with AES-256. `next_trusted_keys` is the signed trusted-keys file
    of a key rotation, shipped as `keys/trusted-keys.json`.

    Writes the bundle, and `manifest.json` and `provenance.json` beside it.

    Raises:
        BundleError: the version is not newer than the base release, the
            content cannot be staged, or the archive cannot be written or
            is readable without the password.
    """
    check_version(version, changes.base_tag)
    if password is not None and not password:
        raise BundleError(
            "the archive password is empty; pass a password, or none to skip encryption"
        )
    full = full or changes.base_tag is None
    source_time = source_date_epoch(changes.commit_time)
    staging = out / ".staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        shipped = _stage_items(content, changes, staging, full)
        catalog_entries, notes_rows = _stage_catalogs(
            content, changes, staging, shipped[Kind.CATALOG], full
        )
        migration_entries = _migration_entries(content)
        # A full bundle with a base release still lists only the changes in its notes.
        notes_shipped = shipped
        if full and changes.base_tag is not None:
            notes_shipped = _changed(content, changes)
        notes = _notes_input(
            content, changes, version, notes_shipped, notes_rows, migration_entries
        )
        for language in LANGUAGES:
            atomic_write_bytes(
                staging / "notes" / f"{language}.md", render_notes(notes, language).encode()
            )
            atomic_write_bytes(
                staging / "notes" / f"{language}.html",
                render_notes_html(notes, language).encode(),
            )
        if next_trusted_keys is not None:
            atomic_write_bytes(staging / NEXT_TRUSTED_KEYS_PATH, next_trusted_keys.data)
            atomic_write_bytes(
                staging / NEXT_TRUSTED_KEYS_SIGNATURE_PATH, next_trusted_keys.signature
            )
        compression = archive.Compression()
        compression_facts = archive.describe(compression)
        tools = tool_versions()
        build_facts = {
            "tool": f"parus-kaz-release {__version__}",
            "compression": compression_facts,
            "tools": tools,
            "source_date_epoch": source_time,
            "encrypted": password is not None,
        }
        inputs = BuildInputs(
            product=config.product,
            version=str(version),
            commit=changes.commit,
            base_tag=changes.base_tag,
            base_commit=changes.base_commit,
            repository=source_repository(changes.repo, config.extra.get(REPOSITORY_SETTING)),
            full=full,
            encrypted=password is not None,
            compression=compression_facts,
            source_date_epoch=source_time,
            tools=tools,
        )
        provenance_data = provenance_bytes(provenance_statement(inputs, _file_entries(staging)))
        atomic_write_bytes(staging / PROVENANCE_NAME, provenance_data)
        files = _file_entries(staging)
        manifest = {
            "format": MANIFEST_FORMAT,
            "product": config.product,
            "version": str(version),
            "min_from_version": None if full else _base_version(changes.base_tag),
            "full": full,
            "source": {
                "commit": changes.commit,
                "commit_time": _iso(changes.commit_time),
                "base_tag": changes.base_tag,
                "base_commit": changes.base_commit,
            },
            # A full bundle migrates any older schema, an empty database included.
            "schema": {"from": None if full else notes.schema_before, "to": notes.schema_after},
            "changes": {
                kind.value: [_change_json(c) for c in items]
                for kind, items in changes.by_kind().items()
                if items
            },
            "catalogs": catalog_entries,
            "migrations": migration_entries,
            "dry_run": sorted(dry_run, key=lambda d: (str(d["engine"]), str(d["database"]))),
            "build": build_facts,
            "provenance": PROVENANCE_NAME,
            "next_trusted_keys": (
                {"path": NEXT_TRUSTED_KEYS_PATH, "signature": NEXT_TRUSTED_KEYS_SIGNATURE_PATH}
                if next_trusted_keys is not None
                else None
            ),
            "folders": _folder_entries(staging),
            "files": files,
        }
        data = manifest_bytes(manifest)
        atomic_write_bytes(staging / MANIFEST_NAME, data)
        bundle = out / bundle_name(config.product, version)
        _write_archive(staging, bundle, source_time, compression, password)
        manifest_path = out / MANIFEST_NAME
        atomic_write_bytes(manifest_path, data)
        provenance_path = out / PROVENANCE_NAME
        atomic_write_bytes(provenance_path, provenance_data)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built %s (%s)", bundle.name, "full" if full else "incremental")
    unpacked = sum(entry["size"] for entry in files) + len(data)
    return BuildResult(
        bundle=bundle,
        manifest_path=manifest_path,
        provenance_path=provenance_path,
        manifest=manifest,
        ratio=unpacked / max(bundle.stat().st_size, 1),
    )


def ratio_notice(ratio: float, max_ratio: float, bundle: Path) -> str | None:
    """Return a notice when `bundle` unpacks above `max_ratio` times its size, else None.

    Verification rejects such a bundle (check 4) unless its limit is raised,
    so the notice names the limit that accepts it.
    """
    if ratio <= max_ratio:
        return None
    needed = math.ceil(ratio)
    return (
        f"{bundle} unpacks {ratio:.0f} times its size, above the limit {max_ratio:g} of"
        f" verify and apply; they accept it with --max-ratio {needed}, or max_ratio = {needed}"
        " in [tool.pipeline]"
    )


def tool_versions() -> dict[str, str]:
    """Return the versions of this tool, Python, liblzma and py7zr, which the build records.

    The archive's compressed bytes depend on the liblzma that compressed them, so
    a rebuild that should give the same bundle needs the same liblzma version.
    """
    return {
        "parus-kaz-release": __version__,
        "python": platform.python_version(),
        "liblzma": liblzma_version(),
        "py7zr": py7zr.__version__,
    }


def liblzma_version() -> str:
    """Return the version of the liblzma that Python's lzma module runs, or "unknown"."""
    try:
        # The extension module's handle also finds the symbols of the liblzma it
        # links, whether that library is shared or linked in.
        function = ctypes.CDLL(_lzma.__file__).lzma_version_string
    except (OSError, AttributeError):
        return "unknown"
    function.restype = ctypes.c_char_p
    version: bytes = function()
    return version.decode("ascii", "replace")


# The last second that Python's datetime can represent (9999-12-31T23:59:59Z). The signature of a
# rotation's trusted-keys file prints the source time as a date-time. A 7z entry time
# (100 ns since 1601 in 64 bits) reaches further, to the year 60056.
MAX_SOURCE_DATE_EPOCH = 253_402_300_799


def source_date_epoch(commit_time: int) -> int:
    """Return the time stamped on archive entries: `SOURCE_DATE_EPOCH` when set, else the commit's.

    Raises:
        BundleError: `SOURCE_DATE_EPOCH` is not an integer from 0 to MAX_SOURCE_DATE_EPOCH.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return commit_time
    # int() would also take spaces, signs, underscores and non-ASCII digits.
    value = int(epoch) if epoch.isascii() and epoch.isdigit() else -1
    if value < 0:
        raise BundleError(
            f"SOURCE_DATE_EPOCH: expected unix seconds (an integer >= 0), found {epoch!r}"
        )
    if value > MAX_SOURCE_DATE_EPOCH:
        raise BundleError(
            f"SOURCE_DATE_EPOCH: expected unix seconds from 0 to {MAX_SOURCE_DATE_EPOCH}"
            f" (9999-12-31T23:59:59Z), found {epoch!r}"
        )
    return value


def check_version(version: Version, base_tag: str | None) -> None:
    """Raise BundleError unless `version` is newer than the base release's."""
    if base_tag is None:
        return
    base = Version.from_tag(base_tag)
    if base is not None and version <= base:
        raise BundleError(
            f"version {version} is not newer than the base release {base_tag};"
            f" choose a version greater than {base}"
        )


def _base_version(base_tag: str | None) -> str | None:
    base = Version.from_tag(base_tag) if base_tag else None
    return str(base) if base is not None else None


def _write_archive(
    staging: Path, bundle: Path, mtime: int, compression: archive.Compression, password: str | None
) -> None:
    archive.write_archive(staging, bundle, mtime, compression, password=password)
    if password is not None:
        _check_unreadable_without_password(bundle)


def _check_unreadable_without_password(bundle: Path) -> None:
    """Raise BundleError when the manifest of an archive meant to be encrypted reads without one.

    py7zr writes an unencrypted archive when given a password with a filter
    list that lacks AES, so the build proves the encryption itself.
    """
    try:
        archive.read_file(bundle, MANIFEST_NAME, _MANIFEST_PROBE_BYTES)
    except BundleError as exc:
        logger.debug("%s is unreadable without the password: %s", bundle, exc)
        return
    bundle.unlink()
    raise BundleError(
        f"{bundle}: the archive was written with a password but reads without one;"
        " the archiver dropped the encryption, so the bundle was removed"
    )


def _file_entries(staging: Path) -> list[dict[str, Any]]:
    paths = [path for path in staging.rglob("*") if path.is_file()]
    paths.sort(key=lambda p: p.relative_to(staging).as_posix().encode())
    return [file_entry(staging, path) for path in paths]


def _folder_entries(staging: Path) -> list[str]:
    names = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_dir()]
    return sorted(names, key=str.encode)


def _shipped_items(content: Path, changes: ChangeSet, kind: Kind, full: bool) -> list[str]:
    present = set(list_items(content, kind))
    if full:
        return sorted(present)
    return sorted(set(changes.items(kind)) & present)


def _changed(content: Path, changes: ChangeSet) -> dict[Kind, list[str]]:
    """Return the items of each kind changed since the base release and still present."""
    shipped = {kind: _shipped_items(content, changes, kind, False) for kind in DEFINITION_FILES}
    folder = content / KIND_FOLDERS[Kind.MIGRATION]
    shipped[Kind.MIGRATION] = sorted(p.name for p in folder.glob("*.sql"))
    return shipped


def _stage_items(
    content: Path, changes: ChangeSet, staging: Path, full: bool
) -> dict[Kind, list[str]]:
    shipped: dict[Kind, list[str]] = {}
    for kind in DEFINITION_FILES:
        shipped[kind] = _shipped_items(content, changes, kind, full)
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
                f"{path.relative_to(staging)}: links cannot ship in a bundle;"
                " commit the file itself"
            )
    return shipped


NotesRows = dict[str, tuple[int, dict[str, int] | None]]


def _stage_catalogs(
    content: Path, changes: ChangeSet, staging: Path, shipped: list[str], full: bool
) -> tuple[list[dict[str, Any]], NotesRows]:
    """Replace each changed catalog's rows with a delta where one can ship; describe each catalog.

    Returns the manifest's `catalogs` entries and, per catalog, the row count
    and the counts of rows added, changed and removed that the notes show.
    """
    entries = []
    notes_rows: NotesRows = {}
    for catalog_id in shipped:
        folder = staging / ARCHIVE_FOLDERS[Kind.CATALOG] / catalog_id
        key = catalogs.load_description(content, catalog_id).key
        comparison = bundle_delta.compare_catalog(
            content, catalog_id, key, changes.repo, changes.base_commit, keep_changes=not full
        )
        counts = comparison.counts
        entry: dict[str, Any] = {
            "id": catalog_id,
            "mode": "full",
            "path": f"catalogs/{catalog_id}/{bundle_delta.ROWS_NAME}",
            "rows": comparison.current.rows,
            "sha256": comparison.current.sha256,
            "base_sha256": None,
            "counts": counts,
        }
        if comparison.delta is not None and not full:
            document = bundle_delta.delta_document(comparison)
            (folder / bundle_delta.ROWS_NAME).unlink()
            delta_path = folder / bundle_delta.DELTA_NAME
            atomic_write_bytes(delta_path, bundle_delta.delta_bytes(document))
            entry["mode"] = "delta"
            entry["path"] = f"catalogs/{catalog_id}/{bundle_delta.DELTA_NAME}"
            entry["base_sha256"] = document["base"]["sha256"]
        logger.debug("catalog %s ships as %s", catalog_id, entry["mode"])
        entries.append(entry)
        notes_rows[catalog_id] = (comparison.current.rows, counts)
    return entries, notes_rows


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
        notes.entries[kind.value] = _note_entries(
            content, changes, kind, shipped[kind], catalog_rows
        )
    if changes.base_tag:
        migration_notes = [
            NoteEntry(item=c.item, change=c.change)
            for c in changes.by_kind().get(Kind.MIGRATION, [])
        ]
    else:
        migration_notes = [
            NoteEntry(item=name, change="added") for name in shipped[Kind.MIGRATION]
        ]
    notes.entries[Kind.MIGRATION.value] = migration_notes
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
        if change == "deleted":
            definition = _base_definition(changes, kind, item)
        rows, delta = catalog_rows.get(item, (None, None))
        entries.append(
            NoteEntry(item=item, change=change, definition=definition, rows=rows, delta=delta)
        )
    return entries


def _base_definition(changes: ChangeSet, kind: Kind, item: str) -> dict[str, Any] | None:
    """Return an item's definition as the base release committed it, for the notes of a deletion.

    None means there is no base release, the item has no definition there, or
    the definition is not a JSON object. The notes then name the item by its id alone.
    """
    if changes.base_commit is None:
        return None
    path = f"{KIND_FOLDERS[kind]}/{item}/{DEFINITION_FILES[kind]}"
    shown = subprocess.run(
        ["git", "show", f"{changes.base_commit}:{path}"],
        cwd=changes.repo,
        capture_output=True,
        check=False,
    )
    if shown.returncode != 0:
        logger.debug("%s is not in the base commit %s", path, changes.base_commit[:12])
        return None
    try:
        definition = json.loads(shown.stdout.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        definition = None
    if not isinstance(definition, dict):
        logger.debug("%s in the base commit is not a JSON object", path)
        return None
    return definition


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
