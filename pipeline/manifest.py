"""The bundle manifest: what a bundle holds and where it came from.

The manifest is `manifest.json` at the root of the archive and beside it in
the output folder, signed separately. It lists every other file of the archive
with its size and SHA-256, so verification can prove that nothing is missing,
extra or changed. It holds nothing that differs between two builds of one
commit: no durations, no build time, no host or user names, no absolute paths.

Layout (`format` 1)::

    {
      "format": 1,
      "product": "parus-kaz-budget",
      "version": "2026.12.0",
      "source": {"commit": "<sha1>", "commit_time": "2026-12-01T09:00:00Z",
                 "base_tag": "release/2026.11.0" | null, "base_commit": "<sha1>" | null},
      "schema": {"from": "0001" | null, "to": "0003" | null},
      "changes": {"catalog": [{"path", "change", "old_path", "commits"}], ...},
      "catalogs": [{"id", "rows", "sha256", "path"}],
      "migrations": [{"version", "path", "checksum"}],
      "dry_run": [{"database", "engine", "result"}],
      "build": {"tool", "compression"},
      "files": [{"path", "size", "sha256"}]
    }
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.errors import BundleError
from pipeline.schema import validate_document

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Serialize a manifest canonically: sorted keys, two-space indent, UTF-8, final LF."""
    text = json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True)
    return (text + "\n").encode("utf-8")


def parse_manifest(data: bytes, name: str = MANIFEST_NAME) -> dict[str, Any]:
    """Parse manifest bytes and check them against the manifest schema.

    Raises:
        BundleError: the bytes are not UTF-8 JSON or do not match the schema.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{name}: not a valid UTF-8 JSON manifest: {exc}") from exc
    findings = validate_document(document, "manifest", name)
    if findings:
        raise BundleError(f"{name}: invalid manifest: " + "; ".join(map(str, findings[:5])))
    if document["format"] != MANIFEST_FORMAT:
        raise BundleError(
            f"{name}: manifest format {document['format']} is not supported;"
            f" this tool reads format {MANIFEST_FORMAT}"
        )
    result: dict[str, Any] = document
    return result


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    """Return the manifest entry of a staged file: its archive path, size and SHA-256."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"path": path.relative_to(root).as_posix(), "size": path.stat().st_size, "sha256": digest}
