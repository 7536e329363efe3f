"""Ed25519 signing keys in minisign's file formats, and secret keys from PEM and OpenSSH files.

A minisign public key file has an `untrusted comment:` line and the base64 of
`Ed` + key id (8 bytes) + Ed25519 public key (32 bytes). The key id prints as
the little-endian uint64 in upper-case hex. minisign 0.11 prints it without
leading zeros, later minisign versions pad it to 16 digits. This module
always pads, and `parse_key_id_hex` accepts both forms.

A minisign secret key file has an `untrusted comment:` line and the base64 of:

    offset  size  field
    0       2     signature algorithm, `Ed`
    2       2     key derivation algorithm: `Sc` (scrypt) or two zero bytes (not encrypted)
    4       2     checksum algorithm, `B2` (BLAKE2b-256)
    6       32    scrypt salt
    38      8     scrypt opslimit, little-endian
    46      8     scrypt memlimit, little-endian
    54      104   key id (8) + secret key (64: seed 32, public key 32) + checksum (32),
                  XORed with 104 bytes of scrypt output when encrypted

The checksum is BLAKE2b-256 over signature algorithm + key id + secret key, so
after decryption a mismatch means a wrong passphrase. minisign 0.11 writes an
all-zero checksum into keys made with `-W` (not encrypted), so a zero checksum
is accepted for those.

PKCS#8 PEM and OpenSSH Ed25519 private keys carry no key id. For them the key
id is the first 8 bytes of BLAKE2b-512 of the raw 32-byte public key, so the
same key file always gives the same key id.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

from pipeline.config import SIGNING_PASSPHRASE_ENV
from pipeline.errors import SignatureError

logger = logging.getLogger(__name__)

SIGNATURE_ALGORITHM = b"Ed"
KDF_SCRYPT = b"Sc"
KDF_NONE = b"\x00\x00"
CHECKSUM_ALGORITHM = b"B2"
KEY_ID_SIZE = 8
UNTRUSTED_PREFIX = "untrusted comment: "

# libsodium's crypto_pwhash_scryptsalsa208sha256 OPSLIMIT_SENSITIVE and
# MEMLIMIT_SENSITIVE, which minisign 0.11 writes into every encrypted key.
DEFAULT_OPSLIMIT = 33_554_432
DEFAULT_MEMLIMIT = 1_073_741_824

_PUBLIC_KEY_SIZE = 2 + KEY_ID_SIZE + 32
_KEYNUM_SK_SIZE = KEY_ID_SIZE + 64 + 32
_SECRET_KEY_SIZE = 2 + 2 + 2 + 32 + 8 + 8 + _KEYNUM_SK_SIZE


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key with its minisign key id (8 bytes as stored in files)."""

    key_id: bytes
    key: ed25519.Ed25519PublicKey

    @property
    def key_id_hex(self) -> str:
        """Key id as 16 upper-case hex digits of the little-endian uint64."""
        return format_key_id(self.key_id)

    def raw(self) -> bytes:
        """Return the 32 raw bytes of the public key."""
        return self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def to_base64(self) -> str:
        """Return the second line of a minisign public key file."""
        return base64.b64encode(SIGNATURE_ALGORITHM + self.key_id + self.raw()).decode("ascii")

    def to_minisign(self, comment: str | None = None) -> str:
        """Return the text of a minisign public key file, ending in a line feed."""
        if comment is None:
            comment = f"minisign public key {self.key_id_hex}"
        check_comment_line(comment, "untrusted comment")
        return f"{UNTRUSTED_PREFIX}{comment}\n{self.to_base64()}\n"

    @classmethod
    def from_base64(cls, encoded: str, source: str) -> PublicKey:
        """Parse the base64 line of a minisign public key; `source` names it in errors."""
        data = decode_base64(encoded.strip(), _PUBLIC_KEY_SIZE, f"{source}: public key")
        if data[:2] != SIGNATURE_ALGORITHM:
            raise SignatureError(
                f"{source}: public key algorithm is {data[:2]!r}; expected {SIGNATURE_ALGORITHM!r}"
                " (Ed25519)"
            )
        key = ed25519.Ed25519PublicKey.from_public_bytes(data[2 + KEY_ID_SIZE :])
        return cls(key_id=data[2 : 2 + KEY_ID_SIZE], key=key)

    @classmethod
    def from_minisign(cls, text: str, source: str) -> PublicKey:
        """Parse the text of a minisign public key file; `source` names the file in errors."""
        lines = [line.rstrip("\r") for line in text.split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise SignatureError(f"{source} is empty; expected a minisign public key file")
        if len(lines) != 2 or not lines[0].startswith("untrusted comment:"):
            raise SignatureError(
                f"{source} is not a minisign public key file: expected 2 lines, an"
                f" 'untrusted comment:' line and the base64 key, found {len(lines)} lines"
                f" starting with {lines[0][:40]!r}"
            )
        return cls.from_base64(lines[1], f"{source} line 2")

    @classmethod
    def from_ed25519(cls, key: ed25519.Ed25519PublicKey) -> PublicKey:
        """Wrap a key that has no minisign key id, deriving the id from the public key."""
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key_id=derive_key_id(raw), key=key)


