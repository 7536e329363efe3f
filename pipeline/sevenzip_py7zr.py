"""Read archives through py7zr when the header uses a feature the own parser does not read.

Such archives come from other tools: 7-Zip's additional header streams, or
properties stored outside the header. py7zr reads them; this module wraps
every exception it raises on malformed input into a BundleError.
"""

from __future__ import annotations

import contextlib
import lzma
import stat
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import py7zr
import py7zr.exceptions
import py7zr.io

from pipeline.errors import BundleError

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

# Exceptions that py7zr may raise on malformed, truncated or corrupted input. Flipping or
# cutting each byte of small archives with py7zr 1.1.4 gave only Bad7zFile,
# CrcError and lzma.LZMAError, and an archive without any stream gave
# AttributeError. py7zr does not document its errors, so the builtin errors
# that its header parser can meet are caught as well.
READ_ERRORS: tuple[type[BaseException], ...] = (
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


def filter_name(method: bytes) -> str:
    return FILTER_NAMES.get(method, f"method 0x{method.hex()}")


@contextlib.contextmanager
def open_py7zr(archive: Path, password: str | None) -> Iterator[py7zr.SevenZipFile]:
    """Open `archive` for reading; turn any py7zr failure inside the block into BundleError."""
    try:
        with py7zr.SevenZipFile(archive, "r", password=password) as handle:
            yield handle
    except READ_ERRORS as exc:
        raise BundleError(
            f"{archive}: not a readable 7z archive, or corrupted:"
            f" {type(exc).__name__}: {exc}; download or rebuild the bundle"
        ) from exc
    except OSError as exc:
        raise BundleError(f"{archive}: cannot read the archive: {exc}") from exc


def member_fields(handle: py7zr.SevenZipFile) -> list[dict[str, Any]]:
    """Return the fields of `archive.Entry` for every member, in header order."""
    fields = []
    for member in handle.files:
        filters: tuple[str, ...] = ()
        folder = member.folder
        if folder is not None:
            filters = tuple(filter_name(coder["method"]) for coder in folder.coders)
        unix_type = member.st_fmt
        is_dir = bool(member.is_directory)
        is_symlink = bool(member.is_symlink or member.is_junction)
        plain_dir = is_dir and unix_type in (None, stat.S_IFDIR)
        plain_file = not is_dir and unix_type in (None, stat.S_IFREG)
        attributes = member.file_properties().get("attributes")
        mode = None
        if member.posix_mode is not None and attributes is not None:
            mode = attributes >> 16
        fields.append(
            {
                "name": member.filename,
                "size": int(member.uncompressed or 0),
                "is_dir": is_dir,
                "is_symlink": is_symlink,
                "is_special": not (plain_dir or plain_file or is_symlink),
                "mode": mode,
                "filters": filters,
            }
        )
    return fields


def read_member(archive: Path, name: str, max_size: int, password: str | None) -> bytes:
    """Read one member into memory with py7zr."""
    with open_py7zr(archive, password) as handle:
        factory = py7zr.io.BytesIOFactory(max_size + 1)
        handle.extract(targets=[name], factory=factory)
        product = factory.products.get(name)
        if product is None:
            return b""
        product.seek(0)
        data: bytes = product.read()
        return data


def extract_members(archive: Path, dest: Path, total: int, password: str | None) -> None:
    """Extract every member into `dest` with py7zr, at most `total` bytes."""
    with open_py7zr(archive, password) as handle:
        handle.max_extract_size = total
        handle.extractall(path=dest)
