"""Key rotation: merging next trusted keys into the local file, and its installed_from record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import SignatureError, StaleRotationError
from pipeline.keys import PublicKey, generate_keypair
from pipeline.rotation import check_rotation_newer, merge_trusted_keys
from pipeline.trust import (
    InstalledFrom,
    TrustedKey,
    load_trusted_keys,
    read_trusted_keys_file,
    write_trusted_keys,
)

JAN_2026 = datetime(2026, 1, 1, tzinfo=UTC)
DEC_20 = datetime(2026, 12, 20, tzinfo=UTC)
DEC_25 = datetime(2026, 12, 25, tzinfo=UTC)
MAR_2027 = datetime(2027, 3, 1, tzinfo=UTC)
JAN_2028 = datetime(2028, 1, 1, tzinfo=UTC)


@pytest.fixture
def publics(tmp_path: Path) -> tuple[PublicKey, PublicKey, PublicKey]:
    a = generate_keypair(tmp_path / "a.key", tmp_path / "a.pub")
    b = generate_keypair(tmp_path / "b.key", tmp_path / "b.pub")
    c = generate_keypair(tmp_path / "c.key", tmp_path / "c.pub")
    return a, b, c


def key(
    public: PublicKey,
    *,
    valid_from: datetime = JAN_2026,
    valid_until: datetime | None = None,
    revoked: bool | datetime = False,
    comment: str = "",
) -> TrustedKey:
    return TrustedKey(public, valid_from, valid_until, revoked, comment)


def test_merge_keeps_local_revocation(publics: tuple[PublicKey, ...]) -> None:
    a, b, c = publics
    local = [key(a, revoked=DEC_20), key(b), key(c, revoked=True)]
    offered = [key(a, valid_until=MAR_2027, comment="release key A"), key(b)]

    merged, notes = merge_trusted_keys(local, offered)

    assert [k.key_id_hex for k in merged] == [a.key_id_hex, b.key_id_hex, c.key_id_hex]
    assert merged[0].revoked == DEC_20
    assert merged[0].valid_until == MAR_2027
    assert merged[0].comment == "release key A"
    assert merged[1] == key(b)
    assert merged[2].revoked is True
    assert notes == [
        f"key ID {a.key_id_hex}: stays revoked at 2026-12-20T00:00:00Z as the local file"
        " has it; the bundle's file has revoked: false",
        f"key ID {c.key_id_hex}: stays in the file, revoked, although the bundle's file"
        " does not list it",
    ]


@pytest.mark.parametrize(
    ("local", "offered", "kept"),
    [
        (DEC_20, DEC_25, DEC_20),
        (DEC_25, DEC_20, DEC_20),
        (True, DEC_20, True),
        (DEC_20, True, True),
        (False, DEC_20, DEC_20),
    ],
    ids=["local-earlier", "offered-earlier", "local-true", "offered-true", "offered-only"],
)
def test_merge_keeps_strictest_revocation(
    publics: tuple[PublicKey, ...],
    local: bool | datetime,
    offered: bool | datetime,
    kept: bool | datetime,
) -> None:
    a = publics[0]

    merged, _notes = merge_trusted_keys([key(a, revoked=local)], [key(a, revoked=offered)])

    assert merged[0].revoked == kept


def test_merge_keeps_narrower_period(publics: tuple[PublicKey, ...]) -> None:
    a = publics[0]
    local = [key(a, valid_from=DEC_20, valid_until=MAR_2027)]
    offered = [key(a, valid_from=JAN_2026, valid_until=JAN_2028)]

    merged, notes = merge_trusted_keys(local, offered)

    assert merged[0].valid_from == DEC_20
    assert merged[0].valid_until == MAR_2027
    assert notes == [
        f"key ID {a.key_id_hex}: stays valid from 2026-12-20T00:00:00Z as the local file"
        " has it; the bundle's file has 2026-01-01T00:00:00Z",
        f"key ID {a.key_id_hex}: stays valid until 2027-03-01T00:00:00Z as the local file"
        " has it; the bundle's file has 2028-01-01T00:00:00Z",
    ]


def test_merge_disjoint_periods_revoke(publics: tuple[PublicKey, ...]) -> None:
    a = publics[0]
    local = [key(a, valid_from=JAN_2028)]
    offered = [key(a, valid_until=MAR_2027)]

    merged, notes = merge_trusted_keys(local, offered)

    assert merged[0].revoked is True
    assert merged[0].valid_from == JAN_2028
    assert merged[0].valid_until is None
    assert notes[-1] == (
        f"key ID {a.key_id_hex}: the local file lets it sign from 2028-01-01T00:00:00Z, the"
        " bundle's file until 2027-03-01T00:00:00Z; it is stored as revoked"
    )


def test_merge_drops_unrevoked_key_not_offered(publics: tuple[PublicKey, ...]) -> None:
    a, b, _c = publics

    merged, notes = merge_trusted_keys([key(a), key(b)], [key(b)])

    assert merged == [key(b)]
    assert notes == []


def test_installed_from_round_trip(tmp_path: Path, publics: tuple[PublicKey, ...]) -> None:
    a = publics[0]
    path = tmp_path / "trusted-keys.json"
    record = InstalledFrom(version="2026.12.1", key_id=a.key_id_hex, signed_at=DEC_20)

    write_trusted_keys(path, [key(a)], installed_from=record)

    loaded = read_trusted_keys_file(path)
    assert loaded.installed_from == record
    assert loaded.keys == [key(a)]
    assert load_trusted_keys(path) == [key(a)]
    assert json.loads(path.read_text(encoding="utf-8"))["installed_from"] == {
        "version": "2026.12.1",
        "key_id": a.key_id_hex,
        "signed_at": "2026-12-20T00:00:00Z",
    }


def test_installed_from_bad_version(tmp_path: Path, publics: tuple[PublicKey, ...]) -> None:
    path = tmp_path / "trusted-keys.json"
    record = InstalledFrom(version="2026.12.1", key_id=publics[0].key_id_hex, signed_at=None)
    write_trusted_keys(path, [key(publics[0])], installed_from=record)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["installed_from"]["version"] = "2026.13.x"
    path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(SignatureError) as caught:
        read_trusted_keys_file(path)

    assert str(caught.value).startswith(f"invalid trusted-keys file {path}")
    assert "$.installed_from.version" in str(caught.value)


@pytest.mark.parametrize("offered", ["2026.12.1", "2026.11.4"])
def test_older_rotation_rejected(publics: tuple[PublicKey, ...], offered: str) -> None:
    a, b, _c = publics
    installed = InstalledFrom(version="2026.12.1", key_id=a.key_id_hex, signed_at=None)
    record = InstalledFrom(version=offered, key_id=a.key_id_hex, signed_at=None)

    with pytest.raises(StaleRotationError) as caught:
        check_rotation_newer(record, [key(a), key(b)], installed, "trusted-keys.json")

    assert str(caught.value) == (
        f"the next trusted keys of bundle {offered} (key IDs {a.key_id_hex},"
        f" {b.key_id_hex}) are not newer than those in trusted-keys.json, which came from"
        " bundle 2026.12.1; trusted-keys.json stays as it is"
    )


def test_newer_rotation_passes(publics: tuple[PublicKey, ...]) -> None:
    a = publics[0]
    installed = InstalledFrom(version="2026.12.1", key_id=a.key_id_hex, signed_at=None)
    record = InstalledFrom(version="2026.12.2", key_id=a.key_id_hex, signed_at=None)

    check_rotation_newer(record, [key(a)], installed, "trusted-keys.json")
    check_rotation_newer(record, [key(a)], None, "trusted-keys.json")