@dataclass(frozen=True)
class SecretKey:
    """An Ed25519 private key with the key id that its signatures carry."""

    key_id: bytes
    private: ed25519.Ed25519PrivateKey

    @property
    def public(self) -> PublicKey:
        """Public half of the key, with the same key id."""
        return PublicKey(key_id=self.key_id, key=self.private.public_key())

    def __repr__(self) -> str:
        return f"SecretKey(key_id={format_key_id(self.key_id)})"


def format_key_id(key_id: bytes) -> str:
    """Format an 8-byte key id as 16 upper-case hex digits of the little-endian uint64."""
    return f"{int.from_bytes(key_id, 'little'):016X}"


def parse_key_id_hex(text: str) -> bytes:
    """Parse a printed key id, with or without leading zeros, into its 8 stored bytes.

    Raises:
        SignatureError: `text` is not 1 to 16 hex digits.
    """
    if not 1 <= len(text) <= 16 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        raise SignatureError(f"key ID {text!r} is invalid; expected 1 to 16 hex digits")
    return int(text, 16).to_bytes(KEY_ID_SIZE, "little")


def derive_key_id(raw_public_key: bytes) -> bytes:
    """Return the key id of a key without one: the first 8 bytes of BLAKE2b-512 of the key."""
    return hashlib.blake2b(raw_public_key, digest_size=64).digest()[:KEY_ID_SIZE]


def decode_base64(text: str, size: int, what: str) -> bytes:
    """Decode canonical standard base64 of exactly `size` bytes, or raise SignatureError.

    Non-canonical base64 (non-zero padding bits) is rejected, so a changed
    character never decodes to the same bytes.
    """
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise SignatureError(f"{what} is not valid base64: {exc}") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise SignatureError(f"{what} is not canonical base64")
    if len(data) != size:
        raise SignatureError(f"{what} has {len(data)} bytes; expected {size}")
    return data


def check_comment_line(comment: str, what: str, max_bytes: int = 1003) -> None:
    """Raise SignatureError unless `comment` is one line without control characters.

    The default maximum fits minisign's 1024-byte line buffer for the
    untrusted comment (COMMENTMAXBYTES in minisign.h), with the prefix, the
    line feed and the terminating NUL.
    """
    bad = [ch for ch in comment if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F]
    if bad:
        raise SignatureError(
            f"{what} {comment[:60]!r} contains control character {bad[0]!r};"
            " expected one line of printable text"
        )
    size = len(comment.encode("utf-8"))
    if size > max_bytes:
        raise SignatureError(f"{what} is {size} bytes in UTF-8; the maximum is {max_bytes}")


