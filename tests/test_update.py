"""The update client against a real portal on 127.0.0.1 and against offline media."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from portal_support import VERSIONS, Chain, build_chain, publish_chain, serve

from pipeline.apply import apply_bundle, installed_version
from pipeline.portal import publish, write_offline_media
from pipeline.portal_feed import FeedError, load_trust
from pipeline.update import DownloadError, UpdateError, update

CLI = str(Path(sys.executable).parent / "parus-release")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return build_chain(tmp_path_factory)


@pytest.fixture(scope="module")
def published(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    portal = tmp_path_factory.mktemp("published") / "portal"
    publish_chain(chain, portal)
    return portal


@pytest.fixture
def portal(published: Path, tmp_path: Path) -> Path:
    """A copy of the published portal that a test may change."""
    copy = tmp_path / "portal"
    shutil.copytree(published, copy)
    return copy


@pytest.fixture
def database(tmp_path: Path) -> str:
    """URL of a new, empty SQLite database: a fresh installation."""
    path = tmp_path / "budget.sqlite"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


def run_update(
    portal: str, database: str, chain: Chain, tmp_path: Path, **options: object
) -> list[str]:
    result = update(
        portal,
        database,
        load_trust(chain.trusted_keys),
        work_dir=tmp_path / "client",
        root=tmp_path,
        retry_delay=0.0,
        **options,  # type: ignore[arg-type]
    )
    return result.applied


def bundle_url_path(version: str) -> str:
    return f"/portal/releases/{version}/parus-kaz-budget-{version}.7z"


def test_fresh_install_reaches_latest(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    with serve(portal) as (base, log):
        applied = run_update(base, database, chain, tmp_path)
    assert applied == list(VERSIONS)
    assert installed_version(database, tmp_path) == "2026.12.0"
    with sqlite3.connect(tmp_path / "budget.sqlite") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "update_journal" in tables
    state = json.loads((tmp_path / "client/state.json").read_text(encoding="utf-8"))
    assert state["feeds"]["parus-kaz-budget"]["feed_version"] == 3
    assert all(path.startswith("/portal/") for path, _ in log.requests)
    assert not (tmp_path / "client/downloads/2026.12.0").exists()


def test_update_again_applies_nothing(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    with serve(portal) as (base, log):
        assert run_update(base, database, chain, tmp_path) == list(VERSIONS)
        log.requests.clear()
        assert run_update(base, database, chain, tmp_path) == []
    assert [path for path, _ in log.requests] == ["/portal/feed.json", "/portal/feed.json.minisig"]


def test_interrupted_download_resumes(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    path = bundle_url_path("2026.11.0")
    size = (portal / path.removeprefix("/portal/")).stat().st_size
    with serve(portal) as (base, log):
        log.truncate_once.add(path)
        applied = run_update(base, database, chain, tmp_path)
    assert applied == list(VERSIONS)
    ranges = [header for requested, header in log.requests if requested == path]
    assert ranges == [None, f"bytes={size // 2}-"]


def test_stale_partial_download_is_discarded(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    name = "parus-kaz-budget-2026.10.0.7z"
    size = (portal / "releases/2026.10.0" / name).stat().st_size
    partial = tmp_path / "client/downloads/2026.10.0" / f"{name}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * (size // 2))
    with serve(portal) as (base, log):
        with pytest.raises(UpdateError, match="damaged or was replaced"):
            run_update(base, database, chain, tmp_path)
        assert not partial.exists()
        assert not (partial.parent / name).exists()
        assert run_update(base, database, chain, tmp_path) == list(VERSIONS)
    ranges = [header for path, header in log.requests if path == bundle_url_path("2026.10.0")]
    assert ranges == [f"bytes={size // 2}-", None]


def test_retries_are_bounded(chain: Chain, portal: Path, database: str, tmp_path: Path) -> None:
    path = bundle_url_path("2026.10.0")
    with serve(portal) as (base, log):
        log.fail_with[path] = 503
        with pytest.raises(UpdateError, match=r"failed after 3 attempts") as caught:
            run_update(base, database, chain, tmp_path, retries=2)
    assert isinstance(caught.value.__cause__, DownloadError)
    assert [requested for requested, _ in log.requests].count(path) == 3
    assert installed_version(database, tmp_path) is None


def test_missing_file_is_not_retried(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    path = bundle_url_path("2026.10.0")
    (portal / path.removeprefix("/portal/")).unlink()
    with serve(portal) as (base, log), pytest.raises(UpdateError, match="HTTP 404"):
        run_update(base, database, chain, tmp_path)
    assert [requested for requested, _ in log.requests].count(path) == 1


def test_tampered_bundle_stops_chain(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    bundle = portal / bundle_url_path("2026.12.0").removeprefix("/portal/")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    with serve(portal) as (base, _), pytest.raises(UpdateError) as caught:
        run_update(base, database, chain, tmp_path)
    message = str(caught.value)
    assert "update stopped at 2026.12.0" in message
    assert "parus-kaz-budget-2026.12.0.7z" in message
    assert "SHA-256" in message
    assert "The database stays at 2026.11.0" in message
    assert installed_version(database, tmp_path) == "2026.11.0"


def test_expired_feed_is_rejected(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    later = datetime.now(UTC) + timedelta(days=46)
    with serve(portal) as (base, _), pytest.raises(FeedError, match="the feed expired at"):
        run_update(base, database, chain, tmp_path, now=later)
    assert installed_version(database, tmp_path) is None
    assert not (tmp_path / "client/state.json").exists()


def test_rolled_back_feed_is_rejected(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    old_feed = (portal / "feed.json").read_bytes()
    old_signature = (portal / "feed.json.minisig").read_bytes()
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.12.0"), portal, chain.key(), trusted, channel="testing")
    with serve(portal) as (base, _):
        assert run_update(base, database, chain, tmp_path) == ["2026.10.0", "2026.11.0"]
        (portal / "feed.json").write_bytes(old_feed)
        (portal / "feed.json.minisig").write_bytes(old_signature)
        with pytest.raises(FeedError, match="feed version 3 is older than version 4"):
            run_update(base, database, chain, tmp_path)


def test_channel_without_newer_release(chain: Chain, database: str, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    publish_chain(chain, portal, channels={"2026.12.0": "testing"})
    with serve(portal) as (base, _):
        assert run_update(base, database, chain, tmp_path) == ["2026.10.0", "2026.11.0"]
        assert run_update(base, database, chain, tmp_path) == []
        assert installed_version(database, tmp_path) == "2026.11.0"
        assert run_update(base, database, chain, tmp_path, channel="testing") == ["2026.12.0"]
    assert installed_version(database, tmp_path) == "2026.12.0"


def test_check_changes_nothing(chain: Chain, portal: Path, database: str, tmp_path: Path) -> None:
    with serve(portal) as (base, log):
        result = update(
            base,
            database,
            load_trust(chain.trusted_keys),
            check_only=True,
            work_dir=tmp_path / "client",
            root=tmp_path,
        )
    assert result.checked_only is True
    assert [r.version for r in result.plan.chain] == list(VERSIONS)
    assert result.applied == []
    assert installed_version(database, tmp_path) is None
    assert not (tmp_path / "client").exists()
    assert [path for path, _ in log.requests] == ["/portal/feed.json", "/portal/feed.json.minisig"]


def test_redirect_outside_portal_is_rejected(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    (portal / "feed.json").unlink()
    with serve(portal) as (base, log):
        log.redirect["/portal/feed.json"] = base.removesuffix("portal/") + "elsewhere/feed.json"
        with pytest.raises(DownloadError, match="outside the portal"):
            run_update(base, database, chain, tmp_path)
    assert [path for path, _ in log.requests] == ["/portal/feed.json"]


def no_network(self: socket.socket, address: object) -> None:
    raise AssertionError(f"the update opened a network connection to {address}")


def test_offline_media_updates_without_network(
    chain: Chain, published: Path, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = tmp_path / "media"
    write_offline_media(
        published, media, "2026.10.0", chain.trusted_keys, load_trust(chain.trusted_keys)
    )
    trusted = load_trust(media / "trusted-keys.json")
    apply_bundle(chain.bundle("2026.10.0"), database, trusted, root=tmp_path)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    applied = run_update(str(media), database, chain, tmp_path)
    assert applied == ["2026.11.0", "2026.12.0"]
    assert installed_version(database, tmp_path) == "2026.12.0"


def test_offline_media_fresh_install(
    chain: Chain, published: Path, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = tmp_path / "media"
    write_offline_media(published, media, None, chain.trusted_keys, load_trust(chain.trusted_keys))
    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert run_update(media.as_uri(), database, chain, tmp_path) == list(VERSIONS)
    assert installed_version(database, tmp_path) == "2026.12.0"


def test_offline_media_lacks_older_release(
    chain: Chain, published: Path, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = tmp_path / "media"
    write_offline_media(
        published, media, "2026.11.0", chain.trusted_keys, load_trust(chain.trusted_keys)
    )
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(
        UpdateError, match=r"update stopped at 2026\.10\.0: .*releases/2026\.10\.0"
    ):
        run_update(str(media), database, chain, tmp_path)
    assert installed_version(database, tmp_path) is None


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "true"}
    env.pop("PIPELINE_SIGNING_KEY", None)
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_cli_update_checks_then_applies(chain: Chain, published: Path, tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "budget.sqlite").close()
    database = f"sqlite:///{tmp_path / 'budget.sqlite'}"
    common = ["--database", database, "--trusted-keys", str(chain.trusted_keys)]
    with serve(published) as (base, _):
        checked = run_cli("update", "--portal", base, *common, "--check", cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert "would apply 3 releases: 2026.10.0, 2026.11.0, 2026.12.0" in checked.stdout
        assert installed_version(database, tmp_path) is None
        report = tmp_path / "update.json"
        updated = run_cli("update", "--portal", base, *common, "--json", str(report), cwd=tmp_path)
    assert updated.returncode == 0, updated.stderr
    assert "applied 3 releases: 2026.10.0, 2026.11.0, 2026.12.0" in updated.stdout
    assert json.loads(report.read_text(encoding="utf-8"))["applied"] == list(VERSIONS)
    assert installed_version(database, tmp_path) == "2026.12.0"


def test_cli_update_reports_expired_feed(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    publish(
        chain.bundle("2026.10.0"),
        portal,
        chain.key(),
        load_trust(chain.trusted_keys),
        now=datetime.now(UTC) - timedelta(days=50),
    )
    updated = run_cli(
        "update",
        "--portal",
        str(portal),
        "--database",
        f"sqlite:///{tmp_path / 'budget.sqlite'}",
        "--trusted-keys",
        str(chain.trusted_keys),
        cwd=tmp_path,
    )
    assert updated.returncode == 1
    assert "the feed expired at" in updated.stderr
