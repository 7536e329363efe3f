"""Streaming reading and checking of catalog rows in delimited text files.

`RecordReader` decodes a file line by line, so a decoding error names the
byte offset and the line of the first bad byte. It feeds the lines to
`csv.reader`, which is faster than `csv.DictReader`. `check_records` runs
every rule in one pass over the records. Memory keeps only the keys seen (for
uniqueness and for references to the catalog itself), the values of other
referenced columns of the catalog, and the references not yet resolved.

Rules, each a finding with the line number:
1. The file is text in the expected encoding; a UTF-8 BOM is accepted and stripped.
2. The header names every declared column exactly once and no other column.
3. No blank lines, at the end of the file included; every row has one field per column.
4. Required and key columns are non-empty; a column's `null_value` counts as empty.
5. Values match their column's type and pattern. Values stay text, so a code
   such as "010" keeps its leading zero.
6. Keys are unique; a duplicate names both lines.
7. Non-empty references resolve to a value of the referenced column.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from pipeline.catalog_model import CatalogDescription, Column
from pipeline.findings import Finding, Severity

UTF8_BOM = b"\xef\xbb\xbf"
# Findings kept per rule. Further ones are counted and reported in one summary finding.
MAX_FINDINGS_PER_RULE = 50

# Names of the usual codecs in messages.
_ENCODING_NAMES = {"utf-8": "UTF-8", "cp1251": "CP1251", "kz1048": "KZ-1048"}

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ReadFailure(Exception):
    """A file cannot be read further: an undecodable byte or broken CSV quoting."""

    def __init__(self, rule: str, line: int, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.line = line
        self.message = message


def normalize_encoding(encoding: str) -> str:
    """Return the codec name of `encoding`, with `utf-8` for UTF-8 with or without a BOM.

    Raises:
        LookupError: Python has no codec of that name.
        ValueError: the codec does not encode ASCII as one byte per character
            (UTF-16, say), so lines cannot be split on the LF byte.
    """
    name = codecs.lookup(encoding).name
    if name == "utf-8-sig":
        name = "utf-8"
    sample = "\n\r;,\t|\"'azAZ09"
    if sample.encode(name) != sample.encode("ascii"):
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible")
    return name


class RecordReader:
    """Iterate `(first line, fields)` over the records of a delimited text file.

    Raises ReadFailure on the first byte that does not decode and on broken
    quoting. `first_crlf_line` is the first line that ends in CR LF, once
    iteration has passed it.
    """

    def __init__(self, handle: BinaryIO, encoding: str = "utf-8", delimiter: str = ",") -> None:
        self._handle = handle
        self._encoding = normalize_encoding(encoding)
        self._delimiter = delimiter
        self.first_crlf_line: int | None = None

    def _lines(self) -> Iterator[str]:
        offset = 0
        for number, raw in enumerate(self._handle, start=1):
            data = raw
            if number == 1 and self._encoding == "utf-8" and raw.startswith(UTF8_BOM):
                data = raw[len(UTF8_BOM) :]
                offset = len(UTF8_BOM)
            try:
                text = data.decode(self._encoding)
            except UnicodeDecodeError as exc:
                raise ReadFailure(
                    "catalog.encoding",
                    number,
                    f"expected {_ENCODING_NAMES.get(self._encoding, self._encoding)} text,"
                    f" found byte 0x{data[exc.start]:02x}"
                    f" at byte offset {offset + exc.start}",
                ) from exc
            if self.first_crlf_line is None and data.endswith(b"\r\n"):
                self.first_crlf_line = number
            offset += len(data)
            yield text

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(self._lines(), delimiter=self._delimiter, strict=True)
        line = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ReadFailure(
                    "catalog.csv",
                    line + 1,
                    f"invalid CSV in the record that starts here and ends on line"
                    f" {reader.line_num}: {exc}; check the quoting",
                ) from exc
            start = line + 1
            line = reader.line_num
            yield start, fields


def _is_integer(value: str) -> bool:
    return _INTEGER.fullmatch(value) is not None


def _is_decimal(value: str) -> bool:
    return _DECIMAL.fullmatch(value) is not None


def _is_date(value: str) -> bool:
    if _DATE.fullmatch(value) is None:
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_boolean(value: str) -> bool:
    return value in ("true", "false")


TYPE_CHECKS: dict[str, tuple[Callable[[str], bool], str]] = {
    "integer": (_is_integer, "an integer (digits, optional minus, no leading zeros)"),
    "decimal": (_is_decimal, "a decimal number with a dot as the separator"),
    "date": (_is_date, "a date YYYY-MM-DD that exists"),
    "boolean": (_is_boolean, "true or false"),
}


def _type_message(column: Column, value: str) -> str:
    message = f"column {column.name}: expected {TYPE_CHECKS[column.type][1]}, found {value!r}"
    if column.type == "integer" and value.isdigit():
        message += "; declare the column as text with a pattern to keep codes such as '007'"
    return message


@dataclass
class FindingLog:
    """Findings of one file, at most MAX_FINDINGS_PER_RULE per rule, the rest counted."""

    file: str
    findings: list[Finding] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def add(self, rule: str, line: int | None, message: str, severity: Severity = "error") -> None:
        count = self._counts.get(rule, 0) + 1
        self._counts[rule] = count
        if count > MAX_FINDINGS_PER_RULE:
            self.dropped[rule] = self.dropped.get(rule, 0) + 1
            return
        self.findings.append(Finding(rule, self.file, message, line=line, severity=severity))

    def result(self) -> list[Finding]:
        summaries = [
            Finding(rule, self.file, f"{count} more findings of rule {rule} not listed")
            for rule, count in sorted(self.dropped.items())
        ]
        return self.findings + summaries


@dataclass
class _ColumnCheck:
    index: int
    column: Column
    required: bool
    pattern: re.Pattern[str] | None
    is_valid_type: Callable[[str], bool] | None
    # Membership test of the referenced values, or None when the column references nothing.
    resolves: Callable[[str], bool] | None = None
    # Values of this column, collected when another column of the catalog references it.
    collected: set[str] | None = None


# A row's key: the value itself for a single key column, else the tuple of
# values. Plain strings keep the key dict of a large catalog smaller.
Key = str | tuple[str, ...]


@dataclass
class _PendingReference:
    line: int
    key: Key
    check: _ColumnCheck
    value: str


def _key_text(names: tuple[str, ...], key: Key) -> str:
    values = (key,) if isinstance(key, str) else key
    return ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))


def _sorts_before(key: Key, other: Key) -> bool:
    # Every key of one catalog has the same shape, so mixed pairs do not occur.
    if isinstance(key, str) and isinstance(other, str):
        return key < other
    if isinstance(key, tuple) and isinstance(other, tuple):
        return key < other
    return False


class _Checker:
    def __init__(
        self,
        description: CatalogDescription,
        log: FindingLog,
        external_targets: dict[str, set[str]],
    ) -> None:
        self.description = description
        self.log = log
        self.external_targets = external_targets
        self.checks: list[_ColumnCheck] = []
        self.key_of: Callable[[list[str]], Key] = operator.itemgetter(0)
        self.seen: dict[Key, int] = {}
        self.pending: list[_PendingReference] = []
        self.previous_key: Key | None = None
        self.order_reported = False
        self.header: list[str] = []

    def check_header(self, line: int, header: list[str]) -> bool:
        declared = self.description.column_names
        ok = True
        for name in sorted({n for n in header if header.count(n) > 1}):
            self.log.add(
                "catalog.duplicate-column",
                line,
                f"expected column {name} once, found it {header.count(name)} times",
            )
            ok = False
        for name in declared:
            if name not in header:
                self.log.add(
                    "catalog.missing-column",
                    line,
                    f"expected column {name}, found only {', '.join(header) or 'an empty header'}",
                )
                ok = False
        for name in header:
            if name not in declared:
                self.log.add(
                    "catalog.undeclared-column",
                    line,
                    f"expected only the declared"
                    f" columns {', '.join(declared)}, found column {name!r}",
                )
                ok = False
        if ok:
            self._prepare(header)
        return ok

    def _prepare(self, header: list[str]) -> None:
        self.header = header
        key = self.description.key
        by_name: dict[str, _ColumnCheck] = {}
        for column in self.description.columns:
            check = _ColumnCheck(
                index=header.index(column.name),
                column=column,
                required=column.required or column.name in key,
                pattern=re.compile(column.pattern) if column.pattern else None,
                is_valid_type=TYPE_CHECKS[column.type][0] if column.type in TYPE_CHECKS else None,
            )
            by_name[column.name] = check
            self.checks.append(check)
        self.key_of = operator.itemgetter(*(header.index(name) for name in key))
        for check in self.checks:
            target = check.column.reference_target
            if target is None:
                continue
            if target[0] != self.description.id:
                values = self.external_targets.get(f"{target[0]}.{target[1]}")
                check.resolves = values.__contains__ if values is not None else None
            elif key == (target[1],):
                # The key dict already contains every value of a single key column.
                check.resolves = self.seen.__contains__
            else:
                referenced = by_name[target[1]]
                if referenced.collected is None:
                    referenced.collected = set()
                check.resolves = referenced.collected.__contains__

    def check_record(self, line: int, fields: list[str]) -> None:
        if not fields:
            self.log.add("catalog.blank-line", line, "expected a row, found a blank line")
            return
        if len(fields) != len(self.checks):
            self.log.add(
                "catalog.field-count",
                line,
                f"expected {len(self.checks)} fields ({', '.join(self.header)}),"
                f" found {len(fields)}",
            )
            return
        if not any(fields):
            self.log.add("catalog.blank-line", line, "expected a row, found only empty fields")
            return
        key = self.key_of(fields)
        for check in self.checks:
            self._check_value(line, key, check, fields[check.index])
        if all((key,) if isinstance(key, str) else key):
            self._check_key(line, key)

    def _row(self, key: Key) -> str:
        return "row " + _key_text(self.description.key, key)

    def _check_value(self, line: int, key: Key, check: _ColumnCheck, value: str) -> None:
        column = check.column
        if value == "" or value == column.null_value:
            if check.required:
                self.log.add(
                    "catalog.required",
                    line,
                    f"{self._row(key)}: expected a value in column {column.name}, found {value!r}",
                )
            return
        if check.is_valid_type and not check.is_valid_type(value):
            self.log.add("catalog.type", line, f"{self._row(key)}: {_type_message(column, value)}")
        if check.pattern and not check.pattern.fullmatch(value):
            self.log.add(
                "catalog.pattern",
                line,
                f"{self._row(key)}: column {column.name}: expected a"
                f" value matching {check.pattern.pattern}, found {value!r}",
            )
        if check.collected is not None:
            check.collected.add(value)
        if check.resolves is not None and not check.resolves(value):
            # Resolved again at the end, because the row it references may come later.
            self.pending.append(_PendingReference(line, key, check, value))

    def _check_key(self, line: int, key: Key) -> None:
        first = self.seen.get(key)
        if first is not None:
            self.log.add(
                "catalog.duplicate-key",
                line,
                f"expected a unique key, found {_key_text(self.description.key, key)}"
                f" on line {first} and on line {line}",
            )
            return
        self.seen[key] = line
        previous = self.previous_key
        names = self.description.key
        if previous is not None and _sorts_before(key, previous) and not self.order_reported:
            # One warning is enough: the importer rewrites the whole file in order.
            self.order_reported = True
            self.log.add(
                "catalog.order",
                line,
                f"expected rows sorted by key as text, found {_key_text(names, key)}"
                f" after {_key_text(names, previous)}",
                severity="warning",
            )
        self.previous_key = key

    def finish(self) -> None:
        for ref in self.pending:
            resolves = ref.check.resolves
            if resolves is None or resolves(ref.value):
                continue
            column = ref.check.column
            target_id = (column.reference_target or ("", ""))[0]
            self.log.add(
                "catalog.reference",
                ref.line,
                f"{self._row(ref.key)}: column {column.name}:"
                f" expected a value that exists in {column.references}, found"
                f" {ref.value!r}, which no row of catalog {target_id} has",
            )


def check_records(
    description: CatalogDescription,
    reader: RecordReader,
    log: FindingLog,
    *,
    external_targets: dict[str, set[str]],
    require_lf: bool = True,
    rename_header: Mapping[str, str] | None = None,
    on_row: Callable[[list[str]], None] | None = None,
) -> None:
    """Check every record of `reader` against `description` and add the findings to `log`.

    `external_targets` maps `catalog.column` to the values of that column in
    another catalog. A reference whose target is absent there is not checked.
    `rename_header` maps header names of the file to column names. The
    header and every record are passed to `on_row`, so a caller can keep them
    when the log has no errors at the end.
    """
    checker = _Checker(description, log, external_targets)
    records = iter(reader)
    try:
        first = next(records, None)
        if first is None:
            log.add(
                "catalog.header",
                1,
                "expected a header line with the column names, found an empty file",
            )
            return
        line, header = first
        if rename_header:
            header = [rename_header.get(name, name) for name in header]
        if not checker.check_header(line, header):
            return
        if on_row:
            on_row(first[1])
        for line, fields in records:
            checker.check_record(line, fields)
            if on_row:
                on_row(fields)
    except ReadFailure as failure:
        log.add(failure.rule, failure.line, failure.message)
        return
    checker.finish()
    if require_lf and reader.first_crlf_line is not None:
        log.add(
            "catalog.line-ending", reader.first_crlf_line, "expected LF line endings, found CR LF"
        )
