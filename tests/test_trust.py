"""Trusted keys: the trusted-keys file, validity periods and revocation."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import require_tool
from test_keys import minisign_generate

from pipeline.errors import SignatureError
from pipeline.keys import PublicKey, generate_keypair, load_public_key
from pipeline.signing import verify_file
from pipeline.trust import (
    EPOCH,
    TrustedKey,
    check_key_usable,
    find_trusted_key,
    load_trusted_keys,
    trusted_keys_from_public_key,
    write_trusted_keys,
)

DATA = Path(__file__).parent / "data" / "signing"
JAN_2026 = datetime(2026, 1, 1, tzinfo=UTC)
JAN_2027 = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def public(tmp_path: Path) -> PublicKey:
    return generate_keypair(tmp_path / "release.key", tmp_path / "release.pub")


def trusted(
    public: PublicKey,
    valid_from: datetime = JAN_2026,
    valid_until: datetime | None = JAN_2027,
    revoked: bool | datetime = False,
    comment: str = "release key 2026",
) -> TrustedKey:
    return TrustedKey(public, valid_from, valid_until, revoked, comment)


def test_write_and_load_round_trip(tmp_path: Path, public: PublicKey) -> None:
    other = generate_keypair(tmp_path / "old.key", tmp_path / "old.pub")
    keys = [
        trusted(public),
        trusted(
            other,
            valid_from=datetime(2025, 1, 1, 6, tzinfo=timezone(timedelta(hours=6))),
            valid_until=None,
            revoked=datetime(2025, 12, 1, 12, 30, tzinfo=UTC),
            comment="ключ 2025",
        ),
    ]
    path = tmp_path / "trusted-keys.json"

    write_trusted_keys(path, keys)
    loaded = load_trusted_keys(path)
    document = json.loads(path.read_text(encoding="utf-8"))

    assert [key.public.raw() for key in loaded] == [public.raw(), other.raw()]
    assert [key.public.key_id for key in loaded] == [public.key_id, other.key_id]
    assert loaded[0].valid_from == JAN_2026
    assert loaded[0].valid_until == JAN_2027
    assert loaded[0].revoked is False
    assert loaded[1].valid_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert loaded[1].valid_until is None
    assert loaded[1].revoked == datetime(2025, 12, 1, 12, 30, tzinfo=UTC)
    assert loaded[1].comment == "ключ 2025"
    assert document["keys"][1]["valid_from"] == "2025-01-01T00:00:00Z"
    assert document["keys"][1]["revoked"] == "2025-12-01T12:30:00Z"
    assert document["keys"][0]["public_key"] == (tmp_path / "release.pub").read_text().split()[-1]


def test_minisign_printed_key_id_accepted(tmp_path: Path) -> None:
    _, public_path = minisign_generate(tmp_path)
    printed = public_path.read_text().splitlines()[0].rsplit(" ", 1)[1]
    path = tmp_path / "trusted-keys.json"
    entry = {
        "key_id": printed,
        "public_key": public_path.read_text().splitlines()[1],
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": None,
        "revoked": False,
    }
    path.write_text(json.dumps({"format": 1, "keys": [entry]}))

    keys = load_trusted_keys(path)

    assert keys[0].public.key_id == load_public_key(public_path).key_id
    assert keys[0].comment == ""
    assert find_trusted_key(keys, printed) is keys[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("trusted-keys-key-id-mismatch.json", "$.keys[0].key_id: expected EFCDAB8967452301"),
        (
            "trusted-keys-duplicate-key-id.json",
            "$.keys[1].key_id: key ID EFCDAB8967452301 is listed twice",
        ),
        ("trusted-keys-format-2.json", "$.format: format 2 is not supported"),
        (
            "trusted-keys-impossible-date.json",
            "$.keys[0].valid_from: expected a valid date-time, found '2026-02-30T00:00:00Z'",
        ),
        ("trusted-keys-unknown-field.json", "'expires' was unexpected"),
        (
            "trusted-keys-until-before-from.json",
            "$.keys[0].valid_until: 2025-01-01T00:00:00Z is not after valid_from",
        ),
        (
            "trusted-keys-not-json.json",
            "trusted-keys-not-json.json:2: invalid JSON: Expecting value",
        ),
        ("trusted-keys-no-keys.json", "trusted-keys-no-keys.json $.keys: the file lists no keys"),
    ],
)
def test_broken_trusted_keys_files(name: str, expected: str) -> None:
    with pytest.raises(SignatureError) as caught:
        load_trusted_keys(DATA / name)

    assert name in str(caught.value)
    assert expected in str(caught.value)


def test_trusted_keys_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SignatureError) as caught:
        load_trusted_keys(tmp_path / "trusted-keys.json")

    assert (
        str(caught.value) == f"trusted-keys file {tmp_path / 'trusted-keys.json'} does not exist"
    )


def test_bare_public_key_always_valid(tmp_path: Path, public: PublicKey) -> None:
    keys = trusted_keys_from_public_key(tmp_path / "release.pub")

    assert len(keys) == 1
    assert keys[0].public.raw() == public.raw()
    assert keys[0].valid_from == EPOCH
    assert keys[0].valid_until is None
    assert keys[0].revoked is False
    check_key_usable(keys[0], datetime(2099, 1, 1, tzinfo=UTC))


def test_usable_within_period(public: PublicKey) -> None:
    key = trusted(public)

    check_key_usable(key, JAN_2026)
    check_key_usable(key, JAN_2027 - timedelta(seconds=1))


def test_revoked_key(public: PublicKey) -> None:
    with pytest.raises(SignatureError) as caught:
        check_key_usable(trusted(public, revoked=True), datetime(2026, 6, 1, tzinfo=UTC))

    assert str(caught.value) == (
        f"key ID {public.key_id_hex} (release key 2026) is revoked;"
        " signatures by it are not accepted"
    )


def test_revoked_at_date(public: PublicKey) -> None:
    key = trusted(public, revoked=datetime(2026, 7, 1, tzinfo=UTC))

    check_key_usable(key, datetime(2026, 6, 30, 23, 59, tzinfo=UTC))
    with pytest.raises(SignatureError) as caught:
        check_key_usable(key, datetime(2026, 7, 1, tzinfo=UTC))

    assert str(caught.value) == (
        f"key ID {public.key_id_hex} (release key 2026) was revoked at 2026-07-01T00:00:00Z;"
        " the signature was made at 2026-07-01T00:00:00Z"
    )


def test_expired_at_signing_time(public: PublicKey) -> None:
    with pytest.raises(SignatureError) as caught:
        check_key_usable(trusted(public), JAN_2027)

    assert str(caught.value) == (
        f"key ID {public.key_id_hex} (release key 2026) expired at 2027-01-01T00:00:00Z,"
        " before the signing time 2027-01-01T00:00:00Z"
    )


def test_not_yet_valid(public: PublicKey) -> None:
    signed_at = datetime(2025, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-1)))

    check_key_usable(trusted(public), signed_at)
    with pytest.raises(SignatureError) as caught:
        check_key_usable(trusted(public), signed_at - timedelta(seconds=1))

    assert str(caught.value) == (
        f"key ID {public.key_id_hex} (release key 2026) is not yet valid at the signing time"
        " 2025-12-31T23:59:59Z; it is valid from 2026-01-01T00:00:00Z"
    )


def test_signing_time_without_zone(public: PublicKey) -> None:
    with pytest.raises(SignatureError, match="has no time zone"):
        check_key_usable(trusted(public), datetime(2026, 6, 1))


def test_find_unknown_key(public: PublicKey) -> None:
    with pytest.raises(SignatureError) as caught:
        find_trusted_key([trusted(public)], "0123456789ABCDEF")

    assert str(caught.value) == (
        f"key ID 0123456789ABCDEF is not a trusted key (trusted key IDs: {public.key_id_hex})"
    )


def test_write_rejects_duplicates(tmp_path: Path, public: PublicKey) -> None:
    path = tmp_path / "trusted-keys.json"

    with pytest.raises(SignatureError) as caught:
        write_trusted_keys(path, [trusted(public), trusted(public, comment="copy")])

    assert str(caught.value) == f"cannot write {path}: key IDs listed twice: {public.key_id_hex}"
    assert not path.exists()


def test_minisign_signature_with_trusted_keys(tmp_path: Path) -> None:
    minisign = require_tool("minisign")
    secret_path, public_path = minisign_generate(tmp_path / "keys")
    bundle = tmp_path / "bundle.7z"
    bundle.write_bytes(b"bundle")
    subprocess.run(
        [minisign, "-S", "-s", str(secret_path), "-m", str(bundle), "-t", "signed"],
        check=True,
        capture_output=True,
    )
    key = trusted(load_public_key(public_path), revoked=datetime(2026, 3, 1, tzinfo=UTC))
    write_trusted_keys(tmp_path / "trusted-keys.json", [key])
    keys = load_trusted_keys(tmp_path / "trusted-keys.json")

    info = verify_file(bundle, (tmp_path / "bundle.7z.minisig").read_bytes(), [keys[0].public])
    found = find_trusted_key(keys, info.key_id_hex)
    check_key_usable(found, datetime(2026, 2, 1, tzinfo=UTC))
    with pytest.raises(SignatureError) as caught:
        check_key_usable(found, datetime(2026, 4, 1, tzinfo=UTC))

    assert found.public.raw() == load_public_key(public_path).raw()
    assert f"key ID {info.key_id_hex} (release key 2026) was revoked" in str(caught.value)
