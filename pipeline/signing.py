"""minisign-compatible Ed25519 signatures of files, so `minisign -V` verifies a bundle.

A signature file has exactly 4 lines:

1. `untrusted comment: TEXT`, not covered by any signature;
2. base64 of `ED` + key id (8 bytes) + Ed25519 signature (64 bytes) of the
   BLAKE2b-512 digest of the file. The legacy algorithm `Ed` signs the raw
   file instead; it is accepted when verifying, but this module signs only
   with `ED`;
3. `trusted comment: TEXT`, one line of UTF-8;
4. base64 of the Ed25519 signature of (the 64 signature bytes of line 2 +
   the trusted comment bytes), called the global signature.

Verification runs these checks in order and stops at the first failure:

1. Parse the signature file: UTF-8, exactly 4 lines (a final line feed and
   CRLF line ends are accepted), both comment prefixes, canonical base64 of
   the right length, a known algorithm, no control characters other than TAB
   in the trusted comment. minisign's own default trusted comment contains TABs.
2. Find the signature's key id among the given keys.
3. Verify the Ed25519 signature of the BLAKE2b-512 digest (or of the raw
   data for the legacy algorithm).
4. Verify the global signature over the signature and the trusted comment.

Every failure raises SignatureError naming the file and, once line 2 is
readable, the key id.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from pipeline.errors import SignatureError
from pipeline.fsutil import atomic_write_text
from pipeline.keys import (
    KEY_ID_SIZE,
    PublicKey,
    SecretKey,
    check_comment_line,
    decode_base64,
    derive_key_id,
    encode_minisign_secret_key,
    format_key_id,
    generate_keypair,
    load_public_key,
    load_secret_key,
    scrypt_parameters,
)

__all__ = [
    "PublicKey",
    "SecretKey",
    "Signature",
    "SignatureInfo",
    "blake2b_digest",
    "derive_key_id",
    "encode_minisign_secret_key",
    "file_digest",
    "generate_keypair",
    "load_public_key",
    "load_secret_key",
    "parse_signature",
    "scrypt_parameters",
    "sign_file",
    "signature_path_for",
    "signature_text",
    "verify_bytes",
    "verify_file",
]

logger = logging.getLogger(__name__)

PREHASHED_ALGORITHM = b"ED"
LEGACY_ALGORITHM = b"Ed"
TRUSTED_PREFIX = "trusted comment: "
UNTRUSTED_PREFIX = "untrusted comment: "
SIGNATURE_SUFFIX = ".minisig"
DEFAULT_UNTRUSTED_COMMENT = "signature from parus-kaz-release secret key"
# minisign reads the trusted comment line with fgets() into an 8192-byte buffer
# (TRUSTEDCOMMENTMAXBYTES in minisign.h) that also contains the prefix, the line
# feed and the terminating NUL. minisign 0.11 verifies a comment of this size.
MAX_TRUSTED_COMMENT_BYTES = 8192 - len(TRUSTED_PREFIX) - 2
CHUNK_SIZE = 1024 * 1024
_SIGNATURE_LINE_SIZE = 2 + KEY_ID_SIZE + 64


@dataclass(frozen=True)
class SignatureInfo:
    """Key id and trusted comment of a verified signature."""

    key_id_hex: str
    trusted_comment: str


@dataclass(frozen=True)
class Signature:
    """A parsed minisign signature file; nothing in it has been verified yet."""

    algorithm: bytes
    key_id: bytes
    signature: bytes
    untrusted_comment: str
    trusted_comment: str
    global_signature: bytes

    @property
    def key_id_hex(self) -> str:
        """Key id as 16 upper-case hex digits."""
        return format_key_id(self.key_id)

    @property
    def prehashed(self) -> bool:
        """True for `ED` signatures of the BLAKE2b-512 digest, False for legacy `Ed`."""
        return self.algorithm == PREHASHED_ALGORITHM


def blake2b_digest(data: bytes) -> bytes:
    """Return the BLAKE2b-512 digest that `ED` signatures sign."""
    return hashlib.blake2b(data, digest_size=64).digest()


def file_digest(path: Path) -> bytes:
    """Return the BLAKE2b-512 digest of a file, read in 1 MiB chunks."""
    hasher = hashlib.blake2b(digest_size=64)
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                hasher.update(chunk)
    except OSError as exc:
        raise SignatureError(f"cannot read {path}: {exc.strerror}") from exc
    return hasher.digest()


def signature_path_for(path: Path) -> Path:
    """Return the default signature path of a file: `<path>.minisig`."""
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def check_trusted_comment(comment: str) -> None:
    """Raise SignatureError unless `comment` is one line without control characters."""
    check_comment_line(comment, "trusted comment", MAX_TRUSTED_COMMENT_BYTES)


def signature_text(
    digest: bytes,
    key: SecretKey,
    trusted_comment: str,
    untrusted_comment: str = DEFAULT_UNTRUSTED_COMMENT,
) -> str:
    """Sign a BLAKE2b-512 digest and return the 4-line signature file text.

    Use `blake2b_digest(data)` or `file_digest(path)` for `digest`.

    Raises:
        SignatureError: the digest is not 64 bytes, or a comment is not one
            printable line of acceptable length.
    """
    if len(digest) != 64:
        raise SignatureError(f"expected a 64-byte BLAKE2b-512 digest, found {len(digest)} bytes")
    check_trusted_comment(trusted_comment)
    check_comment_line(untrusted_comment, "untrusted comment")
    signature = key.private.sign(digest)
    global_signature = key.private.sign(signature + trusted_comment.encode("utf-8"))
    line2 = _b64(PREHASHED_ALGORITHM + key.key_id + signature)
    return (
        f"{UNTRUSTED_PREFIX}{untrusted_comment}\n{line2}\n"
        f"{TRUSTED_PREFIX}{trusted_comment}\n{_b64(global_signature)}\n"
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign_file(
    path: Path,
    key: SecretKey,
    trusted_comment: str,
    signature_path: Path | None = None,
) -> Path:
    """Sign a file and write its signature atomically to `signature_path` or `<path>.minisig`.

    The new signature is verified with the key's public half before it is
    written. Returns the signature path.

    Raises:
        SignatureError: the file cannot be read or a comment is invalid.
    """
    target = signature_path or signature_path_for(path)
    digest = file_digest(path)
    text = signature_text(digest, key, trusted_comment)
    parsed = parse_signature(text.encode("utf-8"), str(target))
    _verify(parsed, [key.public], str(path), str(target), lambda: digest, lambda: b"")
    atomic_write_text(target, text)
    logger.info("signed %s with key %s: %s", path, format_key_id(key.key_id), target)
    return target


def parse_signature(data: bytes, name: str) -> Signature:
    """Parse the bytes of a minisign signature file (verification check 1).

    Raises:
        SignatureError: the bytes do not have the 4-line minisign shape.
    """
    if not data:
        raise SignatureError(f"signature file {name} is empty; expected 4 lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError(
            f"signature file {name} is not UTF-8 text: invalid byte"
            f" 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if len(lines) != 4:
        raise SignatureError(
            f"signature file {name} has {len(lines)} lines; expected 4 (untrusted comment,"
            " signature, trusted comment, global signature)"
        )
    untrusted, encoded, trusted, encoded_global = lines
    if not untrusted.startswith(UNTRUSTED_PREFIX):
        raise SignatureError(
            f"{name} line 1: expected {UNTRUSTED_PREFIX!r}, found {untrusted[:40]!r}"
        )
    raw = decode_base64(encoded, _SIGNATURE_LINE_SIZE, f"{name} line 2: signature")
    algorithm, key_id = raw[:2], raw[2 : 2 + KEY_ID_SIZE]
    key_id_hex = format_key_id(key_id)
    if algorithm not in (PREHASHED_ALGORITHM, LEGACY_ALGORITHM):
        raise SignatureError(
            f"{name} line 2: signature algorithm {algorithm!r} (key ID {key_id_hex}) is not"
            f" supported; expected {PREHASHED_ALGORITHM!r} or legacy {LEGACY_ALGORITHM!r}"
        )
    if not trusted.startswith(TRUSTED_PREFIX):
        raise SignatureError(
            f"{name} line 3 (key ID {key_id_hex}): expected {TRUSTED_PREFIX!r},"
            f" found {trusted[:40]!r}"
        )
    comment = trusted.removeprefix(TRUSTED_PREFIX)
    control = [ch for ch in comment if ch != "\t" and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F)]
    if control:
        raise SignatureError(
            f"{name} line 3 (key ID {key_id_hex}): the trusted comment contains control"
            f" character {control[0]!r}"
        )
    global_signature = decode_base64(
        encoded_global, 64, f"{name} line 4 (key ID {key_id_hex}): global signature"
    )
    return Signature(
        algorithm=algorithm,
        key_id=key_id,
        signature=raw[2 + KEY_ID_SIZE :],
        untrusted_comment=untrusted.removeprefix(UNTRUSTED_PREFIX),
        trusted_comment=comment,
        global_signature=global_signature,
    )


def _find_key(signature: Signature, keys: Sequence[PublicKey], name: str) -> PublicKey:
    """Return the key with the signature's key id (verification check 2)."""
    for key in keys:
        if key.key_id == signature.key_id:
            return key
    known = ", ".join(key.key_id_hex for key in keys) or "none"
    raise SignatureError(
        f"{name} was signed with key ID {signature.key_id_hex}, which is not a trusted key"
        f" (trusted key IDs: {known}); add its public key to the trusted keys or re-sign"
        " with a trusted key"
    )


