"""Fixed-width and delimited files: one record per line, one column per source field.

A fixed-width column has a 1-based `start` and a `width`; its value is
stripped of the column's pad character. Text past the last column is an
error, because it means the layout does not fit the file. A delimited file
separates columns with the definition's delimiter and may start with a header
line of the column names. Values that contain the delimiter or a quote are
quoted as CSV does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from pipeline.findings import child_path
from pipeline.treasury.codec import find_control
from pipeline.treasury.model import Column, TreasuryFormat, TreasuryFormatError
from pipeline.treasury.source import SourceRecord, Value, split_lines


def parse(text: str, fmt: TreasuryFormat, file: str) -> list[SourceRecord]:
    """Parse decoded fixed-width or delimited text into one source record per line.

    Raises:
        TreasuryFormatError: a line is short, has the wrong number of columns, or
            holds a control character; the message names the line and the column.
    """
    lines = split_lines(text)
    if text and not text.endswith("\n") and not fmt.accepts("missing_final_newline"):
        raise TreasuryFormatError(
            "the file does not end with a line break; expected every line to end with one",
            file=file,
            line=len(lines),
        )
    for number, line in enumerate(lines, start=1):
        control = find_control(line)
        if control is not None:
            name = _column_at(line, control.start(), fmt)
            raise TreasuryFormatError(
                f"column {name}: control byte U+{ord(control.group()):04X} at column"
                f" {control.start() + 1}; expected text only",
                file=file,
                line=number,
                field=name,
            )
    if fmt.syntax == "fixed_width":
        return [_fixed(line, n, fmt.columns, file) for n, line in enumerate(lines, 1) if line]
    return _delimited(lines, fmt, file)


def _column_at(line: str, offset: int, fmt: TreasuryFormat) -> str:
    """Return the name of the column that contains the character at `offset` of a line."""
    if fmt.syntax == "fixed_width":
        for column in fmt.columns:
            start = (column.start or 1) - 1
            if start <= offset < start + (column.width or 0):
                return column.name
        return "(past the last column)"
    # The fields up to the offset, read as CSV so that a quoted delimiter counts as
    # text; a trailing delimiter yields an empty last field.
    before = next(csv.reader([line[:offset]], delimiter=fmt.delimiter), [])
    index = max(len(before) - 1, 0)
    names = [c.name for c in fmt.columns]
    return names[index] if index < len(names) else f"{index + 1} (past the last column)"


def _fixed(line: str, number: int, columns: Sequence[Column], file: str) -> SourceRecord:
    last = max(columns, key=lambda c: (c.start or 1) + (c.width or 0))
    end = (last.start or 1) - 1 + (last.width or 0)
    if line[end:].strip():
        raise TreasuryFormatError(
            f"expected at most {end} characters, where the last column {last.name} ends,"
            f" found {len(line)} with {line[end:]!r} past it; check the file against the"
            " layout, or whether it is a delimited file",
            file=file,
            line=number,
        )
    record: SourceRecord = {}
    for column in columns:
        start = (column.start or 1) - 1
        end = start + (column.width or 0)
        if len(line) < end:
            raise TreasuryFormatError(
                f"column {column.name}: expected the line to reach column {end},"
                f" found {len(line)} characters",
                file=file,
                line=number,
                field=column.name,
            )
        value = line[start:end].strip(column.pad).strip()
        if value:
            record[column.name] = Value(value, number)
    return record


def _delimited(lines: list[str], fmt: TreasuryFormat, file: str) -> list[SourceRecord]:
    names = [c.name for c in fmt.columns]
    rows = list(csv.reader(lines, delimiter=fmt.delimiter))
    records: list[SourceRecord] = []
    for number, row in enumerate(rows, start=1):
        if not row:
            continue
        if number == 1 and fmt.header:
            if row != names:
                raise TreasuryFormatError(
                    f"expected the header line {fmt.delimiter.join(names)!r},"
                    f" found {fmt.delimiter.join(row)!r}",
                    file=file,
                    line=1,
                )
            continue
        if len(row) != len(names):
            message = (
                f"expected {len(names)} columns separated by {fmt.delimiter!r}, found {len(row)}"
            )
            if len(row) == 1:
                message += f"; the line has no {fmt.delimiter!r}, so the file may be fixed-width"
            raise TreasuryFormatError(message, file=file, line=number)
        records.append(
            {
                name: Value(value.strip(), number)
                for name, value in zip(names, row, strict=True)
                if value.strip()
            }
        )
    return records


def render(rows: Sequence[dict[str, str]], fmt: TreasuryFormat, file: str) -> str:
    """Return fixed-width or delimited text with one line per row of source values.

    Raises:
        TreasuryFormatError: a value is wider than its fixed-width column; the error
            names the record and field by JSON path, such as `$[0].purpose`, and the column.
    """
    if fmt.syntax == "fixed_width":
        lines = [_fixed_line(row, index, fmt, file) for index, row in enumerate(rows)]
        return "".join(line + fmt.line_ending for line in lines)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=fmt.delimiter, lineterminator=fmt.line_ending)
    names = [c.name for c in fmt.columns]
    if fmt.header:
        writer.writerow(names)
    for row in rows:
        writer.writerow([row.get(name, "") for name in names])
    return buffer.getvalue()


def _fixed_line(row: dict[str, str], index: int, fmt: TreasuryFormat, file: str) -> str:
    line = ""
    for column in sorted(fmt.columns, key=lambda c: c.start or 1):
        width = column.width or 0
        value = row.get(column.name, "")
        if len(value) > width:
            canonical = fmt.mapping.get(column.name, column.name)
            raise TreasuryFormatError(
                f"value {value!r} (column {column.name}) has {len(value)} characters, the"
                f" column is {width} wide",
                file=file,
                field=canonical,
                json_path=child_path(child_path("$", index), canonical),
            )
        line = line.ljust((column.start or 1) - 1)
        if column.align == "right":
            line += value.rjust(width, column.pad)
        else:
            line += value.ljust(width, column.pad)
    return line
