"""Text encodings of treasury files: decoding with line numbers, strict encoding.

The encodings are UTF-8, CP1251 and KZ-1048. CP1251 has І and і but none of
the other Kazakh letters, so writing Kazakh text to CP1251 is an error that
names the character, never a silent `?`.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

from pipeline.text import KAZAKH_ONLY_LETTERS
from pipeline.treasury.model import TreasuryFormatError

ENCODING_NAMES = {"utf-8": "UTF-8", "cp1251": "CP1251", "kz1048": "KZ-1048"}
# The names GNU iconv (glibc 2.36) lists for the single-byte encodings.
_ICONV_NAMES = {"cp1251": "CP1251", "kz1048": "RK1048"}

# C0 controls other than tab, line feed and carriage return, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Unicode categories that a text value of an export may not contain: controls
# (Cc, tab and line breaks included), invisible format characters such as
# U+200B and U+202E (Cf), and the line and paragraph separators (Zl, Zp).
_NOT_IN_TEXT = frozenset(["Cc", "Cf", "Zl", "Zp"])
# The Unicode database gives controls no name, so the usual ones are named here.
_CONTROL_NAMES = {
    0x00: "NULL",
    0x07: "BELL",
    0x08: "BACKSPACE",
    0x09: "TAB",
    0x0A: "LINE FEED",
    0x0B: "VERTICAL TAB",
    0x0C: "FORM FEED",
    0x0D: "CARRIAGE RETURN",
    0x1B: "ESCAPE",
    0x7F: "DELETE",
    0x85: "NEXT LINE",
}


# Byte order marks with the encoding they mark, longest first, because the
# UTF-32 LE mark FF FE 00 00 starts with the UTF-16 LE mark FF FE.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32 LE", "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32 BE", "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16 LE", "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16 BE", "UTF-16"),
)


def check_byte_order_mark(data: bytes, encoding: str, file: str) -> None:
    """Reject a byte order mark other than the UTF-8 one of a UTF-8 file, naming the mark.

    Raises:
        TreasuryFormatError: `data` starts with a UTF-16 or UTF-32 byte order
            mark, or with the UTF-8 one while `encoding` is a single-byte encoding.
    """
    found_mark = next((entry for entry in _BYTE_ORDER_MARKS if data.startswith(entry[0])), None)
    if found_mark is None:
        return
    mark, name, family = found_mark
    if family == "UTF-8" and encoding == "utf-8":
        return
    found = f"the file starts with a {name} byte order mark ({mark.hex(' ').upper()})"
    target = ENCODING_NAMES.get(encoding, encoding)
    iconv_name = _ICONV_NAMES.get(encoding, target)
    if family != "UTF-8":
        advice = (
            f"so it is {family} text; convert it to {target} (iconv -f {family} -t {iconv_name})"
        )
    elif _is_utf8_text(data[len(mark) :]):
        advice = (
            "so it is UTF-8 text; parse it with a UTF-8 format definition, or remove the byte"
            f" order mark and convert the file to {target} (iconv -f UTF-8 -t {iconv_name})"
        )
    else:
        advice = (
            f"which a {target} file does not have; remove its first three bytes (tail -c +4 FILE)"
        )
    raise TreasuryFormatError(f"{found}, {advice}", file=file, line=1)


def _is_utf8_text(data: bytes) -> bool:
    """Return whether `data` has non-ASCII bytes and all of it is valid UTF-8."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode(data: bytes, encoding: str, file: str) -> str:
    """Decode a whole file; a byte the encoding lacks is an error naming its line.

    Raises:
        TreasuryFormatError: `data` is not valid in `encoding`.
    """
    if encoding != "utf-8":
        _reject_utf8(data, encoding, file)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = (
            f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not valid"
            f" {ENCODING_NAMES.get(encoding, encoding)}"
        )
        guess = _single_byte_guess(_line_at(data, exc.start)) if encoding == "utf-8" else None
        if guess is None:
            advice = "check the file's encoding against the format definition"
        else:
            name, shown = ENCODING_NAMES[guess], _line_at(data, exc.start).decode(guess)
            advice = (
                f"read as {name} the line is {shown!r}, so the file is probably {name}: convert"
                f" it to UTF-8 (iconv -f {_ICONV_NAMES[guess]} -t UTF-8) or parse it with a"
                f" {name} format definition"
            )
        raise TreasuryFormatError(f"{problem}; {advice}", file=file, line=line) from None
    return text.removeprefix("\ufeff")


