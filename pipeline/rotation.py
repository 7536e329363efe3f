"""Key rotation: a release carries the next trusted-keys file, signed by the current key.

Customers who trust only the current key move to a new key without a manual
step:

1. The release manager writes the next trusted-keys file with
   `next_trusted_keys` (the current keys, plus the new key, with the current
   key's `valid_until` set to the end of its use) and releases with it.
2. That bundle carries `keys/trusted-keys.json` and its signature by the key
   that signs the bundle (see pipeline.build and pipeline.verify check 6).
3. After verifying and applying it, the customer's updater calls
   `install_rotation`, which merges the new trusted keys into the local
   trusted-keys file. Later bundles signed by the new key then verify.

Accepting a rotation never loosens a limit that the local file sets, so an
older bundle replayed to a customer cannot undo a revocation:

- a key keeps the strictest revocation of the two files (`true` over a time,
  the earlier time over a later one), the later `valid_from` and the earlier
  `valid_until`. A key's period is extended only by editing the local file;
- a key revoked in the local file stays there when the bundle's file does
  not list it;
- the local file records the bundle version it was updated from
  (`installed_from`), and the next trusted keys of a bundle whose version is
  not greater are rejected with StaleRotationError.

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.build import NEXT_TRUSTED_KEYS_PATH, SignedFile
from pipeline.config import DEFAULT_MAX_RATIO
from pipeline.errors import (
    BundleError,
    ConfigError,
    SignatureError,
    StaleRotationError,
    VerificationError,
)
from pipeline.keys import PublicKey, SecretKey
from pipeline.manifest import MANIFEST_NAME, parse_manifest
from pipeline.signing import blake2b_digest, signature_text, verify_bytes
from pipeline.trust import (
    InstalledFrom,
    TrustedKey,
    find_trusted_key,
    load_trusted_keys,
    read_trusted_keys_file,
    trusted_keys_document,
    write_trusted_keys,
)
from pipeline.verify import (
    MAX_MANIFEST_BYTES,
    ArchiveReader,
    check_signing_time,
    parse_trusted_comment,
    verify_bundle,
)
from pipeline.versions import Version

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


@dataclass(frozen=True)
class Rotation:
    """The next trusted keys of one bundle, merged into the keys in force."""

    keys: list[TrustedKey]
    source: InstalledFrom
    # One line per key on a local limit that the merge kept, naming the key id.
    notes: list[str]


@dataclass(frozen=True)
class InstalledRotation:
    """The outcome of `install_rotation`; `rotation` is None for a bundle without one."""

    rotation: Rotation | None
    written: bool


def read_rotation(
    source: Path,
    current: Sequence[TrustedKey],
    *,
    password: str | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Rotation | None:
    """Verify the next trusted keys of the bundle `source` and merge them into `current`.

    `source` is a bundle archive, which is verified against `current` first,
    or the folder of a bundle already verified and extracted (`max_ratio`
    goes to that verification). A bundle that carries no next trusted-keys
    file gives None. Otherwise its
    `keys/trusted-keys.json` must be signed by a key of `current` that was
    valid at the signing time. Its version is the `version=` of that
    signature's trusted comment, else the manifest's.

    Raises:
        VerificationError: the bundle fails verification, or the trusted-keys
            file or its signature is missing, invalid or by an untrusted key.
    """
    if source.is_dir():
        manifest_data = _read_member(source, MANIFEST_NAME, MAX_MANIFEST_BYTES, None)
        manifest = parse_manifest(manifest_data, str(source / MANIFEST_NAME))
    else:
        verified = verify_bundle(source, current, password=password, max_ratio=max_ratio)
        manifest = verified.manifest
    rotation: dict[str, Any] | None = manifest.get("next_trusted_keys")
    if rotation is None:
        logger.info("%s carries no next trusted keys; the trusted keys stay", source)
        return None
    name = f"{source}:{rotation['path']}"
    signature_name = f"{source}:{rotation['signature']}"
    try:
        data = _read_member(source, rotation["path"], MAX_TRUSTED_KEYS_BYTES, password)
        signature = _read_member(source, rotation["signature"], 16 * 1024, password)
        info = verify_bytes(data, signature, [key.public for key in current], name, signature_name)
        signed_at = check_signing_time(info, current, signature_name)
        keys = parse_trusted_keys(data, name)
        signed_version = parse_trusted_comment(info.trusted_comment).get("version")
        version = Version.parse(signed_version or manifest["version"])
    except (SignatureError, BundleError, ConfigError) as exc:
        raise VerificationError(f"next trusted keys rejected: {exc}") from exc
    signer = find_trusted_key(current, info.key_id_hex)
    logger.info(
        "read %d trusted keys from %s, signed by key ID %s",
        len(keys),
        name,
        signer.key_id_hex,
    )
    merged, notes = merge_trusted_keys(current, keys)
    for note in notes:
        logger.info("%s", note)
    return Rotation(
        keys=merged,
        source=InstalledFrom(str(version), signer.key_id_hex, signed_at),
        notes=notes,
    )


def accept_rotation(
    source: Path,
    current: Sequence[TrustedKey],
    *,
    password: str | None = None,
    installed_from: InstalledFrom | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> list[TrustedKey]:
    """Return the trusted keys to keep after applying the bundle `source`.

    A bundle without next trusted keys leaves `current` as it is. Otherwise
    the result is `read_rotation`'s merge. `installed_from` is the bundle
    that `current` came from, when known.

    Raises:
        VerificationError: as `read_rotation`.
        StaleRotationError: the bundle's version is not greater than `installed_from`'s.
    """
    rotation = read_rotation(source, current, password=password, max_ratio=max_ratio)
    if rotation is None:
        return list(current)
    check_rotation_newer(rotation.source, rotation.keys, installed_from, "the trusted keys")
    return rotation.keys


def install_rotation(
    source: Path,
    path: Path,
    *,
    password: str | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> InstalledRotation:
    """Merge the next trusted keys of the bundle `source` into the trusted-keys file `path`.

    The file is rewritten with the merged keys and an `installed_from` that
    names the bundle. A file that already came from this bundle, with the
    same keys, stays as it is.

    Raises:
        SignatureError: `path` is not a valid trusted-keys file.
        VerificationError: as `read_rotation`.
        StaleRotationError: the bundle's version is not greater than the one
            that `path` came from; `path` stays as it is.
    """
    current = read_trusted_keys_file(path)
    rotation = read_rotation(source, current.keys, password=password, max_ratio=max_ratio)
    if rotation is None:
        return InstalledRotation(None, written=False)
    installed = current.installed_from
    if (
        installed is not None
        and installed.version == rotation.source.version
        and rotation.keys == current.keys
    ):
        logger.info("%s has the next trusted keys of %s already", path, installed.version)
        return InstalledRotation(rotation, written=False)
    check_rotation_newer(rotation.source, rotation.keys, installed, str(path))
    write_trusted_keys(path, rotation.keys, installed_from=rotation.source)
    return InstalledRotation(rotation, written=True)


def check_rotation_newer(
    offered: InstalledFrom,
    keys: Sequence[TrustedKey],
    installed: InstalledFrom | None,
    name: str,
) -> None:
    """Reject next trusted keys from a bundle not newer than the one that `name` came from.

    Raises:
        StaleRotationError: `offered.version` is not greater than `installed.version`.
    """
    if installed is None or Version.parse(offered.version) > Version.parse(installed.version):
        return
    ids = ", ".join(key.key_id_hex for key in keys)
    raise StaleRotationError(
        f"the next trusted keys of bundle {offered.version} (key IDs {ids}) are not newer"
        f" than those in {name}, which came from bundle {installed.version}; {name} stays"
        " as it is"
    )


def merge_trusted_keys(
    local: Sequence[TrustedKey], offered: Sequence[TrustedKey]
) -> tuple[list[TrustedKey], list[str]]:
    """Return the `offered` keys without loosening any limit that `local` sets.

    Follows the rules of the module docstring. Keys revoked in `local` that
    `offered` does not list follow the offered keys, in their local order.
    Also returns one note per limit kept from `local`, naming the key id.
    """
    by_id = {key.key_id_hex: key for key in local}
    merged: list[TrustedKey] = []
    notes: list[str] = []
    for key in offered:
        local_key = by_id.get(key.key_id_hex)
        merged.append(key if local_key is None else _stricter(local_key, key, notes))
    offered_ids = {key.key_id_hex for key in offered}
    for key in local:
        if key.key_id_hex not in offered_ids and key.revoked is not False:
            merged.append(key)
            notes.append(
                f"key ID {key.key_id_hex}: stays in the file, revoked, although the bundle's"
                " file does not list it"
            )
    return merged, notes


def _stricter(local: TrustedKey, offered: TrustedKey, notes: list[str]) -> TrustedKey:
    """Return `offered` with each limit of `local` that is stricter; note every one kept."""
    label = f"key ID {offered.key_id_hex}"
    revoked = _stricter_revocation(local.revoked, offered.revoked)
    if revoked != offered.revoked:
        notes.append(
            f"{label}: stays revoked{_revocation_text(revoked)} as the local file has it;"
            f" the bundle's file has revoked: {_revocation_value(offered.revoked)}"
        )
    valid_from = max(local.valid_from, offered.valid_from)
    if valid_from != offered.valid_from:
        notes.append(
            f"{label}: stays valid from {_time(valid_from)} as the local file has it;"
            f" the bundle's file has {_time(offered.valid_from)}"
        )
    limits = [moment for moment in (local.valid_until, offered.valid_until) if moment]
    valid_until = min(limits) if limits else None
    if valid_until != offered.valid_until and valid_until is not None:
        offered_until = _time(offered.valid_until) if offered.valid_until else "none"
        notes.append(
            f"{label}: stays valid until {_time(valid_until)} as the local file has it;"
            f" the bundle's file has {offered_until}"
        )
    if valid_until is not None and valid_until <= valid_from:
        # No time is left at which the key may sign, and a trusted-keys file cannot state an
        # empty period, so the key keeps its local period and is revoked.
        notes.append(
            f"{label}: the local file lets it sign from {_time(valid_from)}, the bundle's"
            f" file until {_time(valid_until)}; it is stored as revoked"
        )
        return replace(local, revoked=True, comment=offered.comment)
    return replace(offered, valid_from=valid_from, valid_until=valid_until, revoked=revoked)


def _stricter_revocation(first: bool | datetime, second: bool | datetime) -> bool | datetime:
    if first is True or second is True:
        return True
    times = [value for value in (first, second) if isinstance(value, datetime)]
    return min(times) if times else False


def _revocation_text(revoked: bool | datetime) -> str:
    return f" at {_time(revoked)}" if isinstance(revoked, datetime) else ""


def _revocation_value(revoked: bool | datetime) -> str:
    if isinstance(revoked, datetime):
        return _time(revoked)
    return "true" if revoked else "false"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    "InstalledRotation",
    "Rotation",
    "accept_rotation",
    "check_rotation_newer",
    "install_rotation",
    "merge_trusted_keys",
    "next_trusted_keys",
    "parse_trusted_keys",
    "read_rotation",
    "rotate_trusted_keys",
    "signed_trusted_keys",
    "trusted_keys_bytes",
]
