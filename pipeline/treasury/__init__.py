"""Treasury formats: statement imports and Treasury-client exports.

A format definition (`packages/treasury/<id>/format.json`) names a syntax
(SWIFT MT940 or MT942, 1CClientBankExchange, fixed-width, delimited), an
encoding (UTF-8, CP1251, KZ-1048) and the mapping of its source fields to the
canonical records of `records.py`. `parse_file` turns a file into canonical
records and `render_file` writes canonical records as an export.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.findings import Finding
from pipeline.fsutil import atomic_write_bytes
from pipeline.treasury.conformance import (
    check_base_conformance,
    check_conformance,
    record_conformance,
)
from pipeline.treasury.engine import Record, parse_bytes, parse_file, render_records
from pipeline.treasury.model import TreasuryFormat, TreasuryFormatError, load_format

__all__ = [
    "Record",
    "TreasuryFormat",
    "TreasuryFormatError",
    "check_base_conformance",
    "check_conformance",
    "load_format",
    "parse_bytes",
    "parse_file",
    "record_conformance",
    "render_file",
    "render_records",
]


def render_file(
    fmt: TreasuryFormat,
    records_path: Path,
    out: Path,
    *,
    warnings: list[Finding] | None = None,
) -> int:
    """Render the JSON array of canonical records in `records_path` to `out`; return the count.

    Warnings are appended to `warnings` when it is given (see `render_records`).

    Raises:
        TreasuryFormatError: the records file is not a JSON array, or a record cannot
            be rendered (see `render_records`).
    """
    name = str(records_path)
    try:
        records = json.loads(records_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TreasuryFormatError(
            f"cannot read the records: {exc}; expected a UTF-8 JSON array", file=name
        ) from None
    if not isinstance(records, list):
        raise TreasuryFormatError(
            f"expected a JSON array of records, found {type(records).__name__}", file=name
        )
    atomic_write_bytes(out, render_records(fmt, records, name, warnings=warnings))
    return len(records)
