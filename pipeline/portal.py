"""Publish verified bundles to a static update portal, and write offline media.

A portal is a folder that any static web server can serve::

    index.html                 bilingual start page
    kk/index.html, ru/index.html
    feed.json, feed.json.minisig
    releases/<version>/<product>-<version>.7z (+ .minisig)
    releases/<version>/manifest.json (+ .minisig)
    releases/<version>/minisign.pub     public key that signed the release
    releases/<version>/notes/kk.md, notes/ru.md (and any other notes file)
    releases/<version>/provenance.json (+ .minisig), when the release wrote them

`publish` checks that the signing key is trusted and valid now, and verifies
the bundle against the trusted keys, before it changes anything.
Publishing a bundle that the feed already lists with the same SHA-256 and
channel changes nothing. A publish writes through a transaction: when any
step fails, every file it replaced is restored and every file it added is
removed, so the portal stays as it was.

Publish and refresh take an exclusive `fcntl.flock` on `.publish.lock` in the
portal folder, and writing offline media takes a shared one, so two publishes
never overwrite each other's feed. The highest feed version ever signed is
kept outside the portal folder in `<portal>.feed-version` beside it, so a
portal restored from a backup never reissues a version that clients accepted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import archive
from pipeline.config import DEFAULT_MAX_RATIO
from pipeline.errors import PipelineError, SignatureError
from pipeline.fsutil import atomic_write_bytes, atomic_write_text
from pipeline.keys import format_key_id
from pipeline.manifest import MANIFEST_NAME, parse_manifest
from pipeline.notes import PRODUCT_TITLE
from pipeline.portal_feed import (
    CHANNELS,
    DEFAULT_EXPIRY_DAYS,
    FEED_NAME,
    FEED_SIGNATURE_NAME,
    PUBLIC_KEY_START,
    Feed,
    FeedError,
    Release,
    format_time,
    parse_feed,
    parse_time,
    plan_chain,
    sign_feed,
    verify_feed,
    verify_trusted_bundle,
)
from pipeline.portal_pages import LANGUAGES, render_language_page, render_root_page
from pipeline.signing import SecretKey, signature_path_for
from pipeline.trust import (
    TrustedKey,
    check_key_usable,
    find_trusted_key,
    trusted_keys_document,
)
from pipeline.verify import MANIFEST_SIGNATURE_NAME, MAX_MANIFEST_BYTES

logger = logging.getLogger(__name__)

RELEASES_FOLDER = "releases"
PUBLIC_KEY_NAME = "minisign.pub"
TRUSTED_KEYS_NAME = "trusted-keys.json"
# Files that `inv release` may write beside the bundle; published when present.
OPTIONAL_FILES = {
    "provenance": "provenance.json",
    "provenance_signature": "provenance.json.minisig",
}
# NOTE: an estimate far above the size of generated Markdown notes; it bounds
# what a notes file may take in memory and in the feed.
MAX_NOTES_BYTES = 4 * 1024 * 1024
LOCK_NAME = ".publish.lock"
# Seconds a publish waits for another publish of the same portal to finish.
DEFAULT_LOCK_TIMEOUT = 120.0
# Days the feed on offline media must stay valid at least, by default.
DEFAULT_MIN_VALID_DAYS = 30


class PublishError(PipelineError):
    """A bundle cannot be published, or offline media cannot be written."""


@dataclass(frozen=True)
class PublishResult:
    """Outcome of a publish: the release, the new feed version, and whether anything changed."""

    version: str
    channel: str
    feed_version: int
    changed: bool
    portal: Path


def publish(
    bundle: Path,
    portal: Path,
    key: SecretKey,
    trusted: Sequence[TrustedKey],
    *,
    channel: str = "stable",
    expiry_days: int = DEFAULT_EXPIRY_DAYS,
    force: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    now: datetime | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> PublishResult:
    """Verify `bundle` and add it with its signatures, manifest and notes to the portal folder.

    The bundle's signature is `<bundle>.minisig` and the manifest's signature
    `manifest.json.minisig` beside the bundle, as `inv release` writes them.
    The feed is re-signed with `key` with a feed version one higher than any
    issued before and an expiry `expiry_days` days from now. Moving a stable
    release back to testing needs `force`. `max_ratio` is verification's
    limit on the unpacked size divided by the archive size.

    NOTE: an encrypted bundle (`inv release --encrypt`) fails verification
    here, because publishing takes no password and clients would need one.

    Raises:
        VerificationError: the bundle failed verification.
        FeedError: the portal's current feed does not verify.
        PublishError: `key` is not a trusted key valid now, or the version is
            already published with other bytes. Also when the release would
            move from stable to testing without `force`, the lock timed out
            after `lock_timeout` seconds, an option is invalid, or writing
            failed (the portal is then unchanged).
    """
    _check_options(channel, expiry_days)
    moment = now or datetime.now(UTC)
    check_signing_key(key, trusted, moment)
    manifest_signature = bundle.parent / MANIFEST_SIGNATURE_NAME
    if not manifest_signature.is_file():
        raise PublishError(
            f"{manifest_signature} not found; publish the bundle from the folder that"
            " `inv release` wrote, which contains the manifest signature"
        )
    verified = verify_trusted_bundle(
        bundle, trusted, manifest_signature=manifest_signature, max_ratio=max_ratio
    )
    manifest_data = archive.read_file(bundle, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    manifest = parse_manifest(manifest_data, f"{bundle}:{MANIFEST_NAME}")
    digest = _sha256(bundle)
    with portal_lock(portal, lock_timeout, exclusive=True):
        current = read_portal_feed(portal, trusted, allow_expired=True)
        if current is not None and current.product != manifest["product"]:
            raise PublishError(
                f"{bundle} is a bundle of {manifest['product']}, but the portal {portal}"
                f" publishes {current.product}"
            )
        existing = current.find(verified.version) if current else None
        if existing is not None and existing.sha256 != digest:
            raise PublishError(
                f"{portal}: version {verified.version} is already published with SHA-256"
                f" {existing.sha256}, but {bundle} has {digest}; a published version never"
                " changes, so release a new version"
            )
        if current is not None and existing is not None and existing.channel == channel:
            logger.info(
                "%s %s is already published on %s; nothing changed",
                portal,
                verified.version,
                channel,
            )
            return PublishResult(verified.version, channel, current.feed_version, False, portal)
        if existing is not None and existing.channel == "stable" and not force:
            raise PublishError(
                f"{portal}: {verified.version} is published on stable; moving it to"
                f" {channel} would withdraw it from stable clients. Pass --force to do so"
            )

        with _transaction(portal) as transaction:
            if existing is None:
                staged = _stage_release(
                    transaction, bundle, manifest, manifest_data, verified.key_id, trusted, digest
                )
                release = replace(staged, channel=channel, published=format_time(moment))
            else:
                # The same bytes moved to another channel, such as testing to stable.
                release = replace(existing, channel=channel)
            base = current or Feed(manifest["product"], 0, "", "")
            feed = replace(
                base.with_release(release),
                feed_version=_next_feed_version(portal, base.feed_version),
                published=format_time(moment),
                expires=format_time(moment + timedelta(days=expiry_days)),
            )
            _write_feed_and_pages(transaction, feed, key, moment)
    logger.info(
        "published %s on %s to %s: feed version %d",
        release.version,
        channel,
        portal,
        feed.feed_version,
    )
    return PublishResult(release.version, channel, feed.feed_version, True, portal)


def refresh_feed(
    portal: Path,
    key: SecretKey,
    trusted: Sequence[TrustedKey],
    *,
    expiry_days: int = DEFAULT_EXPIRY_DAYS,
    force_resign: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    now: datetime | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Feed:
    """Re-sign the portal's feed with a higher feed version and a new expiry; return it.

    With `force_resign`, a feed whose signature does not verify with `trusted`
    is re-signed all the same, as when a key that is no longer trusted signed
    it. Before that, every bundle it lists must verify with `trusted`, with
    `max_ratio` as the compression-ratio limit, and match the size and
    SHA-256 that the feed lists.

    Raises:
        FeedError: the portal has no feed, or it does not verify (without
            `force_resign`).
        VerificationError: with `force_resign`, a listed bundle failed verification.
        PublishError: `key` is not a trusted key valid now, or another publish
            holds the lock past `lock_timeout`.
    """
    _check_options("stable", expiry_days)
    moment = now or datetime.now(UTC)
    check_signing_key(key, trusted, moment)
    with portal_lock(portal, lock_timeout, exclusive=True):
        try:
            current = read_portal_feed(portal, trusted, allow_expired=True)
        except FeedError as exc:
            if not force_resign:
                raise FeedError(
                    f"{exc}. If a key that is no longer trusted signed the feed, re-sign it"
                    " with `inv publish.refresh --portal DIR --key FILE --trusted-keys FILE"
                    " --force-resign`, which verifies every listed bundle first"
                ) from exc
            current = _read_feed_checking_bundles(portal, trusted, max_ratio)
        if current is None:
            raise FeedError(f"{portal} has no {FEED_NAME}; publish a bundle first")
        feed = replace(
            current,
            feed_version=_next_feed_version(portal, current.feed_version),
            published=format_time(moment),
            expires=format_time(moment + timedelta(days=expiry_days)),
        )
        with _transaction(portal) as transaction:
            _write_feed_and_pages(transaction, feed, key, moment)
    logger.info(
        "refreshed %s: feed version %d, expires %s", portal, feed.feed_version, feed.expires
    )
    return feed


def check_signing_key(key: SecretKey, trusted: Sequence[TrustedKey], moment: datetime) -> None:
    """Raise PublishError unless `key` is among `trusted` and usable at `moment`.

    A feed signed by any other key is rejected by every client that reads
    the same trusted keys, so publishing with it would break the portal.
    """
    key_id = format_key_id(key.key_id)
    try:
        check_key_usable(find_trusted_key(trusted, key_id), moment)
    except SignatureError as exc:
        raise PublishError(
            f"the signing key {key_id} cannot sign the feed: {exc}. Clients would reject"
            " the feed; sign with a key that the trusted-keys file lists as valid now"
        ) from exc


def feed_version_path(portal: Path) -> Path:
    """Return the file beside the portal folder that keeps the highest feed version issued."""
    folder = portal.resolve()
    return folder.with_name(folder.name + ".feed-version")


def _next_feed_version(portal: Path, current: int) -> int:
    """Return a feed version above `current` and above any issued before; record it.

    The record is written before the feed and is not rolled back, because a
    skipped version number does no harm but a reused one makes clients
    reject the feed.
    """
    record = feed_version_path(portal)
    issued = 0
    if record.exists():
        text = record.read_text(encoding="utf-8").strip()
        if not text.isdigit():
            raise PublishError(
                f"{record}: expected the highest feed version issued as a number, found"
                f" {text[:40]!r}; write the highest feed_version ever published into it"
            )
        issued = int(text)
    version = max(current, issued) + 1
    atomic_write_text(record, f"{version}\n")
    if issued > current:
        logger.info(
            "%s lists feed version %d but %d was issued before; signing %d",
            portal,
            current,
            issued,
            version,
        )
    return version


@contextmanager
def portal_lock(portal: Path, timeout: float, *, exclusive: bool) -> Iterator[None]:
    """Hold `fcntl.flock` on the portal's lock file, waiting up to `timeout` seconds.

    Raises:
        PublishError: another process held the lock for longer than `timeout`.
    """
    portal.mkdir(parents=True, exist_ok=True)
    path = portal / LOCK_NAME
    operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    deadline = time.monotonic() + timeout
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PublishError(
                        f"{path}: another publish of this portal is still running after"
                        f" {timeout:g} seconds; wait for it to finish and run the command again"
                    ) from None
                time.sleep(0.1)
        logger.debug("locked %s", path)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_feed_checking_bundles(
    portal: Path, trusted: Sequence[TrustedKey], max_ratio: float
) -> Feed:
    """Parse a feed whose signature does not verify, and verify every bundle it lists."""
    try:
        data = (portal / FEED_NAME).read_bytes()
    except OSError as exc:
        raise FeedError(f"cannot read the feed of {portal}: {exc}") from exc
    feed = parse_feed(data, str(portal / FEED_NAME))
    for release in feed.releases:
        bundle = portal / release.files["bundle"]
        verify_trusted_bundle(
            bundle,
            trusted,
            signature=portal / release.files["signature"],
            manifest_signature=portal / release.files["manifest_signature"],
            max_ratio=max_ratio,
        )
        size, digest = bundle.stat().st_size, _sha256(bundle)
        if (size, digest) != (release.size, release.sha256):
            raise FeedError(
                f"{bundle}: the feed lists {release.size} bytes with SHA-256 {release.sha256},"
                f" found {size} bytes with {digest}; the feed was not re-signed"
            )
    logger.info("verified the %d bundles of %s before re-signing", len(feed.releases), portal)
    return feed


def read_portal_feed(
    portal: Path,
    trusted: Sequence[TrustedKey],
    *,
    allow_expired: bool = False,
    now: datetime | None = None,
) -> Feed | None:
    """Read and verify the feed of a portal folder; None when the portal has no feed yet.

    Raises:
        FeedError: the feed or its signature is missing, invalid, or (unless
            `allow_expired`) expired.
    """
    feed_path = portal / FEED_NAME
    signature_path = portal / FEED_SIGNATURE_NAME
    if not feed_path.exists() and not signature_path.exists():
        return None
    try:
        data, signature = feed_path.read_bytes(), signature_path.read_bytes()
    except OSError as exc:
        raise FeedError(f"cannot read the feed of {portal}: {exc}") from exc
    if allow_expired:
        # The publisher may re-sign an expired feed, so only the signature counts here.
        now = datetime.fromtimestamp(0, UTC)
    return verify_feed(data, signature, trusted, name=str(feed_path), now=now)


def _check_options(channel: str, expiry_days: int) -> None:
    if channel not in CHANNELS:
        raise PublishError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    if expiry_days < 1:
        raise PublishError(f"expiry: expected at least 1 day, found {expiry_days}")


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _stage_release(
    transaction: _Transaction,
    bundle: Path,
    manifest: dict[str, Any],
    manifest_data: bytes,
    key_id: str,
    trusted: Sequence[TrustedKey],
    digest: str,
) -> Release:
    """Copy a verified bundle's files into a new release folder and describe it."""
    version = manifest["version"]
    folder = f"{RELEASES_FOLDER}/{version}"
    staged = transaction.new_folder()
    files = {
        "bundle": bundle.name,
        "signature": signature_path_for(bundle).name,
        "manifest": MANIFEST_NAME,
        "manifest_signature": MANIFEST_SIGNATURE_NAME,
        "public_key": PUBLIC_KEY_NAME,
    }

    shutil.copyfile(bundle, staged / files["bundle"])
    shutil.copyfile(signature_path_for(bundle), staged / files["signature"])
    atomic_write_bytes(staged / MANIFEST_NAME, manifest_data)
    shutil.copyfile(bundle.parent / MANIFEST_SIGNATURE_NAME, staged / MANIFEST_SIGNATURE_NAME)
    for key, name in OPTIONAL_FILES.items():
        if (bundle.parent / name).is_file():
            shutil.copyfile(bundle.parent / name, staged / name)
            files[key] = name

    signer = find_trusted_key(trusted, key_id)
    atomic_write_text(staged / PUBLIC_KEY_NAME, signer.public.to_minisign())

    notes: dict[str, str] = {}
    for entry in manifest["files"]:
        path: str = entry["path"]
        if not path.startswith("notes/"):
            continue
        data = _read_listed_file(bundle, entry)
        atomic_write_bytes(staged / path, data)
        files[path] = path
        language = path.removeprefix("notes/").removesuffix(".md")
        if language in LANGUAGES and path.endswith(".md"):
            try:
                notes[language] = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PublishError(
                    f"{bundle}:{path}: expected UTF-8 release notes, found byte"
                    f" 0x{data[exc.start]:02x} at offset {exc.start}"
                ) from None
    missing = [language for language in LANGUAGES if language not in notes]
    if missing:
        raise PublishError(
            f"{bundle}: the bundle has no release notes in {', '.join(missing)};"
            " expected notes/kk.md and notes/ru.md"
        )
    transaction.move_folder(staged, transaction.root / folder)

    # Older manifests have no min_from_version; some name it under `applicability`.
    applicability = manifest.get("applicability") or {}
    min_from_version = manifest.get("min_from_version", applicability.get("min_from_version"))
    schema = manifest.get("schema") or {}
    return Release(
        version=version,
        channel="stable",
        published="",
        size=bundle.stat().st_size,
        sha256=digest,
        min_from_version=min_from_version,
        schema={
            "from": applicability.get("schema_from", schema.get("from")),
            "to": applicability.get("schema_to", schema.get("to")),
        },
        files={name: f"{folder}/{path}" for name, path in files.items()},
        notes=notes,
    )


