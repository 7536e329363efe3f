"""The bundle's 7z archive: deterministic writing, listing, and checked extraction.

Writing uses py7zr with one LZMA2 filter and no BCJ, so every file of a bundle
lands in one solid block. Of an entry's metadata py7zr stores only the
last-write time and the attributes, and this module fixes both: the mtime to
the caller's value, the mode to 0644 for files and 0755 for folders. Entries
are written sorted by the UTF-8 bytes of their POSIX path. So the same staged
content gives the same archive bytes.

Reading wraps every exception that py7zr raises on a malformed or truncated
archive into a BundleError that names the archive. Extraction checks every
entry first and writes nothing until all of them pass.
"""

from __future__ import annotations

import contextlib
import logging
import lzma
import os
import shutil
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import py7zr
import py7zr.exceptions
import py7zr.io

from pipeline.errors import BundleError, ConfigError, VerificationError
from pipeline.fsutil import atomic_output

log = logging.getLogger(__name__)

FILE_MODE = 0o644
FOLDER_MODE = 0o755

# Names of the 7z coder ids that a bundle may meet (ids as in py7zr.properties.CompressionMethod).
FILTER_NAMES: dict[bytes, str] = {
    bytes.fromhex("00"): "COPY",
    bytes.fromhex("03"): "Delta",
    bytes.fromhex("04"): "BCJ",
    bytes.fromhex("21"): "LZMA2",
    bytes.fromhex("030101"): "LZMA",
    bytes.fromhex("03030103"): "BCJ",
    bytes.fromhex("0303011b"): "BCJ2",
    bytes.fromhex("030401"): "PPMd",
    bytes.fromhex("040108"): "Deflate",
    bytes.fromhex("040109"): "Deflate64",
    bytes.fromhex("040202"): "BZip2",
    bytes.fromhex("06f10701"): "7zAES",
}
# Filters whose decoders this tool trusts to unpack a bundle.
READABLE_FILTERS = frozenset({"COPY", "LZMA", "LZMA2"})

# Exceptions that py7zr may raise on malformed, truncated or corrupted input. Flipping or
# cutting each byte of small archives with py7zr 1.1.4 gave only Bad7zFile,
# CrcError and lzma.LZMAError, and an archive without any stream gave
# AttributeError. py7zr does not document its errors, so the builtin errors
# that its header parser can meet are caught as well.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    py7zr.exceptions.ArchiveError,
    py7zr.exceptions.PasswordRequired,
    py7zr.exceptions.AbsolutePathError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    struct.error,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
    OverflowError,
    MemoryError,
)


@dataclass(frozen=True)
class Compression:
    """LZMA2 settings of a bundle archive.

    py7zr 1.1.4 writes all files into one solid block, so solid is not a choice.
    """

    preset: int = 6

    def __post_init__(self) -> None:
        if not 0 <= self.preset <= 9:
            raise ConfigError(f"LZMA2 preset: expected 0 to 9, found {self.preset}")

    def filters(self) -> list[dict[str, int]]:
        return [{"id": lzma.FILTER_LZMA2, "preset": self.preset}]


def describe(compression: Compression) -> dict[str, Any]:
    """Return the archiver and its settings as the manifest's `build.compression` records them."""
    return {
        "archiver": f"py7zr {py7zr.__version__}",
        "filter": "LZMA2",
        "preset": compression.preset,
        "solid": True,
    }


@dataclass(frozen=True)
class Entry:
    """One member of a 7z archive, as its header describes it."""

    name: str
    size: int
    is_dir: bool
    is_symlink: bool
    # A device, FIFO, socket, or an entry whose Windows and Unix types disagree.
    is_special: bool
    # Unix mode (type and permission bits), or None when the archive stores none.
    mode: int | None
    # Filters of the solid block that holds the entry, in coder order; empty for
    # folders and empty files, which have no data.
    filters: tuple[str, ...]


# --------------------------------------------------------------------------- writing


