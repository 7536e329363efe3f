"""Tests of bundle verification with real archives, fresh Ed25519 keys and real signatures."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import py7zr
import pytest
from conftest import require_tool

from pipeline.archive import Compression, write_archive
from pipeline.errors import VerificationError
from pipeline.manifest import file_entry, manifest_bytes
from pipeline.signing import (
    PublicKey,
    SecretKey,
    generate_keypair,
    load_secret_key,
    sign_file,
)
from pipeline.verify import parse_trusted_comment, verify_bundle

MTIME = 1_796_374_800  # 2026-12-04T10:00:00Z
VERSION = "2026.12.0"
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


def manifest_for(staging: Path, *, version: str = VERSION) -> dict[str, Any]:
    files = sorted(
        (path for path in staging.rglob("*") if path.is_file()),
        key=lambda path: path.relative_to(staging).as_posix().encode(),
    )
    return {
        "format": 1,
        "product": "parus-kaz-budget",
        "version": version,
        "source": {
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "commit_time": "2026-12-01T09:00:00Z",
            "base_tag": None,
            "base_commit": None,
        },
        "schema": {"from": None, "to": None},
        "changes": {},
        "catalogs": [],
        "migrations": [],
        "dry_run": [],
        "build": {"tool": "parus-kaz-release test", "compression": {"filter": "LZMA2"}},
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
    assert result.files == len(CONTENT)
    assert list(isolated_tmp.iterdir()) == []


def test_verify_among_several_keys(bundle: Path, signer: Signer, other_key: PublicKey) -> None:
    result = verify_bundle(bundle, [other_key, signer.public])

    assert result.key_id == signer.public.key_id_hex


def test_verify_without_manifest_signature(bundle: Path, signer: Signer) -> None:
    (bundle.parent / "manifest.json.minisig").unlink()

    result = verify_bundle(bundle, [signer.public])

    assert result.files == len(CONTENT)


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
        VerificationError, match=r"check 3 .* manifest\.json is stored with filter BCJ2"
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

    with pytest.raises(VerificationError, match=r"check 4 .* entries claim \d+ bytes unpacked"):
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
        match=r"check 5 .* 1 file\(s\) in the archive are not listed in manifest\.json:"
        r" payload/unlisted\.sql",
    ):
        verify_bundle(bundle, [signer.public])
    assert list(isolated_tmp.iterdir()) == []


def test_unlisted_file_over_size_rejected(tmp_path: Path, dist: Path, signer: Signer) -> None:
    staging = stage(tmp_path / "staging")
    manifest = manifest_for(staging)
    (staging / "payload" / "unlisted.sql").write_bytes(b"DROP TABLE t;\n")
    bundle = release(dist, staging, signer, manifest=manifest)

    with pytest.raises(VerificationError, match=r"check 4 .* entries claim \d+ bytes unpacked"):
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
        VerificationError, match=r"check 5 .* payload/empty\.dat: expected 5 bytes, found 0"
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
