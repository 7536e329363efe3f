"""Tests of the deterministic 7z writer and the checked reader, on real archives."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import stat
import subprocess
import time
from pathlib import Path

import py7zr
import py7zr.exceptions
import pytest
from conftest import require_tool

from pipeline import sevenzip_reader
from pipeline.archive import (
    Compression,
    check_entries,
    describe,
    digest_entries,
    extract_all,
    list_entries,
    read_file,
    write_archive,
)
from pipeline.errors import BundleError, ConfigError, PipelineError, VerificationError
from pipeline.sevenzip_format import UnsupportedFeature

MTIME = 1_796_374_800  # 2026-12-04T10:00:00Z

# Staged content: POSIX path -> bytes. Folders are implied by the paths.
CONTENT: dict[str, bytes] = {
    "manifest.json": b'{"version": "2026.12.0"}\n',
    "catalogs/kbk/rows.csv": "code,title_kk\n110,Салықтар\n".encode(),
    "catalogs/kbk/catalog.json": b'{"id": "kbk"}\n',
    "notes/kk/жазба.txt": "Қазақстан Республикасы\n".encode(),
    "notes/ru/заметка.txt": "Выпуск 2026.12.0\n".encode(),
    "payload/empty.dat": b"",
    "payload/Zeta.bin": bytes(range(256)) * 40,
}
EMPTY_FOLDERS = ("payload/logs",)


def stage(root: Path, *, reverse: bool = False, umask: int = 0o022) -> Path:
    """Create the staged content under `root`, in the given creation order and umask."""
    items = sorted(CONTENT.items(), reverse=reverse)
    old_umask = os.umask(umask)
    try:
        for folder in EMPTY_FOLDERS:
            (root / folder).mkdir(parents=True)
        for name, data in items:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            # A creation time that differs between stagings, which the writer must replace.
            os.utime(path, (time.time() - len(name), time.time() - len(name)))
    finally:
        os.umask(old_umask)
    return root


@pytest.fixture
def good_archive(tmp_path: Path) -> Path:
    out = tmp_path / "bundle.7z"
    write_archive(stage(tmp_path / "staging"), out, MTIME)
    return out


def write_raw(out: Path, members: list[tuple[Path, str]]) -> Path:
    """Write `members` (file, archive name) with py7zr as given, bypassing the checked writer."""
    with py7zr.SevenZipFile(out, "w", filters=Compression().filters()) as archive:
        for path, name in members:
            archive.write(path, arcname=name)
    return out


def seven_zip(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("7zz"), *args], cwd=cwd, check=True, capture_output=True)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("variant", ["path", "umask", "order", "tz", "all"])
def test_write_archive_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    first = tmp_path / "first.7z"
    write_archive(stage(tmp_path / "a" / "staging"), first, MTIME)

    second_root = tmp_path / "a" / "staging2"
    if variant in ("path", "all"):
        second_root = tmp_path / "elsewhere" / "deeper" / "другая папка"
    reverse = variant in ("order", "all")
    umask = 0o077 if variant in ("umask", "all") else 0o022
    if variant in ("tz", "all"):
        monkeypatch.setenv("TZ", "Asia/Almaty")
        time.tzset()
    try:
        second = tmp_path / "second.7z"
        write_archive(stage(second_root, reverse=reverse, umask=umask), second, MTIME)
    finally:
        monkeypatch.delenv("TZ", raising=False)
        time.tzset()

    assert first.read_bytes() == second.read_bytes()


def test_write_archive_mtime_changes_bytes(tmp_path: Path) -> None:
    first = tmp_path / "first.7z"
    second = tmp_path / "second.7z"
    write_archive(stage(tmp_path / "a"), first, MTIME)
    write_archive(stage(tmp_path / "b"), second, MTIME + 1)

    assert first.read_bytes() != second.read_bytes()


def test_write_archive_returns_build_settings(tmp_path: Path) -> None:
    build = write_archive(stage(tmp_path / "s"), tmp_path / "b.7z", MTIME, Compression(preset=3))

    assert build == {
        "archiver": "parus-kaz-release 7z writer",
        "filter": "LZMA2",
        "preset": 3,
        "presets": {".csv": 5, ".tsv": 5, ".sql": 5},
        "block_size": 16 * 1024 * 1024,
    }
    assert build == describe(Compression(preset=3))


def test_compression_preset_out_of_range() -> None:
    with pytest.raises(ConfigError, match="expected 0 to 9, found 12"):
        Compression(preset=12)
    with pytest.raises(ConfigError, match="expected 0 to 9, found -1"):
        Compression(presets=((-1, (".csv",)),))


def test_compression_block_size_too_small() -> None:
    with pytest.raises(ConfigError, match="expected at least 1048576 bytes, found 4096"):
        Compression(block_size=4096)


def test_entries_in_folder_order(good_archive: Path) -> None:
    names = [entry.name for entry in list_entries(good_archive)]

    # The manifest comes first in a folder of its own. The CSV folder (preset 5) and
    # the rest (preset 6) follow, each by UTF-8 bytes, and then folders and empty files.
    assert names == [
        "manifest.json",
        "catalogs/kbk/rows.csv",
        "catalogs/kbk/catalog.json",
        "notes/kk/жазба.txt",
        "notes/ru/заметка.txt",
        "payload/Zeta.bin",
        "catalogs",
        "catalogs/kbk",
        "notes",
        "notes/kk",
        "notes/ru",
        "payload",
        "payload/empty.dat",
        "payload/logs",
    ]


def test_entries_modes_normalized(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s", umask=0o077)
    (staging / "manifest.json").chmod(0o600)
    out = tmp_path / "b.7z"
    write_archive(staging, out, MTIME)

    modes = {entry.name: entry.mode for entry in list_entries(out)}

    assert modes["manifest.json"] == stat.S_IFREG | 0o644
    assert modes["payload/logs"] == stat.S_IFDIR | 0o755
    assert modes["notes/kk"] == stat.S_IFDIR | 0o755


def test_entries_mtime_fixed(good_archive: Path) -> None:
    with py7zr.SevenZipFile(good_archive) as archive:
        times = {info.filename: info.creationtime for info in archive.list()}

    assert {value.timestamp() for value in times.values() if value} == {MTIME}
    assert len(times) == len(list_entries(good_archive))


# --------------------------------------------------------------------------- 7-Zip interop


def test_7zz_tests_archive(good_archive: Path) -> None:
    result = subprocess.run(
        [require_tool("7zz"), "t", str(good_archive)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Everything is Ok" in result.stdout


def test_7zz_extracts_same_bytes(good_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "by-7zz"
    out.mkdir()
    seven_zip("x", str(good_archive), cwd=out)

    for name, data in CONTENT.items():
        assert (out / name).read_bytes() == data, name
    assert (out / "payload" / "logs").is_dir()


def test_read_7zz_lzma_archive(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    out = tmp_path / "lzma.7z"
    seven_zip("a", "-m0=LZMA", str(out), ".", cwd=staging)

    entries = {entry.name: entry for entry in list_entries(out)}

    assert entries["manifest.json"].filters == ("LZMA",)
    assert read_file(out, "notes/kk/жазба.txt", 1000) == CONTENT["notes/kk/жазба.txt"]


# --------------------------------------------------------------------------- round trips


def test_extract_all_round_trip(good_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    extract_all(good_archive, dest, max_total=10**6, max_ratio=100)

    for name, data in CONTENT.items():
        assert (dest / name).read_bytes() == data, name
    assert (dest / "payload" / "logs").is_dir()
    assert stat.S_IMODE((dest / "notes" / "kk").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "manifest.json").stat().st_mode) == 0o644


def test_cyrillic_names_round_trip(good_archive: Path, tmp_path: Path) -> None:
    names = {entry.name for entry in list_entries(good_archive)}
    dest = tmp_path / "out"
    extract_all(good_archive, dest, max_total=10**6, max_ratio=100)

    assert "notes/ru/заметка.txt" in names
    assert read_file(good_archive, "notes/kk/жазба.txt", 1000) == CONTENT["notes/kk/жазба.txt"]
    assert (dest / "notes" / "ru" / "заметка.txt").read_bytes() == CONTENT["notes/ru/заметка.txt"]


def test_empty_file_round_trip(good_archive: Path, tmp_path: Path) -> None:
    entries = {entry.name: entry for entry in list_entries(good_archive)}
    dest = tmp_path / "out"
    extract_all(good_archive, dest, max_total=10**6, max_ratio=100)

    assert entries["payload/empty.dat"].size == 0
    assert read_file(good_archive, "payload/empty.dat", 10) == b""
    assert (dest / "payload" / "empty.dat").read_bytes() == b""


def test_read_file_large_member(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    big = hashlib.sha256(b"seed").digest() * 100_000
    (staging / "payload" / "big.bin").write_bytes(big)
    out = tmp_path / "b.7z"
    write_archive(staging, out, MTIME)

    assert read_file(out, "payload/big.bin", len(big)) == big


# --------------------------------------------------------------------------- writer errors


def test_write_archive_rejects_symlink(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    (staging / "payload" / "link").symlink_to("Zeta.bin")
    out = tmp_path / "b.7z"

    with pytest.raises(BundleError, match=r"payload/link: expected a regular file or folder"):
        write_archive(staging, out, MTIME)
    assert not out.exists()


def test_write_archive_keeps_old_file_on_failure(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    os.mkfifo(staging / "payload" / "pipe")
    out = tmp_path / "b.7z"
    out.write_bytes(b"previous archive")

    with pytest.raises(BundleError, match="found a FIFO"):
        write_archive(staging, out, MTIME)
    assert out.read_bytes() == b"previous archive"
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".b.7z")] == []


def test_write_archive_rejects_empty_staging(tmp_path: Path) -> None:
    staging = tmp_path / "s"
    staging.mkdir()

    with pytest.raises(BundleError, match=f"staging folder {staging} is empty"):
        write_archive(staging, tmp_path / "b.7z", MTIME)


def test_write_archive_missing_staging(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist or is not a folder"):
        write_archive(tmp_path / "missing", tmp_path / "b.7z", MTIME)


# --------------------------------------------------------------------------- reader errors


def test_read_file_missing_member(good_archive: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle\.7z: notes/missing\.txt not found"):
        read_file(good_archive, "notes/missing.txt", 100)


def test_read_file_over_max_size(good_archive: Path) -> None:
    size = len(CONTENT["payload/Zeta.bin"])

    with pytest.raises(
        BundleError, match=f"payload/Zeta.bin is {size} bytes; expected at most 100"
    ):
        read_file(good_archive, "payload/Zeta.bin", 100)


def test_read_file_folder_member(good_archive: Path) -> None:
    with pytest.raises(BundleError, match="notes/kk: expected a regular file, found a folder"):
        read_file(good_archive, "notes/kk", 100)


def test_list_entries_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "not-an-archive.7z"
    path.write_bytes(b"PK\x03\x04 this is a zip header")

    with pytest.raises(BundleError, match=r"not-an-archive\.7z: not a readable 7z archive"):
        list_entries(path)


def test_list_entries_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"missing\.7z does not exist"):
        list_entries(tmp_path / "missing.7z")


def test_truncated_archive_rejected(good_archive: Path, tmp_path: Path) -> None:
    data = good_archive.read_bytes()
    truncated = tmp_path / "truncated.7z"
    for length in (0, 12, 32, len(data) // 2, len(data) - 1):
        truncated.write_bytes(data[:length])
        with pytest.raises(BundleError, match=r"truncated\.7z: not a readable 7z archive"):
            list_entries(truncated)


def test_flipped_data_byte_rejected(good_archive: Path, tmp_path: Path) -> None:
    data = good_archive.read_bytes()
    with py7zr.SevenZipFile(good_archive) as archive:
        packed = sum(archive.header.main_streams.packinfo.packsizes)
    # The packed stream starts after the 32-byte signature header.
    for position in range(32, 32 + packed, max(1, packed // 7)):
        corrupted = tmp_path / f"flipped-at-{position}.7z"
        corrupted.write_bytes(
            data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
        )
        dest = tmp_path / f"out-{position}"
        with pytest.raises(BundleError, match=f"flipped-at-{position}.7z: .*corrupted"):
            extract_all(corrupted, dest, max_total=10**6, max_ratio=100)
        assert not dest.exists()


def test_folder_only_archive_listed(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "no-streams.7z"
    # An archive with only an empty folder has no packed stream at all.
    seven_zip("a", str(out), "empty", cwd=tmp_path)

    entries = list_entries(out)

    assert [entry.name for entry in entries] == ["empty"]
    assert entries[0].is_dir


# --------------------------------------------------------------------------- entry checks


def test_parent_path_entry_rejected(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"outside")
    archive = write_raw(tmp_path / "parent-path.7z", [(source, "../x")])
    dest = tmp_path / "work" / "out"

    with pytest.raises(VerificationError, match=r"entry '\.\./x': .* found a '\.\.' part"):
        extract_all(archive, dest, max_total=10**6, max_ratio=100)
    assert not dest.exists()
    assert not (tmp_path / "work" / "x").exists()


def test_absolute_path_entry_rejected(tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"outside")
    archive = write_raw(tmp_path / "absolute-path.7z", [(source, "etc/x")])
    seven_zip("rn", str(archive), "etc/x", "/etc/x", cwd=tmp_path)
    dest = tmp_path / "out"

    with pytest.raises(VerificationError, match=r"entry '/etc/x': .* found an absolute path"):
        extract_all(archive, dest, max_total=10**6, max_ratio=100)
    assert not dest.exists()


@pytest.mark.parametrize("name", ["a//b", "./a", "C:x"])
def test_noncanonical_name_rejected(tmp_path: Path, name: str) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"data")
    archive = write_raw(tmp_path / "plain.7z", [(source, "plain")])
    seven_zip("rn", str(archive), "plain", name, cwd=tmp_path)
    stored = list_entries(archive)[0].name

    with pytest.raises(VerificationError, match="expected a relative POSIX path"):
        check_entries(archive, max_total=10**6, max_ratio=100)
    assert stored == name


def test_backslash_parent_path_rejected(tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"data")
    archive = write_raw(tmp_path / "backslash-parent.7z", [(source, "plain")])
    seven_zip("rn", str(archive), "plain", "..\\x", cwd=tmp_path)

    with pytest.raises(VerificationError, match=r"entry '\.\./x': .* found a '\.\.' part"):
        check_entries(archive, max_total=10**6, max_ratio=100)


def test_symlink_entry_rejected(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"data")
    (tmp_path / "link").symlink_to("target")
    archive = write_raw(tmp_path / "symlink.7z", [(tmp_path / "link", "payload/link")])
    dest = tmp_path / "out"

    with pytest.raises(
        VerificationError, match="payload/link: expected a regular file or folder, found a link"
    ):
        extract_all(archive, dest, max_total=10**6, max_ratio=100)
    assert not dest.exists()


def test_fifo_entry_rejected(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    out = tmp_path / "fifo.7z"
    seven_zip("a", str(out), "pipe", cwd=tmp_path)

    with pytest.raises(
        VerificationError, match="pipe: expected a regular file or folder, found a FIFO"
    ):
        check_entries(out, max_total=10**6, max_ratio=100)


def test_duplicate_name_rejected(tmp_path: Path) -> None:
    (tmp_path / "one").write_bytes(b"first")
    (tmp_path / "two").write_bytes(b"second")
    archive = write_raw(
        tmp_path / "duplicate-name.7z",
        [(tmp_path / "one", "data.txt"), (tmp_path / "two", "data.txt")],
    )

    with pytest.raises(VerificationError, match=r"data\.txt: the name appears more than once"):
        check_entries(archive, max_total=10**6, max_ratio=100)


def test_file_used_as_folder_rejected(tmp_path: Path) -> None:
    (tmp_path / "one").write_bytes(b"first")
    archive = write_raw(
        tmp_path / "file-as-folder.7z", [(tmp_path / "one", "data"), (tmp_path / "one", "data/x")]
    )

    with pytest.raises(VerificationError, match="data/x: its parent data is a file"):
        check_entries(archive, max_total=10**6, max_ratio=100)


def test_bcj2_archive_rejected(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    out = tmp_path / "bcj2-filter.7z"
    # BCJ2 has four output streams. -mbC:D binds one to the input of coder D, so
    # the main, call and jump streams go to LZMA coders 1 to 3, and the
    # range-coder stream is stored as is.
    seven_zip(
        "a", "-m0=BCJ2", "-m1=LZMA", "-m2=LZMA", "-m3=LZMA",
        "-mb0:1", "-mb0s1:2", "-mb0s2:3", str(out), "manifest.json", cwd=staging,
    )  # fmt: skip
    dest = tmp_path / "out"

    with pytest.raises(VerificationError, match=r"manifest\.json: stored with filter BCJ2"):
        extract_all(out, dest, max_total=10**6, max_ratio=100)
    assert not dest.exists()


def test_decompression_bomb_rejected(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.bin"
    with zeros.open("wb") as handle:
        handle.truncate(200 * 1024 * 1024)
    bomb = tmp_path / "bomb.7z"
    seven_zip("a", "-mx1", str(bomb), "zeros.bin", cwd=tmp_path)
    zeros.unlink()
    dest = tmp_path / "out"

    with pytest.raises(
        VerificationError,
        match=r"ratio \d+ is above the limit 100; the largest entry is zeros.bin",
    ):
        extract_all(bomb, dest, max_total=300 * 1024 * 1024, max_ratio=100)
    assert not dest.exists()
    assert bomb.stat().st_size < 100_000


def test_total_size_over_limit(good_archive: Path, tmp_path: Path) -> None:
    total = sum(len(data) for data in CONTENT.values())
    dest = tmp_path / "out"

    with pytest.raises(
        VerificationError,
        match=f"entries claim {total} bytes unpacked, but at most 100 are expected",
    ):
        extract_all(good_archive, dest, max_total=100, max_ratio=100)
    assert not dest.exists()


def test_extract_all_rejects_nonempty_dest(good_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_bytes(b"stale")

    with pytest.raises(BundleError, match="must be missing or empty"):
        extract_all(good_archive, dest, max_total=10**6, max_ratio=100)
    assert (dest / "stale.txt").read_bytes() == b"stale"


def test_extract_all_into_empty_dest(good_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    extract_all(good_archive, dest, max_total=10**6, max_ratio=100)

    assert (dest / "manifest.json").read_bytes() == CONTENT["manifest.json"]


# --------------------------------------------------------------------------- parallel blocks

SMALL_BLOCKS = Compression(block_size=1024 * 1024)


def catalog_rows(rows: int) -> bytes:
    """CSV rows with Kazakh text and hashes, which compress to about a third."""
    lines = [
        f"{number},{hashlib.sha256(str(number).encode()).hexdigest()[:12]},Қазақстан {number % 97}"
        for number in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def big_staging(tmp_path: Path) -> Path:
    """Staged content whose CSV folder spans several 1 MiB blocks, one file across a cut."""
    staging = stage(tmp_path / "big-staging")
    (staging / "catalogs" / "kbk" / "rows.csv").write_bytes(catalog_rows(45_000))
    (staging / "catalogs" / "kbk" / "extra.csv").write_bytes(catalog_rows(20_000))
    (staging / "payload" / "random.bin").write_bytes(os.urandom(300_000))
    return staging


def staged_files(staging: Path) -> dict[str, bytes]:
    return {
        path.relative_to(staging).as_posix(): path.read_bytes()
        for path in staging.rglob("*")
        if path.is_file()
    }


def lzma2_resets(archive: Path) -> int:
    """Count the LZMA2 chunks that reset the dictionary, in every folder of `archive`."""
    data = archive.read_bytes()
    with py7zr.SevenZipFile(archive) as handle:
        packed = sum(handle.header.main_streams.packinfo.packsizes)
    position, end, resets = 32, 32 + packed, 0
    while position < end:
        control = data[position]
        if control == 0:
            position += 1
            continue
        if control in (1, 2):
            resets += control == 1
            position += 3 + int.from_bytes(data[position + 1 : position + 3], "big") + 1
            continue
        resets += control >= 0xE0
        header = 6 if control >= 0xC0 else 5
        position += header + int.from_bytes(data[position + 3 : position + 5], "big") + 1
    return resets


def test_blocks_split_large_folder(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "blocks.7z"
    write_archive(big_staging, out, MTIME, SMALL_BLOCKS)
    csv_size = sum(
        len(data) for name, data in staged_files(big_staging).items() if name.endswith(".csv")
    )

    # One reset per block: the CSV folder has ceil(size / 1 MiB) blocks, and the
    # manifest and the other files one each.
    assert csv_size > 2 * 1024 * 1024
    assert lzma2_resets(out) == -(-csv_size // (1024 * 1024)) + 2


def test_thread_count_keeps_bytes(big_staging: Path, tmp_path: Path) -> None:
    outputs = []
    for threads in (1, 3):
        out = tmp_path / f"threads-{threads}.7z"
        write_archive(big_staging, out, MTIME, SMALL_BLOCKS, threads=threads)
        outputs.append(out.read_bytes())

    assert outputs[0] == outputs[1]


def test_blocks_round_trip_own_reader(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "blocks.7z"
    write_archive(big_staging, out, MTIME, SMALL_BLOCKS)
    expected = staged_files(big_staging)
    dest = tmp_path / "out"

    digests = extract_all(out, dest, max_total=10**8, max_ratio=100)

    assert staged_files(dest) == expected
    assert digests == {name: hashlib.sha256(data).hexdigest() for name, data in expected.items()}
    assert read_file(out, "catalogs/kbk/rows.csv", 10**8) == expected["catalogs/kbk/rows.csv"]


def test_blocks_round_trip_7zz(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "blocks.7z"
    write_archive(big_staging, out, MTIME, SMALL_BLOCKS)
    tested = subprocess.run(
        [require_tool("7zz"), "t", str(out)], capture_output=True, text=True, check=False
    )
    dest = tmp_path / "by-7zz"
    dest.mkdir()
    seven_zip("x", str(out), cwd=dest)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Everything is Ok" in tested.stdout
    assert staged_files(dest) == staged_files(big_staging)


def test_blocks_round_trip_py7zr(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "blocks.7z"
    write_archive(big_staging, out, MTIME, SMALL_BLOCKS)
    dest = tmp_path / "by-py7zr"
    with py7zr.SevenZipFile(out) as archive:
        archive.extractall(dest)

    assert staged_files(dest) == staged_files(big_staging)


def test_digest_entries_hashes_every_file(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "blocks.7z"
    write_archive(big_staging, out, MTIME, SMALL_BLOCKS)

    digests = digest_entries(out, max_total=10**8, max_ratio=100)

    expected = staged_files(big_staging)
    assert digests == {name: hashlib.sha256(data).hexdigest() for name, data in expected.items()}
    assert digests["payload/empty.dat"] == hashlib.sha256(b"").hexdigest()


def test_digest_entries_detects_flipped_block(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "blocks.7z"
    write_archive(big_staging, out, MTIME, SMALL_BLOCKS)
    data = bytearray(out.read_bytes())
    with py7zr.SevenZipFile(out) as archive:
        packed = sum(archive.header.main_streams.packinfo.packsizes)
    data[32 + packed // 2] ^= 0x40
    corrupted = tmp_path / "flipped-block.7z"
    corrupted.write_bytes(bytes(data))

    with pytest.raises(BundleError, match=r"flipped-block\.7z: .*corrupted"):
        digest_entries(corrupted, max_total=10**8, max_ratio=100)


def test_read_file_skips_other_folders(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "blocks.7z"
    write_archive(big_staging, out, MTIME, SMALL_BLOCKS)
    data = bytearray(out.read_bytes())
    with py7zr.SevenZipFile(out) as archive:
        packed = sum(archive.header.main_streams.packinfo.packsizes)
    # Far past the manifest's own folder, which comes first.
    data[32 + packed * 9 // 10] ^= 0x01
    corrupted = tmp_path / "flipped-late.7z"
    corrupted.write_bytes(bytes(data))

    assert read_file(corrupted, "manifest.json", 1000) == CONTENT["manifest.json"]
    with pytest.raises(BundleError, match="corrupted"):
        digest_entries(corrupted, max_total=10**8, max_ratio=100)


# --------------------------------------------------------------------------- other writers


def test_read_7zz_multithreaded_lzma2(big_staging: Path, tmp_path: Path) -> None:
    out = tmp_path / "by-7zz.7z"
    # 7-Zip splits an LZMA2 stream into independent blocks with several threads.
    seven_zip("a", "-m0=LZMA2:d=1m", "-mmt=2", "-mx5", str(out), ".", cwd=big_staging)
    expected = staged_files(big_staging)

    digests = digest_entries(out, max_total=10**8, max_ratio=100)

    assert digests == {name: hashlib.sha256(data).hexdigest() for name, data in expected.items()}


def test_read_py7zr_archive(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    out = write_raw(
        tmp_path / "by-py7zr.7z",
        [(staging / name, name) for name in sorted(CONTENT)],
    )
    dest = tmp_path / "out"

    extract_all(out, dest, max_total=10**6, max_ratio=100)

    assert staged_files(dest) == CONTENT


def test_read_copy_archive(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    out = tmp_path / "stored.7z"
    seven_zip("a", "-mx0", str(out), ".", cwd=staging)

    entries = {entry.name: entry for entry in list_entries(out)}

    assert entries["manifest.json"].filters == ("COPY",)
    assert read_file(out, "payload/Zeta.bin", 10**5) == CONTENT["payload/Zeta.bin"]


def test_py7zr_fallback_reads_same(
    good_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> None:
        raise UnsupportedFeature("additional header streams")

    # Headers with such features come only from other tools; this forces the path.
    monkeypatch.setattr(sevenzip_reader, "open_archive", unsupported)
    dest = tmp_path / "out"

    entries = list_entries(good_archive)
    digests = extract_all(good_archive, dest, max_total=10**6, max_ratio=100)

    assert len(entries) == 14
    assert read_file(good_archive, "notes/kk/жазба.txt", 100) == CONTENT["notes/kk/жазба.txt"]
    assert staged_files(dest) == CONTENT
    assert digests["payload/Zeta.bin"] == hashlib.sha256(CONTENT["payload/Zeta.bin"]).hexdigest()
    with pytest.raises(VerificationError, match="entries claim"):
        check_entries(good_archive, max_total=10, max_ratio=100)


# --------------------------------------------------------------------------- encryption

PASSWORD = "Құпия сөз 2026"


@pytest.fixture
def encrypted_archive(tmp_path: Path) -> Path:
    out = tmp_path / "encrypted.7z"
    write_archive(stage(tmp_path / "staging"), out, MTIME, password=PASSWORD)
    return out


def test_encrypted_round_trip(encrypted_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    extract_all(encrypted_archive, dest, max_total=10**6, max_ratio=100, password=PASSWORD)

    assert staged_files(dest) == CONTENT
    assert read_file(encrypted_archive, "manifest.json", 100, PASSWORD) == CONTENT["manifest.json"]
    assert {e.filters for e in check_entries(
        encrypted_archive, max_total=10**6, max_ratio=100, password=PASSWORD
    ) if e.filters} == {("7zAES", "LZMA2")}  # fmt: skip


def test_encrypted_same_bytes(tmp_path: Path) -> None:
    first = tmp_path / "first.7z"
    second = tmp_path / "second.7z"
    write_archive(stage(tmp_path / "a"), first, MTIME, password=PASSWORD)
    write_archive(stage(tmp_path / "b", reverse=True), second, MTIME, password=PASSWORD)

    assert first.read_bytes() == second.read_bytes()


def test_encrypted_hides_names(encrypted_archive: Path) -> None:
    data = encrypted_archive.read_bytes()

    for name in CONTENT:
        assert name.encode("utf-16-le") not in data, name
    assert b"Salyq" not in data
    assert "Салықтар".encode() not in data


def test_encrypted_needs_password(encrypted_archive: Path) -> None:
    with pytest.raises(BundleError, match=r"encrypted\.7z: the archive is encrypted; pass"):
        list_entries(encrypted_archive)
    with pytest.raises(BundleError, match=r"encrypted\.7z: the archive is encrypted; pass"):
        read_file(encrypted_archive, "manifest.json", 100)


def test_encrypted_wrong_password(encrypted_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(
        BundleError, match=r"encrypted\.7z: cannot decrypt the header: the password is wrong"
    ):
        extract_all(encrypted_archive, dest, max_total=10**6, max_ratio=100, password="wrong")
    assert not dest.exists()


def test_encrypted_7zz_password_checks(encrypted_archive: Path) -> None:
    seven = require_tool("7zz")

    def test_with(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [seven, "t", *args, str(encrypted_archive)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    right = test_with(f"-p{PASSWORD}")
    wrong = test_with("-pwrong")
    missing = test_with()

    assert right.returncode == 0, right.stdout + right.stderr
    assert "Everything is Ok" in right.stdout
    assert wrong.returncode != 0
    assert "Wrong password" in wrong.stdout + wrong.stderr
    assert missing.returncode != 0


def test_encrypted_7zz_extracts_same_bytes(encrypted_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "by-7zz"
    dest.mkdir()
    seven_zip("x", f"-p{PASSWORD}", str(encrypted_archive), cwd=dest)

    assert staged_files(dest) == CONTENT


def test_encrypted_py7zr_reads(encrypted_archive: Path, tmp_path: Path) -> None:
    with (
        pytest.raises(py7zr.exceptions.PasswordRequired),
        py7zr.SevenZipFile(encrypted_archive) as archive,
    ):
        archive.getnames()
    dest = tmp_path / "by-py7zr"
    with py7zr.SevenZipFile(encrypted_archive, password=PASSWORD) as archive:
        archive.extractall(dest)

    assert staged_files(dest) == CONTENT


def test_read_7zz_encrypted_header(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    out = tmp_path / "by-7zz-encrypted.7z"
    seven_zip("a", f"-p{PASSWORD}", "-mhe=on", str(out), ".", cwd=staging)
    dest = tmp_path / "out"

    extract_all(out, dest, max_total=10**6, max_ratio=100, password=PASSWORD)

    assert staged_files(dest) == CONTENT
    with pytest.raises(BundleError, match="the password is wrong"):
        list_entries(out, "wrong")


def test_read_7zz_encrypted_data_only(tmp_path: Path) -> None:
    staging = stage(tmp_path / "s")
    out = tmp_path / "by-7zz-data-only.7z"
    seven_zip("a", f"-p{PASSWORD}", str(out), ".", cwd=staging)
    dest = tmp_path / "out"

    names = {entry.name for entry in list_entries(out)}

    assert "manifest.json" in names
    with pytest.raises(BundleError, match="the archive is encrypted; pass its password"):
        extract_all(out, dest, max_total=10**6, max_ratio=100)
    assert not dest.exists()
    with pytest.raises(BundleError, match="the password is wrong"):
        read_file(out, "manifest.json", 100, "wrong")


def test_empty_password_rejected(tmp_path: Path) -> None:
    out = tmp_path / "b.7z"
    with pytest.raises(BundleError, match="the archive password is empty"):
        write_archive(stage(tmp_path / "s"), out, MTIME, password="")
    assert not out.exists()


# --------------------------------------------------------------------------- fuzzing


def assert_fails_cleanly(path: Path, password: str | None, dest: Path) -> None:
    """Read `path` every way; only PipelineError may come out, and `dest` stays absent."""
    for read in (
        lambda: list_entries(path, password),
        lambda: read_file(path, "manifest.json", 1000, password),
        lambda: digest_entries(path, max_total=10**6, max_ratio=1000, password=password),
        lambda: extract_all(path, dest, max_total=10**6, max_ratio=1000, password=password),
    ):
        with contextlib.suppress(PipelineError):
            read()
        if dest.exists():
            shutil.rmtree(dest)


@pytest.mark.parametrize("password", [None, PASSWORD])
def test_fuzz_byte_flips(tmp_path: Path, password: str | None) -> None:
    out = tmp_path / "source.7z"
    write_archive(stage(tmp_path / "s"), out, MTIME, password=password)
    data = out.read_bytes()
    corrupted = tmp_path / "flipped.7z"
    rng = random.Random(7)
    # Every byte of the signature header and the header, and a sample of the data.
    positions = sorted({*range(32), *range(len(data) - 200, len(data)), *rng.sample(
        range(len(data)), min(len(data), 150)
    )} & set(range(len(data))))  # fmt: skip
    for position in positions:
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[position] ^= mask
            corrupted.write_bytes(bytes(flipped))
            assert_fails_cleanly(corrupted, password, tmp_path / "out")


@pytest.mark.parametrize("password", [None, PASSWORD])
def test_fuzz_truncations(tmp_path: Path, password: str | None) -> None:
    out = tmp_path / "source.7z"
    write_archive(stage(tmp_path / "s"), out, MTIME, password=password)
    data = out.read_bytes()
    truncated = tmp_path / "truncated.7z"
    for length in range(0, len(data), 7):
        truncated.write_bytes(data[:length])
        with pytest.raises(BundleError, match=r"truncated\.7z: not a readable 7z archive"):
            list_entries(truncated, password)
        assert_fails_cleanly(truncated, password, tmp_path / "out")
