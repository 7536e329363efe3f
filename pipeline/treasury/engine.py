"""Parse treasury files into canonical records and render canonical records as exports.

Parsing runs in five steps. It rejects a byte order mark other than the
UTF-8 one of a UTF-8 file, naming the mark. It rejects a file whose first line
starts another syntax, before decoding, so a 1C file in CP1251 given to a UTF-8
MT940 definition is named as 1C, not as an invalid UTF-8 byte. It decodes the
bytes in the definition's encoding and parses the syntax into source fields.
Last, it maps each source field to its canonical field and converts it to the
canonical type (`records.py`). A text value with mojibake, such as KZ-1048 text read as
CP1251 ("Ќазаќстан" for "Қазақстан"), is rejected with the repaired text, or
only reported as a warning when the definition sets `mojibake` to `warning`.
One word misread beyond doubt anywhere in the file makes the words with є, ї
and ґ of every value mojibake, and a guess (words that may be Ukrainian) is
always a warning (`pipeline.mojibake`). In a CP1251 file KZ-1048 mojibake
means the file itself is KZ-1048; in other files the text was misread
before it reached the file. A file of an export
format is held to what rendering requires: a record without a value for a
field of `required_fields` is rejected.

Rendering runs the same steps backwards, and a character the encoding lacks
is an error naming the character, the record and the field. A text value
with a line break, a tab, a control character, an invisible format character
(such as U+200B or U+202E) or a line or paragraph separator (U+2028,
U+2029) is rejected, because it would split, shift or hide part of a line
of the export. A text value with leading or trailing whitespace is rejected
too: canonical text has none, and parsing strips it, so such a value would
not survive the round trip. So is a record without a value for a field of
the definition's `required_fields`, and a text value with mojibake (or it
warns, as for parsing).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.findings import Finding, child_path
from pipeline.mojibake import Mojibake, detect_mojibake, find_kz1048_evidence
from pipeline.treasury import codec, mt940, onec, tabular
from pipeline.treasury.model import TreasuryFormat, TreasuryFormatError
from pipeline.treasury.records import (
    CANONICAL_FIELDS,
    ValueFormatError,
    format_amount,
    format_date,
    parse_amount,
    parse_date,
)
from pipeline.treasury.source import (
    EXPECTED_FILE,
    OWN_FILE,
    SYNTAX_OF_FILE,
    SourceRecord,
    Value,
    recognize,
    split_lines,
)

logger = logging.getLogger(__name__)

Record = dict[str, Any]

_LONE_CR = re.compile("\r(?!\n)")


def parse_file(
    fmt: TreasuryFormat,
    path: Path,
    name: str | None = None,
    *,
    warnings: list[Finding] | None = None,
) -> list[Record]:
    """Parse a file with a treasury format; `name` is the file name used in messages.

    Warnings, such as mojibake that the definition accepts, are appended to
    `warnings` when it is given, and logged.

    Raises:
        TreasuryFormatError: the file cannot be read (missing, a folder, no
            permission) or does not follow the format.
    """
    file = name or str(path)
    if path.is_dir():
        raise TreasuryFormatError("expected a file, found a folder", file=file)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TreasuryFormatError("file not found; check the path", file=file) from None
    except OSError as exc:
        raise TreasuryFormatError(f"cannot read the file: {exc.strerror}", file=file) from None
    return parse_bytes(fmt, data, file, warnings=warnings)


def parse_bytes(
    fmt: TreasuryFormat, data: bytes, file: str, *, warnings: list[Finding] | None = None
) -> list[Record]:
    """Parse the bytes of a treasury file into canonical records; see `parse_file` for `warnings`.

    Raises:
        TreasuryFormatError: the file does not follow the format; the message names
            the line and the field.
    """
    codec.check_byte_order_mark(data, fmt.encoding, file)
    _reject_other_syntax(data, fmt, file)
    text = codec.decode(data, fmt.encoding, file)
    _check_line_endings(text, file)
    if fmt.syntax in ("mt940", "mt942"):
        source = mt940.parse(text, fmt, file)
    elif fmt.syntax == "1c_exchange":
        source = onec.parse(text, fmt, file)
    else:
        source = tabular.parse(text, fmt, file)
    if fmt.direction == "export":
        for record in source:
            _check_required_present(record, fmt, file)
    texts: list[tuple[str, str, int]] = []
    records = [_to_canonical(record, fmt, file, texts) for record in source]
    evidence = find_kz1048_evidence((text, f"on line {line}") for text, _, line in texts)
    for text, source_name, line in texts:
        _report_mojibake(
            fmt,
            detect_mojibake(text, kz1048_elsewhere=evidence),
            f"field {source_name}",
            functools.partial(_import_advice, fmt),
            warnings,
            file=file,
            line=line,
            field=source_name,
        )
    logger.info("parsed %s with %s: %d record(s)", file, fmt.id, len(records))
    return records


def _reject_other_syntax(data: bytes, fmt: TreasuryFormat, file: str) -> None:
    """Reject a file whose first line that is not blank starts a syntax other than the format's.

    Both recognized starts (a SWIFT field tag and `1CClientBankExchange`) are
    ASCII, so a lenient decoding finds them in a file of any of the three encodings.
    """
    text = data.decode(fmt.encoding, errors="replace").removeprefix("\ufeff")
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        kind = recognize(line)
        own = OWN_FILE.get(fmt.syntax)
        if kind is None or kind == own:
            return
        if fmt.syntax == "1c_exchange":
            message = onec.first_line_problem(line)
        else:
            message = (
                f"expected {EXPECTED_FILE[fmt.syntax]}, found {kind}; parse it with"
                f" {SYNTAX_OF_FILE[kind]} definition"
            )
        raise TreasuryFormatError(message, file=file, line=number)


def _check_line_endings(text: str, file: str) -> None:
    """Reject a carriage return without a line feed, such as CR-only line endings."""
    match = _LONE_CR.search(text)
    if match is None:
        return
    only = "\n" not in text
    found = "CR-only line endings" if only else "a carriage return without a line feed"
    raise TreasuryFormatError(
        f"the file has {found} at offset {match.start()}; expected CR LF or LF line"
        " endings, so convert the file's line endings to CR LF",
        file=file,
        line=text.count("\n", 0, match.start()) + 1,
    )


def _check_required_present(record: SourceRecord, fmt: TreasuryFormat, file: str) -> None:
    """Reject a record of an export file without a value that rendering requires.

    The parsers leave an empty value out of the record, so an empty value and a
    missing one are the same here.
    """
    for source_name in fmt.required_fields:
        if source_name in record:
            continue
        # A 1C record starts at its document section; its header values come before.
        start = record.get(onec.DOCUMENT_KEY) if fmt.syntax == "1c_exchange" else None
        lines = [value.line for value in record.values()]
        raise TreasuryFormatError(
            f"missing value; the format {fmt.id} requires {_source_word(fmt)} {source_name}"
            " in every record",
            file=file,
            line=start.line if start else min(lines, default=None),
            field=source_name,
        )


def _date_format(fmt: TreasuryFormat) -> str:
    if fmt.syntax in ("mt940", "mt942"):
        return "%Y-%m-%d"
    if fmt.syntax == "1c_exchange":
        return onec.DATE_FORMAT
    return fmt.date_format


def _separators(fmt: TreasuryFormat) -> str:
    if fmt.syntax in ("mt940", "mt942"):
        return ",." if fmt.accepts("decimal_point") else ","
    if fmt.syntax == "1c_exchange":
        return onec.separators(fmt)
    extra = "," if fmt.accepts("decimal_comma") else ""
    return fmt.decimal_separator + extra


def _to_canonical(
    source: SourceRecord, fmt: TreasuryFormat, file: str, texts: list[tuple[str, str, int]]
) -> Record:
    """Convert a source record; append each text value to `texts` with its field and line."""
    record: Record = {}
    for source_name, canonical in fmt.mapping.items():
        value = source.get(source_name)
        if value is None:
            continue
        try:
            record[canonical] = _convert(value, CANONICAL_FIELDS.get(canonical, "text"), fmt)
        except ValueFormatError as exc:
            raise TreasuryFormatError(
                f"field {source_name}: {exc}", file=file, line=value.line, field=source_name
            ) from None
        if isinstance(record[canonical], str):
            texts.append((record[canonical], source_name, value.line))
    return record


def _convert(value: Value, field_type: str, fmt: TreasuryFormat) -> str | int:
    raw = value.value
    if isinstance(raw, int):
        return raw if field_type in ("money", "signed_money") else str(raw)
    if field_type == "money":
        return parse_amount(raw, _separators(fmt))
    if field_type == "signed_money":
        amount = parse_amount(raw.removeprefix("-"), _separators(fmt))
        return -amount if raw.startswith("-") else amount
    if field_type == "date":
        return parse_date(raw, _date_format(fmt))
    return raw.strip()


def _import_advice(fmt: TreasuryFormat, found: Mojibake) -> str:
    if fmt.encoding == "cp1251" and found.written_as == "kz1048":
        return "the file is probably KZ-1048, so parse it with a KZ-1048 definition"
    return (
        "the text was misread before it was written to the file, so ask the sender for a"
        " corrected file"
    )


def _render_advice(found: Mojibake) -> str:
    return "repair the value in the records before rendering"


def _report_mojibake(
    fmt: TreasuryFormat,
    found: list[Mojibake],
    subject: str,
    advice: Callable[[Mojibake], str],
    warnings: list[Finding] | None,
    *,
    file: str,
    line: int | None = None,
    field: str,
    json_path: str | None = None,
) -> None:
    """Raise the first mojibake error, or record each misreading as a warning.

    The message is `subject` (the field or column), the misreading with its
    repair, and the advice for that misreading.

    A misreading is only a warning when the definition sets `mojibake` to
    `warning`, or when it is a guess (words that may be Ukrainian). A warning
    goes to `warnings` when the caller collects them, and to the log otherwise.
    """
    errors = [mojibake for mojibake in found if mojibake.severity == "error"]
    if errors and fmt.mojibake == "error":
        message = f"{subject}: {errors[0].describe()}; {advice(errors[0])}"
        raise TreasuryFormatError(message, file=file, line=line, field=field, json_path=json_path)
    for mojibake in found:
        finding = Finding(
            rule="treasury.mojibake",
            file=file,
            message=f"{subject}: {mojibake.describe()}; {advice(mojibake)}",
            line=line,
            json_path=json_path,
            severity="warning",
        )
        if warnings is None:
            logger.warning("%s", finding)
        else:
            warnings.append(finding)


def render_records(
    fmt: TreasuryFormat,
    records: Sequence[Record],
    file: str,
    *,
    warnings: list[Finding] | None = None,
) -> bytes:
    """Render canonical records as an export file in the format's syntax and encoding.

    Warnings, such as mojibake that the definition accepts, are appended to
    `warnings` when it is given, and logged.

    Raises:
        TreasuryFormatError: the format is not an export of a renderable syntax, a
            record has a field the mapping lacks, a value of the wrong type or no
            value for a field of `required_fields`, a text value with mojibake (unless
            the definition only warns), or a character that cannot be encoded. The
            error names the record and the field by JSON path, such as `$[0].purpose`.
    """
    if fmt.direction != "export" or fmt.syntax in ("mt940", "mt942"):
        raise TreasuryFormatError(
            f"format {fmt.id} is an {fmt.direction} format in {fmt.syntax} syntax; expected an"
            " export format in 1c_exchange, fixed_width or delimited syntax",
            file=file,
        )
    reverse: dict[str, str] = {}
    for source_name, canonical in fmt.mapping.items():
        reverse.setdefault(canonical, source_name)
    rows = [_to_source(record, index, reverse, fmt, file) for index, record in enumerate(records)]
    evidence = find_kz1048_evidence(
        (value, f"at {child_path(child_path('$', index), fmt.mapping[name])}")
        for index, row in enumerate(rows)
        for name, value in row.items()
    )
    # Values are checked one by one first, so an error names its record and field.
    for index, row in enumerate(rows):
        for source_name, value in row.items():
            canonical = fmt.mapping[source_name]
            path = child_path(child_path("$", index), canonical)
            column = f"{_source_word(fmt)} {source_name}"
            _report_mojibake(
                fmt,
                detect_mojibake(value, kz1048_elsewhere=evidence),
                column,
                _render_advice,
                warnings,
                file=file,
                field=canonical,
                json_path=path,
            )
            codec.encode_value(
                value, fmt.encoding, file, json_path=path, field=canonical, column=column
            )
    if fmt.syntax == "1c_exchange":
        order = list(fmt.mapping)
        documents = [sorted(row.items(), key=lambda item: order.index(item[0])) for row in rows]
        text = onec.render(documents, fmt)
    else:
        text = tabular.render(rows, fmt, file)
    data = codec.encode_text(text, fmt.encoding, file)
    logger.info("rendered %d record(s) with %s", len(records), fmt.id)
    return data


def _to_source(
    record: object, index: int, reverse: dict[str, str], fmt: TreasuryFormat, file: str
) -> dict[str, str]:
    record_path = child_path("$", index)
    if not isinstance(record, dict):
        raise TreasuryFormatError(
            f"expected a JSON object, found {type(record).__name__}",
            file=file,
            json_path=record_path,
        )
    row: dict[str, str] = {}
    for canonical, value in record.items():
        path = child_path(record_path, canonical)
        source_name = reverse.get(canonical)
        if source_name is None:
            raise TreasuryFormatError(
                f"the format {fmt.id} maps no source field to {canonical}; expected one of"
                f" {sorted(reverse)}",
                file=file,
                field=canonical,
                json_path=path,
            )
        try:
            row[source_name] = _format_value(value, CANONICAL_FIELDS.get(canonical, "text"), fmt)
        except ValueFormatError as exc:
            raise TreasuryFormatError(
                f"{exc} ({_source_word(fmt)} {source_name})",
                file=file,
                field=canonical,
                json_path=path,
            ) from None
    for source_name in fmt.required_fields:
        if not row.get(source_name):
            canonical = fmt.mapping.get(source_name, source_name)
            raise TreasuryFormatError(
                f"missing value; the format {fmt.id} requires {_source_word(fmt)} {source_name}"
                " in every record",
                file=file,
                field=canonical,
                json_path=child_path(record_path, canonical),
            )
    return row


def _source_word(fmt: TreasuryFormat) -> str:
    return "key" if fmt.syntax == "1c_exchange" else "column"


def _format_value(value: object, field_type: str, fmt: TreasuryFormat) -> str:
    separator = "." if fmt.syntax == "1c_exchange" else fmt.decimal_separator
    if field_type in ("money", "signed_money"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueFormatError(f"expected an integer amount in minor units, found {value!r}")
        if field_type == "signed_money" and value < 0:
            return "-" + format_amount(-value, separator)
        return format_amount(value, separator)
    if not isinstance(value, str):
        raise ValueFormatError(f"expected a string, found {value!r}")
    _check_one_line(value)
    if field_type == "date":
        return format_date(value, _date_format(fmt))
    return value


def _check_one_line(value: str) -> None:
    """Reject a text value that cannot be written as it is on one line of an export."""
    index = codec.find_not_in_text(value)
    if index is not None:
        raise ValueFormatError(
            f"character {codec.describe_char(value[index])} at offset {index} in {value!r};"
            " expected one line of printable text without control, format or separator"
            " characters"
        )
    if value != value.strip():
        raise ValueFormatError(
            f"leading or trailing whitespace in {value!r}; parsing strips it, so strip the"
            " value before rendering"
        )
