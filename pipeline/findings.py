"""Findings of the checking stages and the reports written from them."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.fsutil import atomic_write_bytes, atomic_write_text

Severity = Literal["error", "warning"]

_JSON_PATH_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


def child_path(path: str, key: str | int) -> str:
    """Return the JSON path of `key` below `path`, spelled as jsonschema spells it."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _JSON_PATH_NAME.match(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


@dataclass(frozen=True)
class Finding:
    """One problem found in one file.

    `rule` is a short stable id (`schema`, `catalog.duplicate-key`, ...),
    `json_path` a JSONPath such as `$.title.kk` for definition files, and `line`
    is 1-based.
    """

    rule: str
    file: str
    message: str
    line: int | None = None
    json_path: str | None = None
    severity: Severity = "error"

    def location(self) -> str:
        """Return `file:line` or `file $.path`, whichever is known."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.json_path:
            where += f" {self.json_path}"
        return where

    def __str__(self) -> str:
        return f"{self.location()}: {self.message}"


@dataclass
class CheckCase:
    """One checked unit (a file, a migration on a database) for a JUnit report."""

    name: str
    classname: str
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def failed(self) -> bool:
        return any(f.severity == "error" for f in self.findings)


def write_json_report(path: Path, data: Any) -> None:
    """Write a JSON report atomically, UTF-8 with non-ASCII text kept readable."""
    text = json.dumps(data, ensure_ascii=False, indent=2, default=_to_json) + "\n"
    atomic_write_text(path, text)


def _to_json(value: object) -> Any:
    if isinstance(value, Finding):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a JSON report")


def write_junit_report(path: Path, suite: str, cases: Sequence[CheckCase]) -> None:
    """Write a JUnit XML report with one test case per checked unit."""
    failures = sum(1 for c in cases if c.failed)
    skipped = sum(1 for c in cases if c.skipped and not c.failed)
    root = ET.Element("testsuites")
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    for case in cases:
        element = ET.SubElement(
            node, "testcase", name=case.name, classname=case.classname, time=f"{case.seconds:.3f}"
        )
        errors = [f for f in case.findings if f.severity == "error"]
        if errors:
            failure = ET.SubElement(
                element, "failure", message=str(errors[0]), type=errors[0].rule
            )
            failure.text = "\n".join(str(f) for f in errors)
        elif case.skipped:
            ET.SubElement(element, "skipped", message=case.skipped)
        warnings = [f for f in case.findings if f.severity == "warning"]
        if warnings:
            ET.SubElement(element, "system-out").text = "\n".join(str(f) for f in warnings)
    ET.indent(root)
    atomic_write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def errors_only(findings: Iterable[Finding]) -> list[Finding]:
    """Return the findings of severity `error`."""
    return [f for f in findings if f.severity == "error"]
