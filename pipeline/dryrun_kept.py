"""Migrated copies of SQLite sample databases, kept between dry-runs.

A dry-run with the cache on keeps, per SQLite sample, the copy on which the
pending migrations and the checks after them passed, before any catalog is
loaded. The inputs of the migrations make up its key (`pipeline.dryrun._kept_key`).
A later dry-run with the same key loads the catalogs into the kept copy
inside one transaction, checks them, compiles the report queries and rolls
back. It copies and migrates nothing.

Layout, in `.pipeline-cache/dry-run-samples/`:

- `<name>.sqlite`: the kept copy. `<name>` is a hash of the sample's resolved
  path, so each sample has at most one kept copy, and a new one replaces it.
- `<name>.json`: its record: the key, the size and a hash of the SQLite
  header of the copy, and the result of its migrations and checks;
- `<name>.catalogs.json`: the record of the last catalog load on the copy,
  under the same key: each catalog's key and result, the result of the
  checks after the load, and the schema check and report query results for
  the fingerprint of the schema they ran on (`pipeline.dryrun_catalogs`);
- `<name>.lock`: an exclusive `flock` held while a dry-run reads or replaces
  the copy. A dry-run that cannot take it at once neither reads nor keeps
  a copy of that sample.

Safety:

1. A new copy is migrated in a temporary file of the folder, then moved into
   place with `os.replace` after the old record and any journal of the old
   copy are removed; the record is written last. A crash in between leaves
   a copy without a record, which the next run replaces. A copy larger than
   `WHOLE_DIGEST_BYTES` is synced to disk before the move. A smaller one is
   not, and its record contains the hash of the whole file instead, so a copy
   that a power loss left incomplete does not match its record.
2. The kept copy is opened with a rollback journal on disk and full syncs,
   so after a crash during the catalog load SQLite rolls the hot journal
   back on the next open (the first read does it). The header (its file
   change counter counts commits) and the size are compared with the record
   after that read, and so is the whole file's hash where the record has
   one, so a copy that was changed otherwise is not used.
3. Deleting the folder, or any file in it, makes the next dry-run migrate a
   new copy. NOTE: deleting only a hot `-journal` file while its crashed
   run's writes are in the copy is the exception: if no commit happened
   the header may still match, and the copy would be used as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.cache import CACHE_FOLDER
from pipeline.fsutil import atomic_write_text
from pipeline.processes import process_exists

logger = logging.getLogger(__name__)

FOLDER = "dry-run-samples"
# The SQLite file header: page size, file change counter, page count, schema cookie.
HEADER_BYTES = 100
# A kept copy up to this size is not synced to disk. Its record contains a hash of the
# whole file, which the next run compares. Syncing took longer than that hash (about
# 0.5 ms of an 11 ms dry-run of the small demo sample).
WHOLE_DIGEST_BYTES = 1 << 20
# The files SQLite keeps beside a database; a stale one must not meet a new copy.
_SIDE_FILES = ("-journal", "-wal", "-shm")


def abandoned_staging(root: Path) -> list[Path]:
    """Return the staging copies under `root` whose process has ended (`KeptCopy.staging_path`).

    A run killed while it migrated a new copy leaves its staging file. The
    file name carries the process id, so another run can tell it is abandoned.
    """
    found = []
    for entry in (root / CACHE_FOLDER / FOLDER).glob(".*.tmp"):
        pid = entry.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not entry.is_symlink() and not process_exists(int(pid)):
            found.append(entry)
    return found


def header_digest(path: Path) -> tuple[int, str]:
    """Return the size of a SQLite file and the SHA-256 of its header."""
    with path.open("rb") as handle:
        header = handle.read(HEADER_BYTES)
        size = os.fstat(handle.fileno()).st_size
    return size, hashlib.sha256(header).hexdigest()


class KeptCopy:
    """The kept copy of one sample database, with its record and lock file."""

    def __init__(self, root: Path, sample_path: Path) -> None:
        folder = root / CACHE_FOLDER / FOLDER
        name = hashlib.sha256(str(sample_path.resolve()).encode()).hexdigest()[:20]
        self.folder = folder
        self.name = name
        self.path = folder / f"{name}.sqlite"
        self.record_path = folder / f"{name}.json"
        self.catalog_record_path = folder / f"{name}.catalogs.json"
        self._lock_path = folder / f"{name}.lock"
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """Hold the copy's lock for the block; yield False when another dry-run holds it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            logger.warning("cannot open the lock file %s: %s", self._lock_path, exc)
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("kept copy %s is in use by another dry-run; not used", self.path)
                yield False
                return
            self._lock_fd = fd
            try:
                yield True
            finally:
                self._lock_fd = None
        finally:
            # Closing the descriptor releases the flock.
            os.close(fd)

    def read_record(self, key: str) -> dict[str, Any] | None:
        """Return the stored record when it was written with `key` and its copy exists."""
        try:
            record = json.loads(self.record_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("kept copy record %s is unreadable: %s", self.record_path, exc)
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            logger.debug("kept copy %s was made from other inputs", self.path)
            return None
        if not self.path.is_file():
            return None
        return record

    def header_matches(self, record: Mapping[str, Any]) -> bool:
        """Tell whether the copy still has the size, header and content hash the record stores.

        The hash of the whole file is in the record of a copy up to
        `WHOLE_DIGEST_BYTES` only, which was kept without a sync to disk.
        """
        try:
            size, digest = header_digest(self.path)
            if size != record.get("size") or digest != record.get("header"):
                return False
            if size > WHOLE_DIGEST_BYTES:
                return True
            whole = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError as exc:
            logger.warning("cannot read kept copy %s: %s", self.path, exc)
            return False
        return whole == record.get("sha256")

    def staging_path(self) -> Path:
        """Remove leftovers of crashed runs and return a new temporary path in the folder.

        Only the lock holder calls this, so any other temporary file of this
        sample belongs to a run that has ended.
        """
        for leftover in self.folder.glob(f".{self.name}.*.tmp*"):
            leftover.unlink(missing_ok=True)
        return self.folder / f".{self.name}.{os.getpid()}.tmp"

    def install(self, staging: Path, key: str, result: dict[str, Any]) -> None:
        """Move the migrated copy at `staging` into place and write its record.

        Raises:
            OSError: the copy or its record cannot be written; the copy is
                then missing or has no record, so the next run replaces it.
        """
        self.record_path.unlink(missing_ok=True)
        self.catalog_record_path.unlink(missing_ok=True)
        for suffix in _SIDE_FILES:
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.replace(staging, self.path)
        size, digest = header_digest(self.path)
        record = {"key": key, "size": size, "header": digest, "result": result}
        if size <= WHOLE_DIGEST_BYTES:
            record["sha256"] = hashlib.sha256(self.path.read_bytes()).hexdigest()
        atomic_write_text(self.record_path, json.dumps(record, ensure_ascii=False) + "\n")
        logger.info("kept the migrated copy %s", self.path)

    def read_catalog_record(self, key: str) -> dict[str, Any] | None:
        """Return the record of the last catalog load when it was written with `key`."""
        try:
            record = json.loads(self.catalog_record_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("catalog record %s is unreadable: %s", self.catalog_record_path, exc)
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        loaded = record.get("load")
        return loaded if isinstance(loaded, dict) else None

    def write_catalog_record(self, key: str, load: Mapping[str, Any] | None) -> None:
        """Store the record of a catalog load under `key`; None removes the stored one.

        Only the lock holder calls this. A failure to write costs the next run time only.
        """
        try:
            if load is None:
                self.catalog_record_path.unlink(missing_ok=True)
                return
            text = json.dumps({"key": key, "load": load}, ensure_ascii=False) + "\n"
            atomic_write_text(self.catalog_record_path, text)
        except OSError as exc:
            logger.warning("cannot write the catalog record %s: %s", self.catalog_record_path, exc)
