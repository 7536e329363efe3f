"""Trusted keys: the public keys whose signatures a verifier accepts, and when.

The file `trusted-keys.json` follows `pipeline/schemas/trusted-keys.schema.json`::

    {
      "format": 1,
      "keys": [
        {"key_id": "9FA56CB169D5097D",
         "public_key": "RWR9CdVpsWylny5tUrpbzCcDtu8F+XWqOwmgPdFTz4Os79K0H3IAGwGP",
         "valid_from": "2026-01-01T00:00:00Z",
         "valid_until": "2027-01-01T00:00:00Z" | null,
         "revoked": false | true | "2026-11-15T12:00:00Z",
         "comment": "release key 2026"}
      ]
    }

A key may sign from `valid_from` (inclusive) until `valid_until` (exclusive).
`revoked: true` rejects every signature by the key. A revocation time rejects
signatures made at or after it and keeps older ones valid.

A file that a key rotation updated also has `installed_from`, naming the
bundle whose next trusted keys it took (see pipeline.rotation)::

    "installed_from": {"version": "2026.12.1", "key_id": "9FA56CB169D5097D",
                       "signed_at": "2026-12-10T09:00:00Z" | null}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, SignatureError
from pipeline.fsutil import atomic_write_text
from pipeline.keys import PublicKey, format_key_id, load_public_key, parse_key_id_hex
from pipeline.schema import load_json, validate_document
from pipeline.versions import Version

logger = logging.getLogger(__name__)
# First bytes of a minisign public key file, which load_trust reads as one trusted key.
PUBLIC_KEY_START = b"untrusted comment:"

TRUSTED_KEYS_FORMAT = 1
SCHEMA_NAME = "trusted-keys"
# valid_from of a key read from a bare public key file, which sets no limits.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class InstalledFrom:
    """The bundle whose next trusted keys a trusted-keys file was last updated from."""

    version: str
    # Key id of the key that signed the next trusted keys, and the time in that signature.
    key_id: str
    signed_at: datetime | None


@dataclass(frozen=True)
class TrustedKey:
    """A public key that a verifier trusts within its validity period."""

    public: PublicKey
    valid_from: datetime
    valid_until: datetime | None = None
    revoked: bool | datetime = False
    comment: str = ""

    @property
    def key_id_hex(self) -> str:
        """Key id as 16 upper-case hex digits."""
        return self.public.key_id_hex


def _parse_time(value: str, file: str, json_path: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise SignatureError(
            f"{file} {json_path}: expected an RFC 3339 date-time with a time zone, found {value!r}"
        )
    return moment


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_key(entry: dict[str, Any], file: str, json_path: str) -> TrustedKey:
    public = PublicKey.from_base64(entry["public_key"], f"{file} {json_path}.public_key")
    if public.key_id != parse_key_id_hex(entry["key_id"]):
        raise SignatureError(
            f"{file} {json_path}.key_id: expected {public.key_id_hex}, the key id inside"
            f" public_key, found {entry['key_id']}"
        )
    valid_from = _parse_time(entry["valid_from"], file, f"{json_path}.valid_from")
    valid_until = None
    if entry["valid_until"] is not None:
        valid_until = _parse_time(entry["valid_until"], file, f"{json_path}.valid_until")
        if valid_until <= valid_from:
            raise SignatureError(
                f"{file} {json_path}.valid_until: {entry['valid_until']} is not after"
                f" valid_from {entry['valid_from']}"
            )
    revoked: bool | datetime = entry["revoked"]
    if isinstance(revoked, str):
        revoked = _parse_time(revoked, file, f"{json_path}.revoked")
    return TrustedKey(
        public=public,
        valid_from=valid_from,
        valid_until=valid_until,
        revoked=revoked,
        comment=entry.get("comment", ""),
    )


@dataclass(frozen=True)
class TrustedKeysFile:
    """The contents of a trusted-keys file."""

    keys: list[TrustedKey]
    installed_from: InstalledFrom | None = None


def load_trusted_keys(path: Path) -> list[TrustedKey]:
    """Load and check a trusted-keys file and return its keys.

    Raises:
        SignatureError: as `read_trusted_keys_file`.
    """
    return read_trusted_keys_file(path).keys


def read_trusted_keys_file(path: Path) -> TrustedKeysFile:
    """Load and check a trusted-keys file.

    Raises:
        SignatureError: the file is missing, is not JSON, fails the schema, has
            an unsupported format, no keys, a key id that does not match its
            public key, a duplicate key id, or an invalid validity period.
    """
    file = str(path)
    if not path.is_file():
        raise SignatureError(f"trusted-keys file {path} does not exist")
    document, findings = load_json(path, file)
    if not findings:
        findings = validate_document(document, SCHEMA_NAME, file)
    if findings:
        raise SignatureError(
            "invalid trusted-keys file " + "; ".join(str(f) for f in findings[:5])
        )
    if document["format"] != TRUSTED_KEYS_FORMAT:
        raise SignatureError(
            f"{file} $.format: format {document['format']} is not supported; this tool reads"
            f" format {TRUSTED_KEYS_FORMAT}"
        )
    if not document["keys"]:
        raise SignatureError(
            f"{file} $.keys: the file lists no keys, so no signature can verify; add the"
            " release key's entry (key_id, public_key, valid_from, valid_until, revoked)"
        )
    keys: list[TrustedKey] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["keys"]):
        key = _parse_key(entry, file, f"$.keys[{index}]")
        if key.key_id_hex in seen:
            raise SignatureError(
                f"{file} $.keys[{index}].key_id: key ID {key.key_id_hex} is listed twice"
            )
        seen.add(key.key_id_hex)
        keys.append(key)
    installed_from = None
    if "installed_from" in document:
        installed_from = _parse_installed_from(document["installed_from"], file)
    logger.info("loaded %d trusted keys from %s", len(keys), path)
    return TrustedKeysFile(keys, installed_from)


def _parse_installed_from(entry: dict[str, Any], file: str) -> InstalledFrom:
    try:
        version = str(Version.parse(entry["version"]))
    except ConfigError as exc:
        raise SignatureError(f"{file} $.installed_from.version: {exc}") from None
    signed_at = None
    if entry["signed_at"] is not None:
        signed_at = _parse_time(entry["signed_at"], file, "$.installed_from.signed_at")
    key_id = format_key_id(parse_key_id_hex(entry["key_id"]))
    return InstalledFrom(version=version, key_id=key_id, signed_at=signed_at)


def trusted_keys_from_public_key(path: Path) -> list[TrustedKey]:
    """Return one trusted key for a minisign public key file, valid at any time and not revoked."""
    public = load_public_key(path)
    return [TrustedKey(public=public, valid_from=EPOCH, comment=f"public key file {path.name}")]


def load_trust(path: Path) -> list[TrustedKey]:
    """Load trusted keys from a trusted-keys JSON file or a bare minisign public key file.

    A file that starts like a minisign public key (`untrusted comment:`) is
    read as one; any other file as trusted-keys JSON. Every task that takes
    `--trusted-keys` reads it here, so each accepts both kinds.

    Raises:
        SignatureError: as `load_trusted_keys` or `load_public_key`.
    """
    try:
        with path.open("rb") as handle:
            start = handle.read(len(PUBLIC_KEY_START))
    except OSError:
        start = b""
    if start == PUBLIC_KEY_START:
        return trusted_keys_from_public_key(path)
    return load_trusted_keys(path)


def find_trusted_key(keys: Sequence[TrustedKey], key_id_hex: str) -> TrustedKey:
    """Return the trusted key with a printed key id, or raise SignatureError listing the known ids.

    The key id may be printed with or without leading zeros.
    """
    key_id = parse_key_id_hex(key_id_hex)
    for key in keys:
        if key.public.key_id == key_id:
            return key
    known = ", ".join(key.key_id_hex for key in keys) or "none"
    raise SignatureError(f"key ID {key_id_hex} is not a trusted key (trusted key IDs: {known})")


def check_key_usable(key: TrustedKey, signed_at: datetime) -> None:
    """Raise SignatureError unless `key` was allowed to sign at `signed_at`.

    NOTE: `signed_at` normally comes from the signed trusted comment, which the
    key holder writes. A stolen key can therefore claim a time before a
    revocation date. Set `revoked` to true for a compromised key and use a
    date only for a key that was retired.
    """
    if signed_at.tzinfo is None:
        raise SignatureError(f"signing time {signed_at.isoformat()} has no time zone")
    label = f"key ID {key.key_id_hex}" + (f" ({key.comment})" if key.comment else "")
    when = _format_time(signed_at)
    if key.revoked is True:
        raise SignatureError(f"{label} is revoked; signatures by it are not accepted")
    if isinstance(key.revoked, datetime) and signed_at >= key.revoked:
        raise SignatureError(
            f"{label} was revoked at {_format_time(key.revoked)}; the signature was made at {when}"
        )
    if signed_at < key.valid_from:
        raise SignatureError(
            f"{label} is not yet valid at the signing time {when}; it is valid from"
            f" {_format_time(key.valid_from)}"
        )
    if key.valid_until is not None and signed_at >= key.valid_until:
        raise SignatureError(
            f"{label} expired at {_format_time(key.valid_until)}, before the signing time {when}"
        )
    logger.debug("%s is usable at %s", label, when)


def trusted_keys_document(
    keys: Sequence[TrustedKey], installed_from: InstalledFrom | None = None
) -> dict[str, Any]:
    """Return the JSON document of a trusted-keys file."""
    entries = []
    for key in keys:
        revoked = _format_time(key.revoked) if isinstance(key.revoked, datetime) else key.revoked
        entries.append(
            {
                "key_id": key.key_id_hex,
                "public_key": key.public.to_base64(),
                "valid_from": _format_time(key.valid_from),
                "valid_until": (
                    _format_time(key.valid_until) if key.valid_until is not None else None
                ),
                "revoked": revoked,
                "comment": key.comment,
            }
        )
    document: dict[str, Any] = {"format": TRUSTED_KEYS_FORMAT, "keys": entries}
    if installed_from is not None:
        signed_at = installed_from.signed_at
        document["installed_from"] = {
            "version": installed_from.version,
            "key_id": installed_from.key_id,
            "signed_at": _format_time(signed_at) if signed_at is not None else None,
        }
    return document


def write_trusted_keys(
    path: Path, keys: Sequence[TrustedKey], installed_from: InstalledFrom | None = None
) -> None:
    """Write a trusted-keys file atomically, with `installed_from` when given.

    Raises:
        SignatureError: two keys share a key id, or a time has no time zone.
    """
    ids = [key.key_id_hex for key in keys]
    duplicates = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
    if duplicates:
        raise SignatureError(f"cannot write {path}: key IDs listed twice: {', '.join(duplicates)}")
    for key in keys:
        times = [key.valid_from, key.valid_until, key.revoked]
        if any(isinstance(t, datetime) and t.tzinfo is None for t in times):
            raise SignatureError(
                f"cannot write {path}: a time of key ID {key.key_id_hex} has no time zone"
            )
    document = trusted_keys_document(keys, installed_from)
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    atomic_write_text(path, text)
    logger.info("wrote %d trusted keys to %s", len(keys), path)