def _line_at(data: bytes, offset: int) -> bytes:
    """Return the line of `data` that contains the byte at `offset`, without its line ending."""
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    return data[start : end if end >= 0 else len(data)].rstrip(b"\r")


def _single_byte_guess(line: bytes) -> str | None:
    """Return the single-byte encoding a line that is not UTF-8 was probably written in.

    A line that decodes as KZ-1048 to a Kazakh letter other than і is taken
    for KZ-1048, because CP1251 would show that byte as a character such as
    Ќ; any other line that decodes as CP1251 is taken for CP1251. None
    means neither decodes the line.
    """
    try:
        if set(line.decode("kz1048").lower()) & set(KAZAKH_ONLY_LETTERS.replace("і", "")):
            return "kz1048"
    except UnicodeDecodeError:
        pass
    try:
        line.decode("cp1251")
    except UnicodeDecodeError:
        return None
    return "cp1251"


def _reject_utf8(data: bytes, encoding: str, file: str) -> None:
    """Reject UTF-8 bytes given to a single-byte encoding, which would decode to mojibake.

    Kazakh and Russian text in CP1251 or KZ-1048 is almost never valid UTF-8:
    its letters are bytes 0xC0-0xFF in a row, while UTF-8 needs a byte
    0x80-0xBF after each of them. So a file with non-ASCII bytes that decodes
    as UTF-8 was written in UTF-8.

    Raises:
        TreasuryFormatError: `data` has non-ASCII bytes and is valid UTF-8.
    """
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return
    offset = next(i for i, byte in enumerate(data) if byte >= 0x80)
    number = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    raw = data[start : end if end >= 0 else len(data)].rstrip(b"\r")
    name = ENCODING_NAMES.get(encoding, encoding)
    iconv_name = _ICONV_NAMES.get(encoding, name)
    shown = raw.decode(encoding, errors="replace")
    meant = raw.decode("utf-8")
    raise TreasuryFormatError(
        f"the file looks UTF-8: read as {name} the line is {shown!r}, read as UTF-8 it is"
        f" {meant!r}; convert the file to {name} (iconv -f UTF-8 -t {iconv_name}) or parse it with"
        " a UTF-8 format definition",
        file=file,
        line=number,
    )


def describe_char(char: str) -> str:
    """Return a character's code point and name, such as `U+0009 TAB`."""
    name = _CONTROL_NAMES.get(ord(char)) or unicodedata.name(char, "CONTROL CHARACTER")
    return f"U+{ord(char):04X} {name}"


def find_not_in_text(value: str) -> int | None:
    """Return the offset of the first control, format or separator character, or None."""
    for index, char in enumerate(value):
        if unicodedata.category(char) in _NOT_IN_TEXT:
            return index
    return None


def find_control(line: str) -> re.Match[str] | None:
    """Return the first control character of a line (tab excepted), or None."""
    return _CONTROL.search(line)


def encode_value(
    value: str, encoding: str, file: str, *, json_path: str, field: str, column: str
) -> bytes:
    """Encode the value of the canonical `field`, written to `column` of the export.

    `json_path` names the record and the field, such as `$[0].purpose`, and
    `column` the place in the export, such as `column НАЗНАЧЕНИЕ`.

    Raises:
        TreasuryFormatError: `value` contains a character that `encoding` cannot
            represent; the message names the character, the record and the field.
    """
    try:
        return value.encode(encoding)
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        if char.lower() in KAZAKH_ONLY_LETTERS:
            advice = "use a format definition in KZ-1048 or UTF-8 for Kazakh text"
        else:
            advice = "replace the character, or use a format definition in UTF-8"
        raise TreasuryFormatError(
            f"character {char!r} (U+{ord(char):04X}) in {value!r} ({column}) cannot be"
            f" written in {ENCODING_NAMES.get(encoding, encoding)}; {advice}",
            file=file,
            field=field,
            json_path=json_path,
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
