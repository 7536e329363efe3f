"""Verification of a bundle before anyone applies or publishes it.

`verify_bundle` runs these checks in order and stops at the first failure
with a VerificationError that names the check, the key id where a signature
is involved, and the reason:

1. The archive's signature (`<bundle>.minisig` by default) verifies with one
   of the trusted keys: key id, signature, then trusted comment. The key
   must have been valid, and not revoked, at the time in the trusted
   comment's `time=`.
2. The manifest signature, when one is given or `manifest.json.minisig` is
   beside the bundle, verifies over the exact bytes of the archive's
   `manifest.json`, with a key valid at its signing time. When
   `provenance.json.minisig` is beside the bundle, it verifies over the
   `provenance.json` beside it in the same way.
3. The manifest parses and matches the manifest schema, and its version (and
   its product, when the trusted comment names one) equals the `version=`
   (and `product=`) of the archive signature's trusted comment. A
   `manifest.json` beside the bundle has the same bytes as the archive's.
4. Every archive entry is safe to extract: only LZMA2, LZMA or COPY filters,
   relative paths without `..`, no links or special files, no duplicate
   names. The filters are checked from the header right after check 1, so a
   BCJ2 archive made by the 7-Zip CLI fails here even when its manifest is
   stored with BCJ2 and checks 2 and 3 could not read it. The unpacked size is at most
   the sum of the manifest's file sizes plus the manifest itself, and the
   unpacked-to-packed ratio is at most `max_ratio`.
5. The archive contains exactly the files that the manifest lists, plus
   `manifest.json` itself, and each file's size and SHA-256, hashed while it
   is decoded in memory, equal the manifest's, empty files included. Its
   folders are exactly the manifest's `folders`, empty folders included.
6. The provenance statement agrees with the manifest (pipeline.provenance),
   a `provenance.json` beside the bundle has the same bytes, and a rotating
   bundle's `keys/trusted-keys.json` is signed by the key that signed the
   bundle.

Verification writes nothing to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import archive, sevenzip_reader
from pipeline.config import DEFAULT_MAX_RATIO
from pipeline.errors import BundleError, PipelineError, SignatureError, VerificationError
from pipeline.manifest import MANIFEST_NAME, parse_manifest
from pipeline.provenance import PROVENANCE_NAME, check_provenance
from pipeline.signing import (
    PublicKey,
    SignatureInfo,
    signature_path_for,
    verify_bytes,
    verify_file,
)
from pipeline.trust import EPOCH, TrustedKey, check_key_usable, find_trusted_key

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
    # Signing time from the archive signature's trusted comment, or None without one.
    signed_at: datetime | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    # The manifest signature that check 2 verified, or None when check 2 was skipped.
    manifest_signature: Path | None = None


def as_trusted_keys(keys: Sequence[PublicKey | TrustedKey]) -> list[TrustedKey]:
    """Return trusted keys; a bare public key is trusted at any time and not revoked."""
    return [
        key if isinstance(key, TrustedKey) else TrustedKey(public=key, valid_from=EPOCH)
        for key in keys
    ]


def verify_bundle(
    bundle: Path,
    keys: Sequence[PublicKey | TrustedKey],
    *,
    manifest_signature: Path | None = None,
    signature: Path | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
    password: str | None = None,
) -> VerifyResult:
    """Verify `bundle` against the trusted `keys`, running the checks of the module docstring.

    `max_ratio` limits the unpacked size divided by the archive size (check
    4). `password` opens an AES-256 encrypted archive.

    Raises:
        VerificationError: a check failed; the message names the check, the
            file or entry, the key id, what was expected and what was found.
    """
    if not keys:
        raise VerificationError(f"{bundle}: no trusted keys given; pass the release's public key")
    trusted = as_trusted_keys(keys)
    with ArchiveReader(bundle, password) as reader:
        return _verify(bundle, trusted, reader, manifest_signature, signature, max_ratio)


def _verify(
    bundle: Path,
    trusted: list[TrustedKey],
    reader: ArchiveReader,
    manifest_signature: Path | None,
    signature: Path | None,
    max_ratio: float,
) -> VerifyResult:
    publics = [key.public for key in trusted]

    with _check(1, "archive signature", bundle):
        signature_path = signature or signature_path_for(bundle)
        info = verify_file(bundle, _read_signature(signature_path), publics, str(signature_path))
        signed_at = check_signing_time(info, trusted, str(signature_path))

    manifest_data: bytes | None = None
    manifest_signature = manifest_signature or _beside(bundle, MANIFEST_SIGNATURE_NAME)
    # The first check that reads the manifest reports an unreadable header. The
    # filters come from the header alone: checked before the manifest is read,
    # they name the real reason when the manifest itself is stored with BCJ2.
    with _check(*_first_reading_check(manifest_signature), bundle, part=True):
        reader.open()
    with _check(4, "archive entries", bundle, part=True):
        reader.check_filters()
    provenance_signature = _beside(bundle, PROVENANCE_NAME + ".minisig")
    if manifest_signature is None:
        log.info("%s: no %s beside the bundle; check 2 skipped", bundle, MANIFEST_SIGNATURE_NAME)
    else:
        with _check(2, "manifest signature", bundle):
            manifest_data = reader.read_file(MANIFEST_NAME, MAX_MANIFEST_BYTES)
            manifest_info = verify_bytes(
                manifest_data,
                _read_signature(manifest_signature),
                publics,
                f"{bundle}:{MANIFEST_NAME}",
                str(manifest_signature),
            )
            check_signing_time(manifest_info, trusted, str(manifest_signature))
            if provenance_signature is not None:
                _check_provenance_signature(bundle, provenance_signature, trusted)

    with _check(3, "manifest and trusted comment", bundle):
        if manifest_data is None:
            manifest_data = reader.read_file(MANIFEST_NAME, MAX_MANIFEST_BYTES)
        manifest = parse_manifest(manifest_data, f"{bundle}:{MANIFEST_NAME}")
        _check_trusted_comment(info, manifest)
        _check_signing_time_bounds(signed_at, manifest, info, trusted, str(signature_path))
        _check_same_bytes(bundle.parent / MANIFEST_NAME, manifest_data, bundle)

    files: list[dict[str, Any]] = manifest["files"]
    with _check(4, "archive entries", bundle):
        entries = reader.list_entries()
        listed = {entry["path"] for entry in files} | {MANIFEST_NAME}
        listed |= {
            folder if isinstance(folder, str) else folder.get("path", "")
            for folder in manifest.get("folders", [])
        }
        # Links and special files are left to check_entries, which names what they are.
        unlisted = sorted(
            entry.name
            for entry in entries
            if not (entry.is_dir or entry.is_symlink or entry.is_special)
            and entry.name not in listed
            and _plain_relative(entry.name)
        )
        if unlisted:
            count = f"{len(unlisted)} archive entries are"
            if len(unlisted) == 1:
                count = "1 archive entry is"
            raise VerificationError(f"{count} not in the manifest: {', '.join(unlisted[:5])}")
        sizes = {entry["path"]: entry["size"] for entry in files}
        for entry in entries:
            expected = sizes.get(entry.name)
            if expected is not None and not entry.is_dir and entry.size != expected:
                raise VerificationError(
                    f"{entry.name}: {entry.size} bytes in the archive, but the manifest lists"
                    f" {expected}"
                )
        max_total = sum(entry["size"] for entry in files) + len(manifest_data)
        reader.check_entries(max_total=max_total, max_ratio=max_ratio)

    # Checks 5 and 6 decode and hash every file in memory; nothing is written to disk.
    with _check(5, "files and hashes", bundle):
        hashes = reader.digest_entries(max_total=max_total, max_ratio=max_ratio)
        _check_files(entries, hashes, files, manifest_data)
        _check_folders(entries, manifest.get("folders", []))
    with _check(6, "provenance and next trusted keys", bundle):
        _check_attachments(bundle, reader, manifest, info, trusted)

    log.info("verified %s: version %s, %d files", bundle, manifest["version"], len(files))
    return VerifyResult(
        version=manifest["version"],
        key_id=info.key_id_hex,
        trusted_comment=info.trusted_comment,
        files=len(files),
        signed_at=signed_at,
        manifest=manifest,
        manifest_signature=manifest_signature,
    )


class ArchiveReader:
    """Reads of one bundle's archive, its header parsed on the first read and kept.

    The archive opens on the first call, not on creation, so verification
    parses nothing of it before the archive signature has passed. Use it as a
    context manager to close the file.
    """

    def __init__(self, bundle: Path, password: str | None) -> None:
        self.bundle = bundle
        self.password = password
        self._opened: archive.OpenArchive | None = None

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._opened is not None:
            self._opened.__exit__(None, None, None)
            self._opened = None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[archive.OpenArchive]:
        try:
            if self._opened is None:
                self._opened = archive.OpenArchive(self.bundle, self.password).__enter__()
            yield self._opened
        except BundleError as exc:
            if self.password is None or isinstance(exc, sevenzip_reader.PasswordError):
                raise
            # 7z stores no password check value: a wrong key only shows as corrupted data.
            raise BundleError(f"{exc}; the password may be wrong") from exc

    def read_file(self, name: str, max_size: int) -> bytes:
        with self._reading() as opened:
            return opened.read_file(name, max_size)

    def list_entries(self) -> list[archive.Entry]:
        with self._reading() as opened:
            return opened.entries()

    def open(self) -> None:
        """Open the archive and parse its header, unless done already."""
        with self._reading():
            pass

    def check_filters(self) -> None:
        with self._reading() as opened:
            opened.check_filters()

    def check_entries(self, *, max_total: int, max_ratio: float) -> None:
        with self._reading() as opened:
            opened.check_entries(max_total=max_total, max_ratio=max_ratio)

    def digest_entries(self, *, max_total: int, max_ratio: float) -> dict[str, str]:
        """Check every entry unless already done, decode every file and return {name: SHA-256}."""
        with self._reading() as opened:
            return opened.digest_entries(max_total=max_total, max_ratio=max_ratio)

    def extract_all(self, dest: Path, *, max_total: int, max_ratio: float) -> dict[str, str]:
        """Extract the archive and return the SHA-256 of each file, hashed while written."""
        with self._reading() as opened:
            return opened.extract_all(dest, max_total=max_total, max_ratio=max_ratio)


def signing_time(info: SignatureInfo) -> datetime | None:
    """Return the `time=` of a verified signature's trusted comment, or None when it has none.

    Raises:
        SignatureError: the time is not an RFC 3339 date-time with a time zone.
    """
    text = parse_trusted_comment(info.trusted_comment).get("time")
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise SignatureError(
            f"key ID {info.key_id_hex}: the trusted comment's time={text} is not a date-time"
            " with a time zone, such as 2026-12-04T10:00:00Z"
        )
    return moment


def check_signing_time(
    info: SignatureInfo, trusted: Sequence[TrustedKey], name: str
) -> datetime | None:
    """Check that the key of a verified signature was usable when it signed; return that time.

    A signature without `time=` passes only for a key without any validity
    limit, because its signing time is unknown.

    Raises:
        SignatureError: the key is revoked, expired or not yet valid at the
            signing time, or the time is missing for a key that has limits.
    """
    key = find_trusted_key(trusted, info.key_id_hex)
    moment = signing_time(info)
    if moment is None:
        if key.revoked is True:
            check_key_usable(key, EPOCH)
        limited = key.valid_from != EPOCH or key.valid_until is not None or key.revoked
        if limited:
            raise SignatureError(
                f"{name}: key ID {key.key_id_hex} has a validity period, but the trusted"
                " comment has no time=... to check it against; re-sign the file"
            )
        return None
    try:
        check_key_usable(key, moment)
    except SignatureError as exc:
        raise SignatureError(f"{name}: {exc}") from None
    return moment


# How far a signing time may lie ahead of this machine's clock: clocks drift.
CLOCK_SKEW = timedelta(days=1)


def _check_signing_time_bounds(
    signed_at: datetime | None,
    manifest: dict[str, Any],
    info: SignatureInfo,
    trusted: Sequence[TrustedKey],
    name: str,
    now: datetime | None = None,
) -> None:
    """Reject a signing time in the future, and check the key at the release commit's time.

    The signer writes the time, so a signer holding a revoked or expired key
    could backdate it. No release is signed before its own commit, so the key
    must also be usable at the commit's time when that is later.

    NOTE: a signer who also writes a false commit time into the manifest
    still passes. Revoke a leaked key with `revoked: true`, which applies at
    any time.
    """
    if signed_at is None:
        return
    current = now or datetime.now(UTC)
    if signed_at > current + CLOCK_SKEW:
        raise SignatureError(
            f"{name}: signed at {signed_at:%Y-%m-%dT%H:%M:%SZ}, which is in the future"
            f" (now {current:%Y-%m-%dT%H:%M:%SZ}); the signature's time cannot be trusted"
        )
    committed = datetime.strptime(manifest["source"]["commit_time"], "%Y-%m-%dT%H:%M:%SZ")
    committed = committed.replace(tzinfo=UTC)
    if signed_at >= committed:
        return
    key = find_trusted_key(trusted, info.key_id_hex)
    try:
        check_key_usable(key, committed)
    except SignatureError as exc:
        raise SignatureError(
            f"{name}: signed at {signed_at:%Y-%m-%dT%H:%M:%SZ}, before the release commit's"
            f" time {committed:%Y-%m-%dT%H:%M:%SZ}, and at the commit's time {exc}"
        ) from None


@contextlib.contextmanager
def _check(number: int, title: str, bundle: Path, *, part: bool = False) -> Iterator[None]:
    """Run one check; turn any pipeline error inside it into a VerificationError naming it.

    With `part`, the block is only the start of the check, so no pass is logged.
    """
    try:
        yield
    except PipelineError as exc:
        # Most messages name the bundle already; the others get it as a prefix.
        where = "" if str(bundle) in str(exc) else f"{bundle}: "
        raise VerificationError(f"{where}check {number} ({title}) failed: {exc}") from exc
    if not part:
        log.info("%s: check %d (%s) passed", bundle, number, title)


def _first_reading_check(manifest_signature: Path | None) -> tuple[int, str]:
    if manifest_signature is None:
        return 3, "manifest and trusted comment"
    return 2, "manifest signature"


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


def _check_files(
    entries: Sequence[archive.Entry],
    hashes: dict[str, str],
    files: list[dict[str, Any]],
    manifest_data: bytes,
) -> None:
    """Compare the archive's files with the manifest: file set, sizes, SHA-256 hashes.

    `hashes` are the digests computed while every file was decoded.
    """
    listed: dict[str, dict[str, Any]] = {}
    for entry in files:
        if entry["path"] in listed:
            raise VerificationError(f"{MANIFEST_NAME} lists {entry['path']} more than once")
        listed[entry["path"]] = entry
    if MANIFEST_NAME in listed:
        raise VerificationError(
            f"{MANIFEST_NAME} lists itself in `files`; expected every file except itself"
        )

    sizes = {entry.name: entry.size for entry in entries if not entry.is_dir}
    found = set(sizes)
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
    if hashes.get(MANIFEST_NAME) != hashlib.sha256(manifest_data).hexdigest():
        raise VerificationError(
            f"the {MANIFEST_NAME} in the archive differs from the one read in check 3;"
            " the bundle changed during verification"
        )

    for path, entry in listed.items():
        if sizes[path] != entry["size"]:
            raise VerificationError(f"{path}: expected {entry['size']} bytes, found {sizes[path]}")
        digest = hashes.get(path)
        if digest != entry["sha256"]:
            raise VerificationError(f"{path}: expected SHA-256 {entry['sha256']}, found {digest}")


def _check_same_bytes(path: Path, expected: bytes, bundle: Path) -> None:
    """Compare a file beside the bundle, when present, with its copy inside the archive."""
    if not path.is_file():
        return
    if path.read_bytes() != expected:
        raise VerificationError(
            f"{path} differs from the {path.name} inside {bundle.name}; the files beside the"
            " bundle belong to another build, so download them again"
        )


def _check_provenance_signature(
    bundle: Path, signature: Path, trusted: Sequence[TrustedKey]
) -> None:
    provenance = bundle.parent / PROVENANCE_NAME
    if not provenance.is_file():
        raise VerificationError(
            f"{signature} is beside the bundle but {provenance} is not; download it as well"
        )
    info = verify_file(
        provenance, _read_signature(signature), [key.public for key in trusted], str(signature)
    )
    check_signing_time(info, trusted, str(signature))


def _check_folders(entries: Sequence[archive.Entry], folders: list[str]) -> None:
    # Folders an extraction would create: those stored as entries and every parent of an entry.
    found = {entry.name for entry in entries if entry.is_dir}
    for entry in entries:
        parts = entry.name.split("/")[:-1]
        found.update("/".join(parts[: depth + 1]) for depth in range(len(parts)))
    missing = sorted(set(folders) - found, key=str.encode)
    extra = sorted(found - set(folders), key=str.encode)
    if missing:
        raise VerificationError(
            f"{len(missing)} folder(s) listed in {MANIFEST_NAME} are missing from the archive:"
            f" {', '.join(missing[:10])}"
        )
    if extra:
        raise VerificationError(
            f"{len(extra)} folder(s) in the archive are not listed in {MANIFEST_NAME}:"
            f" {', '.join(extra[:10])}"
        )


def _check_attachments(
    bundle: Path,
    reader: ArchiveReader,
    manifest: dict[str, Any],
    info: SignatureInfo,
    trusted: Sequence[TrustedKey],
) -> None:
    """Check the provenance statement and the signature of a rotation's trusted-keys file."""
    provenance_data = reader.read_file(manifest["provenance"], MAX_MANIFEST_BYTES)
    check_provenance(provenance_data, manifest, f"{bundle}:{manifest['provenance']}")
    _check_same_bytes(bundle.parent / PROVENANCE_NAME, provenance_data, bundle)
    rotation = manifest["next_trusted_keys"]
    if rotation is None:
        return
    name = f"{bundle}:{rotation['path']}"
    signature_name = f"{bundle}:{rotation['signature']}"
    signer = find_trusted_key(trusted, info.key_id_hex)
    keys_info = verify_bytes(
        reader.read_file(rotation["path"], MAX_MANIFEST_BYTES),
        reader.read_file(rotation["signature"], MAX_MANIFEST_BYTES),
        [signer.public],
        name,
        signature_name,
    )
    check_signing_time(keys_info, trusted, signature_name)


def _plain_relative(name: str) -> bool:
    """Return whether an entry name is a plain relative path; check_entries names the others."""
    return not name.startswith("/") and ".." not in name.split("/") and ":" not in name
