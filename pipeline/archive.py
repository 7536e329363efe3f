"""The bundle's 7z archive: deterministic parallel writing, listing, and checked extraction.

Writing (pipeline/sevenzip_writer.py) compresses blocks of the staged files
into LZMA2 streams on a thread pool and writes the 7z container itself. That
module describes the layout and why it is deterministic. Of an entry's
metadata the archive stores only the last-write time and the attributes,
fixed to the caller's mtime and to mode 0644 for files, 0755 for folders.
With a password the data and the header are encrypted with 7zAES (AES-256),
so file names are hidden too.

Reading (pipeline/sevenzip_reader.py) parses the header and decodes COPY,
LZMA, LZMA2 and 7zAES folders with the lzma module, in parallel, hashing and
checking CRCs while the bytes pass. Archives whose header uses a feature that
parser does not read are read with py7zr instead. Either way every exception
on a malformed or truncated archive becomes a BundleError that names the
archive, and extraction checks every entry first and writes nothing until all
of them pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import py7zr

from pipeline import sevenzip_format as fmt
from pipeline import sevenzip_py7zr, sevenzip_reader, sevenzip_writer
from pipeline.errors import BundleError, ConfigError, VerificationError
from pipeline.fsutil import atomic_output
from pipeline.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

FILE_MODE = 0o644
FOLDER_MODE = 0o755

FILTER_NAMES = sevenzip_py7zr.FILTER_NAMES
# Filters whose decoders this tool trusts to unpack a bundle.
READABLE_FILTERS = frozenset({"COPY", "LZMA", "LZMA2", "7zAES"})
ARCHIVER = "parus-kaz-release 7z writer"

# Exceptions that the own reader can meet on malformed input besides BundleError:
# the lzma module, cryptography and struct raise these, and a hostile size can
# make an allocation fail.
_NATIVE_ERRORS: tuple[type[BaseException], ...] = (
    *sevenzip_py7zr.READ_ERRORS,
    RecursionError,
)
_HEADER_ERRORS: tuple[type[BaseException], ...] = (BundleError, *_NATIVE_ERRORS)


def _cpu_threads() -> int:
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


@dataclass(frozen=True)
class Compression:
    """LZMA2 settings of a bundle archive.

    `preset` applies to files whose suffix is not in `presets`. The default
    table gives CSV and SQL preset 5 and the rest preset 6. On the content of
    benchmarks/archive_build.py, preset 6 took twice the time of preset 5 on
    CSV for an 8 % smaller result. On XML and JSON it cost little and kept the
    archive smaller than 7-Zip's -mx5. Every `block_size` bytes of a folder
    start an independent LZMA2 block, so smaller blocks use more threads and
    compress a little worse.
    """

    preset: int = 6
    presets: tuple[tuple[int, tuple[str, ...]], ...] = ((5, (".csv", ".tsv", ".sql")),)
    block_size: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for preset in [self.preset, *(preset for preset, _ in self.presets)]:
            if not 0 <= preset <= 9:
                raise ConfigError(f"LZMA2 preset: expected 0 to 9, found {preset}")
        if self.block_size < 1024 * 1024:
            raise ConfigError(
                f"LZMA2 block size: expected at least 1048576 bytes, found {self.block_size}"
            )

    def filters(self) -> list[dict[str, int]]:
        """Return the lzma/py7zr filter list of the default preset."""
        return [{"id": 0x21, "preset": self.preset}]


def describe(compression: Compression) -> dict[str, Any]:
    """Return the archiver and its settings as the manifest's `build.compression` records them."""
    return {
        "archiver": ARCHIVER,
        "filter": "LZMA2",
        "preset": compression.preset,
        "presets": {
            suffix: preset for preset, suffixes in compression.presets for suffix in suffixes
        },
        "block_size": compression.block_size,
    }


@dataclass(frozen=True)
class Entry:
    """One member of a 7z archive, as its header describes it."""

    name: str
    size: int
    is_dir: bool
    is_symlink: bool
    # A device, FIFO, socket, an anti-item, or an entry whose Windows and Unix types disagree.
    is_special: bool
    # Unix mode (type and permission bits), or None when the archive stores none.
    mode: int | None
    # Filters of the folder that contains the entry, in coder order. Folders and
    # empty files have no data and no filters.
    filters: tuple[str, ...]
    record: fmt.FileRecord | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------- writing


