"""A cache of check results, keyed by the git blob ids of the files a check reads.

A stage that checks many items stores each item's result under a key built
from the ids of its input files: validate stores findings, the dry-run a whole
JSON record per sample database. A later run reuses the result of every item
whose inputs have the same ids, and checks the rest.

The cache lives in `.pipeline-cache/<stage>.json` of the content repository.
Its rules:

1. Blob ids are computed in Python from the file bytes, exactly as
   `git hash-object` computes them, so uncommitted files work too.
   A sample database, too large to hash on every run, is identified by its
   size, modification time and a hash of its ends (`file_identity`).
2. The whole file is dropped when its fingerprint differs. The fingerprint
   covers the pipeline version, its source files and its JSON Schemas, so a
   schema change or a new pipeline version is never served from the cache.
3. A missing, unreadable or malformed cache file counts as empty; deleting it is safe.
4. The file is written whole through a temporary file and `os.replace`, and
   only when its new text differs from the text this run read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pipeline
from pipeline.findings import Finding
from pipeline.fsutil import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

CACHE_FOLDER = ".pipeline-cache"
# Version of the cache file layout; a different one is read as an empty cache.
CACHE_FORMAT = 1
# The id used in a cache key for an input file that does not exist.
MISSING = "missing"
_READ_BYTES = 1 << 20
# `file_identity` hashes files up to this size whole, and only both ends of larger ones.
WHOLE_HASH_BYTES = 4 << 20
EDGE_BYTES = 1 << 20


def blob_id_of_bytes(data: bytes) -> str:
    """Return the SHA-1 blob id that `git hash-object` gives these bytes."""
    digest = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


def blob_id(path: Path) -> str:
    """Return the git blob id of a file's bytes, or `MISSING` when it is not a file.

    The file is read in chunks, so a large catalog is not held in memory.
    """
    try:
        handle = path.open("rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return MISSING
    with handle:
        size = os.fstat(handle.fileno()).st_size
        digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
        read = 0
        while chunk := handle.read(_READ_BYTES):
            digest.update(chunk)
            read += len(chunk)
    if read != size:
        # The file changed while it was read; an id that matches no content is safe.
        return f"changed-{read}"
    return digest.hexdigest()


def folder_blob_ids(root: Path, folder: Path) -> list[tuple[str, str]]:
    """Return `(repository path, blob id)` of every file under `folder`, sorted by path."""
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            entries.append((path.relative_to(root).as_posix(), blob_id(path)))
    return entries


def inputs_key(entries: Iterable[tuple[str, str]], extra: str = "") -> str:
    """Combine `(name, id)` pairs and an extra text into one SHA-256 hex key."""
    digest = hashlib.sha256()
    for name, value in entries:
        digest.update(f"{name}\0{value}\n".encode("utf-8", "surrogateescape"))
    digest.update(extra.encode())
    return digest.hexdigest()


def package_fingerprint(package: Path, version: str) -> str:
    """Return a digest of a version, the package's Python files and its JSON Schemas."""
    files = sorted(package.rglob("*.py")) + sorted((package / "schemas").glob("*.json"))
    entries = [(path.relative_to(package).as_posix(), blob_id(path)) for path in files]
    return inputs_key(entries, f"pipeline {version}")


@functools.cache
def pipeline_fingerprint() -> str:
    """Return the fingerprint of the installed pipeline package (computed once per process)."""
    return package_fingerprint(Path(pipeline.__file__).parent, pipeline.__version__)