def scrypt_parameters(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """Return scrypt (N, r, p) for minisign's opslimit and memlimit.

    minisign calls libsodium's crypto_pwhash_scryptsalsa208sha256, whose
    pickparams() turns the two limits into N, r and p. r is always 8 and
    opslimit is raised to at least 32768. When opslimit < memlimit / 32, p = 1
    and max_n = opslimit / (4 r). Otherwise max_n = memlimit / (128 r) and
    p = min(opslimit / 4 / N, 2^30 - 1) / r. N is the smallest power of two
    above max_n / 2, at least 2 and at most 2^63. All divisions round down.
    """
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        n = _power_of_two_above(opslimit // (4 * r) // 2)
        return n, r, 1
    n = _power_of_two_above(memlimit // (128 * r) // 2)
    p = min((opslimit // 4) // n, 0x3FFFFFFF) // r
    return n, r, p


def _power_of_two_above(limit: int) -> int:
    log2_n = 1
    while log2_n < 63 and (1 << log2_n) <= limit:
        log2_n += 1
    return 1 << log2_n


def _scrypt_stream(
    passphrase: str, salt: bytes, opslimit: int, memlimit: int, path: Path
) -> bytes:
    n, r, p = scrypt_parameters(opslimit, memlimit)
    logger.debug("deriving the key of %s with scrypt N=%d r=%d p=%d", path, n, r, p)
    # scrypt uses 128 * r * (N + p) bytes, and two more blocks leave room for
    # OpenSSL's scratch space. This decrypts minisign's default keys with OpenSSL 3.0.
    maxmem = 128 * r * (n + p + 2)
    try:
        return hashlib.scrypt(
            passphrase.encode("utf-8"),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=maxmem,
            dklen=_KEYNUM_SK_SIZE,
        )
    except (ValueError, MemoryError) as exc:
        raise SignatureError(
            f"cannot derive the key of {path} with scrypt N={n} r={r} p={p}"
            f" (opslimit {opslimit}, memlimit {memlimit}): {exc}"
        ) from exc


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def _checksum(key_id: bytes, secret: bytes) -> bytes:
    return hashlib.blake2b(SIGNATURE_ALGORITHM + key_id + secret, digest_size=32).digest()


def _raw_private(private: ed25519.Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def encode_minisign_secret_key(
    key: SecretKey,
    passphrase: str | None,
    comment: str,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> str:
    """Return the text of a minisign secret key file, encrypted when `passphrase` is given."""
    check_comment_line(comment, "untrusted comment")
    secret = _raw_private(key.private) + key.public.raw()
    keynum_sk = key.key_id + secret + _checksum(key.key_id, secret)
    if passphrase is None:
        header = KDF_NONE + CHECKSUM_ALGORITHM + bytes(32 + 8 + 8)
    else:
        salt = secrets.token_bytes(32)
        stream = _scrypt_stream(passphrase, salt, opslimit, memlimit, Path("<new key>"))
        keynum_sk = _xor(keynum_sk, stream)
        header = (
            KDF_SCRYPT
            + CHECKSUM_ALGORITHM
            + salt
            + opslimit.to_bytes(8, "little")
            + memlimit.to_bytes(8, "little")
        )
    encoded = base64.b64encode(SIGNATURE_ALGORITHM + header + keynum_sk).decode("ascii")
    return f"{UNTRUSTED_PREFIX}{comment}\n{encoded}\n"


def _decode_minisign_secret_key(text: str, passphrase: str | None, path: Path) -> SecretKey:
    data = _read_minisign_secret_key(text, path)
    encrypted = data[2:4] == KDF_SCRYPT
    keynum_sk = _decrypt_keynum_sk(data, passphrase, path)

    key_id, secret, checksum = keynum_sk[:8], keynum_sk[8:72], keynum_sk[72:]
    if checksum != _checksum(key_id, secret):
        if encrypted:
            raise SignatureError(f"wrong passphrase for key file {path}")
        if checksum != bytes(32):
            raise SignatureError(
                f"{path} is damaged: the checksum of the secret key does not match"
            )

    private = ed25519.Ed25519PrivateKey.from_private_bytes(secret[:32])
    key = SecretKey(key_id=key_id, private=private)
    if key.public.raw() != secret[32:]:
        raise SignatureError(
            f"{path} is damaged: its public key does not belong to its secret seed"
        )
    return key


def _read_minisign_secret_key(text: str, path: Path) -> bytes:
    """Return the decoded second line of a minisign secret key file after checking its header."""
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if len(lines) != 2:
        raise SignatureError(
            f"{path} is not a minisign key file: expected 2 lines, found {len(lines)}"
        )
    encoded = lines[1].strip()
    if len(encoded) == len(base64.b64encode(bytes(_PUBLIC_KEY_SIZE))):
        raise SignatureError(
            f"{path} is a minisign public key; expected the secret key file (minisign.key)"
        )

    data = decode_base64(encoded, _SECRET_KEY_SIZE, f"{path} line 2: minisign secret key")
    algorithm, kdf, checksum_algorithm = data[0:2], data[2:4], data[4:6]
    if algorithm != SIGNATURE_ALGORITHM:
        raise SignatureError(
            f"{path}: signature algorithm is {algorithm!r}; expected {SIGNATURE_ALGORITHM!r}"
        )
    if kdf not in (KDF_SCRYPT, KDF_NONE):
        raise SignatureError(
            f"{path}: key derivation algorithm is {kdf!r}; expected {KDF_SCRYPT!r} (scrypt)"
            " or none"
        )
    if checksum_algorithm != CHECKSUM_ALGORITHM:
        raise SignatureError(
            f"{path}: checksum algorithm is {checksum_algorithm!r};"
            f" expected {CHECKSUM_ALGORITHM!r} (BLAKE2b)"
        )
    return data


def _decrypt_keynum_sk(data: bytes, passphrase: str | None, path: Path) -> bytes:
    """Return key id + secret key + checksum, decrypted when the key is encrypted."""
    keynum_sk = data[54:]
    if data[2:4] == KDF_NONE:
        if passphrase is not None:
            logger.debug("%s is not encrypted; ignoring the passphrase", path)
        return keynum_sk
    if passphrase is None:
        raise SignatureError(
            f"secret key file {path} is encrypted and needs a passphrase: set the"
            f" {SIGNING_PASSPHRASE_ENV} environment variable"
        )
    salt = data[6:38]
    opslimit = int.from_bytes(data[38:46], "little")
    memlimit = int.from_bytes(data[46:54], "little")
    return _xor(keynum_sk, _scrypt_stream(passphrase, salt, opslimit, memlimit, path))


def _describe_key_type(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA private key ({key.key_size} bits)"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC private key (curve {key.curve.name})"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "an Ed448 private key"
    if isinstance(key, dsa.DSAPrivateKey):
        return "a DSA private key"
    if isinstance(key, x25519.X25519PrivateKey | x448.X448PrivateKey):
        return "an X25519 or X448 key-agreement key"
    return f"a private key of type {type(key).__name__}"


def _load_serialized_key(
    data: bytes, passphrase: str | None, path: Path, form: str
) -> ed25519.Ed25519PrivateKey:
    """Load a PEM or OpenSSH private key through `cryptography`, mapping its errors."""

    def load(password: bytes | None) -> Any:
        if form == "OpenSSH":
            return serialization.load_ssh_private_key(data, password)
        return serialization.load_pem_private_key(data, password)

    # Loading without a password first distinguishes an encrypted key (TypeError)
    # from a damaged one (ValueError) without matching on cryptography's messages.
    try:
        key = load(None)
    except TypeError:
        if passphrase is None:
            raise SignatureError(
                f"{form} key file {path} is encrypted and needs a passphrase: set the"
                f" {SIGNING_PASSPHRASE_ENV} environment variable"
            ) from None
        try:
            key = load(passphrase.encode("utf-8"))
        except ValueError:
            raise SignatureError(f"wrong passphrase for key file {path}") from None
        except UnsupportedAlgorithm as exc:
            raise SignatureError(
                f"cannot decrypt {form} key file {path}: {exc}. Encrypted OpenSSH keys"
                " need the bcrypt package; or export the key as PKCS#8 PEM"
            ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"{path} is not a readable {form} private key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(
            f"{path} contains {_describe_key_type(key)}; expected an Ed25519 key"
            " (minisign -G creates one)"
        )
    return key


def load_secret_key(path: Path, passphrase: str | None = None) -> SecretKey:
    """Load an Ed25519 secret key from a minisign, PKCS#8 PEM or OpenSSH key file.

    The passphrase decrypts an encrypted key and is ignored for a key that is
    not encrypted. PEM and OpenSSH keys get the key id that `derive_key_id`
    computes.

    Raises:
        SignatureError: the file is missing, not a key, a key of another type,
            damaged, encrypted without a passphrase, or the passphrase is wrong.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read secret key file {path}: {exc.strerror}") from exc
    # An empty passphrase (a CI secret that is set but blank) means no passphrase.
    passphrase = passphrase or None
    head = data.lstrip()[:64]
    if head.startswith(b"untrusted comment:"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{path} is not UTF-8 text: {exc}") from exc
        key = _decode_minisign_secret_key(text, passphrase, path)
        form = "minisign"
    elif head.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        private = _load_serialized_key(data, passphrase, path, "OpenSSH")
        key = SecretKey(key_id=derive_key_id(_raw_public(private)), private=private)
        form = "OpenSSH"
    elif head.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in head:
        private = _load_serialized_key(data, passphrase, path, "PEM")
        key = SecretKey(key_id=derive_key_id(_raw_public(private)), private=private)
        form = "PEM"
    elif head.startswith(b"-----BEGIN PUBLIC KEY-----"):
        raise SignatureError(f"{path} is a PEM public key; expected a private key")
    else:
        raise SignatureError(
            f"{path} is not a secret key: expected a minisign secret key, a PKCS#8 PEM"
            f" private key or an OpenSSH private key, found a file starting with {head[:20]!r}"
        )
    logger.info("loaded %s secret key %s from %s", form, format_key_id(key.key_id), path)
    return key


def _raw_public(private: ed25519.Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def load_public_key(path: Path) -> PublicKey:
    """Load a minisign public key file (minisign.pub).

    Raises:
        SignatureError: the file is missing or is not a minisign Ed25519 public key.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SignatureError(f"cannot read public key file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SignatureError(f"{path} is not a minisign public key: not UTF-8 text") from exc
    return PublicKey.from_minisign(text, str(path))


def _write_new_file(path: Path, text: str, mode: int) -> None:
    """Write `text` to a new file atomically; raise SignatureError if `path` exists.

    The content goes to a temporary file beside `path` that is then hard-linked
    to `path`, and linking fails when `path` exists, so an existing key is
    never replaced, not even by a race.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.link(tmp, path)
    except FileExistsError:
        raise SignatureError(f"{path} already exists; remove it or choose another path") from None
    finally:
        tmp.unlink(missing_ok=True)


def generate_keypair(
    secret_path: Path,
    public_path: Path,
    passphrase: str | None = None,
    comment: str = "parus-kaz-release",
) -> PublicKey:
    """Generate an Ed25519 key pair and write it in minisign's formats.

    The secret key file gets mode 0600 and is encrypted with scrypt at
    minisign's default cost when `passphrase` is given. Neither file is ever
    overwritten.

    Raises:
        SignatureError: a file exists already, the passphrase is empty, or
            the comment is not one printable line.
    """
    for path in (secret_path, public_path):
        if path.exists():
            raise SignatureError(f"{path} already exists; remove it or choose another path")
    if passphrase == "":
        raise SignatureError(
            "the passphrase is empty; give a passphrase, or None for a key that is not encrypted"
        )
    key_id = secrets.token_bytes(KEY_ID_SIZE)
    key = SecretKey(key_id=key_id, private=ed25519.Ed25519PrivateKey.generate())
    public = key.public
    kind = "encrypted secret key" if passphrase is not None else "secret key"
    secret_text = encode_minisign_secret_key(key, passphrase, f"{comment} {kind}")
    public_text = public.to_minisign(f"{comment} public key {public.key_id_hex}")
    _write_new_file(secret_path, secret_text, 0o600)
    try:
        _write_new_file(public_path, public_text, 0o644)
    except BaseException:
        secret_path.unlink(missing_ok=True)
        raise
    logger.info(
        "generated key %s: secret key %s, public key %s",
        public.key_id_hex,
        secret_path,
        public_path,
    )
    return public
