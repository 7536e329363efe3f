"""Tests of bundle verification with real archives, fresh Ed25519 keys and real signatures."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import inspect
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import py7zr
import pytest
from conftest import REPO_ROOT, git, require_tool
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from test_build import commit_all, make_content_repo

from pipeline import release as release_module
from pipeline import sevenzip_reader
from pipeline.apply import installed_version
from pipeline.archive import Compression, write_archive
from pipeline.errors import StaleRotationError, VerificationError
from pipeline.manifest import file_entry, manifest_bytes
from pipeline.provenance import BuildInputs, provenance_bytes, provenance_statement
from pipeline.release import release as run_release
from pipeline.rotation import accept_rotation, install_rotation, rotate_trusted_keys
from pipeline.signing import (
    PublicKey,
    SecretKey,
    generate_keypair,
    load_secret_key,
    sign_file,
)
from pipeline.trust import (
    InstalledFrom,
    TrustedKey,
    load_trusted_keys,
    read_trusted_keys_file,
    write_trusted_keys,
)
from pipeline.verify import parse_trusted_comment, verify_bundle
from pipeline.versions import Version

MTIME = 1_796_374_800  # 2026-12-04T10:00:00Z
VERSION = "2026.12.0"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMENT = f"product=parus-kaz-budget version={VERSION} time=2026-12-04T10:00:00Z"

CONTENT: dict[str, bytes] = {
    "catalogs/kbk/rows.csv": "code,title_kk,title_ru\n110,Салықтар,Налоги\n".encode(),
    "notes/kk/жазба.txt": "Қазақстан Республикасы\n".encode(),
    "notes/ru/заметка.txt": "Выпуск 2026.12.0\n".encode(),
    "payload/empty.dat": b"",
    "payload/table.bin": bytes(range(256)) * 64,
}


@dataclass
class Signer:
    secret: SecretKey
    public: PublicKey


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    keys = tmp_path / "keys"
    keys.mkdir()
    public = generate_keypair(keys / "release.key", keys / "release.pub")
    return Signer(load_secret_key(keys / "release.key"), public)


@pytest.fixture
def other_key(tmp_path: Path) -> PublicKey:
    keys = tmp_path / "other-keys"
    keys.mkdir()
    return generate_keypair(keys / "other.key", keys / "other.pub")


@pytest.fixture
def isolated_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that receives verify's temporary folders, so a test can see leftovers."""
    folder = tmp_path / "verify-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def write_provenance(staging: Path) -> None:
    """Write provenance.json whose subjects are the other staged files, as the build does."""
    inputs = BuildInputs(
        product="parus-kaz-budget",
        version=VERSION,
        commit=COMMIT,
        base_tag=None,
        base_commit=None,
        repository=None,
        full=True,
        encrypted=False,
        compression={"filter": "LZMA2"},
        source_date_epoch=MTIME,
        tools={"parus-kaz-release": "test"},
    )
    subjects = [
        file_entry(staging, path)
        for path in sorted(staging.rglob("*"), key=lambda p: p.relative_to(staging).as_posix())
        if path.is_file() and path.name not in ("provenance.json", "manifest.json")
    ]
    (staging / "provenance.json").write_bytes(
        provenance_bytes(provenance_statement(inputs, subjects))
    )


def manifest_for(staging: Path, *, version: str = VERSION) -> dict[str, Any]:
    staging.mkdir(parents=True, exist_ok=True)
    write_provenance(staging)
    files = sorted(
        (path for path in staging.rglob("*") if path.is_file() and path.name != "manifest.json"),
        key=lambda path: path.relative_to(staging).as_posix().encode(),
    )
    folders = sorted(
        (path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_dir()),
        key=str.encode,
    )
    return {
        "format": 1,
        "product": "parus-kaz-budget",
        "version": version,
        "min_from_version": None,
        "full": True,
        "source": {
            "commit": COMMIT,
            "commit_time": "2026-12-01T09:00:00Z",
            "base_tag": None,
            "base_commit": None,
        },
        "schema": {"from": None, "to": None},
        "changes": {},
        "catalogs": [],
        "migrations": [],
        "dry_run": [],
        "build": {
            "tool": "parus-kaz-release test",
            "compression": {"filter": "LZMA2"},
            "tools": {"parus-kaz-release": "test"},
            "source_date_epoch": MTIME,
            "encrypted": False,
        },
        "provenance": "provenance.json",
        "next_trusted_keys": None,
        "folders": folders,
        "files": [file_entry(staging, path) for path in files],
    }


def stage(root: Path, content: dict[str, bytes] = CONTENT) -> Path:
    for name, data in content.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def release(
    dist: Path,
    staging: Path,
    signer: Signer,
    *,
    manifest: dict[str, Any] | None = None,
    comment: str = COMMENT,
) -> Path:
    """Build and sign a bundle like the release stage: archive, manifest beside it, signatures."""
    data = manifest_bytes(manifest or manifest_for(staging))
    (staging / "manifest.json").write_bytes(data)
    bundle = dist / "parus-kaz-budget-2026.12.0.7z"
    write_archive(staging, bundle, MTIME)
    (dist / "manifest.json").write_bytes(data)
    sign_file(bundle, signer.secret, comment)
    sign_file(dist / "manifest.json", signer.secret, comment)
    return bundle


def sign_archive(bundle: Path, signer: Signer, *, manifest: bytes | None = None) -> Path:
    """Sign an archive made by hand, and its manifest when given, as the release stage does."""
    sign_file(bundle, signer.secret, COMMENT)
    if manifest is not None:
        (bundle.parent / "manifest.json").write_bytes(manifest)
        sign_file(bundle.parent / "manifest.json", signer.secret, COMMENT)
    return bundle


@pytest.fixture
def bundle(tmp_path: Path, signer: Signer) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    return release(dist, stage(tmp_path / "staging"), signer)


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def seven_zip(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("7zz"), *args], cwd=cwd, check=True, capture_output=True)


# --------------------------------------------------------------------------- good bundles


def test_verify_good_bundle(bundle: Path, signer: Signer, isolated_tmp: Path) -> None:
    result = verify_bundle(bundle, [signer.public])

    assert result.version == VERSION
    assert result.key_id == signer.public.key_id_hex
    assert result.trusted_comment == COMMENT
    assert result.files == len(CONTENT) + 1  # provenance.json
    assert list(isolated_tmp.iterdir()) == []


