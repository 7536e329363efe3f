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
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import catalogs
from pipeline.catalog_delta import CatalogDelta, Row, RowChange
from pipeline.errors import BundleError, CatalogError

logger = logging.getLogger(__name__)

DELTA_NAME = "delta.json"
DELTA_FORMAT = 1
ROWS_NAME = "rows.csv"
# Rows written to the hash at a time, and rows per insert and cache size of an external sort.
HASH_BATCH_ROWS = 4096
SORT_BATCH_ROWS = 4096
SORT_CACHE_KIB = 16384


def rows_hash(columns: Sequence[str], rows: Iterable[Row], key: Sequence[str]) -> str:
    """Return the SHA-256 (hex) of the canonical text of `rows`, as the module docstring defines.

    Holds every row in memory to sort it. `compare_catalog` computes the same
    hash from files without doing so.

    Raises:
        CatalogError: a row lacks a column.
    """
    positions = _key_positions(columns, key)
    try:
        ordered = sorted(
            ([row[name] for name in columns] for row in rows),
            key=lambda values: [values[i] for i in positions],
        )
    except KeyError as exc:
        raise CatalogError(
            f"rows hash: expected column {exc.args[0]!r} in every row, found a row without it"
        ) from None
    hasher = _CanonicalHash(columns)
    for values in ordered:
        hasher.add(values)
    return hasher.hexdigest()


def _key_positions(columns: Sequence[str], key: Sequence[str]) -> list[int]:
    missing = [name for name in key if name not in columns]
    if missing:
        raise CatalogError(
            f"rows hash: key column {missing[0]!r} is not among the columns {', '.join(columns)}"
        )
    return [list(columns).index(name) for name in key]


class _CanonicalHash:
    """SHA-256 of the canonical CSV text, fed one row at a time in key order."""

    def __init__(self, columns: Sequence[str]) -> None:
        self._digest = hashlib.sha256()
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")
        self._pending = 0
        self._writer.writerow(columns)

    def add(self, values: Sequence[str]) -> None:
        self._writer.writerow(values)
        self._pending += 1
        if self._pending >= HASH_BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        self._digest.update(self._buffer.getvalue().encode("utf-8"))
        self._buffer.seek(0)
        self._buffer.truncate()
        self._pending = 0

    def hexdigest(self) -> str:
        self._flush()
        return self._digest.hexdigest()


@dataclass(frozen=True)
class CatalogSummary:
    """The row count and rows hash of one version of a catalog."""

    rows: int
    sha256: str


@dataclass(frozen=True)
class CatalogComparison:
    """A catalog in the content tree compared with the same catalog at the base commit.

    `base` is None when the base commit has no such catalog or has it with
    other columns. `counts` (added, changed, removed) is None when no delta
    can be computed: no base, other columns, or a key value that occurs twice
    on one side. `delta` contains the changed rows themselves, and only when
    they were requested and `counts` is set.
    """

    catalog_id: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    current: CatalogSummary
    base: CatalogSummary | None
    counts: dict[str, int] | None
    delta: CatalogDelta | None


class _Unsorted(Exception):
    """A rows file is not sorted by key, so the comparison must sort it first."""

    def __init__(self, side: str) -> None:
        super().__init__(side)
        self.side = side


@dataclass
class _SideState:
    """State of one side of a streamed comparison so far."""

    name: str
    hasher: _CanonicalHash
    rows: int = 0
    duplicate: tuple[str, ...] | None = None


