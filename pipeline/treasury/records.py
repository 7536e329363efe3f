"""Canonical statement and document records, the shape every treasury format maps to.

A record is a flat JSON object. Every field has one canonical type, whatever
the syntax it came from:

- `money`: an integer number of minor units (tiyn for KZT), so 45000,00 is 4500000;
- `signed_money`: the same, negative for a debit balance;
- `date`: an ISO 8601 date string, `YYYY-MM-DD`;
- `text`: a string without leading or trailing whitespace.
"""

from __future__ import annotations

import datetime
import re
from typing import Literal

FieldType = Literal["money", "signed_money", "date", "text"]

CANONICAL_FIELDS: dict[str, FieldType] = {
    # statement header
    "statement_reference": "text",
    "statement_number": "text",
    "iban": "text",
    "currency": "text",
    "period_start": "date",
    "period_end": "date",
    "opening_balance": "signed_money",
    "closing_balance": "signed_money",
    # one transaction or document
    "document_kind": "text",
    "doc_number": "text",
    "doc_date": "date",
    "entry_date": "date",
    "operation_date": "date",
    "debit_credit": "text",
    "amount": "money",
    "credit_amount": "money",
    "debit_amount": "money",
    "transaction_type": "text",
    "bank_reference": "text",
    "details": "text",
    "payer_name": "text",
    "payer_bin": "text",
    "payer_iban": "text",
    "payer_kbe": "text",
    "payer_bank_name": "text",
    "payer_bank_bic": "text",
    "payee_name": "text",
    "payee_bin": "text",
    "payee_iban": "text",
    "payee_kbe": "text",
    "payee_bank_name": "text",
    "payee_bank_bic": "text",
    "knp_code": "text",
    "kbe": "text",
    "kbk_code": "text",
    "purpose": "text",
    "priority": "text",
}

MINOR_UNITS = 100
_AMOUNT = re.compile(r"^(?P<units>\d+)(?:(?P<separator>[.,])(?P<fraction>\d{0,2}))?$")


class ValueFormatError(ValueError):
    """A source value does not have the form its canonical type needs."""


_SEPARATOR_NAMES = {",": "comma", ".": "point"}


def expected_amount(separators: str) -> str:
    """Describe the amounts that `separators` allow, for error messages.

    For `","` the description is `an amount with a decimal comma, such as 45000,00`.
    """
    names = " or ".join(_SEPARATOR_NAMES[s] for s in separators)
    examples = " or ".join(f"45000{s}00" for s in separators)
    return f"an amount with a decimal {names}, such as {examples}"


def parse_amount(text: str, separators: str) -> int:
    """Return the minor units of an unsigned amount such as `45000,00` or `6800,`.

    `separators` lists the decimal separators the format accepts (`","`, `"."` or both).

    Raises:
        ValueFormatError: the text is not an amount with at most two decimals, or it
            uses a separator outside `separators`; the message names the separators
            expected and the one found.
    """
    match = _AMOUNT.match(text)
    if match is None:
        raise ValueFormatError(f"expected {expected_amount(separators)}, found {text!r}")
    separator = match.group("separator")
    if separator and separator not in separators:
        raise ValueFormatError(
            f"expected {expected_amount(separators)}, found {text!r} with a decimal"
            f" {_SEPARATOR_NAMES[separator]}"
        )
    fraction = (match.group("fraction") or "").ljust(2, "0")
    return int(match.group("units")) * MINOR_UNITS + int(fraction)


def format_amount(minor: int, separator: str) -> str:
    """Return minor units as an amount with two decimals, such as `45000.00`."""
    if minor < 0:
        raise ValueFormatError(f"expected an amount of zero or more, found {minor}")
    units, fraction = divmod(minor, MINOR_UNITS)
    return f"{units}{separator}{fraction:02d}"


def parse_date(text: str, pattern: str) -> str:
    """Return the ISO date of `text` read with a `strptime` pattern such as `%d.%m.%Y`."""
    try:
        return datetime.datetime.strptime(text, pattern).date().isoformat()
    except ValueError:
        raise ValueFormatError(f"expected a date in the form {pattern}, found {text!r}") from None


def format_date(iso: str, pattern: str) -> str:
    """Return an ISO date written with a `strftime` pattern."""
    try:
        return datetime.date.fromisoformat(iso).strftime(pattern)
    except ValueError:
        raise ValueFormatError(f"expected an ISO date YYYY-MM-DD, found {iso!r}") from None
