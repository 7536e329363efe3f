"""The bundle manifest: what a bundle contains and where it came from.

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
      "min_from_version": "2026.11.0" | null,
      "full": false,
      "source": {"commit": "<sha1>", "commit_time": "2026-12-01T09:00:00Z",
                 "base_tag": "release/2026.11.0" | null, "base_commit": "<sha1>" | null},
      "schema": {"from": "0001" | null, "to": "0003" | null},
      "changes": {"catalog": [{"item", "path", "change", "old_path", "commits"}], ...},
      "catalogs": [{"id", "mode", "path", "rows", "sha256", "base_sha256", "counts"}],
      "migrations": [{"version", "path", "dialect", "checksum"}],
      "dry_run": [{"database", "engine", "result"}],
      "build": {"tool", "compression", "tools", "source_date_epoch", "encrypted"},
      "provenance": "provenance.json",
      "next_trusted_keys": {"path": "keys/trusted-keys.json",
                            "signature": "keys/trusted-keys.json.minisig"} | null,
      "folders": ["catalogs", "catalogs/kato", ...],
      "files": [{"path", "size", "sha256"}]
    }

Fields:

- `min_from_version`: the oldest installed version the bundle applies to.
  An incremental bundle carries catalog deltas and only the items changed
  since its base release, so it needs the base release installed; a full
  bundle (`full` true, or a first release) applies to any version and has null.
- `schema.from` is the schema version a delta bundle expects (the last
  migration of the base release, null without one). A full bundle has null,
  because it applies to any older database, an empty one included.
  `schema.to` is the version it leaves. Every migration ships, so an older
  schema is migrated forward.
- `catalogs[]`: `mode` "delta" ships `catalogs/<id>/delta.json` (see
  pipeline.bundle_delta); "full" ships `catalogs/<id>/rows.csv`. `path` is
  that file. `rows` is the row count after applying. `sha256` is the
  rows hash (pipeline.bundle_delta.rows_hash) of the full catalog after
  applying, `base_sha256` the rows hash a delta expects before applying
  (null for "full"). `counts` has `added`, `changed`, `removed` since the base
  release, or is null when there is no base catalog to compare with.
- `build.tools` maps each tool whose version shapes the bytes to that
  version; `build.source_date_epoch` is the unix time stamped on every
  archive entry; `build.encrypted` is true for an AES-256 encrypted archive.
- `provenance` is the path of the in-toto provenance statement (see
  pipeline.provenance).
- `next_trusted_keys`: present in a bundle that rotates the release key; the
  trusted-keys file customers move to and its minisign signature by the key
  that signs this bundle (see pipeline.rotation).
- `folders` lists every folder of the archive, so verification can find a
  missing or extra folder, empty ones included; `files` lists every file
  but `manifest.json`, empty files included.
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
    return {
        "path": path.relative_to(root).as_posix(),
        "size": path.stat().st_size,
        "sha256": digest,
    }
