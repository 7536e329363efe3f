"""Write a 7z archive in parallel LZMA2 blocks, optionally encrypted with 7zAES.

Layout of the archive this module writes:
- the files named in `separate` each get a folder of their own, first, so a
  reader unpacks one of them without touching the rest;
- the other files form one folder per preset (the preset comes from the file
  name's suffix), in the order of the preset table, each sorted by the UTF-8
  bytes of its name;
- every folder's data is cut into blocks of `block_size` bytes, a cut may fall
  inside a file, and each block is compressed on its own into a raw LZMA2
  stream. The streams of one folder are joined without their end markers, so
  every block starts with a chunk that resets the dictionary and the
  properties: any LZMA2 decoder reads the folder as one stream, and this
  project's reader decodes the blocks in parallel;
- the header lists the files with data in folder order, then folders and empty
  files by name. Every entry has the same mtime and fixed attributes.

The blocks depend only on the content and the settings, never on the number of
threads, so the archive bytes do not either.
"""

from __future__ import annotations

import logging
import lzma
import stat
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline import sevenzip_aes
from pipeline import sevenzip_format as fmt
from pipeline.errors import BundleError

log = logging.getLogger(__name__)

FILE_ATTRIBUTES = (
    fmt.ATTRIBUTE_ARCHIVE | fmt.ATTRIBUTE_UNIX_EXTENSION | ((stat.S_IFREG | 0o644) << 16)
)
FOLDER_ATTRIBUTES = (
    fmt.ATTRIBUTE_DIRECTORY | fmt.ATTRIBUTE_UNIX_EXTENSION | ((stat.S_IFDIR | 0o755) << 16)
)
# Dictionary size of each xz preset 0-9, as liblzma 5 defines the presets.
PRESET_DICT_SIZES = (
    256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20, 8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20,
)  # fmt: skip
HEADER_PRESET = 6


