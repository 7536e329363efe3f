"""SWIFT MT940 (customer statement) and MT942 (interim report) files.

A file contains one or more messages; a message ends with a line `-`. Each field
starts with a tag such as `:20:` at the start of a line, and lines that start
without a tag continue the field above. `:20:` starts a statement, `:61:` a
transaction, and the `:86:` right after a `:61:` belongs to that transaction.

Source field names, as the format mapping uses them:

- a statement tag: `:20:`, `:21:`, `:25:`, `:28C:`, `:28:`, `:13D:`;
- a balance tag (`:60F:`, `:60M:`, `:62F:`, `:62M:`, `:64:`, `:65:`) is the
  signed amount; `:60F:/mark`, `/date`, `/currency`, `/amount` are its parts;
- `:61:/value_date`, `/entry_date`, `/mark`, `/funds_code`, `/amount`, `/type`,
  `/reference`, `/bank_reference`, `/details` and `/currency` (of the
  statement's opening balance, or `:34F:` in MT942);
- `:86:` is the whole information text, its wrapped lines joined (a space
  after a line shorter than 65 characters); `:86:/KNP/` is the value after the
  code `/KNP/` up to the next `/CODE/`.

Each statement is checked before its fields are read:

1. it belongs to the definition's syntax: an MT940 statement has no MT942
   field (`:34F:`, `:13D:`, `:90D:`, `:90C:`) and an MT942 interim report no
   balance (`:60F:`, `:62F:`, ...);
2. it has every tag of the definition's `required_tags`, where an entry with
   alternatives such as `:60F:` or `:60M:` needs one of them. A missing tag
   is an error naming the line where the statement starts.

Deviations a definition may accept (strict parsing rejects each one):
`missing_final_newline`, `message_wrappers` (SOH and ETX bytes around a
message), `header_lines` (text before the first tag and after `-`, such as a
bank's envelope), `missing_statement_reference` (a message without `:20:`
continues the statement before it), `decimal_point` (45000.00 for 45000,00).
With `missing_statement_reference`, a message without `:20:` at the start of
the file continues a statement that began before the file, so the tags that
come before the first `:61:` (`:20:`, `:25:`, `:28C:`, the opening balance,
...) are not required of it; the ones after it, such as `:62F:`, still are.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from pipeline.treasury.codec import find_control
from pipeline.treasury.model import TreasuryFormat, TreasuryFormatError
from pipeline.treasury.records import ValueFormatError, expected_amount, parse_amount
from pipeline.treasury.source import SourceRecord, Value, split_lines

_TAG = re.compile(r"^:(?P<tag>\d{2}[A-Z]?):(?P<rest>.*)$")
_TRAILER = re.compile(r"^-(?P<rest>.*)$")
_BALANCE = re.compile(
    r"^(?P<mark>[DC])(?P<date>\d{6})(?P<currency>[A-Z]{3})(?P<amount>\d[\d,.]*)$"
)
_STATEMENT_LINE = re.compile(
    r"^(?P<value_date>\d{6})(?P<entry_date>\d{4})?(?P<mark>R?[DC])(?P<funds_code>[A-Z])?"
    r"(?P<amount>\d[\d,.]{0,14})(?P<type>[A-Z][A-Z0-9 ]{3})"
    r"(?P<reference>(?:(?!//).){0,16})(?://(?P<bank_reference>.{0,23}))?$"
)
_SUBFIELD = re.compile(r"/([A-Z]{2,4})/")
_BALANCE_TAGS = frozenset(["60F", "60M", "62F", "62M", "64", "65"])
# Fields that only one of the two syntaxes has.
# NOTE: an MT940 file with :90D: or :90C: totals is rejected as MT942. None of the
# real statement files has them, and no deviation accepts them yet.
_MT940_ONLY = frozenset(["60F", "60M", "62F", "62M", "64", "65"])
_MT942_ONLY = frozenset(["34F", "13D", "90D", "90C"])
# Fields that come before the first :61: of a statement.
_HEADER_TAGS = frozenset(["20", "21", "25", "28C", "28", "60F", "60M", "34F", "13D"])
# The SWIFT names of the fields, for messages.
_TAG_NAMES = {
    "20": "transaction reference",
    "21": "related reference",
    "25": "account identification",
    "28C": "statement number",
    "28": "statement number",
    "60F": "opening balance",
    "60M": "opening balance",
    "61": "statement line",
    "62F": "closing balance",
    "62M": "closing balance",
    "64": "closing available balance",
    "65": "forward available balance",
    "86": "information to account owner",
    "34F": "floor limit indicator",
    "13D": "date and time indication",
    "90D": "number and sum of debit entries",
    "90C": "number and sum of credit entries",
}
_WRAPPERS = "\x01\x03"
# The width of each line of a field such as :86: (SWIFT 6*65x).
_LINE_WIDTH = 65


@dataclass
class _Field:
    tag: str
    line: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class _StatementFields:
    """The fields of one statement, split by the messages they came in.

    `start` is the line of its first field; `continued` is true for a
    statement that began before the file (see the module docstring).
    """

    start: int
    continued: bool = False
    segments: list[list[_Field]] = field(default_factory=list)

    def first(self, tags: Collection[str]) -> _Field | None:
        """Return the first field, in file order, with one of `tags`."""
        for segment in self.segments:
            for item in segment:
                if item.tag in tags:
                    return item
        return None


@dataclass
class _Statement:
    values: SourceRecord = field(default_factory=dict)
    transactions: list[SourceRecord] = field(default_factory=list)


def parse(text: str, fmt: TreasuryFormat, file: str) -> list[SourceRecord]:
    """Parse decoded MT940 or MT942 text into one source record per transaction.

    Raises:
        TreasuryFormatError: the text breaks the syntax in a way the definition does
            not accept; the message names the line and the field.
    """
    lines = split_lines(text)
    if text and not text.endswith("\n") and not fmt.accepts("missing_final_newline"):
        last_tag = _TAG.match(lines[-1])
        raise TreasuryFormatError(
            "the file does not end with a line break; expected the last line to end with"
            " CR LF or LF",
            file=file,
            line=len(lines),
            field=f":{last_tag['tag']}:" if last_tag else None,
        )
    messages = _split_messages(lines, fmt, file)
    if not messages:
        problem = "the file is empty" if not text.strip() else "the file has no field tags"
        raise TreasuryFormatError(
            f"no statement found: {problem}; expected at least one message with fields such as"
            " :20: and :61:",
            file=file,
        )
    grouped = _group_statements(messages, fmt, file)
    for fields in grouped:
        _check_syntax(fields, fmt, file)
        _check_required(fields, fmt, file)
    statements = [_read_statement(fields, fmt, file) for fields in grouped]
    records: list[SourceRecord] = []
    for statement in statements:
        _set_currency(statement)
        for transaction in statement.transactions:
            records.append({**statement.values, **transaction})
    return records


def _split_messages(lines: list[str], fmt: TreasuryFormat, file: str) -> list[list[_Field]]:
    messages: list[list[_Field]] = []
    current: list[_Field] = []
    for number, raw in enumerate(lines, start=1):
        line = raw
        if fmt.accepts("message_wrappers"):
            line = line.strip(_WRAPPERS)
        control = find_control(line)
        if control is not None:
            own_tag = _TAG.match(line)
            tag = None
            if own_tag:
                tag = own_tag["tag"]
            elif current:
                tag = current[-1].tag
            where = f" in field :{tag}:" if tag else ""
            raise TreasuryFormatError(
                f"control byte U+{ord(control.group()):04X} at column {control.start() + 1}"
                f"{where}; expected text only",
                file=file,
                line=number,
                field=f":{tag}:" if tag else None,
            )
        if not line.strip():
            continue
        tag_match = _TAG.match(line)
        if tag_match:
            current.append(_Field(tag_match["tag"], number, [tag_match["rest"]]))
            continue
        trailer = _TRAILER.match(line)
        if trailer and (not trailer["rest"] or fmt.accepts("header_lines")):
            messages.append(current)
            current = []
            continue
        if current:
            current[-1].lines.append(line)
            continue
        if not fmt.accepts("header_lines"):
            raise TreasuryFormatError(
                f"expected a field tag such as :20: at the start of the message, found {line!r}",
                file=file,
                line=number,
            )
    if current:
        messages.append(current)
    return [m for m in messages if m]


def _group_statements(
    messages: list[list[_Field]], fmt: TreasuryFormat, file: str
) -> list[_StatementFields]:
    """Split the messages into statements: each `:20:` starts one."""
    statements: list[_StatementFields] = []
    for message in messages:
        if message[0].tag != "20":
            if not fmt.accepts("missing_statement_reference"):
                raise TreasuryFormatError(
                    f"missing field :20: (transaction reference); expected the message to start"
                    f" with :20:, found :{message[0].tag}:",
                    file=file,
                    line=message[0].line,
                    field=":20:",
                )
            if not statements:
                statements.append(_StatementFields(message[0].line, continued=True))
            statements[-1].segments.append([])
        for item in message:
            if item.tag == "20":
                statements.append(_StatementFields(item.line, segments=[[]]))
            statements[-1].segments[-1].append(item)
    return statements


_DOCUMENTS = {
    "mt940": ("MT940", "an MT940 statement", ":60F: opening balance"),
    "mt942": ("MT942", "an MT942 interim report", ":34F: floor limit indicator"),
}


def _check_syntax(fields: _StatementFields, fmt: TreasuryFormat, file: str) -> None:
    """Reject an MT942 interim report given to an MT940 definition, and the reverse."""
    own_tags, other_tags = _MT940_ONLY, _MT942_ONLY
    other_syntax = "mt942"
    if fmt.syntax == "mt942":
        own_tags, other_tags = _MT942_ONLY, _MT940_ONLY
        other_syntax = "mt940"
    found = fields.first(other_tags)
    if found is None:
        return
    name, document, marker = _DOCUMENTS[fmt.syntax]
    other_name, other_document, _ = _DOCUMENTS[other_syntax]
    own = fields.first(own_tags)
    evidence = f":{found.tag}: {_TAG_NAMES[found.tag]} on line {found.line}"
    if own is None:
        message = (
            f"expected {document} ({marker}), found {other_document} ({evidence});"
            f" parse the file with an {other_name} definition"
        )
    else:
        message = (
            f"expected {document} ({marker}) without {other_name} fields, found the"
            f" {other_name} field {evidence} beside the {name} field :{own.tag}:"
            f" on line {own.line}"
        )
    raise TreasuryFormatError(message, file=file, line=found.line, field=f":{found.tag}:")


def _check_required(fields: _StatementFields, fmt: TreasuryFormat, file: str) -> None:
    present = {f":{item.tag}:" for segment in fields.segments for item in segment}
    for alternatives in fmt.required_tags:
        if present.intersection(alternatives):
            continue
        if fields.continued and all(tag.strip(":") in _HEADER_TAGS for tag in alternatives):
            continue
        name = _TAG_NAMES.get(alternatives[0].strip(":"), "field")
        required = [" or ".join(a) for a in fmt.required_tags]
        listed = ", ".join(required[:-1]) + " and " + required[-1]
        if len(required) == 1:
            listed = required[0]
        document = _DOCUMENTS[fmt.syntax][1].removeprefix("an ")
        raise TreasuryFormatError(
            f"missing field {' or '.join(alternatives)} ({name}) in the statement starting on"
            f" this line; the format requires {listed} in every {document}",
            file=file,
            line=fields.start,
            field=alternatives[0],
        )


def _read_statement(fields: _StatementFields, fmt: TreasuryFormat, file: str) -> _Statement:
    statement = _Statement()
    for segment in fields.segments:
        # A :86: belongs to the :61: right before it in the same message.
        last_tag = ""
        for item in segment:
            if item.tag == "61":
                statement.transactions.append(_statement_line(item, statement, fmt, file))
            elif item.tag == "86" and last_tag == "61":
                statement.transactions[-1].update(_information(item))
            elif item.tag in _BALANCE_TAGS:
                statement.values.update(_balance(item, fmt, file))
            elif item.tag == "34F":
                statement.values[":34F:"] = Value(item.text, item.line)
                statement.values.setdefault(":34F:/currency", Value(item.text[:3], item.line))
            elif item.tag != "86":
                statement.values[f":{item.tag}:"] = Value(item.text, item.line)
            last_tag = item.tag
    return statement


def _set_currency(statement: _Statement) -> None:
    currency = statement.values.get(":60F:/currency") or statement.values.get(":60M:/currency")
    currency = currency or statement.values.get(":34F:/currency")
    if currency is None:
        return
    for transaction in statement.transactions:
        transaction.setdefault(":61:/currency", currency)


def _amount(text: str, fmt: TreasuryFormat, file: str, line: int, name: str) -> int:
    separators = ",." if fmt.accepts("decimal_point") else ","
    # A SWIFT amount always has its decimal comma, even without decimals (6800,).
    if "," not in text and "." not in text:
        raise TreasuryFormatError(
            f"field {name}: expected {expected_amount(separators)}, found {text!r}",
            file=file,
            line=line,
            field=name,
        )
    try:
        return parse_amount(text, separators)
    except ValueFormatError as exc:
        raise TreasuryFormatError(
            f"field {name}: {exc}", file=file, line=line, field=name
        ) from None


def _date(text: str, file: str, line: int, name: str) -> str:
    # NOTE: `%y` reads 00-68 as 20xx and 69-99 as 19xx, as Python's strptime does.
    try:
        return datetime.datetime.strptime(text, "%y%m%d").date().isoformat()
    except ValueError:
        raise TreasuryFormatError(
            f"field {name}: expected a date YYMMDD, found {text!r}",
            file=file,
            line=line,
            field=name,
        ) from None


def _balance(item: _Field, fmt: TreasuryFormat, file: str) -> SourceRecord:
    name = f":{item.tag}:"
    match = _BALANCE.match(item.text)
    if match is None:
        raise TreasuryFormatError(
            f"field {name}: expected a balance such as C261130KZT1250000,00, found {item.text!r}",
            file=file,
            line=item.line,
            field=name,
        )
    amount = _amount(match["amount"], fmt, file, item.line, f"{name}/amount")
    return {
        name: Value(-amount if match["mark"] == "D" else amount, item.line),
        f"{name}/mark": Value(match["mark"], item.line),
        f"{name}/date": Value(_date(match["date"], file, item.line, f"{name}/date"), item.line),
        f"{name}/currency": Value(match["currency"], item.line),
        f"{name}/amount": Value(amount, item.line),
    }


def _statement_line(
    item: _Field, statement: _Statement, fmt: TreasuryFormat, file: str
) -> SourceRecord:
    first, *details = item.lines
    match = _STATEMENT_LINE.match(first)
    if match is None:
        raise TreasuryFormatError(
            "field :61: (statement line): expected value date YYMMDD, optional entry date"
            " MMDD, mark D, C, RD or RC, amount, transaction type and reference, such as"
            f" 2612011201D45000,00NTRFPP-1482, found {first!r}",
            file=file,
            line=item.line,
            field=":61:",
        )
    line = item.line
    value_date = _date(match["value_date"], file, line, ":61:/value_date")
    record = {
        ":61:/value_date": Value(value_date, line),
        ":61:/mark": Value(match["mark"], line),
        ":61:/amount": Value(_amount(match["amount"], fmt, file, line, ":61:/amount"), line),
        ":61:/type": Value(match["type"], line),
        ":61:/reference": Value(match["reference"], line),
    }
    if match["entry_date"]:
        entry = _entry_date(value_date, match["entry_date"], file, line)
        record[":61:/entry_date"] = Value(entry, line)
    if match["funds_code"]:
        record[":61:/funds_code"] = Value(match["funds_code"], line)
    if match["bank_reference"] is not None:
        record[":61:/bank_reference"] = Value(match["bank_reference"], line)
    if details:
        record[":61:/details"] = Value("\n".join(details), line + 1)
    return record


def _entry_date(value_date: str, month_day: str, file: str, line: int) -> str:
    value = datetime.date.fromisoformat(value_date)
    year = value.year
    month = int(month_day[:2])
    # The entry date has no year: take the value date's, moved across New Year
    # when the two dates fall on either side of it.
    if month - value.month > 6:
        year -= 1
    elif value.month - month > 6:
        year += 1
    try:
        return datetime.date(year, month, int(month_day[2:])).isoformat()
    except ValueError:
        raise TreasuryFormatError(
            f"field :61:/entry_date: expected a date MMDD, found {month_day!r}",
            file=file,
            line=line,
            field=":61:/entry_date",
        ) from None


def _unwrap(lines: list[str]) -> str:
    """Join the lines of a wrapped field into one text.

    Banks wrap at the field's width of 65 characters, often inside a word, so
    a full-width line continues without a space. A shorter line was ended
    early, at a word boundary, so a space joins it to the next line.
    """
    joined = lines[0]
    for previous, line in itertools.pairwise(lines):
        full = len(previous) >= _LINE_WIDTH
        at_space = previous.endswith(" ") or line.startswith(" ")
        joined += line if full or at_space else " " + line
    return joined


def _information(item: _Field) -> SourceRecord:
    joined = _unwrap(item.lines)
    record = {":86:": Value(joined, item.line)}
    parts = _SUBFIELD.split(joined)
    for index in range(1, len(parts) - 1, 2):
        code, value = parts[index], parts[index + 1]
        record.setdefault(f":86:/{code}/", Value(value, item.line))
    return record
