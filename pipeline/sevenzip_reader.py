"""Read 7z archives with the lzma module: open, decode folders in parallel, stream files.

A folder may be an AES-256 (7zAES) decryption followed by COPY, LZMA or LZMA2.
An LZMA2 stream is split at every chunk that resets the dictionary and the
properties (control byte 0xE0 and above), because the data after such a chunk
decodes without anything before it. The writer of this project starts a chunk
like that every block, so the blocks of one folder decode on separate threads
(the lzma module releases the GIL). Other streams decode in order, in pieces.

Every file's CRC-32 from the header is checked as its bytes pass, and every
size is checked against the header, so no decoder writes more than the header
declares.
"""

from __future__ import annotations

import hashlib
import itertools
import lzma
import os
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from pipeline import sevenzip_aes
from pipeline import sevenzip_format as fmt
from pipeline.errors import BundleError

# Unpacked bytes per piece when a stream decodes in order.
PIECE_SIZE = 4 * 1024 * 1024
# A block decodes whole in memory on a worker thread when it unpacks to at most this.
MAX_PARALLEL_BLOCK = 64 * 1024 * 1024
# Coders this reader decodes; 7zAES only as the first coder after the packed stream.
DECODERS = {fmt.COPY: "COPY", fmt.LZMA: "LZMA", fmt.LZMA2: "LZMA2"}


class PasswordError(BundleError):
    """The archive is encrypted and the password is missing or wrong."""


class Sink(Protocol):
    """Destination of a file's bytes, such as a file opened for writing."""

    def write(self, data: memoryview, /) -> object: ...

    def close(self) -> None: ...


@dataclass
class Archive:
    """An open 7z archive: its parsed header, file handle and password."""

    path: Path
    handle: BinaryIO
    size: int
    header: fmt.ParsedHeader
    password: str | None
    threads: int
    keys: dict[tuple[bytes, int], bytes] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def encrypted(self) -> bool:
        folders = [*self.header.header_folders, *self.header.streams.folders]
        return any(coder.method == fmt.AES for folder in folders for coder in folder.coders)


def open_archive(path: Path, handle: BinaryIO, password: str | None, threads: int) -> Archive:
    """Parse the archive's header, unpacking (and decrypting) an encoded header.

    Raises:
        PasswordError: the header is encrypted and `password` is None or wrong.
        BundleError: the archive is not a 7z archive, or is truncated or corrupted.
    """
    size = os.fstat(handle.fileno()).st_size
    where = str(path)
    start = handle.read(fmt.SIGNATURE_HEADER_SIZE)
    offset, header_size, header_crc = fmt.parse_signature_header(start, where)
    header_start = fmt.SIGNATURE_HEADER_SIZE + offset
    if header_size == 0 or header_start + header_size > size:
        raise BundleError(
            f"{where}: the 7z header ends at byte {header_start + header_size}, but the archive"
            f" has {size} bytes; the archive is truncated"
        )
    handle.seek(header_start)
    data = handle.read(header_size)
    if zlib.crc32(data) != header_crc:
        raise BundleError(f"{where}: corrupted 7z header (CRC mismatch)")
    archive = Archive(
        path, handle, size, fmt.ParsedHeader(fmt.StreamsInfo(), []), password, threads
    )

    def decode_header(streams: fmt.StreamsInfo, index: int) -> bytes:
        folder = streams.folders[index]
        if folder.unpack_size > 64 * header_size + 1024 * 1024:
            raise BundleError(f"{where}: the packed header claims {folder.unpack_size} bytes")
        unpacked = b"".join(decode_folder(archive, streams, index, "the header"))
        if folder.crc is not None and zlib.crc32(unpacked) != folder.crc:
            raise _corrupted(archive, folder, "the header")
        return unpacked

    archive.header = fmt.parse_header(data, where, decode_header)
    return archive


def _corrupted(archive: Archive, folder: fmt.Folder, what: str) -> BundleError:
    if any(coder.method == fmt.AES for coder in folder.coders):
        return PasswordError(
            f"{archive.where}: cannot decrypt {what}: the password is wrong,"
            " or the archive is corrupted"
        )
    return BundleError(f"{archive.where}: {what} is corrupted (CRC mismatch)")


# --------------------------------------------------------------------------- folders


def _read_packed(archive: Archive, streams: fmt.StreamsInfo, index: int) -> bytes:
    pack_index = streams.folder_pack_streams()[index]
    if len(pack_index) != 1:
        raise BundleError(f"{archive.where}: folder {index} has several packed streams")
    offset = streams.pack_offsets()[pack_index[0]]
    size = streams.pack_sizes[pack_index[0]]
    if offset + size > archive.size:
        raise BundleError(
            f"{archive.where}: packed stream {pack_index[0]} ends at byte {offset + size},"
            f" but the archive has {archive.size} bytes; the archive is truncated"
        )
    archive.handle.seek(offset)
    return archive.handle.read(size)