# Small files that verification reads whole get folders of their own, so reading
# one never decodes the payload: the manifest, the provenance statement and the
# next trusted keys of a rotating release.
SEPARATE_FILES = (
    MANIFEST_NAME,
    "provenance.json",
    "keys/trusted-keys.json",
    "keys/trusted-keys.json.minisig",
)


def write_archive(
    staging: Path,
    out: Path,
    mtime: int,
    compression: Compression = Compression(),
    password: str | None = None,
    *,
    threads: int | None = None,
) -> dict[str, Any]:
    """Write every file and folder under `staging` into the 7z archive `out`.

    Sets the mode (0644 files, 0755 folders) and the mtime (`mtime`, unix
    seconds) of every entry in `staging` itself before writing. With a
    `password`, data and header are encrypted, and the archive is checked to
    open with the password only before it replaces `out`. `threads` (default:
    the usable CPUs) changes the speed, never the bytes. Returns
    `describe(compression)`, the value of the manifest's `build.compression`.

    Raises:
        BundleError: `staging` is empty, contains a link or special file, or the
            archive cannot be written.
    """
    if not staging.is_dir():
        raise BundleError(f"staging folder {staging} does not exist or is not a folder")
    if mtime < 0:
        raise BundleError(f"archive mtime: expected unix seconds >= 0, found {mtime}")
    if password == "":
        raise BundleError(f"{out}: the archive password is empty; pass a password or none")
    members = _staged_members(staging)
    if not members:
        raise BundleError(f"staging folder {staging} is empty; a bundle needs at least a manifest")
    for name, path in members:
        _normalize(path, mtime)
        log.debug("archive member %s", name)
    plan = [
        sevenzip_writer.Member(name, None if path.is_dir() else path, _file_size(path))
        for name, path in members
    ]
    folders = sevenzip_writer.plan_folders(
        plan,
        [(preset, list(suffixes)) for preset, suffixes in compression.presets],
        compression.preset,
        compression.block_size,
        separate=SEPARATE_FILES,
    )
    log.debug("%s: %d folders, %d blocks", out, len(folders), sum(len(f.blocks) for f in folders))
    try:
        with atomic_output(out) as tmp:
            with tmp.open("r+b") as handle:
                sevenzip_writer.write_7z(
                    handle, plan, mtime, folders, password, threads or _cpu_threads()
                )
            if password is not None:
                _check_encrypted(tmp, out, password, len(plan))
    except OSError as exc:
        raise BundleError(f"{out}: cannot write the archive: {exc}") from exc
    log.info("wrote %s: %d entries, %d bytes", out, len(members), out.stat().st_size)
    return describe(compression)


def _file_size(path: Path) -> int:
    return 0 if path.is_dir() else path.stat().st_size


def _check_encrypted(path: Path, out: Path, password: str, count: int) -> None:
    """Prove that `path` lists its entries with `password` and hides them without it."""
    try:
        with OpenArchive(path, None):
            pass
    except sevenzip_reader.PasswordError:
        pass
    else:
        raise BundleError(f"{out}: the written archive opens without the password")
    try:
        with py7zr.SevenZipFile(path) as handle:
            names = handle.getnames()
    except sevenzip_py7zr.READ_ERRORS:
        names = []
    if names:
        raise BundleError(f"{out}: py7zr lists the written archive without the password")
    if len(list_entries(path, password)) != count:
        raise BundleError(f"{out}: the written archive does not list {count} entries")


def _staged_members(staging: Path) -> list[tuple[str, Path]]:
    """List (archive name, path) of every file and folder under `staging`, in archive order."""
    members: list[tuple[str, Path]] = []
    for folder, dirnames, filenames in os.walk(staging):
        for name in [*dirnames, *filenames]:
            path = Path(folder, name)
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise BundleError(
                    f"{path}: expected a regular file or folder in the staging folder,"
                    f" found {_file_type(mode)}; copy the target's content instead"
                )
            members.append((path.relative_to(staging).as_posix(), path))
    members.sort(key=lambda member: member[0].encode("utf-8"))
    return members


def _normalize(path: Path, mtime: int) -> None:
    mode = FOLDER_MODE if path.is_dir() else FILE_MODE
    os.chmod(path, mode)
    nanoseconds = mtime * 1_000_000_000
    os.utime(path, ns=(nanoseconds, nanoseconds))