def _stream_side(
    records: Iterator[list[str]], positions: Sequence[int], state: _SideState, check_order: bool
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Yield `(key, fields)` in key order, hashing and counting each row on the way.

    Raises _Unsorted when `check_order` is set and a row's key is less than
    the key before it. Equal keys are allowed and recorded in the state.
    """
    previous: tuple[str, ...] | None = None
    for fields in records:
        row_key = tuple([fields[i] for i in positions])
        if previous is not None and row_key <= previous:
            if row_key != previous:
                if check_order:
                    raise _Unsorted(state.name)
            elif state.duplicate is None:
                state.duplicate = row_key
        previous = row_key
        state.hasher.add(fields)
        state.rows += 1
        yield row_key, fields


def _merge(
    base: Iterator[tuple[tuple[str, ...], list[str]]],
    current: Iterator[tuple[tuple[str, ...], list[str]]],
    columns: Sequence[str],
    keep_changes: bool,
) -> tuple[dict[str, int], list[RowChange], list[RowChange], list[RowChange]]:
    """Merge-join two key-ordered streams into counts and, when kept, the changed rows."""
    counts = {"added": 0, "changed": 0, "removed": 0}
    added: list[RowChange] = []
    changed: list[RowChange] = []
    removed: list[RowChange] = []
    old = next(base, None)
    new = next(current, None)
    while old is not None or new is not None:
        if new is None or (old is not None and old[0] < new[0]):
            assert old is not None
            counts["removed"] += 1
            if keep_changes:
                removed.append(RowChange(old[0], _as_row(columns, old[1]), None))
            old = next(base, None)
        elif old is None or new[0] < old[0]:
            counts["added"] += 1
            if keep_changes:
                added.append(RowChange(new[0], None, _as_row(columns, new[1])))
            new = next(current, None)
        else:
            if old[1] != new[1]:
                counts["changed"] += 1
                if keep_changes:
                    changed.append(
                        RowChange(new[0], _as_row(columns, old[1]), _as_row(columns, new[1]))
                    )
            old = next(base, None)
            new = next(current, None)
    return counts, added, changed, removed


def _as_row(columns: Sequence[str], fields: Sequence[str]) -> Row:
    return dict(zip(columns, fields, strict=True))


def _sorted_externally(
    records: Iterator[list[str]], positions: Sequence[int], work: Path, name: str
) -> Iterator[list[str]]:
    """Yield `records` sorted by key through a temporary SQLite file, in bounded memory.

    Rows with equal keys keep their file order, as Python's stable sort does.
    SQLite's BINARY collation compares UTF-8 bytes, which orders text by code
    point, the same order as Python's string comparison.
    """
    path = work / f"{name}.sort.sqlite"
    key_columns = [f"k{index}" for index in range(len(positions))]
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute(f"PRAGMA cache_size = -{SORT_CACHE_KIB}")
        connection.execute(
            f"CREATE TABLE rows (seq INTEGER PRIMARY KEY, {', '.join(key_columns)}, fields TEXT)"
        )
        insert = (
            f"INSERT INTO rows ({', '.join(key_columns)}, fields)"
            f" VALUES ({', '.join('?' * (len(key_columns) + 1))})"
        )
        batch: list[list[str]] = []
        for fields in records:
            batch.append([fields[i] for i in positions] + [json.dumps(fields)])
            if len(batch) >= SORT_BATCH_ROWS:
                connection.executemany(insert, batch)
                batch.clear()
        connection.executemany(insert, batch)
        logger.debug("sorting %s by key in %s", name, path)
        order = ", ".join([*key_columns, "seq"])
        for (text,) in connection.execute(f"SELECT fields FROM rows ORDER BY {order}"):
            yield json.loads(text)
    finally:
        connection.close()
        path.unlink(missing_ok=True)


def _current_records(content: Path, catalog_id: str) -> Iterator[list[str]]:
    for row in catalogs.read_rows(content, catalog_id):
        yield list(row.values())


def _read_header(path: Path) -> tuple[str, ...]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return tuple(next(csv.reader(handle), []))


def _base_records(spool: Path, label: str) -> Iterator[list[str]]:
    """Yield the data records of the spooled base rows, checking each one's field count.

    Raises:
        CatalogError: the file is not UTF-8 or a record has the wrong number of fields.
    """
    with spool.open(encoding="utf-8-sig", newline="") as handle:
        records = csv.reader(handle)
        try:
            header = next(records, [])
            for line, record in enumerate(records, start=2):
                if len(record) != len(header):
                    raise CatalogError(
                        f"{label}:{line}: expected {len(header)} fields, found {len(record)}"
                    )
                yield record
        except UnicodeDecodeError as exc:
            raise CatalogError(f"{label}: not UTF-8: {exc}") from None


def _spool_base(repo: Path, base_commit: str, catalog_id: str, spool: Path) -> bool:
    """Write the base commit's rows of a catalog to `spool`; return False when it has none."""
    path = f"catalogs/{catalog_id}/{ROWS_NAME}"
    with spool.open("wb") as handle:
        shown = subprocess.run(
            ["git", "show", f"{base_commit}:{path}"],
            cwd=repo,
            stdout=handle,
            stderr=subprocess.PIPE,
            check=False,
        )
    if shown.returncode != 0:
        logger.debug("%s is not in the base commit %s", path, base_commit[:12])
        return False
    return True


def _base_key(repo: Path, base_commit: str, catalog_id: str) -> list[str] | None:
    """Return the key of a catalog's description at `base_commit`, or None when unknown."""
    base_description = subprocess.run(
        ["git", "show", f"{base_commit}:catalogs/{catalog_id}/catalog.json"],
        cwd=repo,
        capture_output=True,
        check=False,
    )
    if base_description.returncode != 0:
        return None
    try:
        key = json.loads(base_description.stdout).get("key")
    except (ValueError, AttributeError):
        return None
    return [str(name) for name in key] if isinstance(key, list) else None


def compare_catalog(
    content: Path,
    catalog_id: str,
    key: Sequence[str],
    repo: Path,
    base_commit: str | None,
    *,
    keep_changes: bool = True,
) -> CatalogComparison:
    """Compare a catalog's rows in `content` with its rows at `base_commit`, in bounded memory.

    Both rows files are streamed. A file that is sorted by key (as
    `catalogs.import_catalog` writes it) is merge-joined as it is read. A file
    that is not is first sorted in a temporary SQLite file. Set `keep_changes`
    to False when only the counts are needed.

    Raises:
        CatalogError: a rows file is missing, is not UTF-8 CSV with one field
            per column, or the key names a column the current rows lack.
    """
    current_path = content / "catalogs" / catalog_id / ROWS_NAME
    columns = _read_header(current_path)
    positions = _key_positions(columns, key)
    label = f"catalogs/{catalog_id}/{ROWS_NAME}"
    with tempfile.TemporaryDirectory(prefix="parus-delta-") as work_name:
        work = Path(work_name)
        spool = work / "base.csv"
        has_base = False
        if base_commit is not None and _spool_base(repo, base_commit, catalog_id, spool):
            base_columns = _read_header(spool)
            has_base = base_columns == columns
            if not has_base:
                logger.debug(
                    "catalog %s ships in full: its columns changed since the base release",
                    catalog_id,
                )
            # Apply creates a table with another key anew, so no delta can start from its rows.
            base_key = _base_key(repo, base_commit, catalog_id)
            if has_base and base_key is not None and base_key != list(key):
                has_base = False
                logger.debug(
                    "catalog %s ships in full: its key changed since the base release", catalog_id
                )
        base_label = f"{label} at {base_commit[:12]}" if base_commit else label
        unsorted: set[str] = set()
        while True:
            try:
                return _compare_streams(
                    catalog_id,
                    tuple(key),
                    columns,
                    positions,
                    lambda: _current_records(content, catalog_id),
                    (lambda: _base_records(spool, base_label)) if has_base else None,
                    unsorted,
                    work,
                    keep_changes,
                )
            except _Unsorted as exc:
                logger.debug("%s side of catalog %s is not sorted by key", exc.side, catalog_id)
                unsorted.add(exc.side)


def _compare_streams(
    catalog_id: str,
    key: tuple[str, ...],
    columns: tuple[str, ...],
    positions: Sequence[int],
    current_records: Callable[[], Iterator[list[str]]],
    base_records: Callable[[], Iterator[list[str]]] | None,
    unsorted: set[str],
    work: Path,
    keep_changes: bool,
) -> CatalogComparison:
    """Stream both sides once; raise _Unsorted for a side not yet known to need sorting."""

    def side(name: str, records: Iterator[list[str]], state: _SideState) -> Iterator[Any]:
        if name in unsorted:
            records = _sorted_externally(records, positions, work, name)
        return _stream_side(records, positions, state, check_order=name not in unsorted)

    current_state = _SideState("current", _CanonicalHash(columns))
    current = side("current", current_records(), current_state)
    if base_records is None:
        for _ in current:
            pass
        return CatalogComparison(
            catalog_id=catalog_id,
            key=key,
            columns=columns,
            current=CatalogSummary(current_state.rows, current_state.hasher.hexdigest()),
            base=None,
            counts=None,
            delta=None,
        )
    base_state = _SideState("base", _CanonicalHash(columns))
    base = side("base", base_records(), base_state)
    counts, added, changed, removed = _merge(base, current, columns, keep_changes)
    delta = None
    duplicate = base_state.duplicate or current_state.duplicate
    if duplicate is not None:
        logger.debug(
            "catalog %s ships in full: key %s occurs twice on one side", catalog_id, duplicate
        )
        counts_found: dict[str, int] | None = None
    else:
        counts_found = counts
        if keep_changes:
            delta = CatalogDelta(catalog_id, key, added, changed, removed)
    return CatalogComparison(
        catalog_id=catalog_id,
        key=key,
        columns=columns,
        current=CatalogSummary(current_state.rows, current_state.hasher.hexdigest()),
        base=CatalogSummary(base_state.rows, base_state.hasher.hexdigest()),
        counts=counts_found,
        delta=delta,
    )


def delta_document(comparison: CatalogComparison) -> dict[str, Any]:
    """Return the `delta.json` document of a comparison made with `keep_changes`.

    Raises:
        BundleError: the comparison has no delta.
    """
    delta = comparison.delta
    base = comparison.base
    if delta is None or base is None:
        raise BundleError(
            f"catalog {comparison.catalog_id}: no delta to write; ship the whole catalog"
        )
    columns = comparison.columns
    return {
        "format": DELTA_FORMAT,
        "catalog": delta.catalog_id,
        "key": list(delta.key),
        "columns": list(columns),
        "base": {"rows": base.rows, "sha256": base.sha256},
        "result": {"rows": comparison.current.rows, "sha256": comparison.current.sha256},
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
