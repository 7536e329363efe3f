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
from pipeline.errors import ApplyError, ConfigError
from pipeline.portal import publish, write_offline_media
from pipeline.portal_feed import FeedError, load_trust
from pipeline.update import DownloadError, UpdateError, default_state_path, update

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
    state_file = tmp_path / "budget.sqlite.parus-update.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
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
    assert not (tmp_path / "budget.sqlite.parus-update.json").exists()


def test_rolled_back_feed_is_rejected(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    old_feed = (portal / "feed.json").read_bytes()
    old_signature = (portal / "feed.json.minisig").read_bytes()
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.12.0"), portal, chain.key(), trusted, channel="testing", force=True)
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


def test_cli_update_max_ratio(chain: Chain, portal: Path, tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "budget.sqlite").close()
    database = f"sqlite:///{tmp_path / 'budget.sqlite'}"
    common = ["--portal", str(portal), "--database", database]
    common += ["--trusted-keys", str(chain.trusted_keys)]

    low = run_cli("update", *common, "--max-ratio", "1", cwd=tmp_path)
    raised = run_cli("update", *common, "--max-ratio", "500", cwd=tmp_path)

    assert low.returncode == 1
    assert "update stopped at 2026.10.0" in low.stderr
    assert "is above the limit 1;" in low.stderr
    assert raised.returncode == 0, raised.stderr
    assert "applied 3 releases: 2026.10.0, 2026.11.0, 2026.12.0" in raised.stdout


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


def test_state_follows_database_not_folder(
    chain: Chain, portal: Path, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_feed = (portal / "feed.json").read_bytes()
    old_signature = (portal / "feed.json.minisig").read_bytes()
    publish(
        chain.bundle("2026.12.0"),
        portal,
        chain.key(),
        load_trust(chain.trusted_keys),
        channel="testing",
        force=True,
    )
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    trusted = load_trust(chain.trusted_keys)
    with serve(portal) as (base, _):
        monkeypatch.chdir(first)
        update(base, database, trusted, retry_delay=0.0)
        (portal / "feed.json").write_bytes(old_feed)
        (portal / "feed.json.minisig").write_bytes(old_signature)
        monkeypatch.chdir(second)
        with pytest.raises(FeedError, match="feed version 3 is older than version 4"):
            update(base, database, trusted, retry_delay=0.0)
    assert (tmp_path / "budget.sqlite.parus-update.json").is_file()
    assert list(first.iterdir()) == []
    assert list(second.iterdir()) == []


def test_default_state_path_per_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_state_path("sqlite:///db/budget.sqlite", tmp_path) == (
        tmp_path / "db" / "budget.sqlite.parus-update.json"
    )
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    first = default_state_path("postgresql://app:secret@127.0.0.1:5432/budget")
    same = default_state_path("postgresql://app:other@127.0.0.1:5432/budget")
    other = default_state_path("postgresql://app@127.0.0.1:5432/budget_copy")
    assert first.parent == tmp_path / "state" / "parus-update"
    assert first == same
    assert first != other
    assert "secret" not in str(first)


def test_fresh_install_creates_sqlite_file(chain: Chain, portal: Path, tmp_path: Path) -> None:
    missing = tmp_path / "new" / "budget.sqlite"
    missing.parent.mkdir()
    database = f"sqlite:///{missing}"
    trusted = load_trust(chain.trusted_keys)
    with serve(portal) as (base, _):
        checked = update(base, database, trusted, check_only=True, retry_delay=0.0)
        assert checked.created_database == missing
        assert not missing.exists()
        result = update(base, database, trusted, retry_delay=0.0)
    assert result.created_database == missing
    assert result.applied == list(VERSIONS)
    assert installed_version(database, tmp_path) == "2026.12.0"


def test_apply_creates_sqlite_file_on_request(chain: Chain, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'budget.sqlite'}"
    trusted = load_trust(chain.trusted_keys)
    with pytest.raises(ApplyError, match=r"budget\.sqlite: SQLite database not found"):
        apply_bundle(chain.bundle("2026.10.0"), database, trusted, root=tmp_path)
    assert not (tmp_path / "budget.sqlite").exists()
    apply_bundle(chain.bundle("2026.10.0"), database, trusted, root=tmp_path, create=True)
    assert installed_version(database, tmp_path) == "2026.10.0"


def test_negative_retries_are_rejected(
    chain: Chain, portal: Path, database: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="--retries: expected 0 or more, found -1"):
        run_update(str(portal), database, chain, tmp_path, retries=-1)


def test_cli_update_fresh_install_and_grammar(
    chain: Chain, published: Path, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'budget.sqlite'}"
    common = ["--database", database, "--trusted-keys", str(chain.trusted_keys)]
    media = tmp_path / "media"
    write_offline_media(
        published, media, "2026.11.0", chain.trusted_keys, load_trust(chain.trusted_keys)
    )
    apply_bundle(chain.bundle("2026.10.0"), database, load_trust(chain.trusted_keys), create=True)
    apply_bundle(chain.bundle("2026.11.0"), database, load_trust(chain.trusted_keys))
    checked = run_cli("update", "--portal", str(media), *common, "--check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "would apply 1 release: 2026.12.0" in checked.stdout

    fresh = tmp_path / "fresh.sqlite"
    created = run_cli(
        "update",
        "--portal",
        str(published),
        "--database",
        f"sqlite:///{fresh}",
        "--trusted-keys",
        str(chain.trusted_keys),
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    assert f"created the empty SQLite database {fresh} for a fresh install" in created.stdout
    assert "applied 3 releases" in created.stdout

    negative = run_cli("update", "--portal", str(media), *common, "--retries", "-1", cwd=tmp_path)
    assert negative.returncode == 1
    assert "--retries: expected 0 or more, found -1" in negative.stderr


def test_cli_update_help_gives_timeout_type(tmp_path: Path) -> None:
    help_text = run_cli("update", "--help", cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert "--timeout=INT" in help_text.stdout
    assert "seconds to wait for each network request" in help_text.stdout


def test_postgres_state_ignores_url_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.update import default_state_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    first = default_state_path("postgresql://postgres@127.0.0.1:5432/budget")
    for spelling in (
        "postgres://postgres@127.0.0.1/budget",
        "postgresql://postgres:secret@127.0.0.1:5432/budget?connect_timeout=5",
        "postgresql://postgres@127.0.0.1/budget",
    ):
        assert default_state_path(spelling) == first
    assert default_state_path("postgresql://postgres@127.0.0.1:5432/other") != first
