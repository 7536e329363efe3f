"""A treasury format definition (`packages/treasury/<id>/format.json`) as a typed object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.content import KIND_FOLDERS, Kind, definition_path, item_folder
from pipeline.errors import PipelineError, ValidationError
from pipeline.findings import Finding
from pipeline.schema import load_json

Deviation = Literal[
    "missing_final_newline",
    "message_wrappers",
    "header_lines",
    "missing_statement_reference",
    "decimal_point",
    "decimal_comma",
    "section_name_case",
]
# The deviations that each syntax's parser implements; it ignores any other one.
DEVIATIONS_BY_SYNTAX: dict[str, frozenset[str]] = {
    "mt940": frozenset(
        [
            "missing_final_newline",
            "message_wrappers",
            "header_lines",
            "missing_statement_reference",
            "decimal_point",
        ]
    ),
    "1c_exchange": frozenset(["missing_final_newline", "section_name_case", "decimal_comma"]),
    "fixed_width": frozenset(["missing_final_newline", "decimal_comma"]),
}
DEVIATIONS_BY_SYNTAX["mt942"] = DEVIATIONS_BY_SYNTAX["mt940"]
DEVIATIONS_BY_SYNTAX["delimited"] = DEVIATIONS_BY_SYNTAX["fixed_width"]


# Rules of findings that do not block parsing or rendering (see `blocks_parsing`).
_NON_BLOCKING_RULES = (
    "text.",
    "treasury.conformance-",
    "treasury.samples-not-updated",
)


class TreasuryFormatError(PipelineError):
    """A treasury file does not follow its format, or records cannot be written in it.

    `line` is the 1-based line of the file (None when the problem is not on one
    line), `json_path` the record and field of a JSON records file, such as
    `$[0].purpose` for the first record, `field` the source field or canonical
    field concerned, and `detail` the message without the file and location,
    for a finding that adds its own.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        field: str | None = None,
        json_path: str | None = None,
    ) -> None:
        where = file if line is None else f"{file}:{line}"
        if json_path is not None:
            where += f" {json_path}"
        super().__init__(f"{where}: {message}")
        self.detail = message
        self.file = file
        self.line = line
        self.field = field
        self.json_path = json_path


@dataclass(frozen=True)
class Column:
    """One column of a fixed-width or delimited file."""

    name: str
    start: int | None = None
    width: int | None = None
    align: Literal["left", "right"] = "left"
    pad: str = " "


@dataclass(frozen=True)
class TreasuryFormat:
    """The parts of a treasury format definition that parsing and rendering use."""

    id: str
    direction: Literal["import", "export"]
    document: str
    syntax: Literal["mt940", "mt942", "1c_exchange", "fixed_width", "delimited"]
    encoding: str
    version: str
    mapping: dict[str, str]
    deviations: frozenset[str] = frozenset()
    # Each entry is a tag such as ":25:" or a tuple of alternatives (":60F:", ":60M:").
    required_tags: tuple[tuple[str, ...], ...] = ()
    required_fields: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    encoding_labels: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    delimiter: str = ";"
    header: bool = False
    date_format: str = "%d.%m.%Y"
    decimal_separator: str = "."
    line_ending: str = "\r\n"
    samples: tuple[tuple[str, str], ...] = ()
    folder: Path | None = None
    # Whether a text value with mojibake fails parsing and rendering, or only warns.
    mojibake: Literal["error", "warning"] = "error"

    def accepts(self, deviation: Deviation) -> bool:
        """Return whether the definition accepts a deviation from the strict syntax."""
        return deviation in self.deviations


def format_from_document(document: dict[str, Any], folder: Path | None = None) -> TreasuryFormat:
    """Build a TreasuryFormat from a definition that already passed its JSON Schema."""
    accepts = document.get("accepts", {})
    layout = document.get("layout", {})
    columns = tuple(
        Column(
            name=c["name"],
            start=c.get("start"),
            width=c.get("width"),
            align=c.get("align", "left"),
            pad=c.get("pad", " "),
        )
        for c in layout.get("columns", [])
    )
    return TreasuryFormat(
        id=document["id"],
        direction=document["direction"],
        document=document["document"],
        syntax=document["syntax"],
        encoding=document["encoding"],
        version=document["version"],
        mapping=dict(document["mapping"]),
        deviations=frozenset(accepts.get("deviations", [])),
        required_tags=tuple(
            (tag,) if isinstance(tag, str) else tuple(tag)
            for tag in document.get("required_tags", [])
        ),
        required_fields=tuple(document.get("required_fields", [])),
        versions=tuple(accepts.get("versions", [])),
        encoding_labels=tuple(accepts.get("encoding_labels", [])),
        columns=columns,
        delimiter=layout.get("delimiter", ";"),
        header=layout.get("header", False),
        date_format=layout.get("date_format", "%d.%m.%Y"),
        decimal_separator=layout.get("decimal_separator", "."),
        line_ending={"crlf": "\r\n", "lf": "\n"}[layout.get("line_ending", "crlf")],
        samples=tuple((s["file"], s["expected"]) for s in document.get("samples", [])),
        folder=folder,
        mojibake=document.get("mojibake", "error"),
    )


def blocks_parsing(finding: Finding) -> bool:
    """Return whether an error finding makes parsing or rendering with the format unsafe.

    Errors in the schema, the mapping, the encoding or the samples block. Text
    lint of the titles and the state of `conformance.json` do not, because
    they change nothing in how a file is read or written; validation still
    reports them.
    """
    return finding.severity == "error" and not finding.rule.startswith(_NON_BLOCKING_RULES)


def load_format(root: Path, format_id: str) -> TreasuryFormat:
    """Load and check `packages/treasury/<format_id>/format.json`.

    Raises:
        ValidationError: the definition has an error that affects parsing or
            rendering (see `blocks_parsing`).
        ConfigError: `format_id` is not a folder name.
    """
    # Imported here because the definition checks run the samples through this package.
    from pipeline.definitions import check_definition

    file = f"{KIND_FOLDERS[Kind.TREASURY]}/{format_id}/format.json"
    findings = check_definition(root, Kind.TREASURY, format_id)
    blocking = [f for f in findings if blocks_parsing(f)]
    if blocking:
        raise ValidationError(
            f"{len(blocking)} error(s) in the treasury format {format_id} that affect parsing"
            f" or rendering, first: {blocking[0]}",
            findings,
        )
    document, _ = load_json(definition_path(root, Kind.TREASURY, format_id), file)
    if not isinstance(document, dict):
        # Unreachable once the checks pass, because the schema requires an object.
        raise ValidationError(f"{file}: expected a JSON object", findings)
    return format_from_document(document, item_folder(root, Kind.TREASURY, format_id))
