"""Catalog deltas in a bundle: the rows added, changed and removed since the base release.

A catalog changed since the base release ships as `catalogs/<id>/delta.json`
instead of its `rows.csv` when the base release has the catalog with the same
columns. The delta document (`format` 1)::

    {
      "format": 1,
      "catalog": "kato",
      "key": ["id"],
      "columns": ["id", "parent_id", "code", "name"],
      "base": {"rows": 16264, "sha256": "<rows hash of the base catalog>"},
      "result": {"rows": 16263, "sha256": "<rows hash of the catalog after the delta>"},
      "added": [{column: value, ...}, ...],
      "changed": [{column: new value, ...}, ...],
      "removed": [[key values in key order], ...]
    }

The rows hash is the SHA-256 of the rows as canonical CSV, independent of
the source file's quoting, line ends and row order: the header, then the
rows sorted by their key values, comma-separated, minimal quoting, LF line
ends, UTF-8. It is the form `catalogs.import_catalog` writes. `apply_delta`
checks the base hash before and the result hash after applying a delta, so
an installer can prove that it ends with the catalog the release shipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import catalogs
from pipeline.catalog_delta import CatalogDelta, Row, diff_rows
from pipeline.errors import BundleError, CatalogError

logger = logging.getLogger(__name__)

DELTA_NAME = "delta.json"
DELTA_FORMAT = 1
ROWS_NAME = "rows.csv"


@dataclass(frozen=True)
class CatalogRows:
    """The column names and rows of one version of a catalog."""

    columns: tuple[str, ...]
    rows: list[Row]


def rows_hash(columns: Sequence[str], rows: Iterable[Row], key: Sequence[str]) -> str:
    """Return the SHA-256 (hex) of the canonical text of `rows`, as the module docstring defines.

    Raises:
        CatalogError: a row lacks a column.
    """
    missing = [name for name in key if name not in columns]
    if missing:
        raise CatalogError(
            f"rows hash: key column {missing[0]!r} is not among the columns {', '.join(columns)}"
        )
    positions = [list(columns).index(name) for name in key]
    try:
        ordered = sorted(
            ([row[name] for name in columns] for row in rows),
            key=lambda values: [values[i] for i in positions],
        )
    except KeyError as exc:
        raise CatalogError(
            f"rows hash: expected column {exc.args[0]!r} in every row, found a row without it"
        ) from None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(ordered)
    return hashlib.sha256(buffer.getvalue().encode("utf-8")).hexdigest()


def read_current_rows(content: Path, catalog_id: str) -> CatalogRows:
    """Read the columns and rows of a catalog in the content tree.

    Raises:
        CatalogError: as `catalogs.read_rows`.
    """
    rows = list(catalogs.read_rows(content, catalog_id))
    path = content / "catalogs" / catalog_id / ROWS_NAME
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    return CatalogRows(columns=tuple(header), rows=rows)


def read_base_rows(repo: Path, base_commit: str, catalog_id: str) -> CatalogRows | None:
    """Read a catalog's columns and rows as the base commit has them, or None when it has none.

    Raises:
        CatalogError: the base rows are not UTF-8 CSV with one field per column.
    """
    path = f"catalogs/{catalog_id}/{ROWS_NAME}"
    shown = subprocess.run(
        ["git", "show", f"{base_commit}:{path}"], cwd=repo, capture_output=True, check=False
    )
    if shown.returncode != 0:
        logger.debug("%s is not in the base commit %s", path, base_commit[:12])
        return None
    try:
        text = shown.stdout.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path} at {base_commit[:12]}: not UTF-8: {exc}") from None
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return CatalogRows(columns=(), rows=[])
    header = tuple(records[0])
    rows = []
    for line, record in enumerate(records[1:], start=2):
        if len(record) != len(header):
            raise CatalogError(
                f"{path}:{line} at {base_commit[:12]}: expected {len(header)} fields,"
                f" found {len(record)}"
            )
        rows.append(dict(zip(header, record, strict=True)))
    return CatalogRows(columns=header, rows=rows)


def diff_catalog(
    catalog_id: str, key: Sequence[str], base: CatalogRows | None, current: CatalogRows
) -> CatalogDelta | None:
    """Return the row delta from `base` to `current`, or None when only a full catalog can ship.

    A full catalog ships when the base has no such catalog, its columns
    differ, or its rows do not have unique values of the current key.
    """
    if base is None:
        return None
    if base.columns != current.columns:
        logger.debug(
            "catalog %s ships in full: its columns changed since the base release", catalog_id
        )
        return None
    try:
        return diff_rows(base.rows, current.rows, key, catalog_id=catalog_id)
    except CatalogError as exc:
        logger.debug("catalog %s ships in full: %s", catalog_id, exc)
        return None


def delta_document(delta: CatalogDelta, base: CatalogRows, current: CatalogRows) -> dict[str, Any]:
    """Return the `delta.json` document of a catalog delta."""
    columns = current.columns
    key = delta.key
    return {
        "format": DELTA_FORMAT,
        "catalog": delta.catalog_id,
        "key": list(key),
        "columns": list(columns),
        "base": {"rows": len(base.rows), "sha256": rows_hash(columns, base.rows, key)},
        "result": {"rows": len(current.rows), "sha256": rows_hash(columns, current.rows, key)},
        "added": [_row(change.new, columns) for change in delta.added],
        "changed": [_row(change.new, columns) for change in delta.changed],
        "removed": [list(change.key) for change in delta.removed],
    }


def _row(row: Row | None, columns: Sequence[str]) -> Row:
    assert row is not None  # added and changed rows always have a new row
    return {name: row[name] for name in columns}


def delta_bytes(document: dict[str, Any]) -> bytes:
    """Serialize a delta document: sorted keys, one-space indent, UTF-8, final LF."""
    return (json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()


def apply_delta(base_rows: Iterable[Row], document: dict[str, Any], name: str) -> list[Row]:
    """Apply a delta document to the base rows and return the resulting rows, sorted by key.

    `name` names the delta in errors, such as `catalogs/kato/delta.json`.

    Raises:
        BundleError: the base rows do not have the delta's base hash, a row to
            add already exists, a row to change or remove does not, or the
            result does not have the delta's result hash.
    """
    columns: list[str] = document["columns"]
    key: list[str] = document["key"]
    base = list(base_rows)
    found = rows_hash(columns, base, key)
    if found != document["base"]["sha256"]:
        raise BundleError(
            f"{name}: the installed catalog has rows hash {found}, but the delta expects"
            f" {document['base']['sha256']}; install the base release first or use a full bundle"
        )
    by_key = {tuple(row[column] for column in key): row for row in base}
    for row in document["added"]:
        row_key = tuple(row[column] for column in key)
        if row_key in by_key:
            raise BundleError(f"{name}: added row {row_key} already exists in the catalog")
        by_key[row_key] = dict(row)
    for row in document["changed"]:
        row_key = tuple(row[column] for column in key)
        if row_key not in by_key:
            raise BundleError(f"{name}: changed row {row_key} is not in the catalog")
        by_key[row_key] = dict(row)
    for values in document["removed"]:
        row_key = tuple(values)
        if by_key.pop(row_key, None) is None:
            raise BundleError(f"{name}: removed row {row_key} is not in the catalog")
    result = [by_key[row_key] for row_key in sorted(by_key)]
    found = rows_hash(columns, result, key)
    if found != document["result"]["sha256"]:
        raise BundleError(
            f"{name}: the catalog after the delta has rows hash {found}, expected"
            f" {document['result']['sha256']}"
        )
    return result
