"""The signed feed of the update portal, and the chain of releases it offers.

`feed.json` (schema `pipeline/schemas/feed.schema.json`) sits at the portal's
root beside `feed.json.minisig`, which is signed like a manifest::

    {
      "format": 1,
      "product": "parus-kaz-budget",
      "feed_version": 7,
      "published": "2026-12-04T10:00:00Z",
      "expires": "2027-01-18T10:00:00Z",
      "releases": [
        {"version": "2026.12.0", "channel": "stable", "published": "...",
         "size": 123456, "sha256": "<hex>", "min_from_version": "2026.11.0" | null,
         "schema": {"from": "0002" | null, "to": "0003" | null},
         "files": {"bundle": "releases/2026.12.0/parus-kaz-budget-2026.12.0.7z",
                   "signature": ..., "manifest": ..., "manifest_signature": ...,
                   "public_key": ..., "notes/kk.md": ..., "notes/ru.md": ...},
         "notes": {"kk": "<Markdown>", "ru": "<Markdown>"}}
      ]
    }

Every path in `files` is relative to the portal root. `feed_version` grows by
one with every change of the feed, so a client that remembers the last
version it accepted can reject an older feed (rollback). `expires` bounds how
long a client trusts a feed that was not re-signed (freeze).

`verify_feed` runs these checks in order and stops at the first failure:

1. The signature parses and verifies over the exact feed bytes with one of
   the trusted keys.
2. The key was allowed to sign at the `time=` of the trusted comment: inside
   its validity period and not revoked.
3. The feed parses, matches the feed schema, has a supported format, the
   expected product, unique versions and only safe relative paths.
4. The trusted comment's `feed_version=` equals the feed's `feed_version`.
5. The feed has not expired at the time of the check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.config import DEFAULT_MAX_RATIO
from pipeline.errors import PipelineError, SignatureError, VerificationError
from pipeline.keys import PublicKey
from pipeline.schema import validate_document
from pipeline.signing import SecretKey, blake2b_digest, signature_text, verify_bytes
from pipeline.trust import PUBLIC_KEY_START as PUBLIC_KEY_START
from pipeline.trust import (
    TrustedKey,
    check_key_usable,
    find_trusted_key,
)
from pipeline.trust import load_trust as load_trust
from pipeline.verify import VerifyResult, parse_trusted_comment, verify_bundle
from pipeline.versions import Version

logger = logging.getLogger(__name__)

FEED_NAME = "feed.json"
FEED_SIGNATURE_NAME = "feed.json.minisig"
FEED_FORMAT = 1
CHANNELS = ("stable", "testing")
DEFAULT_EXPIRY_DAYS = 45


class FeedError(PipelineError):
    """A feed is malformed, unsigned, expired, older than one already accepted, or lacks a
    release that a client needs."""


@dataclass(frozen=True)
class Release:
    """One bundle that the portal offers, as the feed describes it."""

    version: str
    channel: str
    published: str
    size: int
    sha256: str
    min_from_version: str | None
    schema: dict[str, str | None]
    files: dict[str, str]
    notes: dict[str, str]

    @property
    def parsed_version(self) -> Version:
        return Version.parse(self.version)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "channel": self.channel,
            "published": self.published,
            "size": self.size,
            "sha256": self.sha256,
            "min_from_version": self.min_from_version,
            "schema": dict(self.schema),
            "files": dict(self.files),
            "notes": dict(self.notes),
        }


@dataclass(frozen=True)
class Feed:
    """The portal's list of releases with its version and expiry."""

    product: str
    feed_version: int
    published: str
    expires: str
    releases: tuple[Release, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FEED_FORMAT,
            "product": self.product,
            "feed_version": self.feed_version,
            "published": self.published,
            "expires": self.expires,
            "releases": [release.to_json() for release in self.sorted_releases()],
        }

    def sorted_releases(self) -> list[Release]:
        """Return the releases, oldest first."""
        return sorted(self.releases, key=lambda release: release.parsed_version)

    def find(self, version: str) -> Release | None:
        """Return the release of `version`, or None."""
        return next((r for r in self.releases if r.version == version), None)

    def with_release(self, release: Release) -> Feed:
        """Return a copy with `release` added, or replacing the entry of the same version."""
        others = tuple(r for r in self.releases if r.version != release.version)
        return replace(self, releases=(*others, release))


