"""7-Zip's AES-256 coder (7zAES): key derivation, coder properties, CBC encryption.

The key is SHA-256 over 2^N rounds of (salt, the password in UTF-16LE, the
round number as a little-endian uint64), hashed as one stream, N being
NumCyclesPower from the coder properties (7-Zip writes 19). Data is AES-256-CBC
without padding: the packed stream is zero-padded to 16 bytes, and the next
coder stops at its own unpack size.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from pipeline.errors import BundleError

CYCLES_POWER = 19
# 7-Zip rejects more rounds than this; it bounds the time a hostile archive can cost.
MAX_CYCLES_POWER = 24
BLOCK = 16
# Rounds hashed per update() call while deriving the key, to bound memory.
_ROUNDS_PER_UPDATE = 1 << 14


# Reading an archive derives its key once per open, and writing checks the result,
# so the last few keys are kept for the life of the process.
@functools.lru_cache(maxsize=8)
def derive_key(password: str, salt: bytes = b"", cycles_power: int = CYCLES_POWER) -> bytes:
    """Derive the 32-byte AES key from `password` as 7-Zip does."""
    secret = salt + password.encode("utf-16-le")
    digest = hashlib.sha256()
    rounds = 1 << cycles_power
    for start in range(0, rounds, _ROUNDS_PER_UPDATE):
        stop = min(start + _ROUNDS_PER_UPDATE, rounds)
        digest.update(b"".join(secret + struct.pack("<Q", n) for n in range(start, stop)))
    return digest.digest()


def encode_properties(iv: bytes, cycles_power: int = CYCLES_POWER) -> bytes:
    """Return the coder properties of a 16-byte IV, no salt and 2^`cycles_power` rounds."""
    # Byte 0: the cycles power, bit 6 "an IV follows". Byte 1: low nibble is the IV size - 1.
    return bytes([cycles_power | 0x40, len(iv) - 1]) + iv


def decode_properties(properties: bytes, where: str) -> tuple[int, bytes, bytes]:
    """Return (cycles power, salt, IV padded to 16 bytes) from 7zAES coder properties."""
    if not properties:
        raise BundleError(f"{where}: 7zAES coder without properties")
    first = properties[0]
    cycles_power = first & 0x3F
    salt_size = iv_size = 0
    if first & 0xC0:
        if len(properties) < 2:
            raise BundleError(f"{where}: 7zAES properties are truncated")
        salt_size = (first >> 7 & 1) + (properties[1] >> 4)
        iv_size = (first >> 6 & 1) + (properties[1] & 0x0F)
    header = 2 if first & 0xC0 else 1
    if len(properties) != header + salt_size + iv_size:
        raise BundleError(
            f"{where}: 7zAES properties: expected {header + salt_size + iv_size} bytes,"
            f" found {len(properties)}"
        )
    if cycles_power > MAX_CYCLES_POWER:
        raise BundleError(
            f"{where}: 7zAES asks for 2^{cycles_power} key rounds; at most"
            f" 2^{MAX_CYCLES_POWER} are accepted"
        )
    salt = properties[header : header + salt_size]
    iv = properties[header + salt_size :].ljust(BLOCK, b"\x00")
    return cycles_power, salt, iv


def derive_iv(key: bytes, data: bytes) -> bytes:
    """Derive a 16-byte IV from the key and the plaintext.

    7-Zip draws a random IV. A derived one keeps the archive bytes a function of
    the content and the password, and still differs between different streams.
    """
    return hmac.new(key, data, hashlib.sha256).digest()[:BLOCK]


def encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Encrypt `data`, zero-padded to a multiple of 16 bytes, with AES-256-CBC."""
    padded = data + b"\x00" * (-len(data) % BLOCK)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def decryptor(key: bytes, iv: bytes) -> CipherContext:
    """Return an AES-256-CBC decryptor; feed it whole 16-byte blocks."""
    return Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