def write_archive(
    staging: Path, out: Path, mtime: int, compression: Compression = Compression()
) -> dict[str, Any]:
    """Write every file and folder under `staging` into the 7z archive `out`.

    Sets the mode (0644 files, 0755 folders) and the mtime (`mtime`, unix
    seconds) of every entry in `staging` itself before writing. Returns
    `describe(compression)`, the value of the manifest's `build.compression`.

    Raises:
        BundleError: `staging` is empty, contains a link or special file, or the
            archive cannot be written.
    """
    if not staging.is_dir():
        raise BundleError(f"staging folder {staging} does not exist or is not a folder")
    if mtime < 0:
        raise BundleError(f"archive mtime: expected unix seconds >= 0, found {mtime}")
    members = _staged_members(staging)
    if not members:
        raise BundleError(f"staging folder {staging} is empty; a bundle needs at least a manifest")
    for name, path in members:
        _normalize(path, mtime)
        log.debug("archive member %s", name)
    try:
        with (
            atomic_output(out) as tmp,
            py7zr.SevenZipFile(tmp, "w", filters=compression.filters()) as archive,
        ):
            for name, path in members:
                archive.write(path, arcname=name)
    except OSError as exc:
        raise BundleError(f"{out}: cannot write the archive: {exc}") from exc
    except _READ_ERRORS as exc:
        raise BundleError(f"{out}: py7zr failed to write the archive: {exc}") from exc
    log.info("wrote %s: %d entries, %d bytes", out, len(members), out.stat().st_size)
    return describe(compression)


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


@contextlib.contextmanager
def _open(archive: Path) -> Iterator[py7zr.SevenZipFile]:
    """Open `archive` for reading; turn any py7zr failure inside the block into BundleError."""
    if not archive.is_file():
        raise BundleError(f"archive {archive} does not exist or is not a file")
    try:
        with py7zr.SevenZipFile(archive, "r") as handle:
            yield handle
    except _READ_ERRORS as exc:
        raise BundleError(
            f"{archive}: not a readable 7z archive, or corrupted:"
            f" {type(exc).__name__}: {exc}; download or rebuild the bundle"
        ) from exc
    except OSError as exc:
        raise BundleError(f"{archive}: cannot read the archive: {exc}") from exc


def list_entries(archive: Path) -> list[Entry]:
    """Return the entries of `archive` in the order its header stores them.

    Raises:
        BundleError: the file is missing, is not a 7z archive, or its header is corrupted.
    """
    with _open(archive) as handle:
        return _entries(handle)


def _entries(handle: py7zr.SevenZipFile) -> list[Entry]:
    entries = []
    for member in handle.files:
        filters: tuple[str, ...] = ()
        folder = member.folder
        if folder is not None:
            filters = tuple(_filter_name(coder["method"]) for coder in folder.coders)
        entries.append(_entry(member, filters))
    return entries


def _entry(member: Any, filters: tuple[str, ...]) -> Entry:
    unix_type = member.st_fmt
    is_dir = bool(member.is_directory)
    is_symlink = bool(member.is_symlink or member.is_junction)
    plain_dir = is_dir and unix_type in (None, stat.S_IFDIR)
    plain_file = not is_dir and unix_type in (None, stat.S_IFREG)
    attributes = member.file_properties().get("attributes")
    mode = attributes >> 16 if member.posix_mode is not None and attributes is not None else None
    return Entry(
        name=member.filename,
        size=int(member.uncompressed or 0),
        is_dir=is_dir,
        is_symlink=is_symlink,
        is_special=not (plain_dir or plain_file or is_symlink),
        mode=mode,
        filters=filters,
    )


def _filter_name(method: bytes) -> str:
    return FILTER_NAMES.get(method, f"method 0x{method.hex()}")


