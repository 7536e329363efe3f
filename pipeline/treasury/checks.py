"""Checks of a treasury format definition that its JSON Schema cannot express.

1. Each accepted deviation is one that the parser of the definition's syntax
   implements, and the accepted `versions` and `encoding_labels` (1C header
   values) appear only in a 1c_exchange definition. A parser ignores anything
   else, so such an entry would promise leniency that parsing does not give.
2. The columns of a fixed-width layout do not overlap: each character of a
   line belongs to at most one column.

Each finding names the definition file, the JSON path, what was expected and
what was found.
"""

from __future__ import annotations

from typing import Any

from pipeline.findings import Finding, child_path
from pipeline.treasury.model import DEVIATIONS_BY_SYNTAX


def check_layout_fits_syntax(document: dict[str, Any], file: str) -> list[Finding]:
    """Run both checks of the module docstring on a definition that passed its schema."""
    return _check_accepts(document, file) + _check_overlaps(document, file)


def _check_accepts(document: dict[str, Any], file: str) -> list[Finding]:
    syntax = document.get("syntax")
    accepts = document.get("accepts")
    if not isinstance(syntax, str) or not isinstance(accepts, dict):
        return []
    findings = []
    for key in ("versions", "encoding_labels"):
        if key in accepts and syntax != "1c_exchange":
            findings.append(
                Finding(
                    rule="treasury.deviation-syntax",
                    file=file,
                    json_path=f"$.accepts.{key}",
                    message=f"{key} applies to 1c_exchange definitions, found syntax"
                    f" {syntax!r}; remove it",
                )
            )
    known = DEVIATIONS_BY_SYNTAX.get(syntax, frozenset())
    deviations = accepts.get("deviations")
    for index, deviation in enumerate(deviations if isinstance(deviations, list) else []):
        if deviation in known:
            continue
        findings.append(
            Finding(
                rule="treasury.deviation-syntax",
                file=file,
                json_path=child_path("$.accepts.deviations", index),
                message=f"deviation {deviation!r} does not apply to syntax {syntax!r};"
                f" expected one of {sorted(known)}; remove it",
            )
        )
    return findings


def _check_overlaps(document: dict[str, Any], file: str) -> list[Finding]:
    layout = document.get("layout")
    if document.get("syntax") != "fixed_width" or not isinstance(layout, dict):
        return []
    mapping = document.get("mapping")
    fields = mapping if isinstance(mapping, dict) else {}
    columns = [
        (index, column)
        for index, column in enumerate(layout.get("columns", []))
        if isinstance(column.get("start"), int) and isinstance(column.get("width"), int)
    ]
    columns.sort(key=lambda item: (item[1]["start"], item[0]))
    findings = []
    for position, (index, column) in enumerate(columns):
        for earlier_index, earlier in columns[:position]:
            earlier_end = earlier["start"] + earlier["width"] - 1
            if column["start"] > earlier_end:
                continue
            findings.append(
                Finding(
                    rule="treasury.column-overlap",
                    file=file,
                    json_path=f"$.layout.columns[{index}].start",
                    message=f"column {_describe(column, fields)} overlaps column"
                    f" {_describe(earlier, fields)} at $.layout.columns[{earlier_index}];"
                    f" expected each character in one column, so move {column['name']}"
                    f" to start at {earlier_end + 1} or later",
                )
            )
    return findings


def _describe(column: dict[str, Any], fields: dict[str, Any]) -> str:
    """Return a column's name, mapped field and characters: `SUM (amount, characters 48-65)`."""
    end = column["start"] + column["width"] - 1
    field = fields.get(column["name"])
    mapped = f"{field}, " if isinstance(field, str) else ""
    return f"{column['name']} ({mapped}characters {column['start']}-{end})"