def _decrypt(archive: Archive, coder: fmt.Coder, data: bytes) -> bytes:
    if archive.password is None:
        raise PasswordError(
            f"{archive.where}: the archive is encrypted; pass its password to read it"
        )
    if len(data) % sevenzip_aes.BLOCK:
        raise BundleError(
            f"{archive.where}: corrupted encrypted stream: {len(data)} bytes, not whole AES blocks"
        )
    cycles, salt, iv = sevenzip_aes.decode_properties(coder.properties, archive.where)
    key = archive.keys.get((salt, cycles))
    if key is None:
        key = sevenzip_aes.derive_key(archive.password, salt, cycles)
        archive.keys[(salt, cycles)] = key
    decryptor = sevenzip_aes.decryptor(key, iv)
    return decryptor.update(data) + decryptor.finalize()


@dataclass(frozen=True)
class _Block:
    """Part of a folder's output: a whole LZMA2 block, or a stream decoded in pieces."""

    size: int
    decode: Callable[[], bytes] | None = None
    pieces: Callable[[], Iterator[bytes]] | None = None


def _folder_blocks(
    archive: Archive, streams: fmt.StreamsInfo, index: int, label: str
) -> list[_Block]:
    """Read and decrypt a folder's packed stream; return its output as blocks in order."""
    folder = streams.folders[index]
    try:
        chain = folder.chain()
    except BundleError as exc:
        raise BundleError(f"{archive.where}: {label} has {exc}") from exc
    data = _read_packed(archive, streams, index)
    coders = [folder.coders[position] for position in chain]
    if coders and coders[0].method == fmt.AES:
        plain_size = folder.unpack_sizes[chain[0]]
        if plain_size > len(data):
            raise BundleError(f"{archive.where}: {label} is corrupted: AES output above its input")
        data = _decrypt(archive, coders[0], data)[:plain_size]
        try:
            return _decoded_blocks(archive, folder, coders[1:], data, label)
        except BundleError as exc:
            # Data decrypted with a wrong key looks like a corrupted stream.
            raise _corrupted(archive, folder, label) from exc
    return _decoded_blocks(archive, folder, coders, data, label)


def _decoded_blocks(
    archive: Archive, folder: fmt.Folder, chain: list[fmt.Coder], data: bytes, label: str
) -> list[_Block]:
    size = folder.unpack_size
    if not chain or (chain[0].method == fmt.COPY and len(chain) == 1):
        if len(data) != size:
            raise _corrupted(archive, folder, label)
        return [_Block(size, decode=lambda: data)]
    if len(chain) != 1 or chain[0].method not in DECODERS:
        names = ", ".join(chain_method.method.hex() for chain_method in chain)
        raise BundleError(f"{archive.where}: {label} uses coders {names}, not read here")
    coder = chain[0]
    context = _Context(archive, folder, label)
    if coder.method == fmt.LZMA:
        filters = _lzma1_filters(coder.properties, context.where)
        return [_Block(size, pieces=lambda: _pieces(context, data, filters, size))]
    dict_size = _lzma2_dict_size(coder.properties, context.where)
    return _lzma2_blocks(context, data, [{"id": lzma.FILTER_LZMA2, "dict_size": dict_size}], size)


@dataclass(frozen=True)
class _Context:
    """The folder a decoder works on, for error messages."""

    archive: Archive
    folder: fmt.Folder
    label: str

    @property
    def where(self) -> str:
        return f"{self.archive.where}: {self.label}"

    def corrupted(self) -> BundleError:
        return _corrupted(self.archive, self.folder, self.label)


def _lzma2_dict_size(properties: bytes, where: str) -> int:
    if len(properties) != 1 or properties[0] > 40:
        raise BundleError(f"{where}: invalid LZMA2 properties {properties.hex()}")
    bits = properties[0]
    if bits == 40:
        return 0xFFFF_FFFF
    return (2 | (bits & 1)) << (bits // 2 + 11)


def _lzma1_filters(properties: bytes, where: str) -> list[dict[str, int]]:
    if len(properties) != 5 or properties[0] >= 9 * 5 * 5:
        raise BundleError(f"{where}: invalid LZMA properties {properties.hex()}")
    literal, pb = properties[0] % 45, properties[0] // 45
    lc, lp = literal % 9, literal // 9
    dict_size = int.from_bytes(properties[1:5], "little")
    return [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}]


