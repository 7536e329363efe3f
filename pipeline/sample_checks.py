"""Records of SQLite sample databases that passed the full integrity and foreign key checks.

`PRAGMA integrity_check` reads every page and compares every index with its
table, which on a sample of a million rows takes several times as long as the
migrations themselves. A migration can only break the tables it writes, so a
dry-run whose sample passed the full checks before needs to check after the
migrations only the tables they changed (`pipeline.database.touched_tables`).

A record is kept per sample file in `.pipeline-cache/sample-checks.json`, under
a key made of the file's identity (size, modification time and a hash, see
`pipeline.cache.file_identity`) and the SQLite library version. Regenerating
or editing the sample, or another SQLite version, makes the record stale, and
the next dry-run checks the whole sample again. `inv samples` writes a record
for each SQLite sample it builds, since building one ends with the full checks.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from pipeline.cache import MISSING, ResultCache, cache_path, file_identity, inputs_key

logger = logging.getLogger(__name__)

STAGE = "sample-checks"


def sample_key(path: Path) -> str | None:
    """Return the key of a sample file's checks, or None when the file is missing."""
    return identity_key(file_identity(path))


def identity_key(identity: str | None) -> str | None:
    """Return the key of the checks of a sample file with this `file_identity`.

    None and `MISSING` stand for a missing file, which has no key.
    """
    if identity is None or identity == MISSING:
        return None
    return inputs_key([("sample", identity)], f"sqlite {sqlite3.sqlite_version}")


class SampleChecks:
    """The record store of one content repository, with one record per sample file."""

    def __init__(self, root: Path) -> None:
        self.cache = ResultCache(cache_path(root, STAGE))

    def passed(self, path: Path, key: str | None = None) -> bool:
        """Tell whether the sample file at `path` passed the full checks.

        `key` is the file's key when the caller took it already; by default it is taken now.
        """
        key = key or sample_key(path)
        return key is not None and self.cache.get_record(str(path.resolve()), key) is not None

    def record(self, path: Path, key: str | None = None) -> None:
        """Store that the sample file at `path` passed the full checks.

        `key` is the file's key taken before the checks ran; by default it is taken now.
        """
        key = key or sample_key(path)
        if key is None:
            return
        checked_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.cache.put_record(str(path.resolve()), key, {"checked_at": checked_at})
        logger.debug("recorded the full checks of sample %s", path)

    def save(self) -> None:
        """Write the records of this run, and keep those of the other sample files that exist.

        The records of samples that this run did not look at are kept, so a
        dry-run of one shard, or building the samples one by one, keeps the
        others. A record of a removed file is dropped. That of a changed file
        is kept without reading the file, which may be large: its key no
        longer matches, and the next full check of that file replaces it.
        """
        for name in self.cache.stored_keys():
            if Path(name).is_file():
                self.cache.keep(name)
        self.cache.save()
