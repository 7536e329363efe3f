"""Key rotation: a release carries the next trusted-keys file, signed by the current key.

Customers who trust only the current key move to a new key without a manual
step:

1. The release manager writes the next trusted-keys file with
   `next_trusted_keys` (the current keys, plus the new key, with the current
   key's `valid_until` set to the end of its use) and releases with it.
2. That bundle carries `keys/trusted-keys.json` and its signature by the key
   that signs the bundle (see pipeline.build and pipeline.verify check 6).
3. After verifying and applying it, the customer's updater calls
   `accept_rotation`, which returns the new trusted keys to store. Later
   bundles signed by the new key then verify.

The signature's trusted comment carries the bundle's source time
(`SOURCE_DATE_EPOCH` or the commit time), not the signing time, so the
bundle stays byte-identical between two builds; Ed25519 signatures are
deterministic. The signing key must therefore be valid at that time.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.build import NEXT_TRUSTED_KEYS_PATH, SignedFile
from pipeline.errors import BundleError, SignatureError, VerificationError
from pipeline.keys import PublicKey, SecretKey
from pipeline.manifest import MANIFEST_NAME, parse_manifest
from pipeline.signing import blake2b_digest, signature_text, verify_bytes
from pipeline.trust import (
    TrustedKey,
    find_trusted_key,
    load_trusted_keys,
    trusted_keys_document,
    write_trusted_keys,
)
from pipeline.verify import (
    MAX_MANIFEST_BYTES,
    ArchiveReader,
    check_signing_time,
    verify_bundle,
)

logger = logging.getLogger(__name__)

# Bound on a trusted-keys file read from a bundle; a key entry takes about 300 bytes.
MAX_TRUSTED_KEYS_BYTES = 1024 * 1024


def trusted_keys_bytes(keys: Sequence[TrustedKey]) -> bytes:
    """Serialize trusted keys canonically: the file's key order, two-space indent, final LF."""
    document = trusted_keys_document(keys)
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def parse_trusted_keys(data: bytes, name: str) -> list[TrustedKey]:
    """Parse and check the bytes of a trusted-keys file; `name` names it in errors.

    Raises:
        SignatureError: as `pipeline.trust.load_trusted_keys`.
    """
    with tempfile.TemporaryDirectory(prefix="parus-keys-") as folder:
        path = Path(folder) / "trusted-keys.json"
        path.write_bytes(data)
        try:
            return load_trusted_keys(path)
        except SignatureError as exc:
            raise SignatureError(str(exc).replace(str(path), name)) from None


def next_trusted_keys(
    current: Sequence[TrustedKey],
    new: PublicKey,
    *,
    valid_from: datetime,
    retire_at: datetime | None = None,
    comment: str = "",
) -> list[TrustedKey]:
    """Return the current keys plus `new`, valid from `valid_from`.

    `retire_at` sets `valid_until` of every current key that has none and is
    not revoked, so it stops signing at that time.

    Raises:
        SignatureError: `new` is already trusted, or a time has no time zone.
    """
    for moment in (valid_from, retire_at):
        if moment is not None and moment.tzinfo is None:
            raise SignatureError(f"time {moment.isoformat()} has no time zone; add Z or +05:00")
    if any(key.public.key_id == new.key_id for key in current):
        raise SignatureError(f"key ID {new.key_id_hex} is already in the trusted keys")
    keys = []
    for key in current:
        if retire_at is not None and key.valid_until is None and key.revoked is False:
            if retire_at <= key.valid_from:
                raise SignatureError(
                    f"key ID {key.key_id_hex}: retire time {retire_at.isoformat()} is not after"
                    f" its valid_from {key.valid_from.isoformat()}"
                )
            key = replace(key, valid_until=retire_at)
        keys.append(key)
    keys.append(TrustedKey(public=new, valid_from=valid_from, comment=comment))
    return keys