@dataclass(frozen=True)
class _ChunkScan:
    """LZMA2 chunk headers of a stream: where the stream ends and where it resets."""

    # (byte offset, unpacked offset) of every chunk that resets the dictionary and properties.
    resets: list[tuple[int, int]]
    end: int  # byte offset of the end marker
    unpacked: int


def _scan_lzma2(data: bytes, where: str) -> _ChunkScan:
    def corrupted(problem: str) -> BundleError:
        return BundleError(f"{where}: corrupted LZMA2 stream: {problem} at byte {position}")

    resets: list[tuple[int, int]] = []
    position = unpacked = 0
    while True:
        if position >= len(data):
            raise corrupted("truncated")
        control = data[position]
        if control == 0:
            return _ChunkScan(resets, position, unpacked)
        if position == 0 and control != 1 and control < 0xE0:
            raise corrupted("no dictionary reset")
        if control in (1, 2):
            header = 3
        elif control >= 0xC0:
            header = 6
        else:
            header = 5
        if control not in (1, 2) and control < 0x80:
            raise corrupted(f"invalid chunk type 0x{control:02x}")
        if position + header > len(data):
            raise corrupted("truncated")
        size = int.from_bytes(data[position + 1 : position + 3], "big") + 1
        if control in (1, 2):
            step, produced = header + size, size
        else:
            produced = ((control & 0x1F) << 16) + size
            step = header + int.from_bytes(data[position + 3 : position + 5], "big") + 1
            if control >= 0xE0:
                resets.append((position, unpacked))
        position += step
        unpacked += produced


def _lzma2_blocks(
    context: _Context, data: bytes, filters: list[dict[str, int]], size: int
) -> list[_Block]:
    scan = _scan_lzma2(data, context.where)
    if scan.unpacked != size:
        raise BundleError(
            f"{context.where}: corrupted LZMA2 stream: its chunks unpack to {scan.unpacked}"
            f" bytes, the header says {size}"
        )
    resets = scan.resets
    if not resets or resets[0][0] != 0:
        resets = [(0, 0), *resets]
    bounds = [*resets, (scan.end, scan.unpacked)]
    blocks = []
    for (start, out_start), (stop, out_stop) in itertools.pairwise(bounds):
        # The end marker after the block's last chunk makes it a stream of its own.
        chunk = data[start:stop] + b"\x00"
        block_size = out_stop - out_start
        if block_size <= MAX_PARALLEL_BLOCK:
            blocks.append(_Block(block_size, decode=_whole(context, chunk, filters, block_size)))
        else:
            pieces = _in_pieces(context, chunk, filters, block_size)
            blocks.append(_Block(block_size, pieces=pieces))
    return blocks


def _whole(
    context: _Context, data: bytes, filters: list[dict[str, int]], size: int
) -> Callable[[], bytes]:
    return lambda: b"".join(_pieces(context, data, filters, size, piece_size=size))


def _in_pieces(
    context: _Context, data: bytes, filters: list[dict[str, int]], size: int
) -> Callable[[], Iterator[bytes]]:
    return lambda: _pieces(context, data, filters, size)


def _pieces(
    context: _Context,
    data: bytes,
    filters: list[dict[str, int]],
    size: int,
    piece_size: int = PIECE_SIZE,
) -> Iterator[bytes]:
    """Decode `data` into pieces of at most `piece_size` bytes, `size` bytes in all."""
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    produced = 0
    pending = data
    while produced < size:
        try:
            piece = decoder.decompress(pending, max_length=min(piece_size, size - produced))
        except lzma.LZMAError as exc:
            raise context.corrupted() from exc
        pending = b""
        if not piece:
            break
        produced += len(piece)
        yield piece
        if decoder.eof:
            break
    if produced != size:
        raise context.corrupted()


def decode_folder(
    archive: Archive, streams: fmt.StreamsInfo, index: int, label: str
) -> Iterator[bytes]:
    """Yield the unpacked bytes of one folder in order, on the calling thread."""
    for block in _folder_blocks(archive, streams, index, label):
        if block.decode is not None:
            yield block.decode()
        elif block.pieces is not None:
            yield from block.pieces()


def _ordered_output(
    blocks: Iterable[tuple[int, _Block]], threads: int
) -> Generator[tuple[int, bytes], None, None]:
    """Yield (tag, bytes) of each block's output in order, decoding whole blocks ahead.

    `blocks` pairs each block with a tag, the position of its folder. Blocks
    are taken from it only as the window of blocks decoded ahead moves, so the
    next folder's first blocks decode on the thread pool while the current
    folder's last ones are still being consumed.
    """
    window = max(1, threads) * 2
    source = iter(blocks)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        ahead: deque[tuple[int, _Block, Future[bytes] | None]] = deque()
        try:
            while True:
                while len(ahead) < window:
                    item = next(source, None)
                    if item is None:
                        break
                    tag, block = item
                    future = pool.submit(block.decode) if block.decode else None
                    ahead.append((tag, block, future))
                if not ahead:
                    return
                tag, block, future = ahead.popleft()
                if future is not None:
                    yield tag, future.result()
                elif block.pieces is not None:
                    for piece in block.pieces():
                        yield tag, piece
        finally:
            for _, _, pending in ahead:
                if pending is not None:
                    pending.cancel()


