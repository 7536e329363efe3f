"""Signing and verifying, checked both ways against the real minisign and OpenSSL."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from test_keys import minisign_generate, minisign_verify

from pipeline.errors import SignatureError
from pipeline.keys import PublicKey, SecretKey, generate_keypair, load_public_key, load_secret_key
from pipeline.signing import (
    MAX_TRUSTED_COMMENT_BYTES,
    blake2b_digest,
    file_digest,
    parse_signature,
    sign_file,
    signature_text,
    verify_bytes,
    verify_file,
)

DATA = Path(__file__).parent / "data" / "signing"
COMMENT = "product=parus-kaz-budget version=2026.12.0 time=2026-12-01T09:00:00Z"


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[SecretKey, PublicKey, Path]:
    """A key pair written by generate_keypair: secret key, public key, public key file."""
    public_path = tmp_path / "keys" / "release.pub"
    generate_keypair(tmp_path / "keys" / "release.key", public_path)
    secret = load_secret_key(tmp_path / "keys" / "release.key")
    return secret, load_public_key(public_path), public_path


def minisign_quiet_verify(public: Path, file: Path) -> str:
    """Return the trusted comment that `minisign -V -Q` prints; fail when it rejects the file."""
    minisign = require_tool("minisign")
    result = subprocess.run(
        [minisign, "-V", "-Q", "-p", str(public), "-m", str(file)],
        capture_output=True,
        check=True,
    )
    return result.stdout.decode("utf-8").removesuffix("\n")


def test_empty_file_verifies_with_minisign(
    tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]
) -> None:
    secret, _, public_path = keypair
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")

    signature = sign_file(empty, secret, COMMENT)

    assert signature == tmp_path / "empty.bin.minisig"
    assert minisign_quiet_verify(public_path, empty) == COMMENT


def test_large_file_verifies_with_minisign(
    tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]
) -> None:
    secret, public, public_path = keypair
    large = tmp_path / "bundle.7z"
    # 5 MiB plus 3 bytes, so hashing crosses several 1 MiB chunk boundaries.
    block = hashlib.sha512(b"seed").digest() * 1024
    large.write_bytes(block * 80 + b"end")

    sign_file(large, secret, COMMENT)
    result = minisign_verify(public_path, large)

    assert result.returncode == 0, result.stderr
    assert f"Trusted comment: {COMMENT}" in result.stdout
    assert file_digest(large) == blake2b_digest(large.read_bytes())
    info = verify_file(large, (tmp_path / "bundle.7z.minisig").read_bytes(), [public])
    assert info.trusted_comment == COMMENT


def test_cyrillic_name_and_comment(
    tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]
) -> None:
    secret, public, public_path = keypair
    path = tmp_path / "обновление Парус 2026.12.0.7z"
    path.write_bytes("Қазақстан Республикасы".encode())
    comment = "обновление Парус, бюджет 2026.12.0, Қазақстан"

    signature = sign_file(path, secret, comment)

    assert signature.name == "обновление Парус 2026.12.0.7z.minisig"
    assert minisign_quiet_verify(public_path, path) == comment
    assert verify_file(path, signature.read_bytes(), [public]).trusted_comment == comment


def test_zero_length_signature_rejected(
    tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]
) -> None:
    _, public, public_path = keypair
    path = tmp_path / "file.txt"
    path.write_bytes(b"data")
    (tmp_path / "file.txt.minisig").write_bytes(b"")

    result = minisign_verify(public_path, path)
    with pytest.raises(SignatureError) as caught:
        verify_file(path, b"", [public])

    assert result.returncode != 0
    assert str(caught.value) == (
        f"signature file {tmp_path / 'file.txt.minisig'} is empty; expected 4 lines"
    )


def test_maximum_trusted_comment(
    tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]
) -> None:
    secret, _, public_path = keypair
    path = tmp_path / "file.txt"
    path.write_bytes(b"data")
    longest = "ж" * (MAX_TRUSTED_COMMENT_BYTES // 2) + "x" * (MAX_TRUSTED_COMMENT_BYTES % 2)

    sign_file(path, secret, longest)
    with pytest.raises(SignatureError) as caught:
        sign_file(path, secret, longest + "x")

    assert minisign_quiet_verify(public_path, path) == longest
    assert f"the maximum is {MAX_TRUSTED_COMMENT_BYTES}" in str(caught.value)


def test_minisign_signature_verifies(tmp_path: Path) -> None:
    minisign = require_tool("minisign")
    secret_path, public_path = minisign_generate(tmp_path / "keys")
    path = tmp_path / "bundle.7z"
    path.write_bytes(b"bundle bytes" * 1000)
    subprocess.run(
        [minisign, "-S", "-s", str(secret_path), "-m", str(path), "-t", COMMENT],
        check=True,
        capture_output=True,
    )
    public = load_public_key(public_path)

    info = verify_file(path, (tmp_path / "bundle.7z.minisig").read_bytes(), [public])

    assert info.key_id_hex == public.key_id_hex
    assert info.trusted_comment == COMMENT


def test_minisign_default_comment_has_tabs(tmp_path: Path) -> None:
    minisign = require_tool("minisign")
    secret_path, public_path = minisign_generate(tmp_path / "keys")
    path = tmp_path / "notes.txt"
    path.write_bytes(b"notes")
    subprocess.run(
        [minisign, "-S", "-s", str(secret_path), "-m", str(path)], check=True, capture_output=True
    )

    info = verify_file(
        path, (tmp_path / "notes.txt.minisig").read_bytes(), [load_public_key(public_path)]
    )

    assert info.trusted_comment.startswith("timestamp:")
    assert "\tfile:notes.txt" in info.trusted_comment


def test_minisign_legacy_signature_verifies(tmp_path: Path) -> None:
    minisign = require_tool("minisign")
    secret_path, public_path = minisign_generate(tmp_path / "keys")
    path = tmp_path / "old.bin"
    path.write_bytes(b"legacy signed")
    subprocess.run(
        [minisign, "-S", "-l", "-s", str(secret_path), "-m", str(path), "-t", COMMENT],
        check=True,
        capture_output=True,
    )
    signature = (tmp_path / "old.bin.minisig").read_bytes()
    public = load_public_key(public_path)

    info = verify_file(path, signature, [public])
    path.write_bytes(b"legacy signed, then changed")
    with pytest.raises(SignatureError) as caught:
        verify_file(path, signature, [public])

    assert parse_signature(signature, "old.bin.minisig").algorithm == b"Ed"
    assert info.trusted_comment == COMMENT
    assert f"does not verify with key ID {public.key_id_hex}" in str(caught.value)


def test_minisign_secret_key_signs(tmp_path: Path) -> None:
    secret_path, public_path = minisign_generate(tmp_path / "keys")
    path = tmp_path / "file.txt"
    path.write_bytes(b"signed with a key from minisign -G -W")

    sign_file(path, load_secret_key(secret_path), COMMENT)

    assert minisign_quiet_verify(public_path, path) == COMMENT


def test_openssl_verifies_prehash_signature(
    tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]
) -> None:
    openssl = require_tool("openssl")
    secret, public, _ = keypair
    path = tmp_path / "bundle.7z"
    path.write_bytes(b"bundle" * 5000)
    signature = parse_signature(sign_file(path, secret, COMMENT).read_bytes(), "bundle.7z.minisig")
    der = bytes.fromhex("302a300506032b6570032100") + public.raw()
    pem = (
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.b64encode(der).decode()
        + "\n-----END PUBLIC KEY-----\n"
    )
    (tmp_path / "pub.pem").write_text(pem)
    (tmp_path / "digest.bin").write_bytes(hashlib.blake2b(path.read_bytes()).digest())
    (tmp_path / "sig.bin").write_bytes(signature.signature)

    command = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin"]
    command += ["-in", "digest.bin", "-sigfile", "sig.bin"]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout


def test_pem_key_signature_verifies_with_minisign(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    secret = load_secret_key(key_path)
    public_path = tmp_path / "key.pub"
    public_path.write_text(secret.public.to_minisign())
    path = tmp_path / "file.txt"
    path.write_bytes(b"signed with a PEM key")

    sign_file(path, secret, COMMENT)

    assert minisign_quiet_verify(public_path, path) == COMMENT


def test_custom_signature_path(tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, public, _ = keypair
    path = tmp_path / "file.txt"
    path.write_bytes(b"data")
    target = tmp_path / "signatures" / "file.sig"
    target.parent.mkdir()
    target.write_text("an older signature\n")

    written = sign_file(path, secret, COMMENT, target)

    assert written == target
    assert verify_file(path, target.read_bytes(), [public]).key_id_hex == public.key_id_hex
    assert [p.name for p in target.parent.iterdir()] == ["file.sig"]


def test_sign_missing_file(tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, _, _ = keypair

    with pytest.raises(SignatureError) as caught:
        sign_file(tmp_path / "missing.7z", secret, COMMENT)

    assert f"cannot read {tmp_path / 'missing.7z'}" in str(caught.value)
    assert not (tmp_path / "missing.7z.minisig").exists()


@pytest.mark.parametrize(
    ("comment", "found"),
    [
        ("two\nlines", r"'\n'"),
        ("carriage\rreturn", r"'\r'"),
        ("tab\tseparated", r"'\t'"),
        ("escape \x1b[2J", r"'\x1b'"),
        ("next line \x85", r"'\x85'"),
        ("delete \x7f", r"'\x7f'"),
    ],
)
def test_trusted_comment_control_characters(
    keypair: tuple[SecretKey, PublicKey, Path], comment: str, found: str
) -> None:
    secret, _, _ = keypair

    with pytest.raises(SignatureError) as caught:
        signature_text(blake2b_digest(b"x"), secret, comment)

    assert f"contains control character {found}" in str(caught.value)
    assert str(caught.value).startswith("trusted comment ")


def test_signature_text_digest_size(keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, _, _ = keypair

    with pytest.raises(SignatureError, match="expected a 64-byte BLAKE2b-512 digest, found 32"):
        signature_text(hashlib.sha256(b"x").digest(), secret, COMMENT)


def test_verify_bytes(keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, public, _ = keypair
    data = "Қазақстан".encode()
    signature = signature_text(blake2b_digest(data), secret, COMMENT).encode()

    info = verify_bytes(data, signature, [public], name="manifest.json")
    with pytest.raises(SignatureError) as caught:
        verify_bytes(data + b"!", signature, [public], name="manifest.json")

    assert info.key_id_hex == public.key_id_hex
    assert info.trusted_comment == COMMENT
    assert str(caught.value).startswith(
        f"the signature of manifest.json does not verify with key ID {public.key_id_hex}"
    )


def test_crlf_signature_verifies(keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, public, _ = keypair
    text = signature_text(blake2b_digest(b"data"), secret, COMMENT)

    info = verify_bytes(b"data", text.replace("\n", "\r\n").encode(), [public])

    assert info.trusted_comment == COMMENT


def test_unknown_key(tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, public, _ = keypair
    other = generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    path = tmp_path / "bundle.7z"
    path.write_bytes(b"bundle")
    signature = sign_file(path, secret, COMMENT).read_bytes()

    with pytest.raises(SignatureError) as caught:
        verify_file(path, signature, [other])

    message = str(caught.value)
    assert f"{path} was signed with key ID {public.key_id_hex}" in message
    assert f"(trusted key IDs: {other.key_id_hex})" in message


def test_changed_file(tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, public, _ = keypair
    path = tmp_path / "bundle.7z"
    path.write_bytes(b"bundle")
    signature = sign_file(path, secret, COMMENT).read_bytes()
    path.write_bytes(b"bundle, changed")

    with pytest.raises(SignatureError) as caught:
        verify_file(path, signature, [public])

    assert str(caught.value) == (
        f"the signature of {path} does not verify with key ID {public.key_id_hex}: the data was"
        " changed after signing, or the signature belongs to other data"
    )


def test_changed_trusted_comment(
    tmp_path: Path, keypair: tuple[SecretKey, PublicKey, Path]
) -> None:
    secret, public, _ = keypair
    path = tmp_path / "bundle.7z"
    path.write_bytes(b"bundle")
    signature_path = sign_file(path, secret, COMMENT)
    changed = signature_path.read_bytes().replace(b"2026.12.0", b"2026.12.9")

    with pytest.raises(SignatureError) as caught:
        verify_file(path, changed, [public])

    assert str(caught.value).startswith(
        f"the trusted comment in {signature_path} does not verify with key ID {public.key_id_hex}"
    )


def test_every_byte_flip_detected(keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, public, _ = keypair
    data = b"release bundle"
    signature = signature_text(blake2b_digest(data), secret, COMMENT).encode()
    # Bytes after the prefix of line 1 are the untrusted comment, which no signature covers.
    untrusted_end = signature.index(b"\n")
    untrusted_start = len(b"untrusted comment: ")
    accepted = []
    for position in range(len(signature)):
        for mask in (0x01, 0x02, 0x20, 0x80):
            flipped = bytearray(signature)
            flipped[position] ^= mask
            try:
                verify_bytes(data, bytes(flipped), [public])
            except SignatureError:
                continue
            accepted.append((position, mask))
    assert accepted
    assert all(untrusted_start <= position < untrusted_end for position, _ in accepted)


def test_every_truncation_rejected(keypair: tuple[SecretKey, PublicKey, Path]) -> None:
    secret, public, _ = keypair
    signature = signature_text(blake2b_digest(b"data"), secret, COMMENT).encode()

    for length in range(len(signature) - 1):
        with pytest.raises(SignatureError):
            verify_bytes(b"data", signature[:length], [public])
    # Only the final line feed may be missing.
    assert verify_bytes(b"data", signature[:-1], [public]).trusted_comment == COMMENT


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("zero-length.minisig", "is empty; expected 4 lines"),
        ("three-lines.minisig", "has 3 lines; expected 4"),
        ("five-lines.minisig", "has 5 lines; expected 4"),
        ("not-utf8.minisig", "is not UTF-8 text: invalid byte 0xff at offset 30"),
        ("untrusted-prefix-missing.minisig", "line 1: expected 'untrusted comment: '"),
        ("signature-not-base64.minisig", "line 2: signature is not valid base64"),
        ("signature-too-short.minisig", "line 2: signature has 71 bytes; expected 74"),
        ("algorithm-unknown.minisig", "signature algorithm b'XY' (key ID EFCDAB8967452301)"),
        ("trusted-prefix-missing.minisig", "line 3 (key ID EFCDAB8967452301): expected"),
        (
            "trusted-comment-escape.minisig",
            r"line 3 (key ID EFCDAB8967452301): the trusted comment contains control character"
            r" '\x1b'",
        ),
        (
            "global-signature-too-long.minisig",
            "line 4 (key ID EFCDAB8967452301): global signature has 65 bytes; expected 64",
        ),
    ],
)
def test_broken_signature_files(name: str, expected: str) -> None:
    with pytest.raises(SignatureError) as caught:
        parse_signature((DATA / name).read_bytes(), name)

    assert name in str(caught.value)
    assert expected in str(caught.value)