def file_identity(path: Path) -> str:
    """Return an identity of a large file that is cheap to compute: size, mtime and a hash.

    Files up to `WHOLE_HASH_BYTES` are hashed whole. Of a larger file only the
    first and the last `EDGE_BYTES` are hashed, so an edit in its middle that
    keeps both the size and the modification time is not seen. Returns
    `MISSING` when `path` is not a file.
    """
    try:
        handle = path.open("rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return MISSING
    with handle:
        status = os.fstat(handle.fileno())
        digest = hashlib.sha256()
        if status.st_size <= WHOLE_HASH_BYTES:
            digest.update(handle.read())
        else:
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(-EDGE_BYTES, os.SEEK_END)
            digest.update(handle.read(EDGE_BYTES))
    return f"{status.st_size}:{status.st_mtime_ns}:{digest.hexdigest()}"


def cache_path(root: Path, stage: str) -> Path:
    """Return the cache file of a stage in the content repository at `root`."""
    return root / CACHE_FOLDER / f"{stage}.json"


class ResultCache:
    """Findings of one stage's items, each stored with the key of its inputs.

    `hits` and `misses` count the look-ups of this run.
    """

    def __init__(self, path: Path, fingerprint: str | None = None) -> None:
        self.path = path
        self.fingerprint = fingerprint or pipeline_fingerprint()
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, dict[str, Any]] = {}
        self._used: set[str] = set()
        # The bytes of the cache file as read or last written by this object.
        self._stored: bytes | None = None
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
            self._stored = data
            document = json.loads(data)
        except FileNotFoundError:
            logger.debug("no cache file %s; every item is checked", self.path)
            return
        except (OSError, ValueError) as exc:
            logger.warning("cache file %s is unreadable (%s); checking every item", self.path, exc)
            return
        if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
            logger.warning("cache file %s has an unknown layout; checking every item", self.path)
            return
        if document.get("fingerprint") != self.fingerprint:
            logger.info("cache %s was written by another pipeline or schema; ignored", self.path)
            return
        entries = document.get("entries")
        if not isinstance(entries, dict):
            logger.warning("cache file %s has no entries table; checking every item", self.path)
            return
        self._entries = {
            name: entry
            for name, entry in entries.items()
            if isinstance(entry, dict) and isinstance(entry.get("key"), str)
        }

    def get(self, item: str, key: str) -> list[Finding] | None:
        """Return the stored findings of `item` when they were stored with `key`, else None."""
        entry = self._entries.get(item)
        findings = None
        if entry is not None and entry.get("key") == key:
            findings = _findings_from_json(entry.get("findings"))
        if findings is None:
            self.misses += 1
            logger.debug("cache miss for %s", item)
            return None
        self.hits += 1
        self._used.add(item)
        logger.debug("cache hit for %s", item)
        return findings

    def put(self, item: str, key: str, findings: Sequence[Finding]) -> None:
        """Store the findings of `item` under `key`."""
        self._entries[item] = {"key": key, "findings": [asdict(f) for f in findings]}
        self._used.add(item)

    def get_record(self, item: str, key: str) -> dict[str, Any] | None:
        """Return the JSON record stored for `item` with `key`, else None."""
        entry = self._entries.get(item)
        record = None
        if entry is not None and entry.get("key") == key:
            record = entry.get("record")
        if not isinstance(record, dict):
            self.misses += 1
            logger.debug("cache miss for %s", item)
            return None
        self.hits += 1
        self._used.add(item)
        logger.debug("cache hit for %s", item)
        return record

    def put_record(self, item: str, key: str, record: dict[str, Any]) -> None:
        """Store a JSON record for `item` under `key`, for a stage whose result is not findings."""
        self._entries[item] = {"key": key, "record": record}
        self._used.add(item)

    def stored_keys(self) -> dict[str, str]:
        """Return the key of every stored item, whether this run used it or not."""
        return {name: str(entry["key"]) for name, entry in self._entries.items()}

    def keep(self, item: str) -> None:
        """Write the stored entry of `item` on `save` although this run did not use it."""
        if item in self._entries:
            self._used.add(item)

    def save(self) -> None:
        """Write the entries used, kept or stored in this run; the others are dropped.

        A file that has these bytes already is not written again, because
        replacing a file on ext4 took about 0.2 ms, a fiftieth of a dry-run of
        the small demo sample (benchmarks/dryrun_sqlite.py).
        NOTE: when this run changed nothing, a file that another process
        removed or rewrote after this object read it stays as that process left it.
        """
        entries = {name: self._entries[name] for name in sorted(self._used)}
        document = {"format": CACHE_FORMAT, "fingerprint": self.fingerprint, "entries": entries}
        data = (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8")
        changed = data != self._stored
        try:
            if changed:
                atomic_write_bytes(self.path, data)
                self._stored = data
            # The folder ignores itself, so `git add -A` in a content repository skips it.
            ignore = self.path.parent / ".gitignore"
            if not ignore.exists():
                atomic_write_text(ignore, "*\n")
        except OSError as exc:
            # A cache that cannot be written costs time on the next run, not correctness.
            logger.warning("cannot write cache file %s: %s", self.path, exc)
            return
        if changed:
            logger.debug("wrote %d cache entries to %s", len(entries), self.path)
        else:
            logger.debug("cache file %s is unchanged, %d entries", self.path, len(entries))


def _findings_from_json(value: object) -> list[Finding] | None:
    """Rebuild stored findings; None when the stored value is not a list of findings."""
    if not isinstance(value, list):
        return None
    findings = []
    for item in value:
        if not _is_finding_json(item):
            return None
        findings.append(Finding(**item))
    return findings


def _is_finding_json(item: object) -> bool:
    if not isinstance(item, dict) or set(item) != _FINDING_FIELDS:
        return False
    texts_ok = all(isinstance(item[name], str) for name in ("rule", "file", "message"))
    line_ok = item["line"] is None or (
        isinstance(item["line"], int) and not isinstance(item["line"], bool)
    )
    path_ok = item["json_path"] is None or isinstance(item["json_path"], str)
    return texts_ok and line_ok and path_ok and item["severity"] in ("error", "warning")


_FINDING_FIELDS = {"rule", "file", "message", "line", "json_path", "severity"}
