"""1CClientBankExchange files, in the Russian variant and the Kazakh variant.

The file starts with the line `1CClientBankExchange`, then `KEY=VALUE` header
lines, account sections (`СекцияРасчСчет` ... `КонецРасчСчет`), document
sections (`СекцияДокумент=KIND` ... `КонецДокумента`) and the line
`КонецФайла`. The Kazakh variant names its keys for Kazakhstan's banking
details (ПлательщикИИК, ПлательщикБИН_ИИН, ПлательщикКБЕ, СуммаПриход, ...);
the syntax is the same.

A record is one document section. A mapping key is looked up in the document,
then in its account section, then in the header, so `РасчСчет` or
`ДатаНачала` can be mapped as well. The key `СекцияДокумент` is the document
kind. An empty value (`Код=`) counts as absent.

With one account section every document belongs to it. With several, a
document belongs to the account whose `РасчСчет` equals the document's payer
or payee account (`ПлательщикСчет`, `ПолучательСчет`, or `ПлательщикИИК`,
`ПолучательИИК` in the Kazakh variant); a document that matches none or
several is an error. A key repeated in one section, a section opened before
the previous one is closed, and a document without any key that the mapping
reads as an amount are errors naming the line and key. So is a document with
a non-zero debit amount and a non-zero credit amount (`СуммаРасход` and
`СуммаПриход` in the Kazakh variant), because a document moves money one way,
and a document whose amounts are all zero. A tab in a line is an error too,
because an export cannot write one, so a value with a tab would not survive
a round trip.

The definition lists the accepted `ВерсияФормата` values and `Кодировка`
labels. Deviations it may accept: `section_name_case` (section markers in
another letter case), `decimal_comma` (108159,12 for 108159.12),
`missing_final_newline`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.treasury.codec import find_control
from pipeline.treasury.model import TreasuryFormat, TreasuryFormatError
from pipeline.treasury.records import CANONICAL_FIELDS, ValueFormatError, parse_amount
from pipeline.treasury.source import (
    ONEC_FILE,
    ONEC_FIRST_LINE,
    SYNTAX_OF_FILE,
    SourceRecord,
    Value,
    recognize,
    split_lines,
)

FIRST_LINE = ONEC_FIRST_LINE
DATE_FORMAT = "%d.%m.%Y"
DOCUMENT_KEY = "СекцияДокумент"
_ACCOUNT_START = "СекцияРасчСчет"
_ACCOUNT_END = "КонецРасчСчет"
_DOCUMENT_END = "КонецДокумента"
_FILE_END = "КонецФайла"
_ACCOUNT_KEY = "РасчСчет"
# Keys of a document that name the payer's and the payee's account.
_DOCUMENT_ACCOUNT_KEYS = ("ПлательщикСчет", "ПолучательСчет", "ПлательщикИИК", "ПолучательИИК")


def separators(fmt: TreasuryFormat) -> str:
    """Return the decimal separators that amounts of this format may use."""
    return ".," if fmt.accepts("decimal_comma") else "."


def parse(text: str, fmt: TreasuryFormat, file: str) -> list[SourceRecord]:
    """Parse decoded 1CClientBankExchange text into one source record per document.

    Raises:
        TreasuryFormatError: the text breaks the syntax, or its version or encoding
            label is not one the definition accepts; the message names the line and key.
    """
    lines = split_lines(text)
    if text and not text.endswith("\n") and not fmt.accepts("missing_final_newline"):
        raise TreasuryFormatError(
            "the file does not end with a line break; expected CR LF after КонецФайла",
            file=file,
            line=len(lines),
        )
    if not lines or _marker(lines[0], fmt) != _key(FIRST_LINE, fmt):
        found = lines[0] if lines else ""
        raise TreasuryFormatError(first_line_problem(found), file=file, line=1)
    header: SourceRecord = {}
    accounts: list[SourceRecord] = []
    documents: list[SourceRecord] = []
    section: SourceRecord | None = None
    seen: dict[str, int] = {}  # the line of each key of the current section or header
    header_seen: dict[str, int] = {}
    ended = False
    for number, line in enumerate(lines[1:], start=2):
        _check_line(line, number, file)
        if not line.strip():
            continue
        if ended:
            raise TreasuryFormatError(
                f"expected nothing after {_FILE_END}, found {line!r}", file=file, line=number
            )
        key, _, value = line.partition("=")
        marker = _marker(key, fmt)
        _check_case(key.strip(), fmt, file, number)
        if marker == _key(_FILE_END, fmt):
            if section is not None:
                raise _unclosed(section, file, number, _FILE_END)
            ended = True
        elif marker in (_key(_ACCOUNT_START, fmt), _key(DOCUMENT_KEY, fmt)):
            if section is not None:
                raise _unclosed(section, file, number, key.strip())
            if marker == _key(DOCUMENT_KEY, fmt):
                section = {DOCUMENT_KEY: Value(value.strip(), number)}
                documents.append(section)
            else:
                section = {}
                accounts.append(section)
            seen = {DOCUMENT_KEY: number}
        elif marker in (_key(_ACCOUNT_END, fmt), _key(_DOCUMENT_END, fmt)):
            section = None
        elif "=" not in line:
            raise TreasuryFormatError(
                f"expected KEY=VALUE or a section marker, found {line!r}", file=file, line=number
            )
        else:
            name = key.strip()
            lines_of_keys = header_seen if section is None else seen
            if name in lines_of_keys:
                raise TreasuryFormatError(
                    f"key {name} repeated; it was first given on line {lines_of_keys[name]}, and"
                    " a section may give each key once",
                    file=file,
                    line=number,
                    field=name,
                )
            lines_of_keys[name] = number
            if value.strip():
                target = header if section is None else section
                target[name] = Value(value.strip(), number)
    if not ended:
        raise TreasuryFormatError(
            f"missing the last line {_FILE_END!r}; the file may be cut short",
            file=file,
            line=len(lines),
        )
    _check_header(header, fmt, file)
    for document in documents:
        _check_amount(document, fmt, file)
        _check_debit_or_credit(document, fmt, file)
        _check_not_all_zero(document, fmt, file)
    return [
        {**header, **_account_of(document, accounts, file), **document} for document in documents
    ]


def first_line_problem(found: str) -> str:
    """Return the message for a file whose first line is `found` instead of the 1C start."""
    message = f"expected the first line {FIRST_LINE!r}, found {found!r}"
    kind = recognize(found)
    if kind is not None and kind != ONEC_FILE:
        message += f", the start of {kind}; parse it with {SYNTAX_OF_FILE[kind]} definition"
    return message


def _check_amount(document: SourceRecord, fmt: TreasuryFormat, file: str) -> None:
    amount_keys = [
        source
        for source, canonical in fmt.mapping.items()
        if CANONICAL_FIELDS.get(canonical) in ("money", "signed_money")
    ]
    if amount_keys and not any(key in document for key in amount_keys):
        raise TreasuryFormatError(
            f"the document has no amount; expected one of the keys {amount_keys}",
            file=file,
            line=document[DOCUMENT_KEY].line,
            field=amount_keys[0],
        )


def _check_debit_or_credit(document: SourceRecord, fmt: TreasuryFormat, file: str) -> None:
    """Reject a document with a non-zero debit amount and a non-zero credit amount."""
    debit = _nonzero_amount(document, fmt, "debit_amount")
    credit = _nonzero_amount(document, fmt, "credit_amount")
    if debit is None or credit is None:
        return
    debit_key, debit_value = debit
    credit_key, credit_value = credit
    raise TreasuryFormatError(
        f"the document has both a debit amount ({debit_key}={debit_value.value} on line"
        f" {debit_value.line}) and a credit amount ({credit_key}={credit_value.value} on line"
        f" {credit_value.line}); expected one of them, because a document is either a debit"
        " or a credit",
        file=file,
        line=document[DOCUMENT_KEY].line,
        field=debit_key,
    )


def _check_not_all_zero(document: SourceRecord, fmt: TreasuryFormat, file: str) -> None:
    """Reject a document whose amounts are all zero, such as СуммаРасход=0 and СуммаПриход=0.

    A malformed amount counts as non-zero here, because converting it to the
    canonical record reports it with its own message.
    """
    amounts = []
    for key, canonical in fmt.mapping.items():
        value = document.get(key)
        if value is None or CANONICAL_FIELDS.get(canonical) not in ("money", "signed_money"):
            continue
        if isinstance(value.value, int):
            return
        try:
            if parse_amount(value.value.removeprefix("-"), separators(fmt)) != 0:
                return
        except ValueFormatError:
            return
        amounts.append((key, value))
    if not amounts:
        return  # _check_amount reports a document without an amount.
    amounts.sort(key=lambda item: item[1].line)
    found = ", ".join(f"{key}={value.value} on line {value.line}" for key, value in amounts)
    raise TreasuryFormatError(
        f"the document has only zero amounts ({found}); expected a non-zero debit or credit"
        " amount, because a document moves money",
        file=file,
        line=document[DOCUMENT_KEY].line,
        field=amounts[0][0],
    )


def _nonzero_amount(
    document: SourceRecord, fmt: TreasuryFormat, canonical: str
) -> tuple[str, Value] | None:
    """Return the key and value of the document's non-zero amount mapped to `canonical`.

    A malformed amount counts as absent here, because converting it to the
    canonical record reports it with its own message.
    """
    for key, name in fmt.mapping.items():
        value = document.get(key)
        if name != canonical or value is None or isinstance(value.value, int):
            continue
        try:
            if parse_amount(value.value, separators(fmt)) != 0:
                return key, value
        except ValueFormatError:
            continue
    return None


def _account_of(document: SourceRecord, accounts: list[SourceRecord], file: str) -> SourceRecord:
    if len(accounts) <= 1:
        return accounts[0] if accounts else {}
    own = {document[key].value for key in _DOCUMENT_ACCOUNT_KEYS if key in document}
    matching = [a for a in accounts if _ACCOUNT_KEY in a and a[_ACCOUNT_KEY].value in own]
    if len(matching) == 1:
        return matching[0]
    listed = [a[_ACCOUNT_KEY].value for a in accounts if _ACCOUNT_KEY in a]
    found = "none of them" if not matching else "several of them"
    raise TreasuryFormatError(
        f"the file has {len(accounts)} account sections {listed}, and the document's payer"
        f" and payee accounts {sorted(map(str, own))} match {found}; expected"
        f" one of {list(_DOCUMENT_ACCOUNT_KEYS)} equal to the {_ACCOUNT_KEY} of one section",
        file=file,
        line=document[DOCUMENT_KEY].line,
        field=_ACCOUNT_KEY,
    )


def _marker(text: str, fmt: TreasuryFormat) -> str:
    text = text.strip()
    return text.casefold() if fmt.accepts("section_name_case") else text


def _key(marker: str, fmt: TreasuryFormat) -> str:
    return marker.casefold() if fmt.accepts("section_name_case") else marker


def _check_case(key: str, fmt: TreasuryFormat, file: str, line: int) -> None:
    markers = (_ACCOUNT_START, _ACCOUNT_END, DOCUMENT_KEY, _DOCUMENT_END, _FILE_END)
    if fmt.accepts("section_name_case") or key in markers:
        return
    for marker in markers:
        if key.casefold() == marker.casefold():
            raise TreasuryFormatError(
                f"section marker {key!r} differs from {marker!r} in letter case; the"
                " definition accepts the exact case only (add section_name_case to its"
                " accepted deviations if the bank sends it so)",
                file=file,
                line=line,
                field=marker,
            )


def _check_line(line: str, number: int, file: str) -> None:
    tab = line.find("\t")
    if tab >= 0:
        key = line.partition("=")[0]
        raise TreasuryFormatError(
            f"key {key}: tab (U+0009) at column {tab + 1}; expected a value without tabs,"
            " which exports reject as well",
            file=file,
            line=number,
            field=key,
        )
    control = find_control(line)
    if control is not None:
        key = line.partition("=")[0]
        raise TreasuryFormatError(
            f"key {key}: control byte U+{ord(control.group()):04X} at column"
            f" {control.start() + 1}; expected text only",
            file=file,
            line=number,
            field=key,
        )


def _unclosed(
    section: Mapping[str, Value], file: str, line: int, found: str
) -> TreasuryFormatError:
    kind = "document" if DOCUMENT_KEY in section else "account"
    end = _DOCUMENT_END if DOCUMENT_KEY in section else _ACCOUNT_END
    opened = f" opened on line {section[DOCUMENT_KEY].line}" if DOCUMENT_KEY in section else ""
    return TreasuryFormatError(
        f"the {kind} section{opened} is not closed; expected {end!r} before {found!r}",
        file=file,
        line=line,
        field=end,
    )


def _check_header(header: SourceRecord, fmt: TreasuryFormat, file: str) -> None:
    _check_allowed(header, "ВерсияФормата", fmt.versions or (fmt.version,), file)
    _check_allowed(header, "Кодировка", fmt.encoding_labels, file)


def _check_allowed(header: SourceRecord, key: str, allowed: Sequence[str], file: str) -> None:
    value = header.get(key)
    if value is None:
        raise TreasuryFormatError(
            f"missing header key {key}; expected one of {list(allowed)}", file=file, field=key
        )
    if value.value not in allowed:
        raise TreasuryFormatError(
            f"key {key}: expected one of {list(allowed)}, found {value.value!r};"
            " add the value to the definition's accepts if this bank's files are otherwise"
            " the same",
            file=file,
            line=value.line,
            field=key,
        )


def render(documents: Sequence[Sequence[tuple[str, str]]], fmt: TreasuryFormat) -> str:
    """Return 1CClientBankExchange text with one document section per record.

    Each document is a sequence of (key, value) pairs in file order; the key
    `СекцияДокумент` gives the section's document kind.
    """
    label = fmt.encoding_labels[0] if fmt.encoding_labels else "Windows"
    lines = [FIRST_LINE, f"ВерсияФормата={fmt.version}", f"Кодировка={label}"]
    for document in documents:
        values = dict(document)
        lines.append(f"{DOCUMENT_KEY}={values.get(DOCUMENT_KEY, '')}")
        lines += [f"{key}={value}" for key, value in document if key != DOCUMENT_KEY]
        lines.append(_DOCUMENT_END)
    lines.append(_FILE_END)
    return fmt.line_ending.join(lines) + fmt.line_ending