def _file_type(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return f"file type 0o{stat.S_IFMT(mode):o}"


# --------------------------------------------------------------------------- reading


class OpenArchive:
    """An archive opened once for several reads; its header is parsed one time.

    Use it as a context manager. The module functions `list_entries`,
    `read_file`, `check_entries`, `digest_entries` and `extract_all` each open
    the archive anew. A caller that needs several of them, as verification
    does, opens it once here instead. Any failure becomes a BundleError that
    names the archive.

    Raises:
        BundleError: on entering, the file is missing, is not a 7z archive, its
            header is corrupted, or the header is encrypted and the password is
            missing or wrong.
    """

    def __init__(self, archive: Path, password: str | None = None) -> None:
        self.path = archive
        self.password = password
        self._stack = contextlib.ExitStack()
        self._native: sevenzip_reader.Archive | None = None
        self._entries: list[Entry] | None = None
        self._passed: set[tuple[int, float]] = set()

    def __enter__(self) -> OpenArchive:
        archive = self.path
        if not archive.is_file():
            raise BundleError(f"archive {archive} does not exist or is not a file")
        with _data_errors(archive):
            handle = self._stack.enter_context(archive.open("rb"))
        try:
            with _data_errors(archive):
                self._native = _parse_native(archive, handle, self.password)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def entries(self) -> list[Entry]:
        """Return the entries in the order the header stores them."""
        if self._entries is None:
            if self._native is not None:
                self._entries = _native_entries(self._native)
            else:
                with sevenzip_py7zr.open_py7zr(self.path, self.password) as handle:
                    fields = sevenzip_py7zr.member_fields(handle)
                self._entries = [Entry(**one) for one in fields]
        return self._entries

    def read_file(self, name: str, max_size: int) -> bytes:
        """Return the bytes of the regular file `name`; see the module function `read_file`."""
        entry = _single_file(self.path, self.entries(), name, max_size)
        if self._native is not None:
            with _data_errors(self.path):
                return _read_native(self._native, entry)
        data = sevenzip_py7zr.read_member(self.path, name, max_size, self.password)
        if len(data) != entry.size:
            raise BundleError(
                f"{self.path}: {name}: expected {entry.size} bytes, unpacked {len(data)}"
            )
        return data

    def check_entries(self, *, max_total: int, max_ratio: float) -> list[Entry]:
        """Check every entry for safe extraction; see the module function `check_entries`."""
        entries = _checked(self.path, self.entries(), max_total, max_ratio)
        self._passed.add((max_total, max_ratio))
        return entries

    def check_filters(self) -> None:
        """Check that every entry is stored with filters this tool reads, from the header alone.

        Raises:
            VerificationError: an entry uses another filter, such as 7-Zip's BCJ2.
        """
        for entry in self.entries():
            _check_filters(self.path, entry)

    def digest_entries(self, *, max_total: int, max_ratio: float) -> dict[str, str]:
        """Check the entries unless done with these limits, then hash every file in memory."""
        entries = self._checked_entries(max_total, max_ratio)
        if self._native is not None:
            with _data_errors(self.path):
                return _stream_native(self._native, entries, lambda record: None)
        with tempfile.TemporaryDirectory(prefix="parus-archive-") as work:
            return self.extract_all(Path(work) / "x", max_total=max_total, max_ratio=max_ratio)

    def extract_all(self, dest: Path, *, max_total: int, max_ratio: float) -> dict[str, str]:
        """Extract into the new or empty folder `dest`; see the module function `extract_all`."""
        entries = self._checked_entries(max_total, max_ratio)
        created = not dest.exists()
        if not created and (not dest.is_dir() or any(dest.iterdir())):
            raise BundleError(f"extraction folder {dest} must be missing or empty")
        dest.mkdir(parents=True, exist_ok=True)
        total = sum(entry.size for entry in entries)
        try:
            if self._native is not None:
                with _data_errors(self.path):
                    digests = _extract_native(self._native, entries, dest)
            else:
                sevenzip_py7zr.extract_members(self.path, dest, total, self.password)
                digests = _hash_tree(dest, entries)
            _normalize_extracted(dest)
        except BaseException:
            _empty_folder(dest)
            if created:
                dest.rmdir()
            raise
        log.info("extracted %s: %d entries, %d bytes", self.path, len(entries), total)
        return digests

    def _checked_entries(self, max_total: int, max_ratio: float) -> list[Entry]:
        if (max_total, max_ratio) in self._passed:
            return self.entries()
        return self.check_entries(max_total=max_total, max_ratio=max_ratio)


def _parse_native(
    archive: Path, handle: BinaryIO, password: str | None
) -> sevenzip_reader.Archive | None:
    """Parse the header with the own reader; return None when it needs py7zr."""
    try:
        return sevenzip_reader.open_archive(archive, handle, password, _cpu_threads())
    except fmt.UnsupportedFeature as exc:
        log.debug("%s: read with py7zr, because the header uses %s", archive, exc)
        return None
    except sevenzip_reader.PasswordError:
        raise
    except _HEADER_ERRORS as exc:
        raise _unreadable(archive, exc) from exc


@contextlib.contextmanager
def _data_errors(archive: Path) -> Iterator[None]:
    """Turn the exceptions of reading malformed archive data into a BundleError."""
    try:
        yield
    except BundleError:
        raise
    except _NATIVE_ERRORS as exc:
        raise BundleError(
            f"{archive}: the archive data is corrupted: {type(exc).__name__}: {exc};"
            " download or rebuild the bundle"
        ) from exc
    except OSError as exc:
        raise BundleError(f"{archive}: cannot read the archive: {exc}") from exc


def _unreadable(archive: Path, exc: BaseException) -> BundleError:
    detail = str(exc).removeprefix(f"{archive}: ")
    if not isinstance(exc, BundleError):
        detail = f"{type(exc).__name__}: {detail}"
    return BundleError(
        f"{archive}: not a readable 7z archive, or corrupted: {detail};"
        " download or rebuild the bundle"
    )


def list_entries(archive: Path, password: str | None = None) -> list[Entry]:
    """Return the entries of `archive` in the order its header stores them.

    Raises:
        BundleError: the file is missing, is not a 7z archive, its header is
            corrupted, or the header is encrypted and `password` is missing or wrong.
    """
    with OpenArchive(archive, password) as opened:
        return opened.entries()


def _native_entries(opened: sevenzip_reader.Archive) -> list[Entry]:
    folders = opened.header.streams.folders
    return [
        _native_entry(record, folders[record.folder] if record.folder is not None else None)
        for record in opened.header.files
    ]


def _native_entry(record: fmt.FileRecord, folder: fmt.Folder | None) -> Entry:
    attributes = record.attributes or 0
    mode = attributes >> 16 if attributes & fmt.ATTRIBUTE_UNIX_EXTENSION else None
    unix_type = stat.S_IFMT(mode) if mode is not None else None
    is_dir = record.is_dir
    is_symlink = unix_type == stat.S_IFLNK or bool(attributes & fmt.ATTRIBUTE_REPARSE_POINT)
    plain_dir = is_dir and unix_type in (None, stat.S_IFDIR)
    plain_file = not is_dir and unix_type in (None, stat.S_IFREG)
    filters: tuple[str, ...] = ()
    if folder is not None:
        filters = tuple(sevenzip_py7zr.filter_name(coder.method) for coder in folder.coders)
    return Entry(
        name=record.name,
        size=record.size,
        is_dir=is_dir,
        is_symlink=is_symlink,
        is_special=record.is_anti or not (plain_dir or plain_file or is_symlink),
        mode=mode,
        filters=filters,
        record=record,
    )


def read_file(archive: Path, name: str, max_size: int, password: str | None = None) -> bytes:
    """Read one regular file of `archive` into memory, such as `manifest.json`.

    Only the folder that contains the file is decoded, up to the file's end.

    Raises:
        BundleError: the archive is unreadable, or `name` is missing, duplicated,
            not a regular file, larger than `max_size` bytes, stored with a filter
            this tool does not read, its data is corrupted, or the archive is
            encrypted and `password` is missing or wrong.
    """
    with OpenArchive(archive, password) as opened:
        return opened.read_file(name, max_size)


def _single_file(archive: Path, entries: list[Entry], name: str, max_size: int) -> Entry:
    matches = [entry for entry in entries if entry.name == name]
    if not matches:
        raise BundleError(f"{archive}: {name} not found in the archive")
    if len(matches) > 1:
        raise BundleError(f"{archive}: {name} appears {len(matches)} times in the archive")
    entry = matches[0]
    if entry.is_dir or entry.is_symlink or entry.is_special:
        raise BundleError(f"{archive}: {name}: expected a regular file, found {_kind(entry)}")
    if entry.size > max_size:
        raise BundleError(f"{archive}: {name} is {entry.size} bytes; expected at most {max_size}")
    unreadable = [f for f in entry.filters if f not in READABLE_FILTERS]
    if unreadable:
        raise BundleError(
            f"{archive}: {name} is stored with filter {', '.join(unreadable)};"
            f" this tool reads only {', '.join(sorted(READABLE_FILTERS))}"
        )
    return entry


class _Collector:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: memoryview, /) -> None:
        self.parts.append(bytes(data))

    def close(self) -> None:
        pass