def format_time(moment: datetime) -> str:
    """Format a time as RFC 3339 in UTC with seconds, such as `2026-12-04T10:00:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, where: str) -> datetime:
    """Parse an RFC 3339 time with a zone; `where` names the value in errors."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise FeedError(f"{where}: expected an RFC 3339 time with a zone, found {text!r}")
    return moment


def feed_bytes(feed: Feed) -> bytes:
    """Serialize a feed canonically: sorted keys, two-space indent, UTF-8, final LF."""
    text = json.dumps(feed.to_json(), ensure_ascii=False, indent=2, sort_keys=True)
    return (text + "\n").encode("utf-8")


def feed_trusted_comment(feed: Feed, when: datetime) -> str:
    """Return the trusted comment signed with a feed."""
    return f"product={feed.product} feed_version={feed.feed_version} time={format_time(when)}"


def sign_feed(feed: Feed, key: SecretKey, when: datetime) -> tuple[bytes, bytes]:
    """Serialize and sign a feed; return the bytes of `feed.json` and of its signature."""
    data = feed_bytes(feed)
    signature = signature_text(blake2b_digest(data), key, feed_trusted_comment(feed, when))
    return data, signature.encode("utf-8")


def check_relative_path(path: str, where: str) -> str:
    """Return `path` when it is a safe relative POSIX path inside the portal; raise otherwise.

    A feed must not make a client read outside the portal it was given, so
    absolute paths, URLs, backslashes and `..` parts are rejected.
    """
    parts = PurePosixPath(path).parts
    unsafe = (
        not path
        or path.startswith("/")
        or "\\" in path
        or ":" in path
        or "?" in path
        or "#" in path
        or any(part in ("..", ".") for part in parts)
    )
    if unsafe:
        raise FeedError(f"{where}: expected a relative path inside the portal, found {path!r}")
    return path


