"""Text encodings of treasury files: decoding with line numbers, strict encoding.

The encodings are UTF-8, CP1251 and KZ-1048. CP1251 has І and і but none of
the other Kazakh letters, so writing Kazakh text to CP1251 is an error that
names the character, never a silent `?`.
"""

# The docstring names Cyrillic letters that look like Latin ones on purpose.
# ruff: noqa: RUF002

from __future__ import annotations

import re

from pipeline.treasury.model import TreasuryFormatError

ENCODING_NAMES = {"utf-8": "UTF-8", "cp1251": "CP1251", "kz1048": "KZ-1048"}

# C0 controls other than tab, line feed and carriage return, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def decode(data: bytes, encoding: str, file: str) -> str:
    """Decode a whole file; a byte the encoding lacks is an error naming its line.

    Raises:
        TreasuryFormatError: `data` is not valid in `encoding`.
    """
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TreasuryFormatError(
            f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not valid"
            f" {ENCODING_NAMES.get(encoding, encoding)}; check the file's encoding"
            " against the format definition",
            file=file,
            line=line,
        ) from None
    return text.removeprefix("\ufeff")


def find_control(line: str) -> re.Match[str] | None:
    """Return the first control character of a line (tab excepted), or None."""
    return _CONTROL.search(line)


def encode_value(value: str, encoding: str, file: str, record: int, field: str) -> bytes:
    """Encode one field value; a character the encoding lacks is an error.

    Raises:
        TreasuryFormatError: `value` contains a character that `encoding` cannot
            represent; the message names the character, the record and the field.
    """
    try:
        return value.encode(encoding)
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        raise TreasuryFormatError(
            f"record {record}, field {field}: character {char!r} (U+{ord(char):04X}) in"
            f" {value!r} cannot be written in {ENCODING_NAMES.get(encoding, encoding)};"
            " use a format definition in KZ-1048 or UTF-8 for Kazakh text",
            file=file,
            field=field,
        ) from None


def encode_text(text: str, encoding: str, file: str) -> bytes:
    """Encode a whole rendered file, such as the column names of its header line.

    Raises:
        TreasuryFormatError: `text` contains a character that `encoding` cannot
            represent; the message names the character and the line.
    """
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        raise TreasuryFormatError(
            f"character {char!r} (U+{ord(char):04X}) cannot be written in"
            f" {ENCODING_NAMES.get(encoding, encoding)}; check the format's column names"
            " and labels",
            file=file,
            line=text.count("\n", 0, exc.start) + 1,
        ) from None