def read_file(archive: Path, name: str, max_size: int) -> bytes:
    """Read one regular file of `archive` into memory, such as `manifest.json`.

    Raises:
        BundleError: the archive is unreadable, or `name` is missing, duplicated,
            not a regular file, larger than `max_size` bytes, stored with a filter
            this tool does not read, or its data is corrupted.
    """
    with _open(archive) as handle:
        matches = [entry for entry in _entries(handle) if entry.name == name]
        if not matches:
            raise BundleError(f"{archive}: {name} not found in the archive")
        if len(matches) > 1:
            raise BundleError(f"{archive}: {name} appears {len(matches)} times in the archive")
        entry = matches[0]
        if entry.is_dir or entry.is_symlink or entry.is_special:
            raise BundleError(f"{archive}: {name}: expected a regular file, found {_kind(entry)}")
        if entry.size > max_size:
            raise BundleError(
                f"{archive}: {name} is {entry.size} bytes; expected at most {max_size}"
            )
        unreadable = [f for f in entry.filters if f not in READABLE_FILTERS]
        if unreadable:
            raise BundleError(
                f"{archive}: {name} is stored with filter {', '.join(unreadable)};"
                f" this tool reads only {', '.join(sorted(READABLE_FILTERS))}"
            )
        factory = py7zr.io.BytesIOFactory(max_size + 1)
        handle.extract(targets=[name], factory=factory)
        if entry.size == 0:
            return b""
        product = factory.products[name]
        product.seek(0)
        data: bytes = product.read()
    if len(data) != entry.size:
        raise BundleError(f"{archive}: {name}: expected {entry.size} bytes, unpacked {len(data)}")
    return data


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


def check_entries(archive: Path, *, max_total: int, max_ratio: float) -> list[Entry]:
    """Check every entry of `archive` for safe extraction and return the entries.

    Rejects an absolute name, a `..`, `.` or empty path part, a NUL in a name,
    a link, a device or other special file, a duplicate name, a file that
    another entry uses as a folder, a filter other than LZMA2, LZMA or COPY, a
    total unpacked size above `max_total` bytes, and a ratio of unpacked size
    to archive file size above `max_ratio`.

    Raises:
        BundleError: the archive cannot be read.
        VerificationError: an entry fails a check; the message names the entry.
    """
    entries = list_entries(archive)
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
        unreadable = [f for f in entry.filters if f not in READABLE_FILTERS]
        if unreadable:
            raise VerificationError(
                f"{archive}: {entry.name}: stored with filter {', '.join(unreadable)};"
                f" this tool reads only {', '.join(sorted(READABLE_FILTERS))}"
            )
    files = {entry.name for entry in entries if not entry.is_dir}
    for entry in entries:
        for parent in PurePosixPath(entry.name).parents:
            if str(parent) in files:
                raise VerificationError(
                    f"{archive}: {entry.name}: its parent {parent} is a file in the archive"
                )
    _check_sizes(archive, entries, max_total, max_ratio)
    return entries


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
        raise VerificationError(
            f"{archive}: unpacks {total} bytes from {packed}, ratio {ratio:.0f} is above the"
            f" limit {max_ratio:g}; the largest entry is {largest_name}"
        )
    log.debug("%s: %d bytes unpacked from %d, ratio %.1f", archive, total, packed, ratio)


def extract_all(archive: Path, dest: Path, *, max_total: int, max_ratio: float) -> None:
    """Extract `archive` into the new or empty folder `dest` after checking every entry.

    The checks are those of `check_entries`; nothing is written before all
    entries pass. Extracted files get mode 0644 and folders 0755 whatever the
    archive stores. When extraction fails, `dest` is left empty (and removed
    when this call created it).

    Raises:
        BundleError: the archive cannot be read, its data is corrupted, or
            `dest` is neither missing nor an empty folder.
        VerificationError: an entry fails a check; the message names the entry.
    """
    entries = check_entries(archive, max_total=max_total, max_ratio=max_ratio)
    created = not dest.exists()
    if not created and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"extraction folder {dest} must be missing or empty")
    dest.mkdir(parents=True, exist_ok=True)
    total = sum(entry.size for entry in entries)
    try:
        with _open(archive) as handle:
            handle.max_extract_size = total
            handle.extractall(path=dest)
        _normalize_extracted(dest)
    except BaseException:
        _empty_folder(dest)
        if created:
            dest.rmdir()
        raise
    log.info("extracted %s: %d entries, %d bytes", archive, len(entries), total)


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
