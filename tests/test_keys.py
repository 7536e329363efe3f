"""Key files: minisign keys from the real minisign, PEM and OpenSSH keys, and key errors."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from pipeline.errors import SignatureError
from pipeline.keys import (
    PublicKey,
    derive_key_id,
    format_key_id,
    generate_keypair,
    load_public_key,
    load_secret_key,
    parse_key_id_hex,
    scrypt_parameters,
)

PASSPHRASE = "correct horse ☃ battery"


def minisign_generate(folder: Path, passphrase: str | None = None) -> tuple[Path, Path]:
    """Create a key pair with the real minisign; encrypted when a passphrase is given."""
    minisign = require_tool("minisign")
    folder.mkdir(parents=True, exist_ok=True)
    secret, public = folder / "minisign.key", folder / "minisign.pub"
    command = [minisign, "-G", "-p", str(public), "-s", str(secret)]
    if passphrase is None:
        command.append("-W")
        stdin = ""
    else:
        stdin = f"{passphrase}\n{passphrase}\n"
    subprocess.run(command, input=stdin, text=True, check=True, capture_output=True)
    return secret, public


def minisign_sign(secret: Path, file: Path, passphrase: str | None = None) -> Path:
    """Sign a file with the real minisign; return the signature path."""
    minisign = require_tool("minisign")
    stdin = "" if passphrase is None else passphrase + "\n"
    subprocess.run(
        [minisign, "-S", "-s", str(secret), "-m", str(file)],
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
    )
    return file.with_name(file.name + ".minisig")


def minisign_verify(public: Path, file: Path) -> subprocess.CompletedProcess[str]:
    minisign = require_tool("minisign")
    return subprocess.run(
        [minisign, "-V", "-p", str(public), "-m", str(file)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def encrypted_minisign_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A key pair that minisign encrypted with PASSPHRASE at its default scrypt cost."""
    return minisign_generate(tmp_path_factory.mktemp("encrypted"), PASSPHRASE)


