"""The validate stage: every definition, catalog and migration of a content tree.

Each item is one check case, so CI can show a JUnit report with one test per
catalog, migration set, fix, report, form and treasury format.

With the cache on, an item whose input files have the same git blob ids as
in an earlier run gets that run's findings without being checked again
(`pipeline.cache`). The inputs of an item are:

- a catalog: its `catalog.json` and `rows.csv`, and those of every catalog
  one of its columns references;
- the migrations: every file in `migrations/`, `pyproject.toml`, and the
  definition file of every report, form and catalog, whose queries and
  columns the migration lint reads;
- a fix, report, form or treasury format: every file in its folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import catalogs, definitions, migrations, text
from pipeline.cache import ResultCache, blob_id, cache_path, folder_blob_ids, inputs_key
from pipeline.catalog_model import (
    CATALOG_ID,
    DESCRIPTION_FILE,
    ROWS_FILE,
    catalog_folder,
    relative_path,
)
from pipeline.console import Progress
from pipeline.content import KIND_FOLDERS, Kind, definition_path, item_folder, list_items
from pipeline.findings import CheckCase, Finding, errors_only

logger = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    """Check cases of one validation run, in the order they ran."""

    cases: list[CheckCase] = field(default_factory=list)
    # Cases whose findings came from the cache instead of a check.
    cached: int = 0

    @property
    def findings(self) -> list[Finding]:
        return [f for case in self.cases for f in case.findings]

    @property
    def errors(self) -> list[Finding]:
        return errors_only(self.findings)

    @property
    def passed(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checked": len(self.cases),
            "errors": len(self.errors),
            "warnings": len(self.findings) - len(self.errors),
            "cases": [
                {
                    "name": c.name,
                    "kind": c.classname,
                    "passed": not c.failed,
                    "findings": c.findings,
                }
                for c in self.cases
            ],
        }


# One item to check: its kind, its name, and the check with its arguments.
_Item = tuple[Kind, str, Callable[..., list[Finding]], tuple[Any, ...]]


def validate(
    root: Path, *, use_cache: bool = False, progress: Progress | None = None
) -> ValidationResult:
    """Validate every item of the content tree at `root`; return all findings, never raise on them.

    With `use_cache`, findings are reused from `.pipeline-cache/validate.json`
    for items whose inputs did not change, and the cache is rewritten.
    `progress` counts the items on a terminal.
    """
    items = _items(root)
    cache = ResultCache(cache_path(root, "validate")) if use_cache else None
    result = ValidationResult()
    if progress is not None:
        progress.start(len(items))
    for kind, name, check, args in items:
        if cache is None:
            result.cases.append(_run(kind, name, check, *args))
        else:
            case, reused = _run_cached(cache, root, kind, name, check, args)
            result.cases.append(case)
            result.cached += reused
        if progress is not None:
            progress.advance(detail=f"{kind.value} {name}")
    if progress is not None:
        progress.close()
    if cache is not None:
        cache.save()
    links = _check_links(root)
    if links:
        # A case of its own only when a link is found, so the item count stays the same.
        result.cases.append(CheckCase(name="links", classname="validate.content", findings=links))
    logger.info(
        "validated %d items (%d from the cache): %d errors, %d warnings",
        len(result.cases),
        result.cached,
        len(result.errors),
        len(result.findings) - len(result.errors),
    )
    return result


def _check_links(root: Path) -> list[Finding]:
    """Report symbolic links in the content folders: a bundle ships files, never links."""
    findings = []
    for folder in sorted(set(KIND_FOLDERS.values())):
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_symlink():
                findings.append(
                    Finding(
                        rule="content.symlink",
                        file=path.relative_to(root).as_posix(),
                        message=f"expected a regular file, found a symbolic link to"
                        f" {os.readlink(path)!r}; commit the file itself",
                    )
                )
    return findings


def _items(root: Path) -> list[_Item]:
    items: list[_Item] = [
        (Kind.CATALOG, catalog_id, _check_catalog, (root, catalog_id))
        for catalog_id in list_items(root, Kind.CATALOG)
    ]
    items.append((Kind.MIGRATION, "migrations", migrations.check_migrations, (root,)))
    for kind in (Kind.FIX, Kind.REPORT, Kind.FORM, Kind.TREASURY):
        for item in list_items(root, kind):
            items.append((kind, item, definitions.check_definition, (root, kind, item)))
    return items


def _run_cached(
    cache: ResultCache,
    root: Path,
    kind: Kind,
    name: str,
    check: Callable[..., list[Finding]],
    args: tuple[Any, ...],
) -> tuple[CheckCase, bool]:
    """Take an item's findings from the cache, or check it and store them; True when reused."""
    started = time.perf_counter()
    entry = f"{kind.value}:{name}"
    key = inputs_key(_inputs(root, kind, name))
    findings = cache.get(entry, key)
    if findings is not None:
        case = CheckCase(name=name, classname=f"validate.{kind.value}", findings=findings)
        case.seconds = time.perf_counter() - started
        return case, True
    case = _run(kind, name, check, *args)
    cache.put(entry, key, case.findings)
    return case, False


def _inputs(root: Path, kind: Kind, name: str) -> list[tuple[str, str]]:
    """Return `(path, blob id)` of every file an item's check reads."""
    # NOTE: a check that starts to read a file outside these must add it here,
    # or the cache returns findings that no longer match the content.
    if kind is Kind.CATALOG:
        catalog_ids = [name, *sorted(_referenced_catalogs(root, name) - {name})]
        return [
            (relative_path(catalog_id, file), blob_id(catalog_folder(root, catalog_id) / file))
            for catalog_id in catalog_ids
            for file in (DESCRIPTION_FILE, ROWS_FILE)
        ]
    if kind is Kind.MIGRATION:
        # The lint reads lock_timeout_ms from the settings, the report and form
        # queries and the catalog descriptions (the tables and columns they use).
        settings = ("pyproject.toml", blob_id(root / "pyproject.toml"))
        readers = [
            (definition.relative_to(root).as_posix(), blob_id(definition))
            for reader_kind in (Kind.REPORT, Kind.FORM, Kind.CATALOG)
            for reader in list_items(root, reader_kind)
            for definition in [definition_path(root, reader_kind, reader)]
        ]
        return [*folder_blob_ids(root, root / KIND_FOLDERS[Kind.MIGRATION]), settings, *readers]
    return folder_blob_ids(root, item_folder(root, kind, name))


def _referenced_catalogs(root: Path, catalog_id: str) -> set[str]:
    """Return the ids of the catalogs that a catalog's columns reference, as far as readable.

    An unreadable description references nothing: its check then fails on the
    description alone, which is keyed by the description's blob id.
    """
    path = catalog_folder(root, catalog_id) / DESCRIPTION_FILE
    try:
        document = json.loads(path.read_bytes())
        columns = document["columns"]
        references = [column.get("references") for column in columns]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    ids = {ref.split(".", 1)[0] for ref in references if isinstance(ref, str) and "." in ref}
    return {catalog_id for catalog_id in ids if CATALOG_ID.fullmatch(catalog_id)}


def _check_catalog(root: Path, catalog_id: str) -> list[Finding]:
    return catalogs.check_catalog(root, catalog_id) + text.check_catalog_texts(root, catalog_id)


def _run(kind: Kind, name: str, check: Callable[..., list[Finding]], *args: Any) -> CheckCase:
    started = time.perf_counter()
    findings = check(*args)
    case = CheckCase(name=name, classname=f"validate.{kind.value}", findings=findings)
    case.seconds = time.perf_counter() - started
    logger.debug("%s %s: %d findings", kind.value, name, len(findings))
    return case