def _read_native(opened: sevenzip_reader.Archive, entry: Entry) -> bytes:
    target = entry.record
    if target is None or not target.has_stream:
        return b""
    collector = _Collector()
    sevenzip_reader.stream_files(opened, lambda record: record is target, lambda record: collector)
    return b"".join(collector.parts)


def _kind(entry: Entry) -> str:
    if entry.is_symlink:
        return "a link"
    if entry.is_special:
        mode = entry.mode
        return _file_type(mode) if mode is not None else "a special file"
    if entry.is_dir:
        return "a folder"
    return "a regular file"


# --------------------------------------------------------------------------- extraction


def check_entries(
    archive: Path, *, max_total: int, max_ratio: float, password: str | None = None
) -> list[Entry]:
    """Check every entry of `archive` for safe extraction and return the entries.

    Rejects:
    - an absolute name, a `..`, `.` or empty path part, a NUL in a name;
    - a link, a device or other special file, an anti-item;
    - a duplicate name, a file that another entry uses as a folder;
    - a filter other than LZMA2, LZMA, COPY or 7zAES;
    - a total unpacked size above `max_total` bytes, and a ratio of unpacked
      size to archive file size above `max_ratio`.

    Raises:
        BundleError: the archive cannot be read.
        VerificationError: an entry fails a check; the message names the entry.
    """
    with OpenArchive(archive, password) as opened:
        return opened.check_entries(max_total=max_total, max_ratio=max_ratio)


