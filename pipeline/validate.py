"""The validate stage: every definition, catalog and migration of a content tree.

Each item is one check case, so CI can show a JUnit report with one test per
catalog, migration set, fix, report, form and treasury format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import catalogs, definitions, migrations, text
from pipeline.content import Kind, list_items
from pipeline.findings import CheckCase, Finding, errors_only

logger = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    """Check cases of one validation run, in the order they ran."""

    cases: list[CheckCase] = field(default_factory=list)

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
                {"name": c.name, "kind": c.classname, "passed": not c.failed, "findings": c.findings}
                for c in self.cases
            ],
        }


def validate(root: Path) -> ValidationResult:
    """Validate every item of the content tree at `root`; return all findings, never raise on them."""
    result = ValidationResult()
    for catalog_id in list_items(root, Kind.CATALOG):
        result.cases.append(_run(Kind.CATALOG, catalog_id, _check_catalog, root, catalog_id))
    result.cases.append(_run(Kind.MIGRATION, "migrations", migrations.check_migrations, root))
    for kind in (Kind.FIX, Kind.REPORT, Kind.FORM, Kind.TREASURY):
        for item in list_items(root, kind):
            result.cases.append(_run(kind, item, definitions.check_definition, root, kind, item))
    logger.info(
        "validated %d items: %d errors, %d warnings",
        len(result.cases),
        len(result.errors),
        len(result.findings) - len(result.errors),
    )
    return result


def _check_catalog(root: Path, catalog_id: str) -> list[Finding]:
    return catalogs.check_catalog(root, catalog_id) + text.check_catalog_texts(root, catalog_id)


def _run(kind: Kind, name: str, check: Callable[..., list[Finding]], *args: Any) -> CheckCase:
    started = time.perf_counter()
    findings = check(*args)
    case = CheckCase(name=name, classname=f"validate.{kind.value}", findings=findings)
    case.seconds = time.perf_counter() - started
    logger.debug("%s %s: %d findings", kind.value, name, len(findings))
    return case
