"""Streaming reading and checking of catalog rows in delimited text files.

`RecordReader` decodes a file in chunks of whole lines and feeds the lines
to `csv.reader`, which is faster than `csv.DictReader`. When a chunk does not
decode, its lines are decoded one by one, so the error names the byte offset
and the line of the first bad byte. `check_records` runs every rule in one
pass over the records. Memory keeps only the keys seen (for uniqueness and
for references to the catalog itself), the values of other referenced columns
of the catalog, the references not yet resolved, and one batch of records.

Records are checked in batches of `BATCH_ROWS`. A batch first goes through
column-wise checks that run in C (`map` over compiled regular expressions, set
operations). Only a batch that fails one of them is checked again row by row,
and only that row-by-row path writes findings. So findings, their order and
their messages are the same as when every row is checked on its own.

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

import array
import codecs
import collections
import csv
import datetime
import io
import itertools
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from pipeline.catalog_model import CatalogDescription, Column
from pipeline.findings import Finding, Severity

UTF8_BOM = b"\xef\xbb\xbf"
# Findings kept per rule. Further ones are counted and reported in one summary finding.
MAX_FINDINGS_PER_RULE = 50
# Bytes read from a file at a time; a chunk is cut back to its last line feed.
CHUNK_BYTES = 1 << 20
# Records checked column by column at a time.
BATCH_ROWS = 256

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

    def _chunks(self) -> Iterator[tuple[int, int, bytes]]:
        """Yield `(first line, byte offset, data)` for runs of whole lines of the file."""
        line = 1
        offset = 0
        rest = b""
        while True:
            block = self._handle.read(CHUNK_BYTES)
            data = rest + block
            if not block:
                if data:
                    yield line, offset, data
                return
            if offset == 0 and self._encoding == "utf-8" and data.startswith(UTF8_BOM):
                data = data[len(UTF8_BOM) :]
                offset = len(UTF8_BOM)
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            rest = data[cut:]
            yield line, offset, data[:cut]
            line += data.count(b"\n", 0, cut)
            offset += cut

    def _texts(self) -> Iterator[str]:
        """Yield the decoded text of each chunk and note the first CR LF line ending.

        Raises ReadFailure after yielding the text before the first bad line.
        """
        for line, offset, data in self._chunks():
            # A search for one CR byte runs memchr, which is faster, and most files have no CR.
            if self.first_crlf_line is None and data.find(b"\r") >= 0:
                crlf = data.find(b"\r\n")
                if crlf >= 0:
                    self.first_crlf_line = line + data.count(b"\n", 0, crlf)
            try:
                yield data.decode(self._encoding)
            except UnicodeDecodeError:
                yield from self._decode_lines(line, offset, data)

    def _decode_lines(self, line: int, offset: int, data: bytes) -> Iterator[str]:
        """Decode a chunk line by line up to the first bad byte, then raise ReadFailure."""
        start = 0
        while start < len(data):
            end = data.find(b"\n", start) + 1 or len(data)
            raw = data[start:end]
            try:
                text = raw.decode(self._encoding)
            except UnicodeDecodeError as exc:
                raise ReadFailure(
                    "catalog.encoding",
                    line,
                    f"expected {_ENCODING_NAMES.get(self._encoding, self._encoding)} text,"
                    f" found byte 0x{raw[exc.start]:02x}"
                    f" at byte offset {offset + start + exc.start}",
                ) from exc
            yield text
            line += 1
            start = end

    def _lines(self) -> Iterator[str]:
        # StringIO with newline="\n" splits on LF only, like iterating the binary file.
        texts = (io.StringIO(text, newline="\n") for text in self._texts())
        return itertools.chain.from_iterable(texts)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        for lines, records in self.batches(BATCH_ROWS):
            yield from zip(lines, records, strict=True)

    def batches(self, size: int) -> Iterator[tuple[list[int], list[list[str]]]]:
        """Yield `(first lines, records)` of up to `size` records at a time.

        A failure is raised after the records read before it have been yielded.
        """
        reader = csv.reader(self._lines(), delimiter=self._delimiter, strict=True)
        line = 0
        while True:
            records: list[list[str]] = []
            try:
                # extend() keeps the records read before a failure.
                records.extend(itertools.islice(reader, size))
            except (csv.Error, ReadFailure) as exc:
                lines = _first_lines(records, line, reader.line_num)
                if records:
                    yield lines, records
                if isinstance(exc, ReadFailure):
                    raise
                # The failing record starts after the last record read.
                start = lines[-1] + _line_count(records[-1]) if records else line + 1
                raise ReadFailure(
                    "catalog.csv",
                    start,
                    f"invalid CSV in the record that starts here and ends on line"
                    f" {reader.line_num}: {exc}; check the quoting",
                ) from exc
            if not records:
                return
            yield _first_lines(records, line, reader.line_num), records
            line = reader.line_num


def _line_count(fields: list[str]) -> int:
    # Files are split into lines on LF only, so a record spans one line more
    # than the LF characters inside its quoted fields.
    return 1 + sum(value.count("\n") for value in fields)


def _first_lines(records: list[list[str]], before: int, last: int) -> list[int]:
    """Return the first line of each record, given the line before them and their last line."""
    if last - before == len(records):
        return list(range(before + 1, last + 1))
    lines = []
    line = before + 1
    for fields in records:
        lines.append(line)
        line += _line_count(fields)
    return lines


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


def _all_integers(values: Sequence[str]) -> bool:
    return all(map(_INTEGER.fullmatch, values))


def _all_decimals(values: Sequence[str]) -> bool:
    return all(map(_DECIMAL.fullmatch, values))


def _all_dates(values: Sequence[str]) -> bool:
    if not all(map(_DATE.fullmatch, values)):
        return False
    try:
        # A deque of length 0 runs the map in C and keeps nothing.
        collections.deque(map(datetime.date.fromisoformat, values), maxlen=0)
    except ValueError:
        return False
    return True


def _all_booleans(values: Sequence[str]) -> bool:
    return set(values) <= {"true", "false"}


# The same tests as TYPE_CHECKS, on a whole column of a batch at once.
COLUMN_TYPE_CHECKS: dict[str, Callable[[Sequence[str]], bool]] = {
    "integer": _all_integers,
    "decimal": _all_decimals,
    "date": _all_dates,
    "boolean": _all_booleans,
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

    @property
    def needs_batch_check(self) -> bool:
        """Whether a batch can break a rule in this column or must update its state."""
        return bool(
            self.required
            or self.pattern
            or self.is_valid_type
            or self.resolves
            or self.collected is not None
        )

    def present_values(self, values: Sequence[str]) -> Sequence[str]:
        """Return the values of a column that are neither empty nor the column's null value."""
        null = self.column.null_value
        if "" in values:
            values = list(filter(None, values))
        if null is not None and null in values:
            values = list(filter(null.__ne__, values))
        return values

    def batch_is_clean(self, values: Sequence[str]) -> bool:
        """Check a column of a batch in C; False means the rows need the row-by-row check."""
        null = self.column.null_value
        if self.required and ("" in values or (null is not None and null in values)):
            return False
        present = self.present_values(values)
        column_type = COLUMN_TYPE_CHECKS.get(self.column.type)
        if column_type is not None and not column_type(present):
            return False
        if self.pattern and not all(map(self.pattern.fullmatch, present)):
            return False
        return not (self.resolves and not all(map(self.resolves, present)))


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
        # Keys seen so far with their first line. Clean batches append to the two
        # lists instead, which costs less than growing a dict, and `_key_lines`
        # moves them into the dict before any lookup.
        self.seen: dict[Key, int] = {}
        self._ordered_keys: list[Key] = []
        self._ordered_lines = array.array("q")
        # A reference to the key column looks keys up in `seen` for every row.
        self.keys_looked_up = False
        self.pending: list[_PendingReference] = []
        self.previous_key: Key | None = None
        self.order_reported = False
        # Whether every key so far sorted after the one before it.
        self.sorted_so_far = True
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
                self.keys_looked_up = True
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

    def check_batch(self, lines: list[int], records: list[list[str]]) -> None:
        """Check records together, or one by one when the batch breaks a rule."""
        clean = self._clean_batch(records)
        if clean is None:
            for line, fields in zip(lines, records, strict=True):
                self.check_record(line, fields)
            return
        keys, columns = clean
        for check in self.checks:
            if check.collected is not None:
                check.collected.update(check.present_values(columns[check.index]))
        if not self.keys_looked_up:
            self._ordered_keys.extend(keys)
            self._ordered_lines.extend(lines)
        else:
            self._key_lines().update(zip(keys, lines, strict=True))
        self.previous_key = keys[-1]

    def _key_lines(self) -> dict[Key, int]:
        """Return `seen` with every key seen so far in it."""
        if self._ordered_keys:
            self.seen.update(zip(self._ordered_keys, self._ordered_lines, strict=True))
            self._ordered_keys = []
            self._ordered_lines = array.array("q")
        return self.seen

    def _clean_batch(
        self, records: list[list[str]]
    ) -> tuple[list[Key], list[tuple[str, ...]]] | None:
        """Return the keys and columns of a batch that breaks no rule.

        None means that a row may break a rule.
        """
        if set(map(len, records)) != {len(self.checks)}:
            return None
        columns = list(zip(*records, strict=True))
        for check in self.checks:
            if check.needs_batch_check and not check.batch_is_clean(columns[check.index]):
                return None
        keys: list[Key] = list(map(self.key_of, records))
        previous = self.previous_key
        increasing = (previous is None or _sorts_before(previous, keys[0])) and all(
            map(operator.lt, keys, keys[1:])
        )
        if not increasing and not self.order_reported:
            return None
        # Keys that kept increasing since the first row cannot repeat one seen before.
        if not (increasing and self.sorted_so_far) and (
            len(set(keys)) != len(keys) or not self._key_lines().keys().isdisjoint(keys)
        ):
            return None
        if not increasing:
            self.sorted_so_far = False
        return keys, columns

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
        first = self._key_lines().get(key)
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
        if previous is not None and _sorts_before(key, previous):
            self.sorted_so_far = False
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
    header_read = False
    try:
        for lines, batch in reader.batches(BATCH_ROWS):
            if not header_read:
                header_read = True
                line, header = lines.pop(0), batch.pop(0)
                names = [rename_header.get(n, n) for n in header] if rename_header else header
                if not checker.check_header(line, names):
                    return
                if on_row:
                    on_row(header)
                if not batch:
                    continue
            checker.check_batch(lines, batch)
            if on_row:
                for fields in batch:
                    on_row(fields)
    except ReadFailure as failure:
        log.add(failure.rule, failure.line, failure.message)
        return
    if not header_read:
        log.add(
            "catalog.header",
            1,
            "expected a header line with the column names, found an empty file",
        )
        return
    checker.finish()
    if require_lf and reader.first_crlf_line is not None:
        log.add(
            "catalog.line-ending", reader.first_crlf_line, "expected LF line endings, found CR LF"
        )