def _checked(archive: Path, entries: list[Entry], max_total: int, max_ratio: float) -> list[Entry]:
    names: set[str] = set()
    for entry in entries:
        _check_name(archive, entry.name)
        if entry.name in names:
            raise VerificationError(f"{archive}: {entry.name}: the name appears more than once")
        names.add(entry.name)
        if entry.is_symlink or entry.is_special:
            raise VerificationError(
                f"{archive}: {entry.name}: expected a regular file or folder, found {_kind(entry)}"
            )
        _check_filters(archive, entry)
    files = {entry.name for entry in entries if not entry.is_dir}
    for entry in entries:
        name = entry.name
        cut = name.rfind("/")
        while cut > 0:
            parent = name[:cut]
            if parent in files:
                raise VerificationError(
                    f"{archive}: {name}: its parent {parent} is a file in the archive"
                )
            cut = name.rfind("/", 0, cut)
    _check_sizes(archive, entries, max_total, max_ratio)
    return entries


def _check_filters(archive: Path, entry: Entry) -> None:
    unreadable = [f for f in entry.filters if f not in READABLE_FILTERS]
    if unreadable:
        raise VerificationError(
            f"{archive}: {entry.name}: stored with filter {', '.join(unreadable)};"
            f" this tool reads only {', '.join(sorted(READABLE_FILTERS))}"
        )


def _check_name(archive: Path, name: str) -> None:
    # py7zr turns every backslash of a stored name into "/", so "..\x" arrives as "../x".
    problem = None
    if not name:
        problem = "an empty name"
    elif "\x00" in name:
        problem = "a NUL character"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        problem = "an absolute path"
    else:
        parts = name.split("/")
        if ".." in parts:
            problem = "a '..' part"
        elif "." in parts or "" in parts:
            problem = "an empty or '.' part"
    if problem:
        raise VerificationError(
            f"{archive}: entry {name!r}: expected a relative POSIX path, found {problem}"
        )