def parse_feed(data: bytes, name: str, product: str | None = None) -> Feed:
    """Parse and check feed bytes (verification check 3); `name` names the feed in errors.

    Raises:
        FeedError: the bytes are not UTF-8 JSON, fail the schema, have an
            unsupported format, another product, a duplicate version or an
            unsafe path.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(f"{name}: not a valid UTF-8 JSON feed: {exc}") from exc
    findings = validate_document(document, "feed", name)
    if findings:
        raise FeedError(f"{name}: invalid feed: " + "; ".join(map(str, findings[:5])))
    if document["format"] != FEED_FORMAT:
        raise FeedError(
            f"{name} $.format: format {document['format']} is not supported;"
            f" this tool reads format {FEED_FORMAT}"
        )
    if product is not None and document["product"] != product:
        raise FeedError(f"{name} $.product: expected {product}, found {document['product']}")
    parse_time(document["published"], f"{name} $.published")
    parse_time(document["expires"], f"{name} $.expires")
    releases: list[Release] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["releases"]):
        where = f"{name} $.releases[{index}]"
        if entry["version"] in seen:
            raise FeedError(f"{where}.version: version {entry['version']} is listed twice")
        seen.add(entry["version"])
        for key, path in entry["files"].items():
            check_relative_path(path, f"{where}.files.{key}")
        releases.append(Release(**entry))
    return Feed(
        product=document["product"],
        feed_version=document["feed_version"],
        published=document["published"],
        expires=document["expires"],
        releases=tuple(releases),
    )


def signed_time(comment: str, where: str) -> datetime:
    """Return the `time=` of a trusted comment."""
    text = parse_trusted_comment(comment).get("time")
    if text is None:
        raise SignatureError(f"{where}: the trusted comment {comment!r} has no time=...")
    try:
        return parse_time(text, f"{where}: trusted comment time")
    except FeedError as exc:
        raise SignatureError(str(exc)) from None


def check_signer(keys: Sequence[TrustedKey], key_id_hex: str, comment: str, where: str) -> None:
    """Raise SignatureError unless the key that signed was usable at the signed time."""
    key = find_trusted_key(keys, key_id_hex)
    check_key_usable(key, signed_time(comment, where))


def verify_feed(
    data: bytes,
    signature: bytes,
    keys: Sequence[TrustedKey],
    *,
    name: str = FEED_NAME,
    product: str | None = None,
    now: datetime | None = None,
) -> Feed:
    """Verify a feed and its signature, running the checks of the module docstring.

    Raises:
        FeedError: a check failed; the message names the check.
    """
    try:
        info = verify_bytes(data, signature, [k.public for k in keys], name)
        check_signer(keys, info.key_id_hex, info.trusted_comment, name)
    except SignatureError as exc:
        raise FeedError(f"{name}: the feed signature is not valid: {exc}") from exc
    feed = parse_feed(data, name, product)
    signed_version = parse_trusted_comment(info.trusted_comment).get("feed_version")
    if signed_version != str(feed.feed_version):
        raise FeedError(
            f"{name}: the trusted comment has feed_version={signed_version},"
            f" the feed {feed.feed_version}; the feed and its signature do not belong together"
        )
    moment = now or datetime.now(UTC)
    expires = parse_time(feed.expires, f"{name} $.expires")
    if moment >= expires:
        raise FeedError(
            f"{name}: the feed expired at {feed.expires} (now {format_time(moment)});"
            " the portal has not been re-signed, so its releases may be out of date."
            " The vendor re-signs it with `inv publish.refresh --portal DIR --key FILE"
            " --trusted-keys FILE`"
        )
    logger.info(
        "verified feed %s: version %d, %d releases", name, feed.feed_version, len(feed.releases)
    )
    return feed


def verify_trusted_bundle(
    bundle: Path,
    keys: Sequence[TrustedKey],
    *,
    signature: Path | None = None,
    manifest_signature: Path | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> VerifyResult:
    """Verify a bundle against trusted keys, including their validity and revocation.

    `max_ratio` is verification's limit on the unpacked size divided by the archive size.

    Raises:
        VerificationError: any check of `pipeline.verify` failed, or the key
            that signed was not usable at the signed time.
    """
    result = verify_bundle(
        bundle,
        [key.public for key in keys],
        signature=signature,
        manifest_signature=manifest_signature,
        max_ratio=max_ratio,
    )
    try:
        check_signer(keys, result.key_id, result.trusted_comment, str(bundle))
    except SignatureError as exc:
        raise VerificationError(f"{bundle}: the signing key is not trusted now: {exc}") from exc
    return result


def public_keys(keys: Sequence[TrustedKey]) -> list[PublicKey]:
    """Return the public halves of trusted keys."""
    return [key.public for key in keys]


def channel_releases(feed: Feed, channel: str) -> list[Release]:
    """Return the releases a client on `channel` takes, oldest first.

    The stable channel takes stable releases; the testing channel takes
    stable and testing releases, so a tester is never behind a stable client.
    """
    if channel not in CHANNELS:
        raise FeedError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    accepted = {"stable"} if channel == "stable" else set(CHANNELS)
    return [release for release in feed.sorted_releases() if release.channel in accepted]


def plan_chain(feed: Feed, installed: str | None, channel: str) -> list[Release]:
    """Return the releases to apply, in order, from `installed` to the newest on `channel`.

    Every newer release is applied in turn, because a bundle ships only what
    changed since its base release. A release whose `min_from_version` is
    newer than the version before it cannot be reached.

    Raises:
        FeedError: the channel is unknown, or a release cannot be applied on
            top of the version before it.
    """
    current = Version.parse(installed) if installed is not None else None
    chain = [
        release
        for release in channel_releases(feed, channel)
        if current is None or release.parsed_version > current
    ]
    before = current
    for release in chain:
        minimum = release.min_from_version
        if minimum is not None and (before is None or before < Version.parse(minimum)):
            found = str(before) if before is not None else "an empty database"
            raise FeedError(
                f"release {release.version} needs version {minimum} or newer installed, but the"
                f" chain on channel {channel} reaches it from {found}; install {minimum}"
                " from the media that carries it first"
            )
        before = release.parsed_version
    logger.debug(
        "chain from %s on %s: %s", installed, channel, [release.version for release in chain]
    )
    return chain