def _verify(
    signature: Signature,
    keys: Sequence[PublicKey],
    data_name: str,
    signature_name: str,
    digest: Callable[[], bytes],
    raw: Callable[[], bytes],
) -> SignatureInfo:
    """Run verification checks 2 to 4 on a parsed signature.

    `digest` and `raw` return the BLAKE2b-512 digest and the raw data. Only
    the one that the signature's algorithm needs is called, after the key id
    has been found.
    """
    key = _find_key(signature, keys, data_name)
    if signature.prehashed:
        message = digest()
    else:
        logger.debug("%s uses the legacy algorithm 'Ed', which signs the raw data", signature_name)
        message = raw()
    try:
        key.key.verify(signature.signature, message)
    except InvalidSignature:
        raise SignatureError(
            f"the signature of {data_name} does not verify with key ID {key.key_id_hex}: the"
            " data was changed after signing, or the signature belongs to other data"
        ) from None
    try:
        key.key.verify(
            signature.global_signature,
            signature.signature + signature.trusted_comment.encode("utf-8"),
        )
    except InvalidSignature:
        raise SignatureError(
            f"the trusted comment in {signature_name} does not verify with key ID"
            f" {key.key_id_hex}: the comment or line 4 was changed after signing"
        ) from None
    return SignatureInfo(key_id_hex=key.key_id_hex, trusted_comment=signature.trusted_comment)