def _read_listed_file(bundle: Path, entry: dict[str, Any]) -> bytes:
    """Read a file of a verified bundle and check it against its manifest entry again."""
    data = archive.read_file(bundle, entry["path"], MAX_NOTES_BYTES)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise PublishError(
            f"{bundle}:{entry['path']}: SHA-256 differs from the manifest; the bundle changed"
            " after verification"
        )
    return data


def _write_feed_and_pages(
    transaction: _Transaction, feed: Feed, key: SecretKey, moment: datetime
) -> None:
    """Write the pages first and the feed last, so a client never sees a feed whose files
    are not in place."""
    transaction.write(Path("index.html"), render_root_page(feed).encode("utf-8"))
    for language in LANGUAGES:
        page = render_language_page(feed, language).encode("utf-8")
        transaction.write(Path(language) / "index.html", page)
    data, signature = sign_feed(feed, key, moment)
    # NOTE: the feed and its signature are two files. A client that reads
    # between the two replacements gets a signature that does not verify, so
    # it rejects the feed and can retry. It never accepts a wrong feed.
    transaction.write(Path(FEED_NAME), data)
    transaction.write(Path(FEED_SIGNATURE_NAME), signature)


class _Transaction:
    """Changes to a folder that are undone together when the block raises."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=".publish-", dir=root))
        self.undo: list[tuple[Path, Path | None]] = []
        self.count = 0

    def new_folder(self) -> Path:
        """Return a new empty folder inside the work folder, on the portal's file system."""
        self.count += 1
        folder = self.work / f"new-{self.count}"
        folder.mkdir()
        return folder

    def _set_aside(self, target: Path) -> None:
        self.count += 1
        backup: Path | None = None
        if target.exists():
            backup = self.work / f"old-{self.count}"
            os.replace(target, backup)
        self.undo.append((target, backup))

    def write(self, relative: Path, data: bytes) -> None:
        """Replace a file below the root with `data`, keeping the old one for rollback."""
        target = self.root / relative
        if target.is_file() and target.read_bytes() == data:
            return
        self.count += 1
        backup: Path | None = None
        if target.exists():
            backup = self.work / f"old-{self.count}"
            shutil.copy2(target, backup)
        self.undo.append((target, backup))
        atomic_write_bytes(target, data)

    def move_folder(self, source: Path, target: Path) -> None:
        """Move a staged folder into place; a folder already there is kept for rollback."""
        self._set_aside(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    def rollback(self) -> None:
        for target, backup in reversed(self.undo):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            if backup is not None:
                os.replace(backup, target)
        for folder in (self.root / RELEASES_FOLDER, *(self.root / code for code in LANGUAGES)):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


@contextmanager
def _transaction(root: Path) -> Iterator[_Transaction]:
    transaction = _Transaction(root)
    try:
        yield transaction
    except BaseException:
        logger.info(
            "publish to %s failed; restoring %d changed paths", root, len(transaction.undo)
        )
        transaction.rollback()
        raise
    finally:
        shutil.rmtree(transaction.work, ignore_errors=True)


def write_offline_media(
    portal: Path,
    media: Path,
    from_version: str | None,
    trusted_keys: Path,
    trusted: Sequence[TrustedKey],
    *,
    channel: str = "stable",
    min_valid_days: int = DEFAULT_MIN_VALID_DAYS,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    now: datetime | None = None,
) -> list[Release]:
    """Write a self-contained folder that updates a database from `from_version` without network.

    The folder holds the portal's signed feed, every release of the chain
    from `from_version` (None: from an empty database) to the newest on
    `channel`, the trusted keys and instructions in kk and ru. Returns the
    releases of the chain. A feed that expires within `DEFAULT_MIN_VALID_DAYS`
    is logged as a warning.

    Raises:
        FeedError: the portal's feed does not verify or has expired.
        PublishError: `portal` is a URL or has no feed, the feed expires within
            `min_valid_days`, `media` exists and is not empty, there is
            nothing newer than `from_version`, or a release file on the
            portal is damaged.
    """
    check_portal_folder(str(portal))
    if not (portal / FEED_NAME).is_file():
        raise PublishError(f"{portal} has no {FEED_NAME}; publish a bundle first")
    moment = now or datetime.now(UTC)
    with portal_lock(portal, lock_timeout, exclusive=False):
        feed = read_portal_feed(portal, trusted, now=moment)
        if feed is None:
            raise PublishError(f"{portal} has no {FEED_NAME}; publish a bundle first")
        _check_media_expiry(portal, feed, moment, min_valid_days)
        chain = plan_chain(feed, from_version, channel)
        if not chain:
            raise PublishError(
                f"{portal}: no release on channel {channel} is newer than {from_version};"
                " the offline media would be empty"
            )
        if media.exists() and (not media.is_dir() or any(media.iterdir())):
            raise PublishError(f"{media} already exists and is not empty; choose a new folder")
        _write_media(portal, media, feed, chain, from_version, trusted_keys, trusted, channel)
    logger.info("wrote offline media %s: %s", media, ", ".join(r.version for r in chain))
    return chain


def check_portal_folder(portal: str) -> Path:
    """Return `portal` as a folder path; raise PublishError for a URL.

    Publishing and writing media read and write the portal's files directly,
    so they need the folder that the web server serves.
    """
    scheme = urllib.parse.urlsplit(portal).scheme.lower()
    if scheme in ("http", "https", "ftp", "file") or portal.lower().startswith(
        ("http:/", "https:/", "file:/")
    ):
        raise PublishError(
            f"--portal {portal}: URLs are not supported here; pass the portal folder that the"
            " web server serves"
        )
    return Path(portal)


def _check_media_expiry(portal: Path, feed: Feed, moment: datetime, min_valid_days: int) -> None:
    expires = parse_time(feed.expires, f"{portal / FEED_NAME} $.expires")
    days_left = (expires - moment) / timedelta(days=1)
    refresh = (
        f"`inv publish.refresh --portal {portal} --key FILE --trusted-keys FILE` first,"
        " then write the media again"
    )
    if days_left < min_valid_days:
        raise PublishError(
            f"{portal / FEED_NAME} expires at {feed.expires}, in {days_left:.1f} days, but the"
            f" offline media must stay valid for at least {min_valid_days} days; run {refresh}"
        )
    if days_left < DEFAULT_MIN_VALID_DAYS:
        logger.warning(
            "%s expires at %s, in %.1f days; clients reject the media after that. Run %s",
            portal / FEED_NAME,
            feed.expires,
            days_left,
            refresh,
        )


def _write_media(
    portal: Path,
    media: Path,
    feed: Feed,
    chain: Sequence[Release],
    from_version: str | None,
    trusted_keys: Path,
    trusted: Sequence[TrustedKey],
    channel: str,
) -> None:
    media.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{media.name}-", dir=media.parent))
    try:
        for name in (FEED_NAME, FEED_SIGNATURE_NAME):
            shutil.copyfile(portal / name, work / name)
        for release in chain:
            _copy_release(portal, work, release)
        keys_text = trusted_keys.read_bytes()
        if keys_text.startswith(PUBLIC_KEY_START):
            # A bare public key becomes a trusted-keys file that the client reads alike.
            keys_text = (json.dumps(trusted_keys_document(trusted), indent=2) + "\n").encode()
        atomic_write_bytes(work / TRUSTED_KEYS_NAME, keys_text)
        for language in LANGUAGES:
            text = media_instructions(language, feed, chain, from_version, channel)
            atomic_write_text(work / f"README.{language}.txt", text)
        if media.exists():
            media.rmdir()
        os.replace(work, media)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _copy_release(portal: Path, media: Path, release: Release) -> None:
    for path in release.files.values():
        target = media / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(portal / path, target)
    bundle = media / release.files["bundle"]
    size, digest = bundle.stat().st_size, _sha256(bundle)
    if (size, digest) != (release.size, release.sha256):
        raise PublishError(
            f"{portal / release.files['bundle']}: expected {release.size} bytes with SHA-256"
            f" {release.sha256} as the feed lists, found {size} bytes with {digest}"
        )


# Start of the media's chain in the instructions: an installed version, or an empty database.
_START = {
    "kk": {False: "{version} нұсқасынан", True: "бос дерекқордан"},
    "ru": {False: "от версии {version}", True: "от пустой базы данных"},
}
_INSTRUCTIONS = {
    "kk": """{product}: жаңартулар тасымалдағышы

Бұл қалтада желісіз орнатуға арналған жаңартулар бар: {start}
{newest} нұсқасына дейін ({channel} арнасы). Қалтадағы шығарылымдар: {versions}.
Жаңартулар тізімі (feed.json) {expires} дейін жарамды.

Дерекқорды жаңарту:

    parus-release update --portal ҚАЛТА --database URL --trusted-keys trusted-keys.json

ҚАЛТА - осы қалтаның жолы, URL - дерекқордың адресі (мысалы, sqlite:///budget.sqlite).
Бос дерекқорға орнатқанда SQLite файлы жоқ болса, parus-release update оны өзі жасайды.
PostgreSQL дерекқорын алдын ала жасаңыз (createdb АТАУЫ).
Алдымен --check жалаушасымен іске қосып, не орнатылатынын көріңіз. Жеткізушіден
бұрын алған сенімді кілттер файлыңыз болса, осы қалтадағы trusted-keys.json орнына
соны пайдаланыңыз: тасымалдағыштағы кілтке тек тасымалдағыштың өзі сияқты сенуге болады.

Буманы қолмен тексеру:

    minisign -V -p releases/{newest}/minisign.pub -m releases/{newest}/{bundle}
""",
    "ru": """{product}: носитель с обновлениями

В этой папке обновления для установки без сети: {start} до
{newest} (канал {channel}). Выпуски в папке: {versions}.
Список обновлений (feed.json) действителен до {expires}.

Обновление базы данных:

    parus-release update --portal ПАПКА --database URL --trusted-keys trusted-keys.json

ПАПКА - путь к этой папке, URL - адрес базы данных (например, sqlite:///budget.sqlite).
При установке в пустую базу parus-release update сам создаёт отсутствующий файл SQLite.
Базу PostgreSQL создайте заранее (createdb ИМЯ).
Сначала запустите с флагом --check, чтобы увидеть, что будет установлено. Если у вас
есть файл доверенных ключей, полученный от поставщика раньше, используйте его вместо
trusted-keys.json из этой папки: ключу с носителя можно доверять не больше, чем носителю.

Ручная проверка пакета:

    minisign -V -p releases/{newest}/minisign.pub -m releases/{newest}/{bundle}
""",
}


def media_instructions(
    language: str, feed: Feed, chain: Sequence[Release], from_version: str | None, channel: str
) -> str:
    """Return the instructions of an offline media folder in `language`."""
    newest = chain[-1]
    return _INSTRUCTIONS[language].format(
        product=PRODUCT_TITLE,
        start=_START[language][from_version is None].format(version=from_version),
        newest=newest.version,
        channel=channel,
        versions=", ".join(release.version for release in chain),
        expires=feed.expires,
        bundle=newest.files["bundle"].rsplit("/", 1)[-1],
    )