class _TaggedOutput:
    """Output of several folders in a row, taken folder by folder."""

    def __init__(self, pieces: Iterator[tuple[int, bytes]]) -> None:
        self.pieces = pieces
        self.head: tuple[int, bytes] | None = None

    def folder(self, tag: int) -> Iterator[bytes]:
        """Yield the output of folder `tag`, skipping what earlier folders left unread."""
        while True:
            if self.head is None:
                self.head = next(self.pieces, None)
                if self.head is None:
                    return
            head_tag, piece = self.head
            if head_tag > tag:
                return
            self.head = None
            if head_tag == tag:
                yield piece


# --------------------------------------------------------------------------- files


@dataclass
class FileResult:
    """A file read from the archive: its name, size, and SHA-256 of its bytes."""

    name: str
    size: int
    sha256: str


def stream_files(
    archive: Archive,
    wanted: Callable[[fmt.FileRecord], bool],
    open_sink: Callable[[fmt.FileRecord], Sink | None],
) -> list[FileResult]:
    """Decode the files that `wanted` selects; pass their bytes to sinks and hash them.

    Folders without a wanted file are skipped, and a folder stops decoding after
    its last wanted file. Every wanted file's CRC-32 and size are checked.

    Raises:
        BundleError: the data is corrupted or truncated, or a CRC does not match.
        PasswordError: the data is encrypted and the password is missing or wrong.
    """
    streams = archive.header.streams
    by_folder: dict[int, list[fmt.FileRecord]] = {}
    for record in archive.header.files:
        if record.has_stream and record.folder is not None and wanted(record):
            by_folder.setdefault(record.folder, []).append(record)
    plan = [
        (index, sorted(by_folder[index], key=lambda record: record.offset))
        for index in sorted(by_folder)
    ]

    def blocks() -> Iterator[tuple[int, _Block]]:
        for tag, (index, records) in enumerate(plan):
            end = max(record.offset + record.size for record in records)
            covered = 0
            for block in _folder_blocks(archive, streams, index, f"folder {index}"):
                if covered >= end:
                    break
                yield tag, block
                covered += block.size

    results: list[FileResult] = []
    pieces = _ordered_output(blocks(), archive.threads)
    try:
        shared = _TaggedOutput(pieces)
        for tag, (index, records) in enumerate(plan):
            output = _FolderOutput(shared.folder(tag))
            folder = streams.folders[index]
            for record in records:
                results.append(_copy_file(archive, folder, output, record, open_sink(record)))
    finally:
        pieces.close()
    return results


class _FolderOutput:
    """A folder's output consumed front to back, in slices that end at file boundaries."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces
        self.buffer = memoryview(b"")
        self.position = 0

    def slices(self, offset: int, size: int) -> Iterator[memoryview]:
        """Yield the bytes [offset, offset + size); raise EOFError when the output ends first."""
        while self.position < offset + size:
            if not self.buffer:
                piece = next(self.pieces, None)
                if piece is None:
                    raise EOFError
                self.buffer = memoryview(piece)
            if self.position < offset:
                take = min(len(self.buffer), offset - self.position)
                self.buffer, self.position = self.buffer[take:], self.position + take
                continue
            part = self.buffer[: offset + size - self.position]
            self.buffer, self.position = self.buffer[len(part) :], self.position + len(part)
            yield part


def _copy_file(
    archive: Archive,
    folder: fmt.Folder,
    output: _FolderOutput,
    record: fmt.FileRecord,
    sink: Sink | None,
) -> FileResult:
    """Pass one file's bytes to `sink` while hashing them; check its CRC-32."""
    hasher = hashlib.sha256()
    crc = 0
    try:
        for part in output.slices(record.offset, record.size):
            hasher.update(part)
            crc = zlib.crc32(part, crc)
            if sink is not None:
                sink.write(part)
    except EOFError:
        raise _corrupted(archive, folder, record.name) from None
    finally:
        if sink is not None:
            sink.close()
    if record.crc is not None and crc != record.crc:
        raise _corrupted(archive, folder, record.name)
    return FileResult(record.name, record.size, hasher.hexdigest())
