"""Deltas between two versions of a catalog's rows, matched by key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.errors import CatalogError

Row = dict[str, str]


@dataclass(frozen=True)
class RowChange:
    """One row added (`old` None), removed (`new` None) or changed (both set)."""

    key: tuple[str, ...]
    old: Row | None
    new: Row | None

    def changed_columns(self) -> list[str]:
        """Return the columns whose values differ, in the order of the new row."""
        if self.old is None or self.new is None:
            return []
        names = list(self.new) + [name for name in self.old if name not in self.new]
        return [name for name in names if self.old.get(name) != self.new.get(name)]


@dataclass(frozen=True)
class CatalogDelta:
    """Rows added, changed and removed between two versions of a catalog, each sorted by key."""

    catalog_id: str
    key: tuple[str, ...]
    added: list[RowChange] = field(default_factory=list)
    changed: list[RowChange] = field(default_factory=list)
    removed: list[RowChange] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def summary(self) -> str:
        """Return the counts as `N added, N changed, N removed`."""
        return f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed"


def _row_key(row: Row, key: Sequence[str], side: str) -> tuple[str, ...]:
    try:
        return tuple(row[name] for name in key)
    except KeyError as exc:
        raise CatalogError(
            f"{side} rows: expected key column {exc.args[0]!r} in every row, found a row"
            f" with columns {', '.join(row)}"
        ) from None


def diff_rows(
    old: Iterable[Row], new: Iterable[Row], key: Sequence[str], *, catalog_id: str = ""
) -> CatalogDelta:
    """Compare two sets of rows by `key`.

    Holds the old rows in memory and streams the new ones.

    Raises:
        CatalogError: a row lacks a key column, or a key occurs twice on one side.
    """
    remaining: dict[tuple[str, ...], Row] = {}
    for row in old:
        row_key = _row_key(row, key, "old")
        if row_key in remaining:
            raise CatalogError(f"old rows: expected unique keys, found {row_key} twice")
        remaining[row_key] = row
    added: list[RowChange] = []
    changed: list[RowChange] = []
    seen: set[tuple[str, ...]] = set()
    for row in new:
        row_key = _row_key(row, key, "new")
        if row_key in seen:
            raise CatalogError(f"new rows: expected unique keys, found {row_key} twice")
        seen.add(row_key)
        previous = remaining.pop(row_key, None)
        if previous is None:
            added.append(RowChange(row_key, None, row))
        elif previous != row:
            changed.append(RowChange(row_key, previous, row))
    removed = [RowChange(row_key, row, None) for row_key, row in remaining.items()]
    return CatalogDelta(
        catalog_id=catalog_id,
        key=tuple(key),
        added=sorted(added, key=_by_key),
        changed=sorted(changed, key=_by_key),
        removed=sorted(removed, key=_by_key),
    )


def _by_key(change: RowChange) -> tuple[str, ...]:
    return change.key