def rotate_trusted_keys(
    current_path: Path,
    new_public_key: PublicKey,
    out: Path,
    *,
    valid_from: datetime,
    retire_at: datetime | None = None,
    comment: str = "",
) -> list[TrustedKey]:
    """Write the next trusted-keys file to `out`: the keys in `current_path` plus the new key.

    Raises:
        SignatureError: as `load_trusted_keys` and `next_trusted_keys`.
    """
    keys = next_trusted_keys(
        load_trusted_keys(current_path),
        new_public_key,
        valid_from=valid_from,
        retire_at=retire_at,
        comment=comment,
    )
    write_trusted_keys(out, keys)
    return keys


def signed_trusted_keys(
    path: Path, secret: SecretKey, product: str, version: str, source_time: int
) -> SignedFile:
    """Load the next trusted-keys file and sign it for shipping in a bundle.

    The trusted comment is `product=P version=V file=trusted-keys.json time=T`
    with `source_time` (unix seconds) as T.

    Raises:
        SignatureError: the file is invalid or lists no key that is not revoked.
    """
    keys = load_trusted_keys(path)
    if all(key.revoked is True for key in keys):
        raise SignatureError(
            f"{path} lists no key that is not revoked; customers could not verify"
        )
    data = trusted_keys_bytes(keys)
    moment = datetime.fromtimestamp(source_time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    comment = f"product={product} version={version} file=trusted-keys.json time={moment}"
    signature = signature_text(blake2b_digest(data), secret, comment)
    logger.info("signed the next trusted keys %s with key ID %s", path, secret.public.key_id_hex)
    return SignedFile(data=data, signature=signature.encode("utf-8"))


def accept_rotation(
    source: Path, current: Sequence[TrustedKey], *, password: str | None = None
) -> list[TrustedKey]:
    """Return the trusted keys to keep after applying the bundle `source`.

    `source` is a bundle archive, which is verified against `current` first,
    or the folder of a bundle already verified and extracted. A bundle that
    carries no next trusted-keys file leaves `current` as it is. Otherwise
    its `keys/trusted-keys.json` must be signed by a key of `current` that
    was valid at the signing time, and its keys are returned.

    Raises:
        VerificationError: the bundle fails verification, or the trusted-keys
            file or its signature is missing, invalid or by an untrusted key.
    """
    if source.is_dir():
        manifest_data = _read_member(source, MANIFEST_NAME, MAX_MANIFEST_BYTES, None)
        manifest = parse_manifest(manifest_data, str(source / MANIFEST_NAME))
    else:
        manifest = verify_bundle(source, current, password=password).manifest
    rotation: dict[str, Any] | None = manifest.get("next_trusted_keys")
    if rotation is None:
        logger.info("%s carries no next trusted keys; the trusted keys stay", source)
        return list(current)
    name = f"{source}:{rotation['path']}"
    signature_name = f"{source}:{rotation['signature']}"
    try:
        data = _read_member(source, rotation["path"], MAX_TRUSTED_KEYS_BYTES, password)
        signature = _read_member(source, rotation["signature"], 16 * 1024, password)
        info = verify_bytes(data, signature, [key.public for key in current], name, signature_name)
        check_signing_time(info, current, signature_name)
        keys = parse_trusted_keys(data, name)
    except (SignatureError, BundleError) as exc:
        raise VerificationError(f"next trusted keys rejected: {exc}") from exc
    signer = find_trusted_key(current, info.key_id_hex)
    logger.info(
        "accepted %d trusted keys from %s, signed by key ID %s",
        len(keys),
        name,
        signer.key_id_hex,
    )
    return keys


def _read_member(source: Path, name: str, max_size: int, password: str | None) -> bytes:
    if source.is_dir():
        path = source / name
        if not path.is_file():
            raise BundleError(f"{path} not found in the extracted bundle")
        size = path.stat().st_size
        if size > max_size:
            raise BundleError(f"{path} is {size} bytes; expected at most {max_size}")
        return path.read_bytes()
    with ArchiveReader(source, password) as reader:
        return reader.read_file(name, max_size)


__all__ = [
    "NEXT_TRUSTED_KEYS_PATH",
    "accept_rotation",
    "next_trusted_keys",
    "parse_trusted_keys",
    "rotate_trusted_keys",
    "signed_trusted_keys",
    "trusted_keys_bytes",
]