@dataclass(frozen=True)
class Member:
    """A file or folder to archive: its name in the archive and, for a file, its path and size."""

    name: str
    path: Path | None
    size: int = 0

    @property
    def is_dir(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class _Piece:
    path: Path
    offset: int
    size: int


@dataclass(frozen=True)
class _Folder:
    preset: int
    files: tuple[Member, ...]
    blocks: tuple[tuple[_Piece, ...], ...]

    @property
    def size(self) -> int:
        return sum(member.size for member in self.files)


def plan_folders(
    members: list[Member],
    presets: list[tuple[int, list[str]]],
    default_preset: int,
    block_size: int,
    separate: tuple[str, ...],
) -> list[_Folder]:
    """Partition the non-empty files into folders and blocks (see the module docstring)."""
    files = [member for member in members if not member.is_dir and member.size > 0]
    groups: list[tuple[int, list[Member]]] = []
    for name in separate:
        alone = [member for member in files if member.name == name]
        if alone:
            groups.append((default_preset, alone))
    rest = [member for member in files if member.name not in separate]
    claimed: set[str] = set()
    for preset, suffixes in [*presets, (default_preset, [])]:
        group = [
            member
            for member in rest
            if member.name not in claimed
            and (not suffixes or any(member.name.lower().endswith(s) for s in suffixes))
        ]
        claimed.update(member.name for member in group)
        if group:
            groups.append((preset, sorted(group, key=lambda member: member.name.encode())))
    return [_Folder(preset, tuple(group), _blocks(group, block_size)) for preset, group in groups]


def _blocks(files: list[Member], block_size: int) -> tuple[tuple[_Piece, ...], ...]:
    blocks: list[tuple[_Piece, ...]] = []
    current: list[_Piece] = []
    room = block_size
    for member in files:
        assert member.path is not None
        offset = 0
        while offset < member.size:
            size = min(room, member.size - offset)
            current.append(_Piece(member.path, offset, size))
            offset += size
            room -= size
            if room == 0:
                blocks.append(tuple(current))
                current, room = [], block_size
    if current:
        blocks.append(tuple(current))
    return tuple(blocks)


def _filters(preset: int) -> list[dict[str, int]]:
    return [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": PRESET_DICT_SIZES[preset]}]


def _lzma2_properties(dict_size: int) -> bytes:
    """Return the one-byte LZMA2 coder property: the smallest encoded size >= `dict_size`."""
    for bits in range(40):
        if (2 | (bits & 1)) << (bits // 2 + 11) >= dict_size:
            return bytes([bits])
    return bytes([40])


def _compress_block(pieces: tuple[_Piece, ...], preset: int) -> tuple[bytes, int]:
    """Compress one block into a raw LZMA2 stream; return it with the CRC-32 of its input."""
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=_filters(preset))
    out = []
    crc = 0
    for piece in pieces:
        with piece.path.open("rb") as handle:
            handle.seek(piece.offset)
            data = handle.read(piece.size)
        if len(data) != piece.size:
            raise BundleError(f"{piece.path}: changed while being archived (shorter than listed)")
        crc = zlib.crc32(data, crc)
        out.append(compressor.compress(data))
    out.append(compressor.flush())
    return b"".join(out), crc


def _compressed_blocks(folders: list[_Folder], threads: int) -> Iterator[tuple[int, bytes]]:
    """Yield (folder index, LZMA2 stream of a block) in archive order; compress in parallel."""
    jobs = [
        (index, block, folder.preset)
        for index, folder in enumerate(folders)
        for block in folder.blocks
    ]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(lambda job: _compress_block(job[1], job[2]), jobs)
        for (index, _, _), (stream, _) in zip(jobs, results, strict=True):
            yield index, stream


def _join_blocks(streams: list[bytes]) -> bytes:
    """Join LZMA2 streams into one: drop the end marker (a 0x00 byte) of all but the last."""
    for stream in streams:
        if not stream or stream[-1] != 0:
            raise BundleError("the lzma module wrote an LZMA2 stream without an end marker")
    return b"".join(stream[:-1] for stream in streams[:-1]) + streams[-1]


def write_7z(
    handle: BinaryIO,
    members: list[Member],
    mtime: int,
    folders: list[_Folder],
    password: str | None,
    threads: int,
) -> None:
    """Write the archive to `handle`, an empty file opened for writing and seeking."""
    key = sevenzip_aes.derive_key(password) if password is not None else None
    handle.write(b"\x00" * fmt.SIGNATURE_HEADER_SIZE)
    streams = fmt.StreamsInfo()
    pending: list[bytes] = []
    current = 0

    def finish_folder(index: int) -> None:
        folder = folders[index]
        stream = _join_blocks(pending)
        packed, coder_folder = _seal(stream, folder.size, folder.preset, key, crc=None)
        handle.write(packed)
        streams.pack_sizes.append(len(packed))
        streams.folders.append(coder_folder)
        streams.substream_sizes.append([member.size for member in folder.files])
        pending.clear()

    for index, stream in _compressed_blocks(folders, threads):
        if index != current:
            finish_folder(current)
            current = index
        pending.append(stream)
    if pending:
        finish_folder(current)
    streams.substream_crcs = [[_file_crc(member) for member in f.files] for f in folders]
    header = fmt.encode_header(streams, _records(members, folders, mtime))
    header_offset = handle.tell() - fmt.SIGNATURE_HEADER_SIZE
    if key is not None:
        header = _encrypted_header(handle, header, key, header_offset)
        header_offset = handle.tell() - fmt.SIGNATURE_HEADER_SIZE
    handle.write(header)
    handle.seek(0)
    handle.write(fmt.signature_header(header_offset, len(header), zlib.crc32(header)))


def _file_crc(member: Member) -> int:
    # NOTE: this reads every file a second time. It is cheap next to compression
    # (zlib.crc32 runs at over 1 GB/s), and keeps the blocks free to cut inside files.
    assert member.path is not None
    crc = 0
    with member.path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _seal(
    stream: bytes, size: int, preset: int, key: bytes | None, crc: int | None
) -> tuple[bytes, fmt.Folder]:
    """Return the packed stream and the folder of an LZMA2 stream, encrypted when `key` is set."""
    lzma2 = fmt.Coder(fmt.LZMA2, _lzma2_properties(PRESET_DICT_SIZES[preset]))
    if key is None:
        return stream, fmt.Folder((lzma2,), (), (0,), (size,), crc)
    iv = sevenzip_aes.derive_iv(key, stream)
    aes = fmt.Coder(fmt.AES, sevenzip_aes.encode_properties(iv))
    # Coder 1 (LZMA2) reads the output of coder 0 (7zAES), which reads the packed stream,
    # in the order 7-Zip 26 writes them.
    folder = fmt.Folder((aes, lzma2), ((1, 0),), (0,), (len(stream), size), crc)
    return sevenzip_aes.encrypt(key, iv, stream), folder


def _encrypted_header(handle: BinaryIO, header: bytes, key: bytes, pack_pos: int) -> bytes:
    """Write the compressed, encrypted header as a packed stream; return the kEncodedHeader."""
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=_filters(HEADER_PRESET))
    stream = compressor.compress(header) + compressor.flush()
    packed, folder = _seal(stream, len(header), HEADER_PRESET, key, crc=zlib.crc32(header))
    handle.write(packed)
    info = fmt.StreamsInfo(pack_pos=pack_pos, pack_sizes=[len(packed)], folders=[folder])
    return fmt.encode_encoded_header(info)


def _records(members: list[Member], folders: list[_Folder], mtime: int) -> list[fmt.FileRecord]:
    filetime = (mtime + fmt.FILETIME_EPOCH_OFFSET) * 10_000_000
    records = [
        fmt.FileRecord(name=member.name, attributes=FILE_ATTRIBUTES, mtime=filetime)
        for folder in folders
        for member in folder.files
    ]
    for member in members:
        if member.is_dir or member.size == 0:
            records.append(
                fmt.FileRecord(
                    name=member.name,
                    has_stream=False,
                    is_empty_file=not member.is_dir,
                    attributes=FOLDER_ATTRIBUTES if member.is_dir else FILE_ATTRIBUTES,
                    mtime=filetime,
                )
            )
    return records
