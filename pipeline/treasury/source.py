"""Source values as the syntax parsers return them, before mapping to canonical records."""

from __future__ import annotations

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
