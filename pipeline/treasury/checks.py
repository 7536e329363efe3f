"""Checks of a treasury format definition that its JSON Schema cannot express.

1. Each accepted deviation is one that the parser of the definition's syntax
   implements, and the accepted `versions` and `encoding_labels` (1C header
   values) appear only in a 1c_exchange definition. A parser ignores anything
   else, so such an entry would promise leniency that parsing does not give.
   An export definition accepts no deviations: a file of an export format is
   parsed as rendering writes it.
2. The columns of a fixed-width layout do not overlap: each character of a
   line belongs to at most one column.
3. Each column name of a fixed-width or delimited layout appears once,
   because the mapping names columns by name.
4. The delimiter of a delimited layout is no decimal separator of its
   amounts, counting the comma when the definition accepts `decimal_comma`.

Each finding names the definition file, the JSON path, what was expected and
what was found.
"""

from __future__ import annotations

from typing import Any

from pipeline.findings import Finding, child_path
from pipeline.treasury.model import DEVIATIONS_BY_SYNTAX


def check_layout_fits_syntax(document: dict[str, Any], file: str) -> list[Finding]:
    """Run the checks of the module docstring on a definition that passed its schema."""
    return (
        _check_accepts(document, file)
        + _check_overlaps(document, file)
        + _check_column_names(document, file)
        + _check_delimiter(document, file)
    )


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
    if deviations and document.get("direction") == "export":
        findings.append(
            Finding(
                rule="treasury.deviation-direction",
                file=file,
                json_path="$.accepts.deviations",
                message="deviations apply to import definitions, found direction 'export'; a"
                " file of an export format is parsed as rendering writes it, so remove them",
            )
        )
        return findings
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


def _check_column_names(document: dict[str, Any], file: str) -> list[Finding]:
    layout = document.get("layout")
    if document.get("syntax") not in ("fixed_width", "delimited") or not isinstance(layout, dict):
        return []
    first_index: dict[str, int] = {}
    findings = []
    for index, column in enumerate(layout.get("columns", [])):
        name = column.get("name")
        if not isinstance(name, str):
            continue
        if name not in first_index:
            first_index[name] = index
            continue
        findings.append(
            Finding(
                rule="treasury.column-duplicate",
                file=file,
                json_path=f"$.layout.columns[{index}].name",
                message=f"column name {name!r} is also the name of"
                f" $.layout.columns[{first_index[name]}]; expected each column name once, so"
                " rename one of them",
            )
        )
    return findings


def _check_delimiter(document: dict[str, Any], file: str) -> list[Finding]:
    layout = document.get("layout")
    if document.get("syntax") != "delimited" or not isinstance(layout, dict):
        return []
    # The defaults of `pipeline.treasury.model.format_from_document`.
    delimiter = layout.get("delimiter", ";")
    separator = layout.get("decimal_separator", ".")
    accepts = document.get("accepts")
    deviations = accepts.get("deviations", []) if isinstance(accepts, dict) else []
    if delimiter == separator:
        problem = f"delimiter {delimiter!r} is also the decimal separator"
    elif delimiter == "," and "decimal_comma" in deviations:
        problem = (
            "delimiter ',' is also a decimal separator, because the definition accepts"
            " decimal_comma"
        )
    else:
        return []
    example = "100,50" if delimiter == "," else f"100{delimiter}50"
    return [
        Finding(
            rule="treasury.delimiter",
            file=file,
            json_path="$.layout.delimiter",
            message=f"{problem}, so an amount such as {example} would split into two columns;"
            " expected another delimiter, such as ';'",
        )
    ]
