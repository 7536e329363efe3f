"""The 7z container: its header model, and the header encoder and parser.

The layout follows 7-Zip's `DOC/7zFormat.txt`: a 32-byte signature header,
the packed streams, then the header. The header lists the packed streams
(PackInfo), the folders that decode them (a folder is a chain of coders,
LZMA2 for example), the files inside each folder (SubStreamsInfo), and then
per-file properties: names, empty streams, times and attributes. The header
itself may be packed and encrypted like a folder (kEncodedHeader).

The parser bounds every count by the bytes that remain, so a malformed
header raises BundleError instead of allocating or looping without end.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.errors import BundleError

SIGNATURE = b"7z\xbc\xaf\x27\x1c"
SIGNATURE_HEADER_SIZE = 32
FORMAT_VERSION = (0, 4)

# Property ids of the header.
END = 0x00
HEADER = 0x01
ARCHIVE_PROPERTIES = 0x02
ADDITIONAL_STREAMS_INFO = 0x03
MAIN_STREAMS_INFO = 0x04
FILES_INFO = 0x05
PACK_INFO = 0x06
UNPACK_INFO = 0x07
SUBSTREAMS_INFO = 0x08
SIZE = 0x09
CRC = 0x0A
FOLDER = 0x0B
CODERS_UNPACK_SIZE = 0x0C
NUM_UNPACK_STREAM = 0x0D
EMPTY_STREAM = 0x0E
EMPTY_FILE = 0x0F
ANTI = 0x10
NAME = 0x11
MTIME = 0x14
WIN_ATTRIBUTES = 0x15
ENCODED_HEADER = 0x17
START_POS = 0x18
DUMMY = 0x19

# Coder ids (7-Zip's `DOC/Methods.txt`).
COPY = bytes.fromhex("00")
LZMA2 = bytes.fromhex("21")
LZMA = bytes.fromhex("030101")
AES = bytes.fromhex("06f10701")

# Windows attribute bits, and the bit that marks a Unix mode in the high 16 bits.
ATTRIBUTE_DIRECTORY = 0x10
ATTRIBUTE_ARCHIVE = 0x20
ATTRIBUTE_REPARSE_POINT = 0x400
ATTRIBUTE_UNIX_EXTENSION = 0x8000

# Seconds between 1601-01-01 (the FILETIME epoch) and 1970-01-01.
FILETIME_EPOCH_OFFSET = 11_644_473_600

# Nesting limit of encoded headers; 7-Zip writes one level.
MAX_HEADER_LEVELS = 4


class UnsupportedFeature(BundleError):
    """The header uses a valid 7z feature that this parser does not read."""


@dataclass(frozen=True)
class Coder:
    """One coder of a folder: its method id, stream counts and properties."""

    method: bytes
    properties: bytes = b""
    in_streams: int = 1
    out_streams: int = 1


@dataclass(frozen=True)
class Folder:
    """A chain of coders that turns packed streams into one unpacked stream."""

    coders: tuple[Coder, ...]
    # (in index, out index): the coder input `in index` reads the coder output `out index`.
    bind_pairs: tuple[tuple[int, int], ...]
    # Coder input index of each packed stream, in pack order.
    packed_streams: tuple[int, ...]
    # Size of every coder output, in coder order.
    unpack_sizes: tuple[int, ...]
    crc: int | None = None

    @property
    def main_out(self) -> int:
        """Index of the one coder output that no bind pair consumes."""
        bound = {out_index for _, out_index in self.bind_pairs}
        free = [index for index in range(len(self.unpack_sizes)) if index not in bound]
        return free[0]

    @property
    def unpack_size(self) -> int:
        return self.unpack_sizes[self.main_out]

    def chain(self) -> list[int]:
        """Return the coder indexes from the packed stream to the output, for 1:1 coders.

        Raises:
            BundleError: a coder has several inputs or outputs, or the chain is not linear.
        """
        if any(coder.in_streams != 1 or coder.out_streams != 1 for coder in self.coders):
            raise BundleError("a coder with several streams (such as BCJ2)")
        # With 1:1 coders, input i and output i both belong to coder i.
        feeds = {in_index: out_index for in_index, out_index in self.bind_pairs}
        order = [self.main_out]
        while order[-1] in feeds and len(order) <= len(self.coders):
            order.append(feeds[order[-1]])
        if len(order) != len(self.coders) or self.packed_streams != (order[-1],):
            raise BundleError("a folder whose coders do not form one chain")
        return order[::-1]


@dataclass
class FileRecord:
    """One entry of the archive as the header describes it."""

    name: str
    has_stream: bool = True
    is_empty_file: bool = False
    is_anti: bool = False
    attributes: int | None = None
    mtime: int | None = None  # FILETIME, 100 ns units since 1601
    size: int = 0
    crc: int | None = None
    folder: int | None = None  # index of the folder that contains the data
    offset: int = 0  # offset of the data inside the folder's unpacked stream

    @property
    def is_dir(self) -> bool:
        if self.has_stream:
            return bool((self.attributes or 0) & ATTRIBUTE_DIRECTORY)
        return not self.is_empty_file


@dataclass
class StreamsInfo:
    """Packed streams, their folders, and how each folder splits into files."""

    pack_pos: int = 0
    pack_sizes: list[int] = field(default_factory=list)
    folders: list[Folder] = field(default_factory=list)
    # Per folder: the sizes and CRCs (None when unknown) of its files, in order.
    substream_sizes: list[list[int]] = field(default_factory=list)
    substream_crcs: list[list[int | None]] = field(default_factory=list)

    def pack_offsets(self) -> list[int]:
        """Absolute file offset of each packed stream."""
        offsets = []
        position = SIGNATURE_HEADER_SIZE + self.pack_pos
        for size in self.pack_sizes:
            offsets.append(position)
            position += size
        return offsets

    def folder_pack_streams(self) -> list[list[int]]:
        """Indexes into `pack_sizes` of each folder's packed streams."""
        result = []
        index = 0
        for folder in self.folders:
            count = len(folder.packed_streams)
            result.append(list(range(index, index + count)))
            index += count
        return result