def verify_bytes(
    data: bytes,
    signature: bytes,
    keys: Sequence[PublicKey],
    name: str = "data",
    signature_name: str | None = None,
) -> SignatureInfo:
    """Verify a minisign signature of `data` against `keys`.

    `name` names the data in errors, and `signature_name` the signature file
    (default `the signature of <name>`).

    Raises:
        SignatureError: any of the checks in the module docstring fails.
    """
    signature_name = signature_name or f"the signature of {name}"
    parsed = parse_signature(signature, signature_name)
    info = _verify(parsed, keys, name, signature_name, lambda: blake2b_digest(data), lambda: data)
    logger.info("verified signature of %s: key ID %s", name, info.key_id_hex)
    return info


def verify_file(
    path: Path,
    signature: bytes,
    keys: Sequence[PublicKey],
    signature_name: str | None = None,
) -> SignatureInfo:
    """Verify a minisign signature of a file against `keys`.

    `signature` contains the bytes of the signature file, and `signature_name`
    names it in errors (default `<path>.minisig`). For `ED` signatures the
    file is hashed in 1 MiB chunks.

    Raises:
        SignatureError: the file cannot be read, or any of the checks in the
            module docstring fails.
    """
    signature_name = signature_name or str(signature_path_for(path))
    parsed = parse_signature(signature, signature_name)
    # NOTE: the legacy algorithm signs the raw file, so `_read_whole` reads the
    # whole file into memory. minisign itself rejects legacy files over 1 GB.
    info = _verify(
        parsed,
        keys,
        str(path),
        signature_name,
        lambda: file_digest(path),
        lambda: _read_whole(path),
    )
    logger.info("verified signature of %s: key ID %s", path, info.key_id_hex)
    return info


def _read_whole(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read {path}: {exc.strerror}") from exc
