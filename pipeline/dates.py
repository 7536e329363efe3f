"""Dates as the Kazakh and Russian texts of release notes and report previews show them."""

from __future__ import annotations

import datetime

# The strftime pattern of a date per language. Both write the numeric form
# DD.MM.YYYY, as in "приказ № 540 от 04.12.2014".
DATE_FORMATS = {"kk": "%d.%m.%Y", "ru": "%d.%m.%Y"}


def format_date(value: object, language: str) -> str:
    """Return a date or an ISO date string in the format of `language` (`kk` or `ru`).

    A value that is not a date, such as a free-text date in a definition, is
    returned as text, unchanged.

    Raises:
        KeyError: `language` is not `kk` or `ru`.
    """
    pattern = DATE_FORMATS[language]
    if isinstance(value, datetime.date):
        return value.strftime(pattern)
    try:
        return datetime.date.fromisoformat(str(value)).strftime(pattern)
    except ValueError:
        return str(value)