def write_pem(path: Path, key: object, password: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = serialization.BestAvailableEncryption(password)
    assert hasattr(key, "private_bytes")
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return path


def test_public_key_id_matches_minisign(tmp_path: Path) -> None:
    _, public_path = minisign_generate(tmp_path)
    comment = public_path.read_text().splitlines()[0]

    public = load_public_key(public_path)

    # minisign 0.11 prints the key id without leading zeros.
    printed = comment.removeprefix("untrusted comment: minisign public key ")
    assert int(printed, 16) == int(public.key_id_hex, 16)
    assert parse_key_id_hex(printed) == public.key_id
    assert len(public.key_id_hex) == 16


def test_public_key_round_trip(tmp_path: Path) -> None:
    _, public_path = minisign_generate(tmp_path)
    public = load_public_key(public_path)

    text = public.to_minisign("copy")
    again = PublicKey.from_minisign(text, "copy.pub")

    assert again.key_id == public.key_id
    assert again.raw() == public.raw()
    assert text.splitlines()[1] == public_path.read_text().splitlines()[1]


def test_format_key_id_little_endian() -> None:
    assert format_key_id(bytes.fromhex("7d09d569b16ca59f")) == "9FA56CB169D5097D"
    assert format_key_id(bytes.fromhex("0100000000000000")) == "0000000000000001"


def test_parse_key_id_hex() -> None:
    assert parse_key_id_hex("9FA56CB169D5097D") == bytes.fromhex("7d09d569b16ca59f")
    assert parse_key_id_hex("ffe59772ee53aa7") == bytes.fromhex("a73ae52e7759fe0f")
    for bad in ("", "12345678901234567", "XYZ"):
        with pytest.raises(SignatureError, match="expected 1 to 16 hex digits"):
            parse_key_id_hex(bad)


def test_load_minisign_unencrypted_secret(tmp_path: Path) -> None:
    secret_path, public_path = minisign_generate(tmp_path)
    public = load_public_key(public_path)

    secret = load_secret_key(secret_path)

    assert secret.key_id == public.key_id
    assert secret.public.raw() == public.raw()


def test_unencrypted_secret_ignores_passphrase(tmp_path: Path) -> None:
    secret_path, public_path = minisign_generate(tmp_path)

    secret = load_secret_key(secret_path, "not needed")

    assert secret.public.raw() == load_public_key(public_path).raw()


def test_load_minisign_encrypted_secret(encrypted_minisign_key: tuple[Path, Path]) -> None:
    secret_path, public_path = encrypted_minisign_key
    public = load_public_key(public_path)

    secret = load_secret_key(secret_path, PASSPHRASE)

    assert secret.public.key_id_hex == public.key_id_hex
    assert secret.public.raw() == public.raw()


def test_encrypted_secret_wrong_passphrase(encrypted_minisign_key: tuple[Path, Path]) -> None:
    secret_path, _ = encrypted_minisign_key

    with pytest.raises(SignatureError) as caught:
        load_secret_key(secret_path, "wrong")

    assert str(caught.value) == f"wrong passphrase for key file {secret_path}"


def test_encrypted_secret_without_passphrase(encrypted_minisign_key: tuple[Path, Path]) -> None:
    secret_path, _ = encrypted_minisign_key

    with pytest.raises(SignatureError) as caught:
        load_secret_key(secret_path)

    message = str(caught.value)
    assert str(secret_path) in message
    assert "needs a passphrase" in message
    assert "PIPELINE_SIGNING_PASSPHRASE" in message


@pytest.mark.parametrize(
    ("opslimit", "memlimit", "expected"),
    [
        # minisign's default, libsodium's *_SENSITIVE limits: 1 GiB of memory.
        (33_554_432, 1_073_741_824, (1 << 20, 8, 1)),
        # libsodium's *_INTERACTIVE limits.
        (524_288, 16_777_216, (1 << 14, 8, 1)),
        # opslimit < memlimit / 32, so opslimit alone sets N.
        (65_536, 1 << 30, (1 << 11, 8, 1)),
        # opslimit below the minimum of 32768 is raised to it.
        (1, 1 << 30, (1 << 10, 8, 1)),
        # A large opslimit with little memory raises p.
        (1 << 30, 1 << 24, (1 << 14, 8, 2048)),
    ],
)
def test_scrypt_parameters(opslimit: int, memlimit: int, expected: tuple[int, int, int]) -> None:
    assert scrypt_parameters(opslimit, memlimit) == expected


def test_generate_keypair_files(tmp_path: Path) -> None:
    secret_path, public_path = tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub"

    public = generate_keypair(secret_path, public_path)

    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert load_public_key(public_path).raw() == public.raw()
    assert load_secret_key(secret_path).public.raw() == public.raw()
    assert public.key_id_hex in public_path.read_text().splitlines()[0]
    assert sorted(p.name for p in secret_path.parent.iterdir()) == ["release.key", "release.pub"]


def test_generated_key_signs_with_minisign(tmp_path: Path) -> None:
    secret_path, public_path = tmp_path / "release.key", tmp_path / "release.pub"
    generate_keypair(secret_path, public_path)
    data = tmp_path / "payload.bin"
    data.write_bytes(b"payload")

    minisign_sign(secret_path, data)
    result = minisign_verify(public_path, data)

    assert result.returncode == 0, result.stderr
    assert "Signature and comment signature verified" in result.stdout


def test_generated_encrypted_key_minisign(tmp_path: Path) -> None:
    secret_path, public_path = tmp_path / "release.key", tmp_path / "release.pub"
    public = generate_keypair(secret_path, public_path, PASSPHRASE)
    data = tmp_path / "payload.bin"
    data.write_bytes(b"payload")

    minisign_sign(secret_path, data, PASSPHRASE)
    result = minisign_verify(public_path, data)

    assert result.returncode == 0, result.stderr
    assert secret_path.read_text().splitlines()[0].endswith("encrypted secret key")
    assert load_secret_key(secret_path, PASSPHRASE).public.raw() == public.raw()


def test_generate_keypair_keeps_existing(tmp_path: Path) -> None:
    secret_path, public_path = tmp_path / "release.key", tmp_path / "release.pub"
    public_path.write_text("an older public key\n")

    with pytest.raises(SignatureError) as caught:
        generate_keypair(secret_path, public_path)

    assert str(caught.value) == f"{public_path} already exists; remove it or choose another path"
    assert public_path.read_text() == "an older public key\n"
    assert not secret_path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["release.pub"]


def test_generate_keypair_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="passphrase is empty"):
        generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", "")

    assert list(tmp_path.iterdir()) == []


def test_load_pkcs8_pem(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    path = write_pem(tmp_path / "key.pem", private)
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )

    secret = load_secret_key(path)

    assert secret.public.raw() == raw
    assert secret.key_id == hashlib.blake2b(raw, digest_size=64).digest()[:8]
    assert secret.key_id == derive_key_id(raw)