@pytest.fixture
def opened_archives(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The archives whose 7z header the own reader parses, in order."""
    opened: list[Path] = []
    original = sevenzip_reader.open_archive

    def counting(path: Path, *args: Any) -> sevenzip_reader.Archive:
        opened.append(path)
        return original(path, *args)

    monkeypatch.setattr(sevenzip_reader, "open_archive", counting)
    return opened


def test_verify_parses_the_header_once(
    bundle: Path, signer: Signer, opened_archives: list[Path]
) -> None:
    verify_bundle(bundle, [signer.public])

    assert opened_archives == [bundle]


def test_archive_not_parsed_before_its_signature_passes(
    bundle: Path, signer: Signer, opened_archives: list[Path]
) -> None:
    flip(bundle, bundle.stat().st_size // 2)

    with pytest.raises(VerificationError, match=r"check 1 \(archive signature\) failed"):
        verify_bundle(bundle, [signer.public])
    assert opened_archives == []


def test_verify_among_several_keys(bundle: Path, signer: Signer, other_key: PublicKey) -> None:
    result = verify_bundle(bundle, [other_key, signer.public])

    assert result.key_id == signer.public.key_id_hex


def test_verify_without_manifest_signature(bundle: Path, signer: Signer) -> None:
    (bundle.parent / "manifest.json.minisig").unlink()

    result = verify_bundle(bundle, [signer.public])

    assert result.files == len(CONTENT) + 1  # provenance.json


def test_verify_explicit_signature_paths(bundle: Path, signer: Signer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "signatures"
    elsewhere.mkdir()
    archive_signature = (bundle.parent / (bundle.name + ".minisig")).rename(elsewhere / "a.sig")
    manifest_signature = (bundle.parent / "manifest.json.minisig").rename(elsewhere / "m.sig")

    result = verify_bundle(
        bundle, [signer.public], signature=archive_signature, manifest_signature=manifest_signature
    )

    assert result.version == VERSION


def test_minisign_verifies_bundle(bundle: Path, tmp_path: Path) -> None:
    minisign = require_tool("minisign")
    result = subprocess.run(
        [minisign, "-V", "-p", str(tmp_path / "keys" / "release.pub"), "-m", str(bundle)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert COMMENT in result.stdout


def test_parse_trusted_comment_tolerant() -> None:
    pairs = parse_trusted_comment(
        "product=parus-kaz-budget\tversion=2026.12.1  note time=T version=9999.01.0"
    )

    assert pairs == {"product": "parus-kaz-budget", "version": "2026.12.1", "time": "T"}


# --------------------------------------------------------------------------- check 1


def test_flipped_archive_byte_rejected(bundle: Path, signer: Signer, isolated_tmp: Path) -> None:
    original = bundle.read_bytes()
    size = len(original)
    for position in (0, 6, 32, size // 4, size // 2, 3 * size // 4, size - 1):
        bundle.write_bytes(original)
        flip(bundle, position)
        with pytest.raises(VerificationError, match=r"check 1 \(archive signature\) failed"):
            verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_flipped_signature_byte_rejected(bundle: Path, signer: Signer) -> None:
    signature = bundle.parent / (bundle.name + ".minisig")
    original = signature.read_bytes()
    lines = original.split(b"\n")
    # Positions in the base64 signature, the trusted comment and the global signature.
    positions = [
        len(lines[0]) + 1 + 20,
        len(lines[0]) + len(lines[1]) + 2 + len("trusted comment: ") + 3,
        len(lines[0]) + len(lines[1]) + len(lines[2]) + 3 + 20,
    ]
    for position in positions:
        signature.write_bytes(original)
        flip(signature, position)
        with pytest.raises(VerificationError, match=r"check 1 \(archive signature\) failed"):
            verify_bundle(bundle, [signer.public])


def test_corrupted_data_rejected(bundle: Path, signer: Signer, isolated_tmp: Path) -> None:
    with py7zr.SevenZipFile(bundle) as archive:
        packed = sum(archive.header.main_streams.packinfo.packsizes)
    # Near the end of the packed stream, past the data of manifest.json, so checks 2
    # and 3 still read the manifest.
    flip(bundle, 32 + packed * 9 // 10)
    (bundle.parent / (bundle.name + ".minisig")).unlink()
    sign_archive(bundle, signer)

    with pytest.raises(
        VerificationError, match=r"check 5 \(files and hashes\) failed: .* corrupted"
    ):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_untrusted_key_rejected(bundle: Path, other_key: PublicKey) -> None:
    with pytest.raises(VerificationError, match=r"check 1 \(archive signature\) failed"):
        verify_bundle(bundle, [other_key])


def test_missing_signature_rejected(bundle: Path, signer: Signer) -> None:
    (bundle.parent / (bundle.name + ".minisig")).unlink()

    with pytest.raises(
        VerificationError, match=r"check 1 .* signature file .*\.7z\.minisig not found"
    ):
        verify_bundle(bundle, [signer.public])


def test_no_trusted_keys_rejected(bundle: Path) -> None:
    with pytest.raises(VerificationError, match="no trusted keys given"):
        verify_bundle(bundle, [])


# --------------------------------------------------------------------------- checks 2 and 3


def test_changed_manifest_rejected(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    staging = stage(tmp_path / "staging")
    bundle = release(dist, staging, signer)
    signed_manifest_signature = (dist / "manifest.json.minisig").read_bytes()
    # Rebuild with one manifest byte changed (a hash digit) and a valid archive signature.
    manifest = manifest_for(staging)
    digest = manifest["files"][0]["sha256"]
    manifest["files"][0]["sha256"] = ("1" if digest[0] != "1" else "2") + digest[1:]
    release(dist, staging, signer, manifest=manifest)
    (dist / "manifest.json.minisig").write_bytes(signed_manifest_signature)

    with pytest.raises(VerificationError, match=r"check 2 \(manifest signature\) failed"):
        verify_bundle(bundle, [signer.public])


def test_changed_manifest_hash_rejected(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    entry = next(e for e in manifest["files"] if e["path"] == "notes/kk/жазба.txt")
    expected = hashlib.sha256(b"something else").hexdigest()
    entry["sha256"] = expected
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(
        VerificationError,
        match=rf"check 5 \(files and hashes\) failed: notes/kk/жазба\.txt:"
        rf" expected SHA-256 {expected}",
    ):
        verify_bundle(bundle, [signer.public])


def test_flipped_manifest_signature_rejected(bundle: Path, signer: Signer) -> None:
    signature = bundle.parent / "manifest.json.minisig"
    lines = signature.read_bytes().split(b"\n")
    flip(signature, len(lines[0]) + 1 + 30)

    with pytest.raises(VerificationError, match=r"check 2 \(manifest signature\) failed"):
        verify_bundle(bundle, [signer.public])


def test_empty_manifest_signature_named(bundle: Path, signer: Signer) -> None:
    signature = bundle.parent / "manifest.json.minisig"
    signature.write_bytes(b"")

    with pytest.raises(VerificationError) as caught:
        verify_bundle(bundle, [signer.public])
    assert str(caught.value) == (
        f"{bundle}: check 2 (manifest signature) failed: signature file {signature} is empty;"
        " expected 4 lines"
    )


def test_manifest_signature_line_named(bundle: Path, signer: Signer) -> None:
    signature = bundle.parent / "manifest.json.minisig"
    lines = signature.read_text(encoding="utf-8").split("\n")
    lines[1] = "not base64!" + lines[1][11:]
    signature.write_text("\n".join(lines), encoding="utf-8")

    with pytest.raises(VerificationError) as caught:
        verify_bundle(bundle, [signer.public])
    message = str(caught.value)
    assert f"failed: {signature} line 2: signature" in message
    assert ".7z:manifest.json line 2" not in message


def test_version_mismatch_rejected(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    comment = "product=parus-kaz-budget version=2026.12.1 time=2026-12-04T10:00:00Z"
    bundle = release(dist, stage(tmp_path / "staging"), signer, comment=comment)

    with pytest.raises(
        VerificationError,
        match=r"check 3 .* trusted comment has version 2026\.12\.1, the manifest 2026\.12\.0",
    ):
        verify_bundle(bundle, [signer.public])


def test_comment_without_version_rejected(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    bundle = release(dist, stage(tmp_path / "staging"), signer, comment="timestamp:1796374800")

    with pytest.raises(
        VerificationError, match=r"check 3 .* 'timestamp:1796374800' has no version="
    ):
        verify_bundle(bundle, [signer.public])


def test_product_mismatch_rejected(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    comment = f"product=other-product version={VERSION}"
    bundle = release(dist, stage(tmp_path / "staging"), signer, comment=comment)

    with pytest.raises(VerificationError, match=r"check 3 .* has product other-product"):
        verify_bundle(bundle, [signer.public])


def test_invalid_manifest_rejected(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    del manifest["source"]
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(VerificationError, match=r"check 3 .*manifest\.json: invalid manifest"):
        verify_bundle(bundle, [signer.public])


def test_truncated_archive_rejected(bundle: Path, signer: Signer, isolated_tmp: Path) -> None:
    data = bundle.read_bytes()
    bundle.write_bytes(data[: len(data) // 2])
    (bundle.parent / (bundle.name + ".minisig")).unlink()
    # A signature over the truncated file, so the archive reader is what rejects it.
    sign_archive(bundle, signer)

    with pytest.raises(VerificationError, match=r"check 2 .*\.7z: not a readable 7z archive"):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


# --------------------------------------------------------------------------- check 4


def raw_bundle(dist: Path, members: list[tuple[Path, str]], manifest: dict[str, Any]) -> Path:
    """Write an archive with py7zr as given, with `manifest` as its manifest.json."""
    data = manifest_bytes(manifest)
    manifest_path = dist / "manifest-source.json"
    manifest_path.write_bytes(data)
    bundle = dist / "crafted.7z"
    with py7zr.SevenZipFile(bundle, "w", filters=Compression().filters()) as archive:
        archive.write(manifest_path, arcname="manifest.json")
        for path, name in members:
            archive.write(path, arcname=name)
    manifest_path.unlink()
    return bundle


def listed_manifest(tmp_path: Path, names: dict[str, Path]) -> dict[str, Any]:
    """A manifest listing each file of `names` under the given archive name."""
    manifest = manifest_for(stage(tmp_path / "empty-staging", {}))
    for name, path in names.items():
        entry = file_entry(path.parent, path)
        entry["path"] = name
        manifest["files"].append(entry)
    return manifest


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    folder.mkdir()
    return folder


@pytest.fixture
def outside_file(tmp_path: Path) -> Path:
    path = tmp_path / "source" / "x"
    path.parent.mkdir()
    path.write_bytes(b"written outside the extraction folder\n")
    return path


def test_parent_path_entry_rejected(
    tmp_path: Path, dist: Path, signer: Signer, outside_file: Path, isolated_tmp: Path
) -> None:
    manifest = listed_manifest(tmp_path, {"../x": outside_file})
    bundle = sign_archive(
        raw_bundle(dist, [(outside_file, "../x")], manifest),
        signer,
        manifest=manifest_bytes(manifest),
    )

    with pytest.raises(
        VerificationError, match=r"check 4 \(archive entries\) failed: .* entry '\.\./x'"
    ):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_absolute_path_entry_rejected(
    tmp_path: Path, dist: Path, signer: Signer, outside_file: Path, isolated_tmp: Path
) -> None:
    manifest = listed_manifest(tmp_path, {"/etc/x": outside_file})
    bundle = raw_bundle(dist, [(outside_file, "etc/x")], manifest)
    seven_zip("rn", str(bundle), "etc/x", "/etc/x", cwd=dist)
    sign_archive(bundle, signer, manifest=manifest_bytes(manifest))

    with pytest.raises(VerificationError, match=r"check 4 .* entry '/etc/x': .* absolute path"):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_symlink_entry_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    link = tmp_path / "link"
    link.symlink_to("/etc/passwd")
    manifest = listed_manifest(tmp_path, {})
    bundle = sign_archive(raw_bundle(dist, [(link, "payload/link")], manifest), signer)

    with pytest.raises(VerificationError, match=r"check 4 .* payload/link: .* found a link"):
        verify_bundle(bundle, [signer.public])


def test_bcj2_archive_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    (staging / "manifest.json").write_bytes(manifest_bytes(manifest_for(staging)))
    bundle = dist / "bcj2-filter.7z"
    seven_zip(
        "a", "-m0=BCJ2", "-m1=LZMA", "-m2=LZMA", "-m3=LZMA",
        "-mb0:1", "-mb0s1:2", "-mb0s2:3", str(bundle), ".", cwd=staging,
    )  # fmt: skip
    sign_archive(bundle, signer)

    with pytest.raises(
        VerificationError,
        match=r"check 4 \(archive entries\) failed: .*: stored with filter BCJ2; this tool reads",
    ):
        verify_bundle(bundle, [signer.public])


def test_decompression_bomb_rejected(
    tmp_path: Path, dist: Path, signer: Signer, isolated_tmp: Path
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    with (staging / "zeros.bin").open("wb") as handle:
        handle.truncate(200 * 1024 * 1024)
    (staging / "manifest.json").write_bytes(manifest_bytes(manifest_for(staging)))
    bundle = dist / "bomb.7z"
    seven_zip("a", "-mx1", str(bundle), "manifest.json", "zeros.bin", cwd=staging)
    sign_archive(bundle, signer)

    with pytest.raises(VerificationError, match=r"check 4 .* ratio \d+ is above the limit 100"):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_entries_larger_than_manifest_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    table = next(e for e in manifest["files"] if e["path"] == "payload/table.bin")
    table["size"] = 10
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(
        VerificationError,
        match=r"check 4 .* payload/table\.bin: \d+ bytes in the archive, but the manifest"
        r" lists 10",
    ):
        verify_bundle(bundle, [signer.public])


# --------------------------------------------------------------------------- check 5


def test_file_not_in_manifest_rejected(
    tmp_path: Path, dist: Path, signer: Signer, isolated_tmp: Path
) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    # Empty, so the unpacked size stays within check 4's limit and check 5 reports it.
    (staging / "payload" / "unlisted.sql").write_bytes(b"")
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(
        VerificationError,
        match=r"check 4 .* 1 archive entry is not in the manifest: payload/unlisted\.sql",
    ):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_unlisted_file_over_size_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    (staging / "payload" / "unlisted.sql").write_bytes(b"DROP TABLE t;\n")
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(
        VerificationError,
        match=r"check 4 .* 1 archive entry is not in the manifest: payload/unlisted\.sql",
    ):
        verify_bundle(bundle, [signer.public])


def test_file_missing_from_archive_rejected(
    tmp_path: Path, dist: Path, signer: Signer, isolated_tmp: Path
) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    (staging / "notes" / "ru" / "заметка.txt").unlink()
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(
        VerificationError,
        match=r"check 5 .* 1 file\(s\) listed in manifest\.json are missing from the archive:"
        r" notes/ru/заметка\.txt",
    ):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_size_mismatch_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    empty = next(e for e in manifest["files"] if e["path"] == "payload/empty.dat")
    empty["size"] = 5
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(
        VerificationError,
        match=r"check 4 .* payload/empty\.dat: 0 bytes in the archive, but the manifest lists 5",
    ):
        verify_bundle(bundle, [signer.public])


def test_duplicate_manifest_path_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    manifest["files"].append(dict(manifest["files"][0]))
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(
        VerificationError, match=r"check 5 .* lists catalogs/kbk/rows\.csv more than once"
    ):
        verify_bundle(bundle, [signer.public])


# --------------------------------------------------------------------------- trusted keys


def trusted(
    public: PublicKey,
    *,
    valid_from: str = "2026-01-01T00:00:00Z",
    valid_until: str | None = None,
    revoked: bool | str = False,
) -> TrustedKey:
    return TrustedKey(
        public=public,
        valid_from=datetime.fromisoformat(valid_from),
        valid_until=datetime.fromisoformat(valid_until) if valid_until else None,
        revoked=datetime.fromisoformat(revoked) if isinstance(revoked, str) else revoked,
        comment="release key 2026",
    )


def test_trusted_key_valid_at_signing_time(bundle: Path, signer: Signer) -> None:
    key = trusted(
        signer.public, valid_until="2027-01-01T00:00:00Z", revoked="2026-12-05T00:00:00Z"
    )
    result = verify_bundle(bundle, [key])
    assert result.key_id == signer.public.key_id_hex
    assert result.signed_at == datetime(2026, 12, 4, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"valid_until": "2026-12-01T00:00:00Z"}, r"expired at 2026-12-01T00:00:00Z, before the"
         r" signing time 2026-12-04T10:00:00Z"),
        ({"revoked": True}, r"is revoked; signatures by it are not accepted"),
        ({"revoked": "2026-12-02T00:00:00Z"}, r"was revoked at 2026-12-02T00:00:00Z; the signature"
         r" was made at 2026-12-04T10:00:00Z"),
        ({"valid_from": "2026-12-31T00:00:00Z"}, r"is not yet valid at the signing time"),
    ],
    ids=["expired", "revoked", "revoked-before-signing", "not-yet-valid"],
)  # fmt: skip
def test_unusable_key_rejected(
    bundle: Path, signer: Signer, limits: dict[str, Any], reason: str
) -> None:
    key = trusted(signer.public, **limits)
    key_id = signer.public.key_id_hex
    with pytest.raises(
        VerificationError,
        match=rf"check 1 \(archive signature\) failed: .*key ID {key_id} \(release key 2026\)"
        rf" {reason}",
    ):
        verify_bundle(bundle, [key])


def test_unknown_key_named(bundle: Path, signer: Signer, other_key: PublicKey) -> None:
    with pytest.raises(
        VerificationError,
        match=rf"check 1 .* signed with key ID {signer.public.key_id_hex}, which is not a trusted"
        rf" key \(trusted key IDs: {other_key.key_id_hex}\)",
    ):
        verify_bundle(bundle, [trusted(other_key)])


def test_manifest_signed_by_expired_key_rejected(bundle: Path, signer: Signer) -> None:
    late = COMMENT.replace("2026-12-04T10:00:00Z", "2027-02-01T00:00:00Z")
    sign_file(bundle.parent / "manifest.json", signer.secret, late)
    key = trusted(signer.public, valid_until="2027-01-01T00:00:00Z")

    with pytest.raises(
        VerificationError,
        match=rf"check 2 \(manifest signature\) failed: .*manifest\.json\.minisig: key ID"
        rf" {signer.public.key_id_hex} .* expired at 2027-01-01T00:00:00Z",
    ):
        verify_bundle(bundle, [key])


def test_comment_without_time_needs_unlimited_key(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    comment = f"product=parus-kaz-budget version={VERSION}"
    bundle = release(dist, stage(tmp_path / "staging"), signer, comment=comment)

    assert verify_bundle(bundle, [signer.public]).signed_at is None
    with pytest.raises(
        VerificationError,
        match=rf"key ID {signer.public.key_id_hex} has a validity period, but the trusted comment"
        r" has no time=",
    ):
        verify_bundle(bundle, [trusted(signer.public, valid_until="2027-01-01T00:00:00Z")])


# --------------------------------------------------------------------------- single-byte flips


def sampled_positions(size: int, count: int = 24) -> list[int]:
    """Positions spread evenly across a file of `size` bytes, first and last included."""
    step = max(1, (size - 1) // (count - 1))
    return sorted({*range(0, size, step), size - 1})


def signature_body_start(path: Path) -> int:
    """Offset of line 2 of a minisign signature file: every byte from there on is covered."""
    return path.read_bytes().index(b"\n") + 1


def test_every_archive_flip_rejected(bundle: Path, signer: Signer, isolated_tmp: Path) -> None:
    original = bundle.read_bytes()
    for position in sampled_positions(len(original)):
        flip(bundle, position)
        with pytest.raises(
            VerificationError,
            match=rf"check 1 .*does not verify with key ID {signer.public.key_id_hex}",
        ):
            verify_bundle(bundle, [signer.public])
        bundle.write_bytes(original)
    assert list(isolated_tmp.iterdir()) == []


@pytest.mark.parametrize("name", ["bundle", "manifest"])
def test_every_signature_flip_rejected(bundle: Path, signer: Signer, name: str) -> None:
    signature = bundle.parent / (
        bundle.name + ".minisig" if name == "bundle" else "manifest.json.minisig"
    )
    check = r"check 1 \(archive" if name == "bundle" else r"check 2 \(manifest"
    original = signature.read_bytes()
    start = signature_body_start(signature)
    for position in sampled_positions(len(original) - start, 40):
        flip(signature, start + position)
        with pytest.raises(VerificationError, match=rf"{check} signature\) failed: ") as caught:
            verify_bundle(bundle, [signer.public])
        # Every message names the key, unless line 2, which holds the key id, is unreadable.
        message = str(caught.value)
        assert "key ID" in message or "line 2" in message, message
        signature.write_bytes(original)


def test_untrusted_comment_flip_ignored(bundle: Path, signer: Signer) -> None:
    # minisign covers neither line 1 nor its text: a flip there changes nothing signed.
    signature = bundle.parent / (bundle.name + ".minisig")
    flip(signature, len("untrusted comment: ") + 2)
    assert verify_bundle(bundle, [signer.public]).version == VERSION


def test_every_manifest_flip_rejected(tmp_path: Path, signer: Signer) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    good = manifest_bytes(manifest)
    bundle = release(dist, staging, signer, manifest=manifest)
    for position in sampled_positions(len(good), 12):
        changed = bytearray(good)
        changed[position] ^= 0x01
        (staging / "manifest.json").write_bytes(bytes(changed))
        write_archive(staging, bundle, MTIME)
        sign_file(bundle, signer.secret, COMMENT)
        with pytest.raises(
            VerificationError,
            match=r"check 2 \(manifest signature\) failed: the signature of .*manifest\.json does"
            rf" not verify with key ID {signer.public.key_id_hex}",
        ):
            verify_bundle(bundle, [signer.public])


def test_manifest_beside_bundle_flip_rejected(bundle: Path, signer: Signer) -> None:
    beside = bundle.parent / "manifest.json"
    flip(beside, 10)
    with pytest.raises(
        VerificationError, match=r"check 3 .*manifest\.json differs from the manifest\.json inside"
    ):
        verify_bundle(bundle, [signer.public], manifest_signature=None, signature=None)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", r"is empty; expected 4 lines"),
        (None, r"has 2 lines; expected 4"),
    ],
    ids=["zero-length", "truncated"],
)
def test_broken_signature_file_rejected(
    bundle: Path, signer: Signer, content: bytes | None, reason: str
) -> None:
    signature = bundle.parent / (bundle.name + ".minisig")
    data = signature.read_bytes()
    cut = data[: data.index(b"\ntrusted comment") + 1]
    signature.write_bytes(content if content is not None else cut)
    with pytest.raises(VerificationError, match=rf"check 1 .*{reason}"):
        verify_bundle(bundle, [signer.public])


def test_foreign_signature_rejected(bundle: Path, signer: Signer, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("another file\n", encoding="utf-8")
    sign_file(other, signer.secret, COMMENT)
    (bundle.parent / (bundle.name + ".minisig")).write_bytes(
        (tmp_path / "other.txt.minisig").read_bytes()
    )
    with pytest.raises(
        VerificationError,
        match=rf"check 1 .* does not verify with key ID {signer.public.key_id_hex}",
    ):
        verify_bundle(bundle, [signer.public])


# --------------------------------------------------------------------------- folders


def test_empty_folder_verified(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    (staging / "payload" / "empty-folder").mkdir()
    bundle = release(dist, staging, signer)
    assert verify_bundle(bundle, [signer.public]).version == VERSION


def test_missing_empty_folder_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    (staging / "payload" / "empty-folder").mkdir()
    manifest = manifest_for(staging)
    (staging / "payload" / "empty-folder").rmdir()
    bundle = release(dist, staging, signer, manifest=manifest)
    with pytest.raises(
        VerificationError,
        match=r"check 5 .* 1 folder\(s\) listed in manifest\.json are missing from the archive:"
        r" payload/empty-folder",
    ):
        verify_bundle(bundle, [signer.public])


def test_unlisted_empty_folder_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    (staging / "payload" / "extra-folder").mkdir()
    bundle = release(dist, staging, signer, manifest=manifest)
    with pytest.raises(
        VerificationError,
        match=r"check 5 .* 1 folder\(s\) in the archive are not listed in manifest\.json:"
        r" payload/extra-folder",
    ):
        verify_bundle(bundle, [signer.public])


def test_changed_provenance_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    (staging / "payload" / "table.bin").write_bytes(b"changed after the provenance\n")
    write_provenance(staging)
    table = next(e for e in manifest["files"] if e["path"] == "payload/table.bin")
    table.update(file_entry(staging, staging / "payload" / "table.bin"))
    bundle = release(dist, staging, signer, manifest=manifest)
    with pytest.raises(VerificationError, match=r"check 5 .* provenance\.json: expected"):
        verify_bundle(bundle, [signer.public])


# --------------------------------------------------------------------------- released bundles


@dataclass
class Released:
    repo: Path
    dist: Path
    bundle: Path
    key: Path
    secret: SecretKey
    sample: str


@pytest.fixture
def small_release(git_repo: Path, tmp_path: Path) -> Released:
    """A release of a small content repository, signed with a fresh minisign key."""
    repo = make_content_repo(git_repo)
    keys = tmp_path / "release-keys"
    keys.mkdir()
    generate_keypair(keys / "a.key", keys / "a.pub")
    secret = load_secret_key(keys / "a.key")
    sample = tmp_path / "sample.sqlite"
    sqlite3.connect(sample).close()
    dist = tmp_path / "released"
    run_release(
        repo,
        dist,
        secret,
        version=Version.parse(VERSION),
        databases=[f"sqlite:///{sample}"],
    )
    bundle = dist / f"parus-kaz-budget-{VERSION}.7z"
    return Released(repo, dist, bundle, keys / "a.pub", secret, f"sqlite:///{sample}")


def test_seven_zip_extracts_same_bytes(small_release: Released, tmp_path: Path) -> None:
    out = tmp_path / "by-7zz"
    seven_zip("x", f"-o{out}", str(small_release.bundle), cwd=tmp_path)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))

    assert manifest == json.loads((small_release.dist / "manifest.json").read_text("utf-8"))
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    folders = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_dir())
    assert folders == sorted(manifest["folders"])


@pytest.mark.parametrize(
    "name", [f"parus-kaz-budget-{VERSION}.7z", "manifest.json", "provenance.json"]
)
def test_minisign_verifies_release_file(small_release: Released, name: str) -> None:
    minisign = require_tool("minisign")
    checked = subprocess.run(
        [minisign, "-V", "-p", str(small_release.key), "-m", str(small_release.dist / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert f"version={VERSION}" in checked.stdout


def test_openssl_verifies_manifest_prehash(small_release: Released, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    manifest = (small_release.dist / "manifest.json").read_bytes()
    lines = (small_release.dist / "manifest.json.minisig").read_text("utf-8").splitlines()
    raw = base64.b64decode(lines[1])
    (tmp_path / "digest.bin").write_bytes(hashlib.blake2b(manifest, digest_size=64).digest())
    (tmp_path / "signature.bin").write_bytes(raw[10:])
    der = bytes.fromhex("302a300506032b6570032100") + small_release.secret.public.raw()
    pem = base64.encodebytes(der).decode()
    (tmp_path / "public.pem").write_text(
        f"-----BEGIN PUBLIC KEY-----\n{pem}-----END PUBLIC KEY-----\n", encoding="ascii"
    )

    checked = subprocess.run(
        [
            openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "public.pem"),
            "-rawin", "-in", str(tmp_path / "digest.bin"),
            "-sigfile", str(tmp_path / "signature.bin"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "Signature Verified Successfully" in checked.stdout


def test_provenance_beside_bundle_checked(small_release: Released) -> None:
    beside = small_release.dist / "provenance.json"
    flip(beside, 5)
    with pytest.raises(
        VerificationError,
        match=rf"check 2 .*provenance\.json does not verify with key ID"
        rf" {small_release.secret.public.key_id_hex}",
    ):
        verify_bundle(small_release.bundle, [small_release.secret.public])


def test_every_provenance_signature_flip_rejected(small_release: Released) -> None:
    signature = small_release.dist / "provenance.json.minisig"
    original = signature.read_bytes()
    start = signature_body_start(signature)
    for position in sampled_positions(len(original) - start, 40):
        flip(signature, start + position)
        with pytest.raises(VerificationError, match=r"check 2 \(manifest signature\) failed: "):
            verify_bundle(small_release.bundle, [small_release.secret.public])
        signature.write_bytes(original)


# --------------------------------------------------------------------------- key rotation


def test_rotation_moves_customer_to_new_key(small_release: Released, tmp_path: Path) -> None:
    old = trusted(small_release.secret.public, valid_from="2020-01-01T00:00:00Z")
    generate_keypair(tmp_path / "b.key", tmp_path / "b.pub")
    new_secret = load_secret_key(tmp_path / "b.key")
    current = tmp_path / "trusted-keys.json"
    write_trusted_keys(current, [old])
    rotate_trusted_keys(
        current,
        new_secret.public,
        tmp_path / "next.json",
        valid_from=datetime(2020, 1, 2, tzinfo=UTC),
        retire_at=datetime(2099, 1, 1, tzinfo=UTC),
        comment="release key B",
    )
    repo = small_release.repo
    git(repo, "tag", f"release/{VERSION}")
    commit_all_in(repo, "migrations/0002_note.sql", "CREATE TABLE note (id TEXT);\n")
    rotating = tmp_path / "rotating"
    run_release(
        repo,
        rotating,
        small_release.secret,
        version=Version.parse("2026.12.1"),
        databases=[small_release.sample],
        next_trusted_keys=tmp_path / "next.json",
    )
    rotating_bundle = rotating / "parus-kaz-budget-2026.12.1.7z"
    manifest = verify_bundle(rotating_bundle, [old]).manifest
    assert manifest["next_trusted_keys"] == {
        "path": "keys/trusted-keys.json",
        "signature": "keys/trusted-keys.json.minisig",
    }

    accepted = accept_rotation(rotating_bundle, [old])

    assert [k.key_id_hex for k in accepted] == [old.key_id_hex, new_secret.public.key_id_hex]
    assert accepted[0].valid_until == datetime(2099, 1, 1, tzinfo=UTC)
    git(repo, "tag", "release/2026.12.1")
    commit_all_in(repo, "migrations/0003_more.sql", "CREATE TABLE more (id TEXT);\n")
    later = tmp_path / "later"
    run_release(
        repo,
        later,
        new_secret,
        version=Version.parse("2026.12.2"),
        databases=[small_release.sample],
    )
    later_bundle = later / "parus-kaz-budget-2026.12.2.7z"
    with pytest.raises(VerificationError, match=r"which is not a trusted key"):
        verify_bundle(later_bundle, [old])
    assert verify_bundle(later_bundle, accepted).key_id == new_secret.public.key_id_hex


def test_bundle_without_rotation_keeps_keys(small_release: Released) -> None:
    current = [trusted(small_release.secret.public, valid_from="2020-01-01T00:00:00Z")]
    assert accept_rotation(small_release.bundle, current) == current


def test_rotation_signed_by_other_key_rejected(
    small_release: Released, tmp_path: Path, other_key: PublicKey
) -> None:
    generate_keypair(tmp_path / "c.key", tmp_path / "c.pub")
    intruder = load_secret_key(tmp_path / "c.key")
    staging = tmp_path / "extracted"
    seven_zip("x", f"-o{staging}", str(small_release.bundle), cwd=tmp_path)
    manifest = json.loads((staging / "manifest.json").read_text("utf-8"))
    keys_file = staging / "keys" / "trusted-keys.json"
    keys_file.parent.mkdir()
    write_trusted_keys(keys_file, [trusted(intruder.public)])
    sign_file(keys_file, intruder, COMMENT)
    manifest["next_trusted_keys"] = {
        "path": "keys/trusted-keys.json",
        "signature": "keys/trusted-keys.json.minisig",
    }
    (staging / "manifest.json").write_bytes(manifest_bytes(manifest))
    current = [trusted(small_release.secret.public, valid_from="2020-01-01T00:00:00Z")]

    with pytest.raises(
        VerificationError,
        match=rf"next trusted keys rejected: .*trusted-keys\.json was signed with key ID"
        rf" {intruder.public.key_id_hex}, which is not a trusted key",
    ):
        accept_rotation(staging, current)


@dataclass
class Rotating:
    """A full release 2026.12.1 that carries the next trusted keys: A retiring, new key B."""

    bundle: Path
    old: TrustedKey
    new: PublicKey


@pytest.fixture
def rotating(small_release: Released, tmp_path: Path) -> Rotating:
    old = trusted(small_release.secret.public, valid_from="2020-01-01T00:00:00Z")
    generate_keypair(tmp_path / "b.key", tmp_path / "b.pub")
    new = load_secret_key(tmp_path / "b.key").public
    write_trusted_keys(tmp_path / "vendor-keys.json", [old])
    rotate_trusted_keys(
        tmp_path / "vendor-keys.json",
        new,
        tmp_path / "next.json",
        valid_from=datetime(2020, 1, 2, tzinfo=UTC),
        retire_at=datetime(2099, 1, 1, tzinfo=UTC),
        comment="release key B",
    )
    git(small_release.repo, "tag", f"release/{VERSION}")
    commit_all_in(small_release.repo, "migrations/0002_note.sql", "CREATE TABLE note (id TEXT);\n")
    run_release(
        small_release.repo,
        tmp_path / "rotating",
        small_release.secret,
        version=Version.parse("2026.12.1"),
        databases=[small_release.sample],
        next_trusted_keys=tmp_path / "next.json",
        full=True,
    )
    return Rotating(tmp_path / "rotating/parus-kaz-budget-2026.12.1.7z", old, new)


def test_rotation_keeps_local_revocations(
    rotating: Rotating, tmp_path: Path, other_key: PublicKey
) -> None:
    customer = tmp_path / "customer-keys.json"
    revoked_at = datetime(2098, 6, 1, tzinfo=UTC)
    local_old = trusted(rotating.old.public, valid_from="2020-01-01T00:00:00Z")
    local_old = dataclasses.replace(local_old, revoked=revoked_at)
    write_trusted_keys(customer, [local_old, trusted(other_key, revoked=True)])

    installed = install_rotation(rotating.bundle, customer)

    assert installed.written is True
    stored = read_trusted_keys_file(customer)
    ids = [key.key_id_hex for key in stored.keys]
    assert ids == [rotating.old.key_id_hex, rotating.new.key_id_hex, other_key.key_id_hex]
    assert stored.keys[0].revoked == revoked_at
    assert stored.keys[0].valid_until == datetime(2099, 1, 1, tzinfo=UTC)
    assert stored.keys[2].revoked is True
    assert stored.installed_from is not None
    assert stored.installed_from.version == "2026.12.1"
    assert stored.installed_from.key_id == rotating.old.key_id_hex
    assert installed.rotation is not None
    notes = installed.rotation.notes
    assert f"key ID {rotating.old.key_id_hex}: stays revoked at 2098-06-01T00:00:00Z" in notes[0]
    assert notes[1].startswith(f"key ID {other_key.key_id_hex}: stays in the file")


def test_older_rotation_not_installed(rotating: Rotating, tmp_path: Path) -> None:
    customer = tmp_path / "customer-keys.json"
    newer = InstalledFrom(version="2026.12.3", key_id=rotating.new.key_id_hex, signed_at=None)
    write_trusted_keys(customer, [rotating.old], installed_from=newer)
    before = customer.read_bytes()

    with pytest.raises(StaleRotationError) as caught:
        install_rotation(rotating.bundle, customer)

    assert str(caught.value) == (
        f"the next trusted keys of bundle 2026.12.1 (key IDs {rotating.old.key_id_hex},"
        f" {rotating.new.key_id_hex}) are not newer than those in {customer}, which came from"
        f" bundle 2026.12.3; {customer} stays as it is"
    )
    assert customer.read_bytes() == before


def test_same_rotation_installed_once(rotating: Rotating, tmp_path: Path) -> None:
    customer = tmp_path / "customer-keys.json"
    write_trusted_keys(customer, [rotating.old])
    assert install_rotation(rotating.bundle, customer).written is True
    before = customer.read_bytes()

    again = install_rotation(rotating.bundle, customer)

    assert again.written is False
    assert customer.read_bytes() == before


def test_cli_older_rotation_rejected(rotating: Rotating, tmp_path: Path) -> None:
    customer = tmp_path / "customer-keys.json"
    newer = InstalledFrom(version="2026.12.3", key_id=rotating.new.key_id_hex, signed_at=None)
    write_trusted_keys(customer, [rotating.old], installed_from=newer)
    before = customer.read_bytes()

    verified = run_cli(
        "verify", str(rotating.bundle), "--trusted-keys", str(customer), "--accept-rotation",
        cwd=tmp_path,
    )  # fmt: skip
    assert verified.returncode == 1
    assert "the next trusted keys of bundle 2026.12.1" in verified.stderr
    assert "which came from bundle 2026.12.3" in verified.stderr
    assert customer.read_bytes() == before

    database = tmp_path / "customer.sqlite"
    applied = run_cli(
        "apply", str(rotating.bundle), "--trusted-keys", str(customer),
        "--database", f"sqlite:///{database}", "--create",
        cwd=tmp_path,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "applied 2026.12.1" in applied.stdout
    assert "trusted keys: not changed: the next trusted keys of bundle 2026.12.1" in (
        applied.stdout
    )
    assert customer.read_bytes() == before


def test_cli_rotation_prints_kept_revocation(rotating: Rotating, tmp_path: Path) -> None:
    customer = tmp_path / "customer-keys.json"
    revoked = dataclasses.replace(rotating.old, revoked=datetime(2098, 6, 1, tzinfo=UTC))
    write_trusted_keys(customer, [revoked])

    verified = run_cli(
        "verify", str(rotating.bundle), "--trusted-keys", str(customer), "--accept-rotation",
        cwd=tmp_path,
    )  # fmt: skip

    assert verified.returncode == 0, verified.stderr
    assert "wrote the next trusted keys of bundle 2026.12.1" in verified.stdout
    assert f"key ID {rotating.old.key_id_hex}: stays revoked at 2098-06-01T00:00:00Z" in (
        verified.stdout
    )


# --------------------------------------------------------------------------- encryption


def require_encryption() -> None:
    if "password" not in inspect.signature(write_archive).parameters:
        pytest.skip("pipeline.archive does not encrypt archives in this version")


def test_encrypted_release_verifies(small_release: Released, tmp_path: Path) -> None:
    require_encryption()
    out = tmp_path / "encrypted"
    run_release(
        small_release.repo,
        out,
        small_release.secret,
        version=Version.parse(VERSION),
        databases=[small_release.sample],
        password="bundle-ғ-2026",
    )
    bundle = out / f"parus-kaz-budget-{VERSION}.7z"
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))

    assert manifest["build"]["encrypted"] is True
    result = verify_bundle(bundle, [small_release.secret.public], password="bundle-ғ-2026")
    assert result.version == VERSION
    tested = subprocess.run(
        [require_tool("7zz"), "t", "-pbundle-ғ-2026", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout
    with pytest.raises(VerificationError, match=r"check 2 .*\.7z: .*encrypted"):
        verify_bundle(bundle, [small_release.secret.public])
    with pytest.raises(VerificationError, match=r"check 2 .*\.7z") as caught:
        verify_bundle(bundle, [small_release.secret.public], password="wrong password")
    message = str(caught.value)
    assert message.endswith(
        ".7z: cannot decrypt the header: the password is wrong, or the archive is corrupted"
    )
    assert message.count("password") == 1


def commit_all_in(repo: Path, path: str, text: str) -> None:
    """Write one file into `repo` and commit it a few days after the first release."""
    (repo / path).write_text(text, encoding="utf-8")
    commit_all(repo, f"Add {path}", "2026-12-10T09:00:00Z")


# --------------------------------------------------------------------------- tasks

CLI = str(Path(sys.executable).parent / "parus-release")


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CI": "true", **env}
    for name in (
        "PIPELINE_SIGNING_KEY",
        "PIPELINE_SIGNING_PASSPHRASE",
        "PIPELINE_BUNDLE_PASSWORD",
    ):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=environment, capture_output=True, text=True, check=False
    )


def test_cli_verify_with_trusted_keys(small_release: Released, tmp_path: Path) -> None:
    keys_file = tmp_path / "trusted-keys.json"
    write_trusted_keys(
        keys_file, [trusted(small_release.secret.public, valid_from="2020-01-01T00:00:00Z")]
    )
    done = run_cli(
        "verify", str(small_release.bundle), "--trusted-keys", str(keys_file), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"verified version {VERSION}" in done.stdout

    write_trusted_keys(keys_file, [trusted(small_release.secret.public, revoked=True)])
    failed = run_cli(
        "verify", str(small_release.bundle), "--trusted-keys", str(keys_file), cwd=tmp_path
    )
    assert failed.returncode == 1
    assert f"key ID {small_release.secret.public.key_id_hex} (release key 2026) is revoked" in (
        failed.stderr
    )


def test_cli_verify_needs_keys(small_release: Released, tmp_path: Path) -> None:
    failed = run_cli("verify", str(small_release.bundle), cwd=tmp_path)
    assert failed.returncode == 1
    assert "verify needs --trusted-keys FILE or --public-key FILE" in failed.stderr


def test_cli_verify_empty_trusted_keys(small_release: Released, tmp_path: Path) -> None:
    keys_file = tmp_path / "trusted-keys.json"
    write_trusted_keys(keys_file, [])

    failed = run_cli(
        "verify", str(small_release.bundle), "--trusted-keys", str(keys_file), cwd=tmp_path
    )

    assert failed.returncode == 1
    assert f"{keys_file} $.keys: the file lists no keys" in failed.stderr
    assert "verify needs" not in failed.stderr


def test_cli_keys_rotate_writes_next_file(small_release: Released, tmp_path: Path) -> None:
    current = tmp_path / "trusted-keys.json"
    write_trusted_keys(current, [trusted(small_release.secret.public)])
    generate_keypair(tmp_path / "b.key", tmp_path / "b.pub")
    done = run_cli(
        "keys.rotate",
        "--trusted-keys", str(current),
        "--new-public-key", str(tmp_path / "b.pub"),
        "--out", str(tmp_path / "next.json"),
        "--valid-from", "2027-01-01T00:00:00Z",
        "--retire-current", "2027-02-01T00:00:00Z",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "next.json").read_text(encoding="utf-8"))
    assert [k["valid_until"] for k in document["keys"]] == ["2027-02-01T00:00:00Z", None]
    assert document["keys"][1]["valid_from"] == "2027-01-01T00:00:00Z"


def test_cli_keys_rotate_rejects_local_time(small_release: Released, tmp_path: Path) -> None:
    current = tmp_path / "trusted-keys.json"
    write_trusted_keys(current, [trusted(small_release.secret.public)])
    failed = run_cli(
        "keys.rotate",
        "--trusted-keys", str(current),
        "--new-public-key", str(small_release.key),
        "--valid-from", "2027-01-01T00:00:00",
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "--valid-from: expected an RFC 3339 time with a time zone" in failed.stderr


def test_cli_build_full(small_release: Released, tmp_path: Path) -> None:
    repo = small_release.repo
    git(repo, "tag", f"release/{VERSION}")
    commit_all_in(repo, "migrations/0002_note.sql", "CREATE TABLE note (id TEXT);\n")
    for full, expected in ((False, []), (True, ["knp"])):
        out = tmp_path / f"full-{full}"
        args = ["build", "--repo", str(repo), "--version", "2026.12.1", "--out", str(out)]
        done = run_cli(*args, *(["--full"] if full else []), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert [c["id"] for c in manifest["catalogs"]] == expected
        assert manifest["full"] is full


# --------------------------------------------------------------------------- ratio limit


def add_fixed_width_fix(repo: Path) -> None:
    """Add a fix whose payload is 2 MB of spaces, which LZMA packs more than 100 times."""
    fix = repo / "packages/fixes/fixed-width-layout"
    (fix / "payload").mkdir(parents=True)
    (fix / "payload/layout.txt").write_text(" " * 2_000_000 + "\n", encoding="utf-8")
    demo = REPO_ROOT / "packages/fixes/payment-order-total-rounding/fix.json"
    document = json.loads(demo.read_text(encoding="utf-8"))
    document["id"] = "fixed-width-layout"
    document["files"] = [{"source": "payload/layout.txt", "install": "Config/layout.txt"}]
    (fix / "fix.json").write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def test_repetitive_release_verifies_itself(small_release: Released, tmp_path: Path) -> None:
    repo = small_release.repo
    git(repo, "tag", f"release/{VERSION}")
    add_fixed_width_fix(repo)
    commit_all(repo, "Add a fixed-width layout", "2026-12-10T09:00:00Z")
    out = tmp_path / "repetitive"

    result = run_release(
        repo,
        out,
        small_release.secret,
        version=Version.parse("2026.12.1"),
        databases=[small_release.sample],
    )

    bundle = out / "parus-kaz-budget-2026.12.1.7z"
    assert result.build.ratio > 100
    limit = math.ceil(result.build.ratio)
    assert result.notices == [
        f"{bundle} unpacks {result.build.ratio:.0f} times its size, above the limit 100 of"
        f" verify and apply; they accept it with --max-ratio {limit}, or max_ratio = {limit}"
        " in [tool.pipeline]"
    ]
    with pytest.raises(VerificationError) as caught:
        verify_bundle(bundle, [small_release.secret.public])
    message = str(caught.value)
    assert message.startswith(f"check 4 (archive entries) failed: {bundle}: unpacks")
    assert "is above the limit 100; the largest entry is fixes/fixed-width-layout/" in message
    assert message.endswith(
        f"If the bundle is trusted, pass --max-ratio {limit} or set max_ratio = {limit}"
        " in [tool.pipeline]"
    )
    verified = verify_bundle(bundle, [small_release.secret.public], max_ratio=limit)
    assert verified.version == "2026.12.1"


def test_cli_build_prints_ratio_notice(small_release: Released, tmp_path: Path) -> None:
    repo = small_release.repo
    git(repo, "tag", f"release/{VERSION}")
    add_fixed_width_fix(repo)
    commit_all(repo, "Add a fixed-width layout", "2026-12-10T09:00:00Z")
    out = tmp_path / "built"

    built = run_cli(
        "build", "--repo", str(repo), "--version", "2026.12.1", "--out", str(out), cwd=tmp_path
    )

    assert built.returncode == 0, built.stderr
    assert f"note: {out / 'parus-kaz-budget-2026.12.1.7z'} unpacks" in built.stdout
    assert "above the limit 100 of verify and apply" in built.stdout


def test_release_verify_names_output_bundle(
    small_release: Released, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def verify_strictly(*args: Any, **options: Any) -> Any:
        return verify_bundle(*args, **{**options, "max_ratio": 1.0})

    monkeypatch.setattr(release_module, "verify_bundle", verify_strictly)
    repo = small_release.repo
    git(repo, "tag", f"release/{VERSION}")
    commit_all_in(repo, "migrations/0002_note.sql", "CREATE TABLE note (id TEXT);\n")
    out = tmp_path / "strict"

    with pytest.raises(VerificationError) as caught:
        run_release(
            repo,
            out,
            small_release.secret,
            version=Version.parse("2026.12.1"),
            databases=[small_release.sample],
        )

    message = str(caught.value)
    assert f"failed: {out / 'parus-kaz-budget-2026.12.1.7z'}: unpacks" in message
    assert ".release-" not in message
    assert message.endswith(f"No file of this release was written to {out}")
    assert not (out / "parus-kaz-budget-2026.12.1.7z").exists()


def test_cli_max_ratio_option(small_release: Released, tmp_path: Path) -> None:
    bundle, key = str(small_release.bundle), str(small_release.key)

    low = run_cli("verify", bundle, "--public-key", key, "--max-ratio", "1", cwd=tmp_path)
    default = run_cli("verify", bundle, "--public-key", key, cwd=tmp_path)
    invalid = run_cli("verify", bundle, "--public-key", key, "--max-ratio", "x", cwd=tmp_path)

    assert low.returncode == 1
    assert "is above the limit 1;" in low.stderr
    assert default.returncode == 0, default.stderr
    assert invalid.returncode == 1
    assert "--max-ratio 'x': expected a number above 0, such as 100 or 250.5" in invalid.stderr


def test_max_ratio_setting(small_release: Released, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pipeline]\nmax_ratio = 1\n", "utf-8")
    bundle, key = str(small_release.bundle), str(small_release.key)

    by_setting = run_cli("verify", bundle, "--public-key", key, cwd=tmp_path)
    by_option = run_cli("verify", bundle, "--public-key", key, "--max-ratio", "500", cwd=tmp_path)

    assert by_setting.returncode == 1
    assert "is above the limit 1;" in by_setting.stderr
    assert by_option.returncode == 0, by_option.stderr


def test_cli_apply_max_ratio(small_release: Released, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'customer.sqlite'}"
    args = ("apply", str(small_release.bundle), "--trusted-keys", str(small_release.key))

    low = run_cli(*args, "--database", database, "--create", "--max-ratio", "1", cwd=tmp_path)
    applied = run_cli(
        *args, "--database", database, "--create", "--max-ratio", "500", cwd=tmp_path
    )

    assert low.returncode == 1
    assert "is above the limit 1;" in low.stderr
    assert applied.returncode == 0, applied.stderr
    assert f"applied {VERSION}" in applied.stdout


def write_pem_key(path: Path, key: Any, passphrase: bytes | None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )


def test_cli_sign_with_wrong_passphrase(tmp_path: Path) -> None:
    key = tmp_path / "release.pem"
    write_pem_key(key, ed25519.Ed25519PrivateKey.generate(), b"right passphrase")
    (tmp_path / "file.txt").write_text("data\n", encoding="utf-8")
    failed = run_cli(
        "sign", "file.txt", "--key", str(key), "--version", "2026.12.0", cwd=tmp_path,
        PIPELINE_SIGNING_PASSPHRASE="wrong passphrase",
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"error: wrong passphrase for key file {key}"
    done = run_cli(
        "sign", "file.txt", "--key", str(key), "--version", "2026.12.0", cwd=tmp_path,
        PIPELINE_SIGNING_PASSPHRASE="right passphrase",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_cli_sign_with_rsa_key_says_type(tmp_path: Path) -> None:
    key = tmp_path / "rsa.pem"
    write_pem_key(key, rsa.generate_private_key(public_exponent=65537, key_size=2048), None)
    (tmp_path / "file.txt").write_text("data\n", encoding="utf-8")
    failed = run_cli("sign", "file.txt", "--key", str(key), "--version", "2026.12.0", cwd=tmp_path)
    assert failed.returncode == 1
    assert "contains an RSA private key (2048 bits); expected an Ed25519 key" in failed.stderr


def test_cli_sign_with_openssh_key(tmp_path: Path) -> None:
    ssh_keygen = require_tool("ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "file.txt").write_text("data\n", encoding="utf-8")
    done = run_cli("sign", "file.txt", "--key", str(key), "--version", "2026.12.0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "file.txt.minisig").is_file()


def test_cli_release_encrypted_and_rotating(small_release: Released, tmp_path: Path) -> None:
    require_encryption()
    current = tmp_path / "trusted-keys.json"
    write_trusted_keys(
        current, [trusted(small_release.secret.public, valid_from="2020-01-01T00:00:00Z")]
    )
    generate_keypair(tmp_path / "b.key", tmp_path / "b.pub")
    next_keys = tmp_path / "next.json"
    rotate_trusted_keys(
        current, load_secret_key(tmp_path / "b.key").public, next_keys,
        valid_from=datetime(2020, 1, 2, tzinfo=UTC),
    )  # fmt: skip
    out = tmp_path / "cli-release"
    done = run_cli(
        "release", "--repo", str(small_release.repo), "--out", str(out),
        "--version", "2026.12.1", "--key", str(small_release.key.with_suffix(".key")),
        "--database", small_release.sample, "--encrypt", "--full",
        "--next-trusted-keys", str(next_keys),
        cwd=tmp_path, PIPELINE_BUNDLE_PASSWORD="bundle password",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bundle = out / "parus-kaz-budget-2026.12.1.7z"
    checked = run_cli(
        "verify", str(bundle), "--trusted-keys", str(current), "--encrypted",
        cwd=tmp_path, PIPELINE_BUNDLE_PASSWORD="bundle password",
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    accepted = accept_rotation(bundle, load_trusted_keys(current), password="bundle password")
    assert len(accepted) == 2


def test_cli_verify_takes_bare_public_key(small_release: Released, tmp_path: Path) -> None:
    done = run_cli(
        "verify", str(small_release.bundle), "--trusted-keys", str(small_release.key), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"verified version {VERSION}" in done.stdout


def test_cli_apply_encrypted_bundle(small_release: Released, tmp_path: Path) -> None:
    require_encryption()
    out = tmp_path / "encrypted"
    run_release(
        small_release.repo,
        out,
        small_release.secret,
        version=Version.parse(VERSION),
        databases=[small_release.sample],
        password="пароль-2026",
    )
    bundle = out / f"parus-kaz-budget-{VERSION}.7z"
    database = tmp_path / "new.sqlite"
    options = ("--database", f"sqlite:///{database}", "--create")
    keys = ("--trusted-keys", str(small_release.key))

    refused = run_cli("apply", str(bundle), *options, *keys, cwd=tmp_path)
    applied = run_cli(
        "apply", str(bundle), *options, *keys, "--encrypted",
        cwd=tmp_path, PIPELINE_BUNDLE_PASSWORD="пароль-2026",
    )  # fmt: skip

    assert refused.returncode == 1
    assert "the archive is encrypted" in refused.stderr
    assert applied.returncode == 0, applied.stderr
    assert f"applied {VERSION} (from none)" in applied.stdout
    assert installed_version(f"sqlite:///{database}") == VERSION
