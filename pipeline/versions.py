"""Release versions `YYYY.MM.N` and their tags `release/YYYY.MM.N`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import ConfigError

TAG_PREFIX = "release/"
_VERSION = re.compile(r"^(\d{4})\.(\d{2})\.(\d+)$")


@dataclass(frozen=True, order=True)
class Version:
    """A release version: December 2026's release is 2026.12.0, its first hotfix 2026.12.1."""

    year: int
    month: int
    number: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse `YYYY.MM.N`.

        Raises:
            ConfigError: the text is not a version or the month is not 01-12.
        """
        match = _VERSION.match(text)
        if not match or not 1 <= int(match[2]) <= 12 or (match[3] != "0" and match[3][0] == "0"):
            raise ConfigError(f"invalid version {text!r}: expected YYYY.MM.N, such as 2026.12.0")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    @classmethod
    def from_tag(cls, tag: str) -> Version | None:
        """Return the version of a `release/YYYY.MM.N` tag, or None for any other tag."""
        if not tag.startswith(TAG_PREFIX):
            return None
        try:
            return cls.parse(tag.removeprefix(TAG_PREFIX))
        except ConfigError:
            return None

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self}"

    def __str__(self) -> str:
        return f"{self.year:04d}.{self.month:02d}.{self.number}"
