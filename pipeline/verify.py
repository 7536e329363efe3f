"""Verification of a bundle before anyone applies or publishes it.

`verify_bundle` runs these checks in order and stops at the first failure
with a VerificationError that names the check and the reason:

1. The archive's signature (`<bundle>.minisig` by default) verifies with one
   of the trusted keys.
2. The manifest signature, when one is given or `manifest.json.minisig` is
   beside the bundle, verifies over the exact bytes of the archive's
   `manifest.json`.
3. The manifest parses and matches the manifest schema, and its version (and
   its product, when the trusted comment names one) equals the `version=`
   (and `product=`) of the archive signature's trusted comment.
4. Every archive entry is safe to extract: only LZMA2, LZMA or COPY filters,
   relative paths without `..`, no links or special files, no duplicate names.
   The unpacked size is at most the sum of the manifest's file sizes plus the
   manifest itself, and the unpacked-to-packed ratio is at most `max_ratio`.
   Nothing is written before this check passes.
5. The archive extracted into a temporary folder contains exactly the files
   that the manifest lists, plus `manifest.json` itself, and each file's size
   and SHA-256 equal the manifest's.
6. The temporary folder is removed, whether the checks pass or fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import archive
from pipeline.errors import PipelineError, VerificationError
from pipeline.manifest import MANIFEST_NAME, parse_manifest
from pipeline.signing import (
    PublicKey,
    SignatureInfo,
    signature_path_for,
    verify_bytes,
    verify_file,
)

log = logging.getLogger(__name__)

MANIFEST_SIGNATURE_NAME = MANIFEST_NAME + ".minisig"
# NOTE: an estimate. A manifest entry takes about 150 bytes, so 64 MiB allows
# several hundred thousand files, far more than a monthly bundle ships.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# A limit far above the size of a minisign signature file, which has 4 lines
# and a trusted comment that pipeline.signing keeps below 8 KiB.
MAX_SIGNATURE_BYTES = 16 * 1024


@dataclass(frozen=True)
class VerifyResult:
    """Facts about a bundle that passed every check."""

    version: str
    key_id: str
    trusted_comment: str
    files: int


def verify_bundle(
    bundle: Path,
    keys: Sequence[PublicKey],
    *,
    manifest_signature: Path | None = None,
    signature: Path | None = None,
    max_ratio: float = 100.0,
) -> VerifyResult:
    """Verify `bundle` against the trusted `keys`, running the checks of the module docstring.

    Raises:
        VerificationError: a check failed; the message names the check, the
            file or entry, what was expected and what was found.
    """
    if not keys:
        raise VerificationError(f"{bundle}: no trusted keys given; pass the release's public key")

    with _check(1, "archive signature", bundle):
        signature_path = signature or signature_path_for(bundle)
        info = verify_file(bundle, _read_signature(signature_path), keys, str(signature_path))

    manifest_data: bytes | None = None
    manifest_signature = manifest_signature or _beside(bundle, MANIFEST_SIGNATURE_NAME)
    if manifest_signature is None:
        log.info("%s: no %s beside the bundle; check 2 skipped", bundle, MANIFEST_SIGNATURE_NAME)
    else:
        with _check(2, "manifest signature", bundle):
            manifest_data = archive.read_file(bundle, MANIFEST_NAME, MAX_MANIFEST_BYTES)
            verify_bytes(
                manifest_data,
                _read_signature(manifest_signature),
                keys,
                f"{bundle}:{MANIFEST_NAME}",
            )

    with _check(3, "manifest and trusted comment", bundle):
        if manifest_data is None:
            manifest_data = archive.read_file(bundle, MANIFEST_NAME, MAX_MANIFEST_BYTES)
        manifest = parse_manifest(manifest_data, f"{bundle}:{MANIFEST_NAME}")
        _check_trusted_comment(info, manifest)

    files: list[dict[str, Any]] = manifest["files"]
    with _check(4, "archive entries", bundle):
        max_total = sum(entry["size"] for entry in files) + len(manifest_data)
        archive.check_entries(bundle, max_total=max_total, max_ratio=max_ratio)

    with _check(5, "files and hashes", bundle), _temporary_folder() as work:
        extracted = work / "bundle"
        archive.extract_all(bundle, extracted, max_total=max_total, max_ratio=max_ratio)
        _check_files(extracted, files, manifest_data)

    log.info("verified %s: version %s, %d files", bundle, manifest["version"], len(files))
    return VerifyResult(
        version=manifest["version"],
        key_id=info.key_id_hex,
        trusted_comment=info.trusted_comment,
        files=len(files),
    )


@contextlib.contextmanager
def _check(number: int, title: str, bundle: Path) -> Iterator[None]:
    """Run one check; turn any pipeline error inside it into a VerificationError naming it."""
    try:
        yield
    except PipelineError as exc:
        # Most messages name the bundle already; the others get it as a prefix.
        where = "" if str(bundle) in str(exc) else f"{bundle}: "
        raise VerificationError(f"{where}check {number} ({title}) failed: {exc}") from exc
    log.info("%s: check %d (%s) passed", bundle, number, title)


@contextlib.contextmanager
def _temporary_folder() -> Iterator[Path]:
    """Yield a new temporary folder and remove it afterwards, also when the block raises."""
    folder = Path(tempfile.mkdtemp(prefix="parus-verify-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _beside(bundle: Path, name: str) -> Path | None:
    path = bundle.parent / name
    return path if path.is_file() else None


def _read_signature(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_SIGNATURE_BYTES:
            raise VerificationError(
                f"{path} is {size} bytes; expected a minisign signature file of at most"
                f" {MAX_SIGNATURE_BYTES}"
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise VerificationError(
            f"signature file {path} not found; download it with the bundle or pass its path"
        ) from exc
    except OSError as exc:
        raise VerificationError(f"cannot read signature file {path}: {exc.strerror}") from exc


def parse_trusted_comment(comment: str) -> dict[str, str]:
    """Parse the `key=value` pairs of a trusted comment, such as `product=P version=V time=T`.

    Pairs are separated by spaces or tabs. Words without `=` are skipped, and
    when a key repeats, the first value counts.
    """
    pairs: dict[str, str] = {}
    for word in comment.split():
        key, separator, value = word.partition("=")
        if separator and key and key not in pairs:
            pairs[key] = value
    return pairs


def _check_trusted_comment(info: SignatureInfo, manifest: dict[str, Any]) -> None:
    pairs = parse_trusted_comment(info.trusted_comment)
    comment = info.trusted_comment
    version = pairs.get("version")
    if version is None:
        raise VerificationError(
            f"the trusted comment {comment!r} has no version=...;"
            " expected one such as 'product=parus-kaz-budget version=2026.12.0 time=...'"
        )
    if version != manifest["version"]:
        raise VerificationError(
            f"the trusted comment has version {version}, the manifest {manifest['version']};"
            " the bundle and its signature belong to different releases"
        )
    product = pairs.get("product")
    if product is not None and product != manifest["product"]:
        raise VerificationError(
            f"the trusted comment has product {product}, the manifest {manifest['product']}"
        )


def _check_files(extracted: Path, files: list[dict[str, Any]], manifest_data: bytes) -> None:
    """Compare the extracted tree with the manifest: file set, sizes, SHA-256 hashes."""
    listed: dict[str, dict[str, Any]] = {}
    for entry in files:
        if entry["path"] in listed:
            raise VerificationError(f"{MANIFEST_NAME} lists {entry['path']} more than once")
        listed[entry["path"]] = entry
    if MANIFEST_NAME in listed:
        raise VerificationError(
            f"{MANIFEST_NAME} lists itself in `files`; expected every file except itself"
        )

    found = _extracted_files(extracted)
    missing = sorted(set(listed) - found, key=str.encode)
    extra = sorted(found - set(listed) - {MANIFEST_NAME}, key=str.encode)
    if missing:
        raise VerificationError(
            f"{len(missing)} file(s) listed in {MANIFEST_NAME} are missing from the archive:"
            f" {', '.join(missing[:10])}"
        )
    if extra:
        raise VerificationError(
            f"{len(extra)} file(s) in the archive are not listed in {MANIFEST_NAME}:"
            f" {', '.join(extra[:10])}"
        )
    if (extracted / MANIFEST_NAME).read_bytes() != manifest_data:
        raise VerificationError(
            f"the extracted {MANIFEST_NAME} differs from the one read in check 3;"
            " the bundle changed during verification"
        )

    for path, entry in listed.items():
        _check_file(extracted / path, path, entry)


def _extracted_files(extracted: Path) -> set[str]:
    found: set[str] = set()
    for root, _, filenames in os.walk(extracted):
        for name in filenames:
            path = Path(root, name)
            if not path.is_file() or path.is_symlink():
                raise VerificationError(f"extracted {path} is not a regular file")
            found.add(path.relative_to(extracted).as_posix())
    return found


def _check_file(path: Path, name: str, entry: dict[str, Any]) -> None:
    size = path.stat().st_size
    if size != entry["size"]:
        raise VerificationError(f"{name}: expected {entry['size']} bytes, found {size}")
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != entry["sha256"]:
        raise VerificationError(f"{name}: expected SHA-256 {entry['sha256']}, found {digest}")
