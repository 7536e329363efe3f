"""Catalog descriptions: `catalogs/<id>/catalog.json` read into typed objects.

A description must pass the JSON Schema `catalog` first. Then come the checks
that a schema cannot express. The id equals the folder name, column names are
unique and key columns are declared. Patterns compile as Python regular
expressions, and a reference to the catalog itself names one of its columns.
References to other catalogs are resolved by `check_catalog`, which reads them.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from pipeline.content import KIND_FOLDERS, Kind, item_folder
from pipeline.errors import CatalogError, ValidationError
from pipeline.findings import Finding
from pipeline.schema import load_json, validate_document

DESCRIPTION_FILE = "catalog.json"
ROWS_FILE = "rows.csv"
CATALOG_ID = re.compile(r"^[a-z][a-z0-9_]*$")

ColumnType = Literal["text", "integer", "decimal", "date", "boolean"]


@dataclass(frozen=True)
class Text:
    """A text in Kazakh and Russian."""

    kk: str
    ru: str


@dataclass(frozen=True)
class Source:
    """Origin of a catalog's rows: a name, a URL or a document, and the source's date."""

    name: str
    date: datetime.date
    url: str | None = None
    document: str | None = None


@dataclass(frozen=True)
class Column:
    """One declared column of a catalog."""

    name: str
    type: ColumnType
    title: Text
    required: bool = False
    pattern: str | None = None
    references: str | None = None
    null_value: str | None = None

    @property
    def reference_target(self) -> tuple[str, str] | None:
        """Return the referenced (catalog id, column name), or None without a reference."""
        if self.references is None:
            return None
        catalog_id, column = self.references.split(".", 1)
        return catalog_id, column


@dataclass(frozen=True)
class CatalogDescription:
    """The parsed `catalog.json` of one catalog."""

    id: str
    title: Text
    description: Text
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    source: Source
    effective_date: datetime.date

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        """Return the column called `name`, or raise KeyError when it is not declared."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


def catalog_folder(root: Path, catalog_id: str) -> Path:
    return item_folder(root, Kind.CATALOG, catalog_id)


def relative_path(catalog_id: str, name: str) -> str:
    """Return the repository-relative POSIX path of a catalog file, as findings name it."""
    return f"{KIND_FOLDERS[Kind.CATALOG]}/{catalog_id}/{name}"


def check_catalog_id(catalog_id: str) -> None:
    """Raise CatalogError when `catalog_id` cannot be a catalog folder name."""
    if not CATALOG_ID.fullmatch(catalog_id):
        raise CatalogError(
            f"invalid catalog id {catalog_id!r}: expected lower-case Latin letters, digits"
            " and underscores, starting with a letter"
        )


def load_description(root: Path, catalog_id: str) -> CatalogDescription:
    """Read and check `catalogs/<catalog_id>/catalog.json` under the repository `root`.

    Raises:
        CatalogError: the id is not a valid folder name, or the file does not exist.
        ValidationError: the file is not JSON or fails the schema or a description
            check; `findings` lists every problem with its JSON path.
    """
    check_catalog_id(catalog_id)
    file = relative_path(catalog_id, DESCRIPTION_FILE)
    path = catalog_folder(root, catalog_id) / DESCRIPTION_FILE
    if not path.is_file():
        raise CatalogError(
            f"{file}: catalog description not found under {root};"
            f" import the catalog with `inv catalog.import --id {catalog_id} --from FILE`"
        )
    data = path.read_bytes()
    known = _PARSED.get((catalog_id, data))
    if known is not None:
        return known
    document, findings = load_json(path, file)
    description = None
    if not findings:
        description, findings = parse_description(document, catalog_id, file)
    if description is None:
        raise ValidationError(f"{file}: invalid catalog description", [*findings])
    if len(_PARSED) >= _PARSED_LIMIT:
        _PARSED.clear()
    _PARSED[(catalog_id, data)] = description
    return description


# Descriptions that passed the checks, by catalog id and file bytes. A dry-run
# loads each shipped catalog into every sample, and the schema check of one
# description costs more than loading a small catalog.
_PARSED: dict[tuple[str, bytes], CatalogDescription] = {}
_PARSED_LIMIT = 256


def parse_description(
    document: Any, catalog_id: str, file: str
) -> tuple[CatalogDescription | None, list[Finding]]:
    """Check a description document and return it parsed, or None with the findings."""
    findings = validate_document(document, "catalog", file)
    if findings:
        return None, findings
    findings = list(_check_semantics(document, catalog_id, file))
    if findings:
        return None, findings
    return _build(document), []


def _check_semantics(document: dict[str, Any], catalog_id: str, file: str) -> list[Finding]:
    findings: list[Finding] = []

    def add(json_path: str, message: str) -> None:
        findings.append(Finding("catalog.description", file, message, json_path=json_path))

    if document["id"] != catalog_id:
        add("$.id", f"expected {catalog_id!r} (the folder name), found {document['id']!r}")
    names: set[str] = set()
    for index, column in enumerate(document["columns"]):
        name = column["name"]
        if name in names:
            add(f"$.columns[{index}].name", f"expected a unique column name, found {name!r} again")
        names.add(name)
        if "pattern" in column:
            try:
                re.compile(column["pattern"])
            except re.error as exc:
                add(
                    f"$.columns[{index}].pattern",
                    f"expected a Python regular expression, found {column['pattern']!r} ({exc})",
                )
    for index, name in enumerate(document["key"]):
        if name not in names:
            add(f"$.key[{index}]", f"expected a declared column, found {name!r}")
    for index, column in enumerate(document["columns"]):
        target_catalog, _, target_column = column.get("references", "").partition(".")
        if target_catalog == catalog_id and target_column not in names:
            add(
                f"$.columns[{index}].references",
                f"expected a column of catalog {catalog_id!r}, found {target_column!r}",
            )
    return findings


def _text(value: dict[str, str]) -> Text:
    return Text(kk=value["kk"], ru=value["ru"])


def _build(document: dict[str, Any]) -> CatalogDescription:
    source = document["source"]
    columns = tuple(
        Column(
            name=column["name"],
            type=cast(ColumnType, column["type"]),
            title=_text(column["title"]),
            required=column.get("required", False),
            pattern=column.get("pattern"),
            references=column.get("references"),
            null_value=column.get("null_value"),
        )
        for column in document["columns"]
    )
    return CatalogDescription(
        id=document["id"],
        title=_text(document["title"]),
        description=_text(document["description"]),
        key=tuple(document["key"]),
        columns=columns,
        source=Source(
            name=source["name"],
            date=datetime.date.fromisoformat(source["date"]),
            url=source.get("url"),
            document=source.get("document"),
        ),
        effective_date=datetime.date.fromisoformat(document["effective_date"]),
    )
