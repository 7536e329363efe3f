"""Source values as the syntax parsers return them, and recognition of a file's syntax."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Value:
    """One source field value and the 1-based line of the file it came from.

    Parsers that know the field's type return amounts as minor units (int) and
    dates as ISO strings; other values are the text of the file.
    """

    value: str | int
    line: int


SourceRecord = dict[str, Value]


def split_lines(text: str) -> list[str]:
    """Split decoded text into lines, accepting LF and CR LF line endings."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


# The first line of an MT940 or MT942 file: a field tag, after an optional SOH byte.
_SWIFT_START = re.compile(r"^\x01?:\d{2}[A-Z]?:")
ONEC_FIRST_LINE = "1CClientBankExchange"
SWIFT_FILE = "an MT940 or MT942 file"
ONEC_FILE = "a 1CClientBankExchange file"
# The definition syntax that reads each kind of file.
SYNTAX_OF_FILE = {SWIFT_FILE: "an MT940 or MT942", ONEC_FILE: "a 1c_exchange"}
# The file a definition of each syntax reads, for messages, and the kind of
# file `recognize` names for it.
EXPECTED_FILE = {
    "mt940": "an MT940 file",
    "mt942": "an MT942 file",
    "1c_exchange": ONEC_FILE,
    "fixed_width": "a fixed-width file",
    "delimited": "a delimited file",
}
OWN_FILE = {"mt940": SWIFT_FILE, "mt942": SWIFT_FILE, "1c_exchange": ONEC_FILE}


def recognize(line: str) -> str | None:
    """Return which kind of file starts with `line`, such as "an MT940 or MT942 file", or None.

    Only the two syntaxes with a fixed start are recognized: a SWIFT field tag
    such as `:20:`, and the line `1CClientBankExchange` in any letter case.
    """
    if _SWIFT_START.match(line):
        return SWIFT_FILE
    if line.strip().casefold() == ONEC_FIRST_LINE.casefold():
        return ONEC_FILE
    return None