def test_load_encrypted_pkcs8_pem(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    path = write_pem(tmp_path / "key.pem", private, PASSPHRASE.encode())

    secret = load_secret_key(path, PASSPHRASE)

    assert secret.public.raw() == PublicKey.from_ed25519(private.public_key()).raw()


def test_encrypted_pem_wrong_passphrase(tmp_path: Path) -> None:
    path = write_pem(tmp_path / "key.pem", ed25519.Ed25519PrivateKey.generate(), b"right")

    with pytest.raises(SignatureError) as caught:
        load_secret_key(path, "wrong")

    assert str(caught.value) == f"wrong passphrase for key file {path}"


def test_encrypted_pem_without_passphrase(tmp_path: Path) -> None:
    path = write_pem(tmp_path / "key.pem", ed25519.Ed25519PrivateKey.generate(), b"right")

    with pytest.raises(SignatureError) as caught:
        load_secret_key(path)

    assert "PIPELINE_SIGNING_PASSPHRASE" in str(caught.value)
    assert str(path) in str(caught.value)


def test_load_openssh_key(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )

    secret = load_secret_key(path)

    assert secret.public.raw() == PublicKey.from_ed25519(private.public_key()).raw()
    assert secret.key_id == PublicKey.from_ed25519(private.public_key()).key_id


def test_encrypted_openssh_key(tmp_path: Path) -> None:
    ssh_keygen = require_tool("ssh-keygen")
    path = tmp_path / "id_ed25519"
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "test", "-f", str(path)],
        check=True,
        capture_output=True,
    )

    with pytest.raises(SignatureError) as without:
        load_secret_key(path)
    try:
        secret = load_secret_key(path, PASSPHRASE)
    except SignatureError as exc:
        # Without the optional bcrypt package cryptography cannot decrypt OpenSSH keys.
        assert "bcrypt" in str(exc)
    else:
        public_line = (tmp_path / "id_ed25519.pub").read_text().split()[1]
        assert secret.public.raw() == serialization.load_ssh_public_key(
            f"ssh-ed25519 {public_line}".encode()
        ).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    assert "PIPELINE_SIGNING_PASSPHRASE" in str(without.value)


@pytest.mark.parametrize(
    ("make_key", "expected"),
    [
        (lambda: rsa.generate_private_key(65537, 2048), "contains an RSA private key (2048 bits)"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "EC private key (curve secp256r1)"),
        (ed448.Ed448PrivateKey.generate, "contains an Ed448 private key"),
    ],
    ids=["rsa", "ec", "ed448"],
)
def test_other_key_type_pem(tmp_path: Path, make_key: object, expected: str) -> None:
    assert callable(make_key)
    path = write_pem(tmp_path / "other.pem", make_key())

    with pytest.raises(SignatureError) as caught:
        load_secret_key(path)

    assert expected in str(caught.value)
    assert "expected an Ed25519 key" in str(caught.value)
    assert str(path) in str(caught.value)


def test_rsa_openssh_key(tmp_path: Path) -> None:
    path = tmp_path / "id_rsa"
    path.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(SignatureError, match="contains an RSA private key"):
        load_secret_key(path)


def test_public_key_as_secret_key(tmp_path: Path) -> None:
    _, public_path = minisign_generate(tmp_path)

    with pytest.raises(SignatureError) as caught:
        load_secret_key(public_path)

    assert str(caught.value) == (
        f"{public_path} is a minisign public key; expected the secret key file (minisign.key)"
    )


def test_damaged_minisign_secret(tmp_path: Path) -> None:
    secret_path, _ = minisign_generate(tmp_path)
    lines = secret_path.read_text().splitlines()
    # Character 100 of the base64 line lies in the Ed25519 seed (bytes 62 to 93).
    flipped = lines[1][:100] + ("A" if lines[1][100] != "A" else "B") + lines[1][101:]
    damaged = tmp_path / "damaged-seed.key"
    damaged.write_text(f"{lines[0]}\n{flipped}\n")

    with pytest.raises(SignatureError) as caught:
        load_secret_key(damaged)

    assert str(caught.value).startswith(f"{damaged} is damaged")


def test_secret_key_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SignatureError) as caught:
        load_secret_key(tmp_path / "missing.key")

    assert "cannot read secret key file" in str(caught.value)
    assert "missing.key" in str(caught.value)


def test_secret_key_file_unknown(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n")

    with pytest.raises(SignatureError, match="is not a secret key"):
        load_secret_key(path)


def test_public_key_file_errors(tmp_path: Path) -> None:
    cases = {
        "empty.pub": ("", "is empty"),
        "three-lines.pub": ("untrusted comment: x\nRWQ=\nmore\n", "found 3 lines"),
        "not-base64.pub": ("untrusted comment: x\nnot base64!\n", "not valid base64"),
        "short-key.pub": ("untrusted comment: x\nRWQBI0VniavN7w==\n", "has 10 bytes; expected 42"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(SignatureError) as caught:
            load_public_key(path)
        assert expected in str(caught.value), name
        assert name in str(caught.value), name


def test_empty_passphrase_is_no_passphrase(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "encrypted.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right"),
        )
    )
    with pytest.raises(SignatureError, match="passphrase"):
        load_secret_key(path, "")
