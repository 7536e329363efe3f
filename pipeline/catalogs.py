"""Reference catalogs: checks, row reading, digests, deltas and imports.

A catalog lives in `catalogs/<id>/`: `catalog.json` describes it (schema
`catalog`, see `pipeline.catalog_model`) and `rows.csv` contains its rows as
UTF-8, comma-separated text with a header line and LF line endings, sorted by
key. The rules that `check_catalog` applies to the rows are listed in
`pipeline.catalog_rows`. `import_catalog` turns an official source file into
`rows.csv` and returns the delta against the previous rows.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.catalog_delta import CatalogDelta, Row, RowChange, diff_rows
from pipeline.catalog_model import (
    DESCRIPTION_FILE,
    ROWS_FILE,
    CatalogDescription,
    Column,
    Source,
    Text,
    catalog_folder,
    check_catalog_id,
    load_description,
    parse_description,
    relative_path,
)
from pipeline.catalog_rows import (
    FindingLog,
    ReadFailure,
    RecordReader,
    check_records,
    normalize_encoding,
)
from pipeline.errors import CatalogError, ConfigError, ValidationError
from pipeline.findings import Finding, errors_only
from pipeline.fsutil import atomic_output, atomic_write_text

__all__ = [
    "CatalogDelta",
    "CatalogDescription",
    "Column",
    "RowChange",
    "Source",
    "Text",
    "catalog_digest",
    "check_catalog",
    "diff_rows",
    "import_catalog",
    "load_description",
    "read_rows",
]

logger = logging.getLogger(__name__)

# Start of the titles and descriptions that `import_catalog` writes into a new
# description, for the editor to replace with real kk and ru texts.
PLACEHOLDER = "TODO: replace"


def check_catalog(root: Path, catalog_id: str) -> list[Finding]:
    """Check a catalog's description and every rule on its rows, and return the findings.

    Files are named relative to `root`. The rows are streamed, so memory keeps
    only keys and the values of referenced columns.
    """
    description_file = relative_path(catalog_id, DESCRIPTION_FILE)
    try:
        description = load_description(root, catalog_id)
    except CatalogError as exc:
        return [Finding("catalog.missing-file", description_file, str(exc))]
    except ValidationError as exc:
        return [f for f in exc.findings if isinstance(f, Finding)]
    rows_file = relative_path(catalog_id, ROWS_FILE)
    rows_path = catalog_folder(root, catalog_id) / ROWS_FILE
    if not rows_path.is_file():
        return [
            Finding(
                "catalog.missing-file",
                rows_file,
                f"expected the rows of catalog {catalog_id} in {rows_file}, found no file;"
                f" import them with `inv catalog.import --id {catalog_id} --from FILE`",
            )
        ]
    targets, findings = _load_reference_targets(root, description, description_file)
    log = FindingLog(rows_file)
    with rows_path.open("rb") as handle:
        check_records(description, RecordReader(handle), log, external_targets=targets)
    findings += [_with_encoding_hint(f) for f in log.result()]
    logger.info("checked catalog %s: %d findings", catalog_id, len(findings))
    return findings


def _with_encoding_hint(finding: Finding) -> Finding:
    if finding.rule != "catalog.encoding":
        return finding
    message = (
        f"{finding.message}; convert the file to UTF-8, or import the source again"
        " with its encoding (--encoding cp1251 or kz1048)"
    )
    return dataclasses.replace(finding, message=message)


def _load_reference_targets(
    root: Path, description: CatalogDescription, description_file: str
) -> tuple[dict[str, set[str]], list[Finding]]:
    """Read the values of every column that `description` references in another catalog."""
    targets: dict[str, set[str]] = {}
    findings: list[Finding] = []
    for index, column in enumerate(description.columns):
        target = column.reference_target
        if target is None or target[0] == description.id or column.references in targets:
            continue
        problem = _collect_values(root, target, targets)
        if problem:
            findings.append(
                Finding(
                    "catalog.reference",
                    description_file,
                    f"column {column.name}: expected {column.references} to be a column of"
                    f" a catalog, found {problem}",
                    json_path=f"$.columns[{index}].references",
                )
            )
    return targets, findings


def _collect_values(
    root: Path, target: tuple[str, str], targets: dict[str, set[str]]
) -> str | None:
    """Add the values of column `target` to `targets`, or return the problem that prevents it."""
    catalog_id, name = target
    try:
        referenced = load_description(root, catalog_id)
    except CatalogError:
        return f"no catalog {catalog_id}"
    except ValidationError:
        return f"an invalid description of catalog {catalog_id}; check that catalog first"
    if name not in referenced.column_names:
        return f"no column {name} in catalog {catalog_id}"
    values: set[str] = set()
    try:
        for row in read_rows(root, catalog_id):
            values.add(row[name])
    except CatalogError as exc:
        return f"unreadable rows ({exc})"
    targets[f"{catalog_id}.{name}"] = values
    return None


def read_rows(root: Path, catalog_id: str) -> Iterator[Row]:
    """Stream the rows of `catalogs/<catalog_id>/rows.csv` as dicts of text values.

    Raises:
        CatalogError: the file is missing, is not UTF-8, has broken quoting, a
            blank line or a row with the wrong number of fields.
    """
    check_catalog_id(catalog_id)
    file = relative_path(catalog_id, ROWS_FILE)
    path = catalog_folder(root, catalog_id) / ROWS_FILE
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise CatalogError(f"{file}: catalog rows not found under {root}") from None
    with handle:
        records = iter(RecordReader(handle))
        try:
            first = next(records, None)
            if first is None:
                return
            header = first[1]
            for line, fields in records:
                if len(fields) != len(header):
                    raise CatalogError(
                        f"{file}:{line}: expected {len(header)} fields, found {len(fields)};"
                        " run the catalog check for every problem"
                    )
                yield dict(zip(header, fields, strict=True))
        except ReadFailure as failure:
            raise CatalogError(f"{file}:{failure.line}: {failure.message}") from failure


def catalog_digest(root: Path, catalog_id: str) -> tuple[int, str]:
    """Return the row count and the SHA-256 (hex) of the bytes of a catalog's rows.csv.

    Raises:
        CatalogError: as `read_rows`.
    """
    count = sum(1 for _ in read_rows(root, catalog_id))
    with (catalog_folder(root, catalog_id) / ROWS_FILE).open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return count, digest


def import_catalog(
    root: Path,
    catalog_id: str,
    source: Path,
    *,
    key: str | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    columns_map: Mapping[str, str] | None = None,
) -> CatalogDelta:
    """Import an official source file as `catalogs/<catalog_id>/rows.csv`, sorted by key.

    `encoding` is the source's: UTF-8 with or without a BOM, cp1251, kz1048 or
    another ASCII-compatible codec. `columns_map` renames source header names
    to column names. `key` names the key column (comma-separated for a compound
    key); without it the first column is the key. An existing `catalog.json`
    is kept and the source must have exactly its columns. Otherwise a new one is
    written with text columns and placeholder titles for the editor to replace.
    The source must pass every row rule; nothing is written when it fails.
    All rows are held in memory to sort them.

    Returns:
        The delta against the previous rows.csv. Before the first import there
        are no previous rows, so every row counts as added.

    Raises:
        ConfigError: an option is invalid or contradicts the existing description.
        CatalogError: the source or the previous rows cannot be read.
        ValidationError: the source breaks a rule; `findings` names every problem.
    """
    check_catalog_id(catalog_id)
    codec = _checked_options(delimiter, encoding)
    if not source.is_file():
        raise CatalogError(f"catalog source {source} not found")
    header = _source_header(source, codec, delimiter)
    mapping = dict(columns_map or {})
    unknown = sorted(set(mapping) - set(header))
    if unknown:
        raise ConfigError(
            f"columns_map renames {', '.join(unknown)}, but the header of {source} has only"
            f" {', '.join(header)}"
        )
    columns = [mapping.get(name, name) for name in header]
    description, created = _description_for_import(root, catalog_id, source, columns, key)

    records = _checked_source_records(root, description, source, codec, delimiter, mapping)

    order = [columns.index(name) for name in description.column_names]
    key_positions = [description.column_names.index(name) for name in description.key]
    body = sorted(
        ([fields[i] for i in order] for fields in records),
        key=lambda fields: [fields[i] for i in key_positions],
    )
    delta = _delta_against_previous(root, description, body)
    folder = catalog_folder(root, catalog_id)
    if created is not None:
        atomic_write_text(folder / DESCRIPTION_FILE, created)
    _write_rows(folder / ROWS_FILE, description.column_names, body)
    logger.info(
        "imported catalog %s from %s: %d rows, %s", catalog_id, source, len(body), delta.summary()
    )
    return delta


def _checked_source_records(
    root: Path,
    description: CatalogDescription,
    source: Path,
    codec: str,
    delimiter: str,
    mapping: dict[str, str],
) -> list[list[str]]:
    """Check every rule on the source and return its records without the header.

    Raises:
        ValidationError: a rule fails; `findings` names the source file and its lines.
    """
    description_file = relative_path(description.id, DESCRIPTION_FILE)
    targets, findings = _load_reference_targets(root, description, description_file)
    records: list[list[str]] = []
    log = FindingLog(str(source))
    with source.open("rb") as handle:
        check_records(
            description,
            RecordReader(handle, codec, delimiter),
            log,
            external_targets=targets,
            require_lf=False,
            rename_header=mapping,
            on_row=records.append,
        )
    errors = errors_only(findings + log.result())
    if errors:
        raise ValidationError(
            f"{source}: {len(errors)} problems found; nothing was written", [*errors]
        )
    return records[1:]


def _write_rows(path: Path, names: tuple[str, ...], body: list[list[str]]) -> None:
    with (
        atomic_output(path) as tmp,
        tmp.open("w", encoding="utf-8", newline="") as out,
    ):
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(body)


def _checked_options(delimiter: str, encoding: str) -> str:
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise ConfigError(f"expected a one-character delimiter such as ';', found {delimiter!r}")
    try:
        return normalize_encoding(encoding)
    except LookupError:
        raise ConfigError(
            f"unknown encoding {encoding!r}; expected utf-8, cp1251 or kz1048"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{exc}; expected utf-8, cp1251 or kz1048") from None


def _source_header(source: Path, codec: str, delimiter: str) -> list[str]:
    with source.open("rb") as handle:
        try:
            first = next(iter(RecordReader(handle, codec, delimiter)), None)
        except ReadFailure as failure:
            finding = Finding(failure.rule, str(source), failure.message, line=failure.line)
            raise ValidationError(f"{source}: unreadable header", [finding]) from failure
    if first is None or not any(first[1]):
        finding = Finding(
            "catalog.header", str(source), "expected a header line with the column names", line=1
        )
        raise ValidationError(f"{source}: no header line", [finding])
    return first[1]


def _description_for_import(
    root: Path, catalog_id: str, source: Path, columns: list[str], key: str | None
) -> tuple[CatalogDescription, str | None]:
    """Return the catalog's description and, when it is new, the JSON text to write."""
    key_columns = tuple(name.strip() for name in key.split(",")) if key else None

    if (catalog_folder(root, catalog_id) / DESCRIPTION_FILE).is_file():
        description = load_description(root, catalog_id)
        if key_columns is not None and key_columns != description.key:
            raise ConfigError(
                f"catalog {catalog_id} has key {', '.join(description.key)}, but the import"
                f" requests key {', '.join(key_columns)}; change the key in"
                f" {relative_path(catalog_id, DESCRIPTION_FILE)} first"
            )
        logger.debug("catalog %s: keeping the existing description", catalog_id)
        return description, None

    key_columns = key_columns or (columns[0],)
    missing = [name for name in key_columns if name not in columns]
    if missing:
        raise ConfigError(
            f"key column {', '.join(missing)} is not in the header of {source};"
            f" found {', '.join(columns)}"
        )

    document = _new_description(catalog_id, source, columns, key_columns)
    file = relative_path(catalog_id, DESCRIPTION_FILE)
    created, findings = parse_description(document, catalog_id, file)
    if created is None:
        raise ValidationError(
            f"{file}: the description made from the header of {source} is invalid;"
            " rename the columns with a columns map",
            [*findings],
        )
    logger.debug("catalog %s: creating a description from the source header", catalog_id)
    return created, json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _new_description(
    catalog_id: str, source: Path, columns: list[str], key: tuple[str, ...]
) -> dict[str, Any]:
    def placeholder(what: str) -> dict[str, str]:
        return {lang: f"{PLACEHOLDER} with the {lang} {what}" for lang in ("kk", "ru")}

    modified = datetime.datetime.fromtimestamp(source.stat().st_mtime, tz=datetime.UTC)
    return {
        "id": catalog_id,
        "title": placeholder(f"title of catalog {catalog_id}"),
        "description": placeholder(f"description of catalog {catalog_id}"),
        "key": list(key),
        "columns": [
            {
                "name": name,
                "type": "text",
                "required": name in key,
                "title": placeholder(f"title of column {name}"),
            }
            for name in columns
        ],
        # NOTE: the source file's modification date and the import date stand in
        # for the publication and effective dates until the editor sets them.
        "source": {
            "name": source.name,
            "document": source.name,
            "date": modified.date().isoformat(),
        },
        "effective_date": datetime.datetime.now(datetime.UTC).date().isoformat(),
    }


def _delta_against_previous(
    root: Path, description: CatalogDescription, body: list[list[str]]
) -> CatalogDelta:
    names = description.column_names
    new_rows = (dict(zip(names, fields, strict=True)) for fields in body)
    rows_path = catalog_folder(root, description.id) / ROWS_FILE
    old_rows = read_rows(root, description.id) if rows_path.is_file() else iter(())
    return diff_rows(old_rows, new_rows, description.key, catalog_id=description.id)