# --------------------------------------------------------------------------- encoding


def encode_number(value: int) -> bytes:
    """Encode `value` in 7z's variable-length NUMBER: the first byte's high bits count the rest."""
    if value < 0 or value >= 1 << 64:
        raise BundleError(f"7z number out of range: {value}")
    for extra in range(8):
        if value < 1 << (8 * extra + 7 - extra):
            high = value >> (8 * extra)
            first = (0xFF << (8 - extra)) & 0xFF | high
            return bytes([first]) + (value & ((1 << (8 * extra)) - 1)).to_bytes(extra, "little")
    return b"\xff" + value.to_bytes(8, "little")


def _encode_bits(bits: list[bool]) -> bytes:
    """Pack booleans most significant bit first, as 7z bit vectors are."""
    out = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            out[index // 8] |= 0x80 >> (index % 8)
    return bytes(out)


def _encode_digests(crcs: list[int]) -> bytes:
    return b"\x01" + b"".join(struct.pack("<I", crc) for crc in crcs)


def _encode_folder(folder: Folder) -> bytes:
    out = bytearray(encode_number(len(folder.coders)))
    for coder in folder.coders:
        complex_coder = coder.in_streams != 1 or coder.out_streams != 1
        flags = len(coder.method) | (0x10 if complex_coder else 0)
        flags |= 0x20 if coder.properties else 0
        out += bytes([flags]) + coder.method
        if complex_coder:
            out += encode_number(coder.in_streams) + encode_number(coder.out_streams)
        if coder.properties:
            out += encode_number(len(coder.properties)) + coder.properties
    for in_index, out_index in folder.bind_pairs:
        out += encode_number(in_index) + encode_number(out_index)
    if len(folder.packed_streams) > 1:
        for index in folder.packed_streams:
            out += encode_number(index)
    return bytes(out)


def encode_streams_info(info: StreamsInfo) -> bytes:
    """Encode PackInfo, UnpackInfo and, when files are listed, SubStreamsInfo."""
    out = bytearray([PACK_INFO])
    out += encode_number(info.pack_pos) + encode_number(len(info.pack_sizes))
    out += bytes([SIZE]) + b"".join(encode_number(size) for size in info.pack_sizes)
    out += bytes([END, UNPACK_INFO, FOLDER]) + encode_number(len(info.folders)) + b"\x00"
    for folder in info.folders:
        out += _encode_folder(folder)
    out += bytes([CODERS_UNPACK_SIZE])
    for folder in info.folders:
        out += b"".join(encode_number(size) for size in folder.unpack_sizes)
    folder_crcs = [folder.crc for folder in info.folders]
    if folder_crcs and all(crc is not None for crc in folder_crcs):
        out += bytes([CRC]) + _encode_digests([crc for crc in folder_crcs if crc is not None])
    out += bytes([END])
    if info.substream_sizes:
        out += bytes([SUBSTREAMS_INFO, NUM_UNPACK_STREAM])
        out += b"".join(encode_number(len(sizes)) for sizes in info.substream_sizes)
        out += bytes([SIZE])
        for sizes in info.substream_sizes:
            out += b"".join(encode_number(size) for size in sizes[:-1])
        crcs = [crc for crcs in info.substream_crcs for crc in crcs if crc is not None]
        out += bytes([CRC]) + _encode_digests(crcs) + bytes([END])
    out += bytes([END])
    return bytes(out)


def _encode_property(property_id: int, data: bytes) -> bytes:
    return bytes([property_id]) + encode_number(len(data)) + data


def encode_header(streams: StreamsInfo, files: list[FileRecord]) -> bytes:
    """Encode a plain header (kHeader) with the main streams and the file properties.

    Every file gets a name, an mtime and attributes. Files without a stream
    are marked in kEmptyStream, and the empty regular files among them in kEmptyFile.
    """
    out = bytearray([HEADER])
    if streams.folders:
        out += bytes([MAIN_STREAMS_INFO]) + encode_streams_info(streams)
    out += bytes([FILES_INFO]) + encode_number(len(files))
    empty = [not record.has_stream for record in files]
    if any(empty):
        out += _encode_property(EMPTY_STREAM, _encode_bits(empty))
        empty_files = [record.is_empty_file for record in files if not record.has_stream]
        out += _encode_property(EMPTY_FILE, _encode_bits(empty_files))
    names = b"".join(record.name.encode("utf-16-le") + b"\x00\x00" for record in files)
    out += _encode_property(NAME, b"\x00" + names)
    times = b"".join(struct.pack("<Q", record.mtime or 0) for record in files)
    out += _encode_property(MTIME, b"\x01\x00" + times)
    attributes = b"".join(struct.pack("<I", record.attributes or 0) for record in files)
    out += _encode_property(WIN_ATTRIBUTES, b"\x01\x00" + attributes)
    out += bytes([END, END])
    return bytes(out)


def encode_encoded_header(streams: StreamsInfo) -> bytes:
    """Encode a kEncodedHeader: the streams info of the packed and encrypted header."""
    return bytes([ENCODED_HEADER]) + encode_streams_info(streams)


def signature_header(next_offset: int, next_size: int, next_crc: int) -> bytes:
    """Return the 32-byte signature header that points at the header."""
    start = struct.pack("<QQI", next_offset, next_size, next_crc)
    return SIGNATURE + bytes(FORMAT_VERSION) + struct.pack("<I", zlib.crc32(start)) + start


# --------------------------------------------------------------------------- parsing


class _Reader:
    """A cursor over header bytes; every read past the end raises BundleError."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.position = 0
        self.where = where

    def fail(self, problem: str) -> BundleError:
        return BundleError(f"{self.where}: corrupted 7z header at byte {self.position}: {problem}")

    @property
    def remaining(self) -> int:
        return len(self.data) - self.position

    def byte(self) -> int:
        if self.position >= len(self.data):
            raise self.fail("unexpected end of the header")
        value = self.data[self.position]
        self.position += 1
        return value

    def take(self, size: int) -> bytes:
        if size < 0 or size > self.remaining:
            raise self.fail(f"expected {size} more bytes, found {self.remaining}")
        value = self.data[self.position : self.position + size]
        self.position += size
        return value

    def number(self) -> int:
        first = self.byte()
        mask = 0x80
        value = 0
        for extra in range(8):
            if not first & mask:
                return value | ((first & (mask - 1)) << (8 * extra))
            value |= self.byte() << (8 * extra)
            mask >>= 1
        return value

    def count(self, unit: int = 1) -> int:
        """Read a count of items that take at least `unit` bytes each in what remains."""
        value = self.number()
        if value * unit > self.remaining:
            raise self.fail(f"a count of {value} does not fit in the {self.remaining} bytes left")
        return value

    def uint32(self) -> int:
        value: int = struct.unpack("<I", self.take(4))[0]
        return value

    def uint64(self) -> int:
        value: int = struct.unpack("<Q", self.take(8))[0]
        return value

    def expect(self, property_id: int, name: str) -> None:
        found = self.byte()
        if found != property_id:
            raise self.fail(f"expected {name} (0x{property_id:02x}), found 0x{found:02x}")

    def bits(self, count: int) -> list[bool]:
        data = self.take((count + 7) // 8)
        return [bool(data[index // 8] & (0x80 >> (index % 8))) for index in range(count)]

    def defined_bits(self, count: int) -> list[bool]:
        """Read an AllAreDefined byte and, when it is 0, the bit vector that follows."""
        if self.byte():
            return [True] * count
        return self.bits(count)

    def digests(self, count: int) -> list[int | None]:
        defined = self.defined_bits(count)
        return [self.uint32() if is_defined else None for is_defined in defined]


def parse_signature_header(data: bytes, where: str) -> tuple[int, int, int]:
    """Check the signature header; return the header's (offset, size, CRC).

    The offset counts from the end of the 32-byte signature header.
    """
    if len(data) < SIGNATURE_HEADER_SIZE or data[:6] != SIGNATURE:
        raise BundleError(f"{where}: not a 7z archive (no 7z signature at the start)")
    if data[6] != 0:
        raise BundleError(
            f"{where}: 7z format version {data[6]}.{data[7]} is not supported; expected 0.x"
        )
    start_crc = struct.unpack("<I", data[8:12])[0]
    if zlib.crc32(data[12:32]) != start_crc:
        raise BundleError(f"{where}: corrupted 7z signature header (CRC mismatch)")
    offset, size, crc = struct.unpack("<QQI", data[12:32])
    return offset, size, crc


def _parse_folder(reader: _Reader) -> Folder:
    coders = []
    for _ in range(reader.count()):
        flags = reader.byte()
        if flags & 0x80:
            raise reader.fail("a coder with alternative methods")
        method = reader.take(flags & 0x0F)
        in_streams = out_streams = 1
        if flags & 0x10:
            in_streams = reader.count()
            out_streams = reader.count()
        properties = reader.take(reader.count()) if flags & 0x20 else b""
        coders.append(Coder(method, properties, in_streams, out_streams))
    total_in = sum(coder.in_streams for coder in coders)
    total_out = sum(coder.out_streams for coder in coders)
    if not coders or total_out < 1 or total_in < total_out - 1:
        raise reader.fail(f"a folder with {len(coders)} coders and {total_out} outputs")
    bind_pairs = tuple((reader.number(), reader.number()) for _ in range(total_out - 1))
    if any(a >= total_in or b >= total_out for a, b in bind_pairs):
        raise reader.fail("a bind pair names a stream the folder does not have")
    packed_count = total_in - len(bind_pairs)
    if packed_count == 1:
        bound = {in_index for in_index, _ in bind_pairs}
        free = [index for index in range(total_in) if index not in bound]
        if len(free) != 1:
            raise reader.fail("a folder whose packed stream cannot be found")
        packed: tuple[int, ...] = (free[0],)
    else:
        packed = tuple(reader.number() for _ in range(packed_count))
    if len({out_index for _, out_index in bind_pairs}) != len(bind_pairs):
        raise reader.fail("a folder that binds one coder output twice")
    return Folder(tuple(coders), bind_pairs, packed, ())


def _parse_pack_info(reader: _Reader, info: StreamsInfo) -> None:
    info.pack_pos = reader.number()
    count = reader.count()
    property_id = reader.byte()
    if property_id == SIZE:
        info.pack_sizes = [reader.number() for _ in range(count)]
        property_id = reader.byte()
    if property_id == CRC:
        reader.digests(count)
        property_id = reader.byte()
    if property_id != END or len(info.pack_sizes) != count:
        raise reader.fail("PackInfo without sizes, or with an unknown property")


def _parse_unpack_info(reader: _Reader, info: StreamsInfo) -> None:
    reader.expect(FOLDER, "kFolder")
    count = reader.count()
    if reader.byte() != 0:
        raise UnsupportedFeature("folders stored outside the header")
    folders = [_parse_folder(reader) for _ in range(count)]
    reader.expect(CODERS_UNPACK_SIZE, "kCodersUnpackSize")
    for index, folder in enumerate(folders):
        outputs = sum(coder.out_streams for coder in folder.coders)
        sizes = tuple(reader.number() for _ in range(outputs))
        folders[index] = Folder(folder.coders, folder.bind_pairs, folder.packed_streams, sizes)
    property_id = reader.byte()
    if property_id == CRC:
        for index, crc in enumerate(reader.digests(count)):
            folder = folders[index]
            folders[index] = Folder(
                folder.coders, folder.bind_pairs, folder.packed_streams, folder.unpack_sizes, crc
            )
        property_id = reader.byte()
    if property_id != END:
        raise reader.fail(f"UnpackInfo with unknown property 0x{property_id:02x}")
    info.folders = folders


def _parse_substreams_info(reader: _Reader, info: StreamsInfo) -> None:
    counts = [1] * len(info.folders)
    property_id = reader.byte()
    if property_id == NUM_UNPACK_STREAM:
        counts = [reader.count() for _ in info.folders]
        property_id = reader.byte()

    # Every size but the last of a folder is stored, so a folder of several files needs kSize.
    if property_id != SIZE and any(count > 1 for count in counts):
        raise reader.fail("folders of several files without their sizes")
    sizes: list[list[int]] = []
    for folder, count in zip(info.folders, counts, strict=True):
        if count == 0:
            sizes.append([])
            continue
        known = [reader.number() for _ in range(count - 1)]
        if sum(known) > folder.unpack_size:
            raise reader.fail("files larger than their folder")
        sizes.append([*known, folder.unpack_size - sum(known)])
    if property_id == SIZE:
        property_id = reader.byte()

    # A folder of one file with a folder CRC stores no second CRC for the file.
    crcs: list[list[int | None]] = [[None] * count for count in counts]
    unknown: list[tuple[int, int]] = []
    for folder_index, folder in enumerate(info.folders):
        if counts[folder_index] == 1 and folder.crc is not None:
            crcs[folder_index][0] = folder.crc
        else:
            unknown.extend((folder_index, item) for item in range(counts[folder_index]))
    if property_id == CRC:
        for (folder_index, item), crc in zip(unknown, reader.digests(len(unknown)), strict=True):
            crcs[folder_index][item] = crc
        property_id = reader.byte()

    if property_id != END:
        raise reader.fail(f"SubStreamsInfo with unknown property 0x{property_id:02x}")
    info.substream_sizes = sizes
    info.substream_crcs = crcs


def parse_streams_info(reader: _Reader) -> StreamsInfo:
    info = StreamsInfo()
    property_id = reader.byte()
    if property_id == PACK_INFO:
        _parse_pack_info(reader, info)
        property_id = reader.byte()
    if property_id == UNPACK_INFO:
        _parse_unpack_info(reader, info)
        property_id = reader.byte()
    if property_id == SUBSTREAMS_INFO:
        _parse_substreams_info(reader, info)
        property_id = reader.byte()
    if property_id != END:
        raise reader.fail(f"StreamsInfo with unknown property 0x{property_id:02x}")
    if not info.substream_sizes:
        info.substream_sizes = [[folder.unpack_size] for folder in info.folders]
        info.substream_crcs = [[folder.crc] for folder in info.folders]
    packed = sum(len(folder.packed_streams) for folder in info.folders)
    if packed != len(info.pack_sizes):
        raise reader.fail(
            f"{packed} packed streams used by folders, {len(info.pack_sizes)} listed"
        )
    return info


def _parse_names(reader: _Reader, data: bytes, count: int) -> list[str]:
    if not data or data[0] != 0:
        raise UnsupportedFeature("file names stored outside the header")
    raw = data[1:]
    if len(raw) % 2:
        raise reader.fail("file names of odd byte length")
    names = []
    start = 0
    for position in range(0, len(raw), 2):
        if raw[position : position + 2] == b"\x00\x00":
            try:
                names.append(raw[start:position].decode("utf-16-le"))
            except UnicodeDecodeError as exc:
                raise reader.fail(f"a file name that is not UTF-16: {exc}") from exc
            start = position + 2
    if len(names) != count or start != len(raw):
        raise reader.fail(f"expected {count} file names, found {len(names)}")
    return names


def _parse_values(reader: _Reader, data: bytes, count: int, width: int) -> list[int | None]:
    """Parse kMTime or kWinAttributes: defined bits, the External byte, then the values."""
    inner = _Reader(data, reader.where)
    defined = inner.defined_bits(count)
    if inner.byte() != 0:
        raise UnsupportedFeature("file properties stored outside the header")
    unpack = inner.uint64 if width == 8 else inner.uint32
    return [unpack() if is_defined else None for is_defined in defined]


def _parse_files_info(reader: _Reader, streams: StreamsInfo) -> list[FileRecord]:
    # Every entry takes at least the two bytes of its name's terminator.
    count = reader.count(unit=2)
    records = [FileRecord(name="") for _ in range(count)]
    empty_stream = [False] * count
    empty_file: list[bool] = []
    anti: list[bool] = []
    names: list[str] | None = None
    while True:
        property_id = reader.number()
        if property_id == END:
            break
        data = reader.take(reader.number())
        inner = _Reader(data, reader.where)
        if property_id == EMPTY_STREAM:
            empty_stream = inner.bits(count)
        elif property_id == EMPTY_FILE:
            empty_file = inner.bits(sum(empty_stream))
        elif property_id == ANTI:
            anti = inner.bits(sum(empty_stream))
        elif property_id == NAME:
            names = _parse_names(reader, data, count)
        elif property_id == MTIME:
            for record, value in zip(records, _parse_values(reader, data, count, 8), strict=True):
                record.mtime = value
        elif property_id == WIN_ATTRIBUTES:
            for record, value in zip(records, _parse_values(reader, data, count, 4), strict=True):
                record.attributes = value
        # Other properties (creation and access times, kDummy, kStartPos) do not matter here.
    if names is None:
        raise reader.fail("no file names")

    empty_index = 0
    for record, name, is_empty in zip(records, names, empty_stream, strict=True):
        # A backslash is read as a path separator, as py7zr reads it, so the
        # name checks see "..\x" as "../x".
        record.name = name.replace("\\", "/")
        record.has_stream = not is_empty
        if is_empty:
            record.is_empty_file = empty_index < len(empty_file) and empty_file[empty_index]
            record.is_anti = empty_index < len(anti) and anti[empty_index]
            empty_index += 1

    _assign_streams(reader, records, streams)
    return records


def _assign_streams(reader: _Reader, records: list[FileRecord], streams: StreamsInfo) -> None:
    """Give every file with a stream its folder, offset, size and CRC, in header order."""
    slots = [
        (folder_index, offset, size, crc)
        for folder_index, (sizes, crcs) in enumerate(
            zip(streams.substream_sizes, streams.substream_crcs, strict=True)
        )
        for offset, size, crc in zip(_offsets(sizes), sizes, crcs, strict=True)
    ]
    with_stream = [record for record in records if record.has_stream]
    if len(with_stream) != len(slots):
        raise reader.fail(f"{len(with_stream)} files with data, but {len(slots)} streams")
    for record, (folder_index, offset, size, crc) in zip(with_stream, slots, strict=True):
        record.folder, record.offset, record.size, record.crc = folder_index, offset, size, crc


def _offsets(sizes: list[int]) -> list[int]:
    offsets = []
    total = 0
    for size in sizes:
        offsets.append(total)
        total += size
    return offsets


@dataclass
class ParsedHeader:
    streams: StreamsInfo
    files: list[FileRecord]
    # Folders of the packed header, when the header is encoded (and maybe encrypted).
    header_folders: list[Folder] = field(default_factory=list)


# Decodes one folder of an encoded header: (streams, folder index) -> unpacked bytes.
HeaderDecoder = Callable[[StreamsInfo, int], bytes]


def parse_header(data: bytes, where: str, decode: HeaderDecoder) -> ParsedHeader:
    """Parse the header bytes that the signature header points at.

    An encoded header is unpacked with `decode`, then parsed in turn.

    Raises:
        BundleError: the header is malformed, or uses a feature this parser does not read.
    """
    header_folders: list[Folder] = []
    for _ in range(MAX_HEADER_LEVELS):
        reader = _Reader(data, where)
        property_id = reader.byte()
        if property_id == HEADER:
            result = _parse_plain_header(reader)
            result.header_folders = header_folders
            return result
        if property_id != ENCODED_HEADER:
            raise reader.fail(f"expected a header (0x01 or 0x17), found 0x{property_id:02x}")
        streams = parse_streams_info(reader)
        if len(streams.folders) != 1:
            raise reader.fail(f"an encoded header in {len(streams.folders)} folders")
        header_folders.extend(streams.folders)
        data = decode(streams, 0)
    raise BundleError(f"{where}: more than {MAX_HEADER_LEVELS} levels of encoded headers")


def _parse_plain_header(reader: _Reader) -> ParsedHeader:
    property_id = reader.byte()
    if property_id == ARCHIVE_PROPERTIES:
        while reader.byte() != END:
            reader.take(reader.number())
        property_id = reader.byte()
    if property_id == ADDITIONAL_STREAMS_INFO:
        raise UnsupportedFeature("additional header streams")
    streams = StreamsInfo()
    if property_id == MAIN_STREAMS_INFO:
        streams = parse_streams_info(reader)
        property_id = reader.byte()
    files: list[FileRecord] = []
    if property_id == FILES_INFO:
        files = _parse_files_info(reader, streams)
        property_id = reader.byte()
    elif streams.folders:
        raise reader.fail("streams without file names")
    if property_id != END:
        raise reader.fail(f"header with unknown property 0x{property_id:02x}")
    return ParsedHeader(streams, files)
