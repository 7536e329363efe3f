"""The update portal: publish, feed, pages and offline media, with real bundles and keys."""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from browser import dump_dom, png_colours, screenshot
from conftest import REPO_ROOT, require_tool
from portal_support import (
    KAZAKH_LETTERS,
    KAZAKH_TITLE,
    VERSIONS,
    Chain,
    build_chain,
    publish_chain,
    serve,
    tree_snapshot,
)

from pipeline import portal as portal_module
from pipeline import signing
from pipeline.errors import VerificationError
from pipeline.portal import (
    LOCK_NAME,
    PublishError,
    feed_version_path,
    portal_lock,
    publish,
    read_portal_feed,
    refresh_feed,
    write_offline_media,
)
from pipeline.portal_feed import (
    FeedError,
    load_trust,
    parse_feed,
    plan_chain,
    sign_feed,
    verify_feed,
)
from pipeline.portal_pages import markdown_to_html

DATA = REPO_ROOT / "tests" / "data" / "portal"
CLI = str(Path(sys.executable).parent / "parus-release")
# Requests go straight to the test server, whatever the *_proxy variables contain.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return build_chain(tmp_path_factory)


@pytest.fixture(scope="module")
def published(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A portal with the three releases, shared by the tests that only read it."""
    portal = tmp_path_factory.mktemp("published") / "portal"
    publish_chain(chain, portal)
    return portal


def feed_of(portal: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads((portal / "feed.json").read_text(encoding="utf-8"))
    return document


def test_publish_lists_every_release(chain: Chain, published: Path) -> None:
    feed = parse_feed((published / "feed.json").read_bytes(), "feed.json")
    assert feed.feed_version == 3
    assert [r.version for r in feed.sorted_releases()] == list(VERSIONS)
    for release in feed.releases:
        bundle = published / release.files["bundle"]
        assert bundle.read_bytes() == chain.bundle(release.version).read_bytes()
        assert release.size == bundle.stat().st_size
        assert release.sha256 == hashlib.sha256(bundle.read_bytes()).hexdigest()
        assert release.channel == "stable"
        for path in release.files.values():
            assert (published / path).is_file(), path
        assert release.notes["kk"].startswith(f"# Парус-КАЗ.Бюджет {release.version} жаңартуы")
        assert release.notes["ru"].startswith(f"# Обновление Парус-КАЗ.Бюджет {release.version}")
    second = feed.find("2026.11.0")
    assert second is not None
    assert KAZAKH_TITLE in second.notes["kk"]


def test_publish_reads_schema_and_min_from(published: Path) -> None:
    feed = parse_feed((published / "feed.json").read_bytes(), "feed.json")
    for release in feed.releases:
        manifest = json.loads((published / release.files["manifest"]).read_bytes())
        assert release.schema == {
            "from": manifest["schema"]["from"],
            "to": manifest["schema"]["to"],
        }
        assert release.min_from_version == manifest.get("min_from_version")
    newest = feed.find("2026.12.0")
    oldest = feed.find("2026.10.0")
    assert newest is not None and oldest is not None
    assert newest.schema["to"] != oldest.schema["to"]


def test_feed_expires_after_45_days(published: Path) -> None:
    feed = feed_of(published)
    published_at = datetime.fromisoformat(str(feed["published"]))
    expires = datetime.fromisoformat(str(feed["expires"]))
    assert expires - published_at == timedelta(days=45)


def test_feed_signature_passes_minisign(chain: Chain, published: Path) -> None:
    minisign = require_tool("minisign")
    checked = subprocess.run(
        [minisign, "-V", "-p", str(chain.public_key), "-m", str(published / "feed.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "feed_version=3" in checked.stdout
    for version in VERSIONS:
        folder = published / "releases" / version
        bundle = folder / f"parus-kaz-budget-{version}.7z"
        checked = subprocess.run(
            [minisign, "-V", "-p", str(folder / "minisign.pub"), "-m", str(bundle)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
        assert f"version={version}" in checked.stdout


def test_publish_same_bundle_changes_nothing(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    publish_chain(chain, portal)
    before = tree_snapshot(portal)
    result = publish(
        chain.bundle("2026.11.0"), portal, chain.key(), load_trust(chain.trusted_keys)
    )
    assert result.changed is False
    assert result.feed_version == 3
    assert tree_snapshot(portal) == before


def test_publish_failure_restores_portal(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    before = tree_snapshot(portal)

    def fail_signing(*args: object, **kwargs: object) -> tuple[bytes, bytes]:
        raise PublishError("signing failed in the test")

    monkeypatch.setattr(portal_module, "sign_feed", fail_signing)
    with pytest.raises(PublishError, match="signing failed in the test"):
        publish(chain.bundle("2026.11.0"), portal, chain.key(), trusted)
    assert tree_snapshot(portal) == before
    assert sorted(p.name for p in portal.iterdir()) == [
        ".publish.lock",
        "feed.json",
        "feed.json.minisig",
        "index.html",
        "kk",
        "releases",
        "ru",
    ]
    assert sorted(p.name for p in (portal / "releases").iterdir()) == ["2026.10.0"]


def test_publish_first_failure_leaves_no_portal_files(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = tmp_path / "portal"
    portal.mkdir()

    def fail_signing(*args: object, **kwargs: object) -> tuple[bytes, bytes]:
        raise PublishError("signing failed in the test")

    monkeypatch.setattr(portal_module, "sign_feed", fail_signing)
    with pytest.raises(PublishError):
        publish(chain.bundle("2026.10.0"), portal, chain.key(), load_trust(chain.trusted_keys))
    assert [p.name for p in portal.iterdir()] == [".publish.lock"]


def test_publish_rejects_tampered_bundle(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    before = tree_snapshot(portal)
    dist = tmp_path / "tampered"
    shutil.copytree(chain.dists["2026.11.0"], dist)
    bundle = dist / "parus-kaz-budget-2026.11.0.7z"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"parus-kaz-budget-2026\.11\.0\.7z"):
        publish(bundle, portal, chain.key(), trusted)
    assert tree_snapshot(portal) == before


def test_publish_rejects_other_bytes_same_version(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    feed = read_portal_feed(portal, trusted)
    assert feed is not None
    release = feed.find("2026.10.0")
    assert release is not None
    forged = feed.with_release(type(release)(**{**release.to_json(), "sha256": "0" * 64}))
    data, signature = sign_feed(forged, chain.key(), datetime.now(UTC))
    (portal / "feed.json").write_bytes(data)
    (portal / "feed.json.minisig").write_bytes(signature)
    with pytest.raises(PublishError, match=r"2026\.10\.0 is already published with SHA-256 0{64}"):
        publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)


def test_publish_promotes_testing_to_stable(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    first = publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted, channel="testing")
    assert first.feed_version == 1
    promoted = publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    assert promoted.changed is True
    assert promoted.feed_version == 2
    feed = read_portal_feed(portal, trusted)
    assert feed is not None
    assert [(r.version, r.channel) for r in feed.releases] == [("2026.10.0", "stable")]


def test_publish_expiry_is_configurable(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    now = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    publish(
        chain.bundle("2026.10.0"),
        portal,
        chain.key(),
        load_trust(chain.trusted_keys),
        expiry_days=10,
        now=now,
    )
    feed = feed_of(portal)
    assert feed["published"] == "2026-12-04T10:00:00Z"
    assert feed["expires"] == "2026-12-14T10:00:00Z"


def test_publish_rejects_unknown_channel(chain: Chain, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="unknown channel 'beta'"):
        publish(
            chain.bundle("2026.10.0"),
            tmp_path / "portal",
            chain.key(),
            load_trust(chain.trusted_keys),
            channel="beta",
        )


def test_refresh_raises_version_and_expiry(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    start = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted, now=start)
    later = start + timedelta(days=60)
    feed = refresh_feed(portal, chain.key(), trusted, now=later)
    assert feed.feed_version == 2
    assert feed.expires == "2027-03-19T10:00:00Z"
    verified = verify_feed(
        (portal / "feed.json").read_bytes(),
        (portal / "feed.json.minisig").read_bytes(),
        trusted,
        now=later,
    )
    assert verified.feed_version == 2


def test_verify_feed_rejects_expired(chain: Chain, published: Path) -> None:
    trusted = load_trust(chain.trusted_keys)
    with pytest.raises(FeedError, match="the feed expired at"):
        verify_feed(
            (published / "feed.json").read_bytes(),
            (published / "feed.json.minisig").read_bytes(),
            trusted,
            now=datetime.now(UTC) + timedelta(days=46),
        )


def test_verify_feed_rejects_edited_feed(chain: Chain, published: Path) -> None:
    data = (published / "feed.json").read_bytes().replace(b'"stable"', b'"testing"', 1)
    with pytest.raises(FeedError, match="feed signature is not valid"):
        verify_feed(
            data, (published / "feed.json.minisig").read_bytes(), load_trust(chain.trusted_keys)
        )


def test_parse_feed_rejects_path_leaving_portal() -> None:
    path = DATA / "feed-path-leaves-portal.json"
    with pytest.raises(FeedError, match=r"\$\.releases\[0\]\.files\.bundle: expected a relative"):
        parse_feed(path.read_bytes(), path.name)


def test_plan_chain_stops_at_unreachable_release(published: Path) -> None:
    feed = parse_feed((published / "feed.json").read_bytes(), "feed.json")
    assert [r.version for r in plan_chain(feed, None, "stable")] == list(VERSIONS)
    assert [r.version for r in plan_chain(feed, "2026.11.0", "stable")] == ["2026.12.0"]
    assert plan_chain(feed, "2026.12.0", "stable") == []
    release = feed.find("2026.12.0")
    assert release is not None
    strict = feed.with_release(
        type(release)(**{**release.to_json(), "min_from_version": "2026.11.0"})
    )
    without_middle = type(strict)(
        strict.product,
        strict.feed_version,
        strict.published,
        strict.expires,
        tuple(r for r in strict.releases if r.version != "2026.11.0"),
    )
    with pytest.raises(FeedError, match=r"2026\.12\.0 needs version 2026\.11\.0 or newer"):
        plan_chain(without_middle, "2026.10.0", "stable")


class LinkParser(html.parser.HTMLParser):
    """Collects the href of every link of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "href" and value:
                self.links.append(value)


def links_of(page: str) -> list[str]:
    parser = LinkParser()
    parser.feed(page)
    return parser.links


@pytest.mark.parametrize("language", ["kk", "ru"])
def test_pages_links_resolve_from_files(published: Path, language: str) -> None:
    page = published / language / "index.html"
    dom = dump_dom(page)
    links = links_of(dom)
    other = "ru" if language == "kk" else "kk"
    assert f"../{other}/index.html" in links
    for version in VERSIONS:
        assert f"../releases/{version}/parus-kaz-budget-{version}.7z" in links
        assert f"../releases/{version}/parus-kaz-budget-{version}.7z.minisig" in links
    for link in links:
        target = (page.parent / urllib.parse.unquote(link)).resolve()
        assert target.is_file(), f"{page}: link {link} leads to no file"
    assert dom.index("2026.12.0") < dom.index("2026.11.0") < dom.index("2026.10.0")
    assert "minisign -V -p minisign.pub -m parus-kaz-budget-2026.12.0.7z" in dom


def test_pages_render_kazakh_letters(published: Path, tmp_path: Path) -> None:
    dom = dump_dom(published / "kk" / "index.html")
    assert '<html lang="kk">' in dom
    for letter in KAZAKH_LETTERS:
        assert letter in dom, f"letter {letter} is missing from the Kazakh page"
    assert KAZAKH_TITLE in dom
    assert "Жүктелген файлды қолмен тексеру" in dom
    assert "\ufffd" not in dom
    ru = dump_dom(published / "ru" / "index.html")
    assert '<html lang="ru">' in ru
    assert "Как проверить скачанный файл вручную" in ru
    assert "\ufffd" not in ru


def test_pages_work_over_http(published: Path) -> None:
    with serve(published) as (base, log):
        root = dump_dom(base + "index.html")
        assert "kk/index.html" in links_of(root)
        assert "ru/index.html" in links_of(root)
        for language in ("kk", "ru"):
            url = f"{base}{language}/index.html"
            dom = dump_dom(url)
            assert "2026.12.0" in dom
            for link in links_of(dom):
                target = urllib.parse.urljoin(url, link)
                assert target.startswith(base), target
                with NO_PROXY.open(target, timeout=10) as response:
                    assert response.status == 200, target
    # Chromium also requests /favicon.ico from the server's root on its own.
    outside = [path for path, _ in log.requests if not path.startswith("/portal/")]
    assert set(outside) <= {"/favicon.ico"}


def test_markdown_to_html_nests_lists() -> None:
    text = "# T\n\nA `x` **b** <i>\n\n## S\n\n- a\n  - b\n- c\n"
    assert markdown_to_html(text, shift=2) == (
        "<h3>T</h3>\n<p>A <code>x</code> <strong>b</strong> &lt;i&gt;</p>\n<h4>S</h4>\n"
        "<ul>\n<li>a\n<ul>\n<li>b\n</li>\n</ul>\n</li>\n<li>c\n</li>\n</ul>"
    )


def test_offline_media_holds_chain(chain: Chain, published: Path, tmp_path: Path) -> None:
    media = tmp_path / "media"
    trusted = load_trust(chain.trusted_keys)
    releases = write_offline_media(published, media, "2026.10.0", chain.trusted_keys, trusted)
    assert [r.version for r in releases] == ["2026.11.0", "2026.12.0"]
    assert (media / "feed.json").read_bytes() == (published / "feed.json").read_bytes()
    assert (media / "trusted-keys.json").read_bytes() == chain.trusted_keys.read_bytes()
    assert sorted(p.name for p in (media / "releases").iterdir()) == ["2026.11.0", "2026.12.0"]
    kk = (media / "README.kk.txt").read_text(encoding="utf-8")
    ru = (media / "README.ru.txt").read_text(encoding="utf-8")
    assert "2026.10.0 нұсқасынан" in kk
    assert "parus-release update --portal" in kk
    assert "parus-release update --portal" in ru
    assert "inv update" not in kk + ru
    assert "от версии 2026.10.0 до" in ru
    assert "сам создаёт отсутствующий файл SQLite" in ru
    assert "SQLite файлы жоқ болса, parus-release update оны өзі жасайды" in kk
    assert "--trusted-keys trusted-keys.json" in ru
    assert [p.name for p in tmp_path.iterdir()] == ["media"]


def test_offline_media_rejects_nonempty_folder(
    chain: Chain, published: Path, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "old.txt").write_text("old\n", encoding="utf-8")
    with pytest.raises(PublishError, match="already exists and is not empty"):
        write_offline_media(
            published, media, "2026.10.0", chain.trusted_keys, load_trust(chain.trusted_keys)
        )
    assert [p.name for p in media.iterdir()] == ["old.txt"]


def test_offline_media_rejects_empty_chain(chain: Chain, published: Path, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"newer than 2026\.12\.0"):
        write_offline_media(
            published,
            tmp_path / "media",
            "2026.12.0",
            chain.trusted_keys,
            load_trust(chain.trusted_keys),
        )
    assert not (tmp_path / "media").exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "true"}
    env.pop("PIPELINE_SIGNING_KEY", None)
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_cli_publish_refresh_and_media(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    keys = ["--key", str(chain.secret_key), "--trusted-keys", str(chain.trusted_keys)]
    for version in VERSIONS:
        published = run_cli(
            "publish", str(chain.bundle(version)), "--portal", str(portal), *keys, cwd=tmp_path
        )
        assert published.returncode == 0, published.stderr
        assert f"published {version} on stable to {portal}" in published.stdout
    again = run_cli(
        "publish", str(chain.bundle("2026.12.0")), "--portal", str(portal), *keys, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "2026.12.0 is already published on stable; nothing changed" in again.stdout

    refreshed = run_cli("publish.refresh", "--portal", str(portal), *keys, cwd=tmp_path)
    assert refreshed.returncode == 0, refreshed.stderr
    assert "feed version 4" in refreshed.stdout

    media = tmp_path / "media"
    written = run_cli(
        "publish.offline-media",
        str(media),
        "--from",
        "2026.10.0",
        "--portal",
        str(portal),
        "--trusted-keys",
        str(chain.trusted_keys),
        cwd=tmp_path,
    )
    assert written.returncode == 0, written.stderr
    assert "2 releases, 2026.11.0, 2026.12.0" in written.stdout
    assert (media / "README.kk.txt").is_file()
    assert (media / "README.ru.txt").is_file()


def test_cli_publish_max_ratio(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    keys = ["--key", str(chain.secret_key), "--trusted-keys", str(chain.trusted_keys)]
    bundle = str(chain.bundle("2026.10.0"))

    low = run_cli(
        "publish", bundle, "--portal", str(portal), *keys, "--max-ratio", "1", cwd=tmp_path
    )
    published = run_cli("publish", bundle, "--portal", str(portal), *keys, cwd=tmp_path)

    assert low.returncode == 1
    assert "is above the limit 1;" in low.stderr
    assert published.returncode == 0, published.stderr


def test_cli_force_resign_max_ratio(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    publish_chain(chain, portal)
    sign_with_untrusted_key(portal, other_key(tmp_path))
    keys = ["--key", str(chain.secret_key), "--trusted-keys", str(chain.trusted_keys)]
    refresh = ["publish.refresh", "--portal", str(portal), *keys, "--force-resign"]

    low = run_cli(*refresh, "--max-ratio", "1", cwd=tmp_path)
    refreshed = run_cli(*refresh, cwd=tmp_path)

    assert low.returncode == 1
    assert "is above the limit 1;" in low.stderr
    assert refreshed.returncode == 0, refreshed.stderr
    assert "feed version 4" in refreshed.stdout


def test_cli_publish_needs_trusted_keys(chain: Chain, tmp_path: Path) -> None:
    result = run_cli(
        "publish",
        str(chain.bundle("2026.10.0")),
        "--portal",
        str(tmp_path / "portal"),
        "--key",
        str(chain.secret_key),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "publish needs --portal DIR and --trusted-keys FILE" in result.stderr
    assert not (tmp_path / "portal").exists()


def other_key(tmp_path: Path) -> signing.SecretKey:
    """Return a new key that the chain's trusted keys do not list."""
    signing.generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    return signing.load_secret_key(tmp_path / "other.key")


def test_publish_rejects_untrusted_signing_key(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    untrusted = other_key(tmp_path)
    expected = r"cannot sign the feed: key ID \w+ is not a trusted key"
    with pytest.raises(PublishError, match=expected):
        publish(chain.bundle("2026.10.0"), portal, untrusted, load_trust(chain.trusted_keys))
    assert not portal.exists()


def test_refresh_rejects_untrusted_signing_key(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    before = tree_snapshot(portal)
    with pytest.raises(PublishError, match="sign with a key that the trusted-keys file lists"):
        refresh_feed(portal, other_key(tmp_path), trusted)
    assert tree_snapshot(portal) == before


def sign_with_untrusted_key(portal: Path, key: signing.SecretKey) -> None:
    """Re-sign the portal's feed with `key`, as an earlier publish with a wrong key did."""
    feed = parse_feed((portal / "feed.json").read_bytes(), "feed.json")
    data, signature = sign_feed(feed, key, datetime.now(UTC))
    (portal / "feed.json").write_bytes(data)
    (portal / "feed.json.minisig").write_bytes(signature)


def test_force_resign_repairs_untrusted_feed(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    publish_chain(chain, portal)
    trusted = load_trust(chain.trusted_keys)
    sign_with_untrusted_key(portal, other_key(tmp_path))
    with pytest.raises(FeedError, match="--force-resign"):
        refresh_feed(portal, chain.key(), trusted)
    feed = refresh_feed(portal, chain.key(), trusted, force_resign=True)
    assert feed.feed_version == 4
    verified = read_portal_feed(portal, trusted)
    assert verified is not None
    assert verified.feed_version == 4
    assert [r.version for r in verified.sorted_releases()] == list(VERSIONS)


def test_force_resign_rejects_tampered_bundle(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    publish_chain(chain, portal)
    sign_with_untrusted_key(portal, other_key(tmp_path))
    bundle = portal / "releases/2026.11.0/parus-kaz-budget-2026.11.0.7z"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    before = tree_snapshot(portal)
    with pytest.raises(VerificationError, match=r"parus-kaz-budget-2026\.11\.0\.7z"):
        refresh_feed(portal, chain.key(), load_trust(chain.trusted_keys), force_resign=True)
    assert tree_snapshot(portal) == before


def test_refresh_after_restore_skips_issued_versions(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    publish(chain.bundle("2026.11.0"), portal, chain.key(), trusted)
    backup = tmp_path / "backup"
    shutil.copytree(portal, backup)
    publish(chain.bundle("2026.12.0"), portal, chain.key(), trusted)
    shutil.rmtree(portal)
    shutil.copytree(backup, portal)
    assert feed_of(portal)["feed_version"] == 2
    feed = refresh_feed(portal, chain.key(), trusted)
    assert feed.feed_version == 4
    assert feed_version_path(portal).read_text(encoding="utf-8") == "4\n"
    assert feed_version_path(portal).parent == tmp_path


def test_publish_rejects_damaged_version_record(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    before = tree_snapshot(portal)
    feed_version_path(portal).write_text("seven\n", encoding="utf-8")
    with pytest.raises(PublishError, match=r"portal\.feed-version: expected the highest feed"):
        publish(chain.bundle("2026.11.0"), portal, chain.key(), trusted)
    assert tree_snapshot(portal) == before


def test_publish_rejects_demotion_without_force(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    before = tree_snapshot(portal)
    with pytest.raises(PublishError, match=r"2026\.10\.0 is published on stable.*Pass --force"):
        publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted, channel="testing")
    assert tree_snapshot(portal) == before
    demoted = publish(
        chain.bundle("2026.10.0"), portal, chain.key(), trusted, channel="testing", force=True
    )
    assert demoted.changed is True
    assert demoted.channel == "testing"


def cli_publish(chain: Chain, version: str, portal: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CI": "true"}
    command = [CLI, "publish", str(chain.bundle(version)), "--portal", str(portal)]
    command += ["--key", str(chain.secret_key), "--trusted-keys", str(chain.trusted_keys)]
    return subprocess.Popen(
        [*command, *extra],
        cwd=portal.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_publishes_keep_both(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    processes = [cli_publish(chain, version, portal) for version in VERSIONS[1:]]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    feed = read_portal_feed(portal, trusted)
    assert feed is not None
    assert [r.version for r in feed.sorted_releases()] == list(VERSIONS)
    assert feed.feed_version == 3


def test_publish_waits_for_lock_then_fails(chain: Chain, tmp_path: Path) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(chain.bundle("2026.10.0"), portal, chain.key(), trusted)
    before = tree_snapshot(portal)
    with portal_lock(portal, 1.0, exclusive=True):
        waiting = cli_publish(chain, "2026.11.0", portal, "--lock-timeout", "1")
        _, stderr = waiting.communicate(timeout=300)
    assert waiting.returncode == 1
    assert f"{portal / LOCK_NAME}: another publish of this portal is still running" in stderr
    assert "after 1 seconds" in stderr
    assert tree_snapshot(portal) == before


def test_offline_media_rejects_expiring_feed(
    chain: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    portal = tmp_path / "portal"
    trusted = load_trust(chain.trusted_keys)
    publish(
        chain.bundle("2026.10.0"),
        portal,
        chain.key(),
        trusted,
        now=datetime.now(UTC) - timedelta(days=20),
    )
    media = tmp_path / "media"
    with pytest.raises(PublishError) as caught:
        write_offline_media(portal, media, None, chain.trusted_keys, trusted)
    message = str(caught.value)
    assert "must stay valid for at least 30 days" in message
    assert f"`inv publish.refresh --portal {portal} --key FILE --trusted-keys FILE`" in message
    assert not media.exists()
    releases = write_offline_media(
        portal, media, None, chain.trusted_keys, trusted, min_valid_days=10
    )
    assert [r.version for r in releases] == ["2026.10.0"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("clients reject the media after that" in text for text in warnings)


def test_offline_media_rejects_url(chain: Chain, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="URLs are not supported here"):
        write_offline_media(
            Path("http://127.0.0.1:8000/portal"),
            tmp_path / "media",
            None,
            chain.trusted_keys,
            load_trust(chain.trusted_keys),
        )


def test_cli_publish_offline_media_syntax(chain: Chain, published: Path, tmp_path: Path) -> None:
    media = tmp_path / "media"
    keys = ["--trusted-keys", str(chain.trusted_keys)]
    written = run_cli(
        "publish",
        "--offline-media",
        str(media),
        "--from",
        "2026.11.0",
        "--portal",
        str(published),
        *keys,
        cwd=tmp_path,
    )
    assert written.returncode == 0, written.stderr
    assert "1 release, 2026.12.0; the feed expires" in written.stdout
    assert sorted(p.name for p in (media / "releases").iterdir()) == ["2026.12.0"]

    url = run_cli(
        "publish.offline-media",
        str(tmp_path / "other"),
        "--portal",
        "http://127.0.0.1:8000/portal/",
        *keys,
        cwd=tmp_path,
    )
    assert url.returncode == 1
    assert "--portal http://127.0.0.1:8000/portal/: URLs are not supported here" in url.stderr


def test_expired_feed_error_names_real_command(chain: Chain, published: Path) -> None:
    with pytest.raises(FeedError) as caught:
        verify_feed(
            (published / "feed.json").read_bytes(),
            (published / "feed.json.minisig").read_bytes(),
            load_trust(chain.trusted_keys),
            now=datetime.now(UTC) + timedelta(days=46),
        )
    assert "`inv publish.refresh --portal DIR --key FILE --trusted-keys FILE`" in str(caught.value)
    assert "inv publish --refresh" not in str(caught.value)


@pytest.mark.parametrize("language", ["kk", "ru"])
def test_pages_screenshot_is_not_blank(published: Path, tmp_path: Path, language: str) -> None:
    png = screenshot(published / language / "index.html", tmp_path / f"{language}.png")
    colours = png_colours(png)
    assert len(colours) > 1, f"{png} shows one colour only: {colours}"


def test_escaped_notes_render_without_backslashes() -> None:
    from pipeline.notes import escape_markdown
    from pipeline.portal_pages import markdown_to_html

    title = escape_markdown("Отчёт <img src=x> a_b & x *не жирный*")
    rendered = markdown_to_html(f"- **report\\_1** — {title}")
    assert "\\" not in rendered
    assert "<strong>report_1</strong>" in rendered
    assert "&lt;img src=x&gt; a_b &amp; x *не жирный*" in rendered
    assert "<img" not in rendered