def _check_sizes(archive: Path, entries: list[Entry], max_total: int, max_ratio: float) -> None:
    total = sum(entry.size for entry in entries)
    largest = max(entries, key=lambda entry: entry.size, default=None)
    largest_name = largest.name if largest else "(none)"
    if total > max_total:
        raise VerificationError(
            f"{archive}: entries claim {total} bytes unpacked, but at most {max_total} are"
            f" expected. The largest entry is {largest_name}"
        )
    packed = archive.stat().st_size
    ratio = total / max(packed, 1)
    if ratio > max_ratio:
        needed = math.ceil(ratio)
        raise VerificationError(
            f"{archive}: unpacks {total} bytes from {packed}, ratio {ratio:.0f} is above the"
            f" limit {max_ratio:g}; the largest entry is {largest_name}. If the bundle is"
            f" trusted, pass --max-ratio {needed} or set max_ratio = {needed} in [tool.pipeline]"
        )
    log.debug("%s: %d bytes unpacked from %d, ratio %.1f", archive, total, packed, ratio)


def digest_entries(
    archive: Path, *, max_total: int, max_ratio: float, password: str | None = None
) -> dict[str, str]:
    """Check every entry like `check_entries`, then decode every file and return its SHA-256.

    Nothing is written to disk: the bytes are hashed, and their CRC-32 checked,
    as they are decoded. Returns {archive name: SHA-256 hex} of every regular file.

    Raises:
        BundleError: the archive cannot be read, its data is corrupted, or it is
            encrypted and `password` is missing or wrong.
        VerificationError: an entry fails a check; the message names the entry.
    """
    with OpenArchive(archive, password) as opened:
        return opened.digest_entries(max_total=max_total, max_ratio=max_ratio)


def _stream_native(
    opened: sevenzip_reader.Archive,
    entries: list[Entry],
    open_sink: Callable[[fmt.FileRecord], sevenzip_reader.Sink | None],
) -> dict[str, str]:
    digests = {entry.name: _EMPTY_SHA256 for entry in entries if not entry.is_dir}
    results = sevenzip_reader.stream_files(opened, lambda record: True, open_sink)
    digests.update({result.name: result.sha256 for result in results})
    return digests


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def extract_all(
    archive: Path,
    dest: Path,
    *,
    max_total: int,
    max_ratio: float,
    password: str | None = None,
) -> dict[str, str]:
    """Extract `archive` into the new or empty folder `dest` after checking every entry.

    The checks are those of `check_entries`; nothing is written before all
    entries pass. Extracted files get mode 0644 and folders 0755 whatever the
    archive stores. When extraction fails, `dest` is left empty (and removed
    when this call created it). Returns {archive name: SHA-256 hex} of every
    extracted file, hashed while it was written.

    Raises:
        BundleError: the archive cannot be read, its data is corrupted, it is
            encrypted and `password` is missing or wrong, or `dest` is neither
            missing nor an empty folder.
        VerificationError: an entry fails a check; the message names the entry.
    """
    with OpenArchive(archive, password) as opened:
        return opened.extract_all(dest, max_total=max_total, max_ratio=max_ratio)


def _extract_native(
    opened: sevenzip_reader.Archive, entries: list[Entry], dest: Path
) -> dict[str, str]:
    for entry in sorted(entries, key=lambda entry: entry.name.encode()):
        path = dest / entry.name
        if entry.is_dir:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            # "x" mode: every name was checked unique, so no file exists yet.
            path.open("xb").close()

    def open_sink(record: fmt.FileRecord) -> BinaryIO:
        return (dest / record.name).open("r+b")

    return _stream_native(opened, entries, open_sink)


def _hash_tree(dest: Path, entries: list[Entry]) -> dict[str, str]:
    digests = {}
    for entry in entries:
        if not entry.is_dir:
            with (dest / entry.name).open("rb") as handle:
                digests[entry.name] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


def _normalize_extracted(dest: Path) -> None:
    # Top-down, so a folder stored without permissions becomes readable before
    # the walk lists it.
    for folder, dirnames, filenames in os.walk(dest):
        for name in dirnames:
            os.chmod(Path(folder, name), FOLDER_MODE)
        for name in filenames:
            os.chmod(Path(folder, name), FILE_MODE)


def _empty_folder(folder: Path) -> None:
    os.chmod(folder, FOLDER_MODE)
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            os.chmod(child, FOLDER_MODE)
            _normalize_extracted(child)
            shutil.rmtree(child)
        else:
            child.unlink()
