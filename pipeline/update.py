"""The update client: bring a database up to date from a portal or offline media.

`update` runs these steps in order and stops at the first failure:

1. Read `feed.json` and `feed.json.minisig` from the portal (an HTTP(S) URL
   or a folder) and verify them against the trusted keys, including the
   feed's expiry (see pipeline.portal_feed).
2. Reject a feed whose `feed_version` is lower than the last one accepted
   for the product, or equal to it with other bytes (rollback). The state
   file records the accepted version. It belongs to the database, not to
   the current folder (see `default_state_path`), so every run for one
   database reads the same state.
3. Read the installed version of the database and plan the chain of
   releases up to the newest on the channel. A missing SQLite file is an
   empty database: a fresh install.
4. With `check_only`, return the plan; nothing is downloaded or written.
5. Create a missing SQLite file, and record the feed as accepted.
6. For each release of the chain, in order: download the bundle and its
   signatures, and check the size and SHA-256 that the feed lists. An
   interrupted download resumes with an HTTP Range request, and a failed
   request is retried a bounded number of times. Then apply the bundle,
   which verifies it against the trusted keys first.
   A failure stops the chain; the database stays as the last applied
   bundle left it.

The client reads only below the portal URL it is given: it follows no
redirect elsewhere, uses no proxy and rejects any feed path that leaves the
portal.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from pipeline.apply import apply_bundle, installed_version
from pipeline.config import DEFAULT_MAX_RATIO
from pipeline.database import open_database
from pipeline.db_backup import engine_of, sqlite_file
from pipeline.errors import ConfigError, PipelineError, StaleRotationError
from pipeline.fsutil import atomic_write_bytes, atomic_write_text
from pipeline.portal_feed import (
    FEED_NAME,
    FEED_SIGNATURE_NAME,
    Feed,
    FeedError,
    Release,
    check_relative_path,
    format_time,
    plan_chain,
    verify_feed,
)
from pipeline.rotation import accept_rotation, install_rotation
from pipeline.trust import TrustedKey
from pipeline.verify import MAX_SIGNATURE_BYTES

logger = logging.getLogger(__name__)

# Suffix of the state file beside an SQLite database; the downloads folder
# drops the `.json`.
STATE_SUFFIX = ".parus-update.json"
STATE_FORMAT = 1
# Environment variable that moves the per-user state folder (XDG Base Directory).
STATE_HOME_ENV = "XDG_STATE_HOME"
DEFAULT_TIMEOUT = 30
DEFAULT_RETRIES = 5
# NOTE: an estimate: a feed entry with both notes takes a few KiB, so 16 MiB
# allows thousands of releases.
MAX_FEED_BYTES = 16 * 1024 * 1024
CHUNK_SIZE = 256 * 1024
# HTTP statuses worth a retry: the server or a gateway may recover.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class DownloadError(PipelineError):
    """A file cannot be read from the portal: not found, refused, or retries exhausted."""


class UpdateError(PipelineError):
    """The update stopped: a bundle failed to verify or apply."""


class Source(Protocol):
    """Origin of the portal's files: a web server or a folder."""

    def describe(self, path: str) -> str:
        """Return the URL or file name of a portal path, for messages."""
        ...

    def read(self, path: str, max_size: int) -> bytes:
        """Return a small file of the portal."""
        ...

    def download(self, path: str, target: Path, size: int) -> None:
        """Store a file of `size` bytes at `target`, resuming from `target`'s `.part` file."""
        ...


@dataclass(frozen=True)
class UpdatePlan:
    """Plan of an update: the feed it read and the releases to apply, in order."""

    portal: str
    feed_version: int
    expires: str
    channel: str
    installed: str | None
    chain: tuple[Release, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "portal": self.portal,
            "feed_version": self.feed_version,
            "expires": self.expires,
            "channel": self.channel,
            "installed": self.installed,
            "chain": [
                {"version": r.version, "size": r.size, "sha256": r.sha256} for r in self.chain
            ],
        }


@dataclass
class UpdateResult:
    """The plan and the versions applied; `applied` is empty for a check.

    `created_database` is the SQLite file that the update created for a fresh
    install, or that a check found missing and would create.
    """

    plan: UpdatePlan
    applied: list[str] = field(default_factory=list)
    checked_only: bool = False
    created_database: Path | None = None
    state_file: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.plan.to_json(),
            "applied": self.applied,
            "check": self.checked_only,
            "created_database": str(self.created_database) if self.created_database else None,
            "state_file": str(self.state_file) if self.state_file else None,
        }


def default_state_path(database: str, root: Path = Path(".")) -> Path:
    """Return the state file of `database`: beside an SQLite file, or per user for PostgreSQL.

    An SQLite database `budget.sqlite` keeps its state in
    `budget.sqlite.parus-update.json`. A PostgreSQL database keeps it in
    `$XDG_STATE_HOME/parus-update/` (default `~/.local/state/parus-update/`)
    under a name derived from the URL without its password, so each database
    has its own state.
    """
    if engine_of(database) == "sqlite":
        path = sqlite_file(database, root).absolute()
        return path.with_name(path.name + STATE_SUFFIX)
    home = os.environ.get(STATE_HOME_ENV) or str(Path.home() / ".local" / "state")
    key = hashlib.sha256(_database_identity(database).encode("utf-8")).hexdigest()[:24]
    return Path(home) / "parus-update" / f"{key}.json"


def _database_identity(database: str) -> str:
    """Return one spelling of a PostgreSQL URL: the scheme, user, host, port and database.

    `postgres://` and `postgresql://`, a missing default port and query
    options such as `connect_timeout` name the same database, so they share
    one state file and one rollback record.
    """
    parts = urllib.parse.urlsplit(database)
    host = (parts.hostname or "localhost").lower()
    port = parts.port or 5432
    user = parts.username or ""
    name = parts.path.lstrip("/") or user
    return f"postgresql://{user}@{host}:{port}/{name}"


def _check_limits(timeout: float, retries: int) -> None:
    if retries < 0:
        raise ConfigError(f"--retries: expected 0 or more, found {retries}")
    if timeout <= 0:
        raise ConfigError(f"--timeout: expected a number of seconds above 0, found {timeout}")


def _missing_sqlite_file(database: str, root: Path) -> Path | None:
    if engine_of(database) != "sqlite":
        return None
    path = sqlite_file(database, root)
    return None if path.exists() else path


def update(
    portal: str,
    database: str,
    trusted: Sequence[TrustedKey],
    *,
    channel: str = "stable",
    check_only: bool = False,
    work_dir: Path | None = None,
    state_file: Path | None = None,
    root: Path = Path("."),
    install_dir: Path | None = None,
    backup_dir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    retry_delay: float = 1.0,
    now: datetime | None = None,
    trusted_keys_file: Path | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> UpdateResult:
    """Update `database` from the portal URL or folder `portal`, running the module's steps.

    `state_file` defaults to `default_state_path(database, root)`, and
    `work_dir`, whose `downloads` folder receives the bundles, to the state
    file's path without `.json`. `root`, `install_dir` and `backup_dir` go to the apply
    step (see pipeline.apply.apply_bundle). A missing SQLite file is created
    empty for a fresh install, except with `check_only`. A bundle that carries
    the next trusted keys, signed by a trusted key, moves the rest of the
    chain to them, and they are written to `trusted_keys_file` when given.
    `max_ratio` is verification's limit on a bundle's unpacked size divided
    by its archive size.

    Raises:
        ConfigError: `retries` is negative or `timeout` is not positive.
        FeedError: the feed failed verification, expired, rolled back, or
            offers no chain from the installed version.
        DownloadError: a file could not be read from the portal.
        UpdateError: a bundle failed to download, verify or apply; earlier
            bundles of the chain stay applied.
    """
    _check_limits(timeout, retries)
    source = open_source(portal, timeout=timeout, retries=retries, retry_delay=retry_delay)
    data = source.read(FEED_NAME, MAX_FEED_BYTES)
    signature = source.read(FEED_SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
    feed = verify_feed(data, signature, trusted, name=source.describe(FEED_NAME), now=now)
    state_path = state_file or default_state_path(database, root)
    work = work_dir or state_path.with_name(state_path.name.removesuffix(".json"))
    logger.debug("state file %s, work folder %s", state_path, work)
    state = load_state(state_path)
    check_rollback(state, feed, hashlib.sha256(data).hexdigest(), source.describe(FEED_NAME))

    missing = _missing_sqlite_file(database, root)
    installed = None if missing else installed_version(database, root)
    chain = plan_chain(feed, installed, channel)
    plan = UpdatePlan(portal, feed.feed_version, feed.expires, channel, installed, tuple(chain))
    logger.info(
        "feed version %d: %s installed, %d releases to apply on %s",
        feed.feed_version,
        installed or "nothing",
        len(chain),
        channel,
    )
    if check_only:
        return UpdateResult(plan, checked_only=True, created_database=missing)

    created = missing if chain else None
    result = UpdateResult(plan, created_database=created, state_file=state_path)
    if created is not None:
        open_database(database, root, create=True).close()
        logger.info("created the empty SQLite database %s for a fresh install", created)
    record_feed(state_path, state, feed, hashlib.sha256(data).hexdigest(), now)
    for release in chain:
        try:
            bundle = fetch_release(source, release, work / "downloads" / release.version)
            # apply_bundle verifies the signatures, the manifest and every file hash
            # against the trusted keys before it changes anything.
            apply_bundle(
                bundle,
                database,
                trusted,
                root=root,
                install_dir=install_dir,
                backup_dir=backup_dir,
                max_ratio=max_ratio,
            )
            trusted = _take_rotation(bundle, trusted, trusted_keys_file, max_ratio)
        except PipelineError as exc:
            reached = result.applied[-1] if result.applied else installed or "no version"
            raise UpdateError(
                f"update stopped at {release.version}: {exc}. The database stays at {reached};"
                f" {len(chain) - len(result.applied)} of {len(chain)} releases were not applied"
            ) from exc
        result.applied.append(release.version)
        logger.info("applied %s to %s", release.version, database)
        shutil.rmtree(bundle.parent, ignore_errors=True)
    return result


def _take_rotation(
    bundle: Path,
    trusted: Sequence[TrustedKey],
    trusted_keys_file: Path | None,
    max_ratio: float,
) -> Sequence[TrustedKey]:
    """Return the trusted keys for the bundles after `bundle`, which may carry new ones.

    With a trusted-keys JSON file, the next trusted keys are merged into it
    (pipeline.rotation.install_rotation). Next trusted keys that are not newer
    than the file's leave the file and the keys as they are, with a warning,
    because the bundle itself is applied already.
    """
    if trusted_keys_file is None or trusted_keys_file.suffix != ".json":
        accepted = accept_rotation(bundle, trusted, max_ratio=max_ratio)
    else:
        try:
            installed = install_rotation(bundle, trusted_keys_file, max_ratio=max_ratio)
        except StaleRotationError as exc:
            logger.warning("%s: %s", bundle.name, exc)
            return trusted
        if installed.rotation is None:
            return trusted
        accepted = installed.rotation.keys
    if accepted == list(trusted):
        return trusted
    logger.info(
        "%s moves the trusted keys to %s",
        bundle.name,
        ", ".join(k.public.key_id_hex for k in accepted),
    )
    return accepted


def _name(release: Release, key: str) -> str:
    return release.files[key].rsplit("/", 1)[-1]


def fetch_release(source: Source, release: Release, folder: Path) -> Path:
    """Download a release's bundle and signatures into `folder`; return the bundle's path.

    Raises:
        DownloadError: a file cannot be read, or the bundle's size or SHA-256
            differs from the feed's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("signature", "manifest_signature"):
        data = source.read(release.files[key], MAX_SIGNATURE_BYTES)
        atomic_write_bytes(folder / _name(release, key), data)
    bundle = folder / _name(release, "bundle")
    if not (bundle.is_file() and _matches(bundle, release)):
        source.download(release.files["bundle"], bundle, release.size)
    size = bundle.stat().st_size
    digest = _sha256(bundle)
    if (size, digest) != (release.size, release.sha256):
        bundle.unlink()
        raise DownloadError(
            f"{source.describe(release.files['bundle'])}: expected {release.size} bytes with"
            f" SHA-256 {release.sha256} as the signed feed lists, found {size} bytes with"
            f" {digest}; the file on the portal is damaged or was replaced"
        )
    return bundle


def _matches(path: Path, release: Release) -> bool:
    return path.stat().st_size == release.size and _sha256(path) == release.sha256


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_state(path: Path) -> dict[str, Any]:
    """Read the client's state file; a missing file is an empty state.

    Raises:
        FeedError: the file exists but is not a state file, because silently
            starting over would disable the rollback check.
    """
    if not path.exists():
        return {"format": STATE_FORMAT, "feeds": {}}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(
            f"state file {path} is unreadable: {exc}; restore it from a backup, or delete it"
            " to accept the next feed without the rollback check"
        ) from exc
    if (
        not isinstance(document, dict)
        or document.get("format") != STATE_FORMAT
        or not isinstance(document.get("feeds"), dict)
    ):
        raise FeedError(
            f"state file {path}: expected format {STATE_FORMAT} with a `feeds` object;"
            " restore it from a backup, or delete it to start over"
        )
    return document


def check_rollback(state: dict[str, Any], feed: Feed, digest: str, name: str) -> None:
    """Raise FeedError when `feed` is older than the last accepted feed of its product."""
    last = state["feeds"].get(feed.product)
    if last is None:
        return
    if feed.feed_version < last["feed_version"]:
        raise FeedError(
            f"{name}: feed version {feed.feed_version} is older than version"
            f" {last['feed_version']} accepted at {last['accepted']}; the portal or the media"
            " serves an old feed (rollback), so nothing was applied"
        )
    if feed.feed_version == last["feed_version"] and digest != last["sha256"]:
        raise FeedError(
            f"{name}: feed version {feed.feed_version} differs from the feed of the same"
            f" version accepted at {last['accepted']}; a feed version is never reused, so"
            " this feed is not genuine"
        )


def record_feed(
    path: Path, state: dict[str, Any], feed: Feed, digest: str, now: datetime | None
) -> None:
    """Record `feed` as the last accepted feed of its product, atomically."""
    last = state["feeds"].get(feed.product)
    if last is not None and last["feed_version"] == feed.feed_version:
        return
    state["feeds"][feed.product] = {
        "feed_version": feed.feed_version,
        "sha256": digest,
        "accepted": format_time(now or datetime.now(UTC)),
    }
    atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
    logger.debug("recorded feed version %d of %s in %s", feed.feed_version, feed.product, path)


def open_source(portal: str, *, timeout: float, retries: int, retry_delay: float = 1.0) -> Source:
    """Return the source for an `http(s)://` URL, a `file://` URL or a folder path."""
    scheme = urllib.parse.urlsplit(portal).scheme.lower()
    if scheme in ("http", "https"):
        return HttpSource(portal, timeout=timeout, retries=retries, retry_delay=retry_delay)
    if scheme == "file":
        return FolderSource(Path(urllib.request.url2pathname(urllib.parse.urlsplit(portal).path)))
    return FolderSource(Path(portal))


class FolderSource:
    """A portal or offline media folder on a local or mounted file system."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise DownloadError(f"portal folder {root} does not exist")
        self.root = root.resolve()

    def _path(self, path: str) -> Path:
        check_relative_path(path, f"portal path in {self.root}")
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise FeedError(f"{path} leads outside the portal folder {self.root}")
        return target

    def describe(self, path: str) -> str:
        return str(self.root / path)

    def read(self, path: str, max_size: int) -> bytes:
        target = self._path(path)
        try:
            size = target.stat().st_size
            if size > max_size:
                raise DownloadError(f"{target} is {size} bytes; expected at most {max_size}")
            return target.read_bytes()
        except FileNotFoundError:
            raise DownloadError(
                f"{target} not found; the portal or media folder lacks a file its feed lists"
            ) from None
        except OSError as exc:
            raise DownloadError(f"cannot read {target}: {exc.strerror}") from exc

    def download(self, path: str, target: Path, size: int) -> None:
        source = self._path(path)
        if not source.is_file():
            raise DownloadError(
                f"{source} not found; the media carries no bundle for this release"
            )
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(source, partial)
        os.replace(partial, target)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only when it stays below the portal URL."""

    def __init__(self, base: str) -> None:
        self.base = base

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not newurl.startswith(self.base):
            raise DownloadError(
                f"{req.full_url} redirects to {newurl}, outside the portal {self.base};"
                " pass the portal's final URL"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpSource:
    """A portal on a web server, read with urllib from the standard library."""

    def __init__(
        self, base: str, *, timeout: float, retries: int, retry_delay: float = 1.0
    ) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        # An empty ProxyHandler ignores the *_proxy variables: the client
        # contacts only the portal's host.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _SameOriginRedirects(self.base)
        )

    def describe(self, path: str) -> str:
        return self.url(path)

    def url(self, path: str) -> str:
        check_relative_path(path, f"portal path below {self.base}")
        url = urllib.parse.urljoin(self.base, urllib.parse.quote(path))
        if not url.startswith(self.base):
            raise FeedError(f"{path} leads outside the portal {self.base}")
        return url

    def _open(self, url: str, offset: int = 0) -> http.client.HTTPResponse:
        headers = {"User-Agent": "parus-update/1", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        response: http.client.HTTPResponse = self.opener.open(request, timeout=self.timeout)
        return response

    def _failed(self, url: str, attempt: int, exc: BaseException) -> None:
        """Log a failed attempt and wait, or raise DownloadError when retries are exhausted."""
        if isinstance(exc, urllib.error.HTTPError) and exc.code not in RETRY_STATUSES:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        if attempt > self.retries:
            raise DownloadError(
                f"{url}: failed after {attempt} attempts; last error: {exc}. Check the"
                " network and run the update again: the download resumes where it stopped"
            ) from exc
        logger.warning("%s: attempt %d failed (%s); retrying", url, attempt, exc)
        time.sleep(self.retry_delay * attempt)

    def read(self, path: str, max_size: int) -> bytes:
        url = self.url(path)
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._open(url) as response:
                    data = response.read(max_size + 1)
                break
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                self._failed(url, attempt, exc)
        if len(data) > max_size:
            raise DownloadError(f"{url} is larger than {max_size} bytes")
        return data

    def download(self, path: str, target: Path, size: int) -> None:
        url = self.url(path)
        partial = target.with_name(target.name + ".part")
        attempt = 0
        while True:
            offset = partial.stat().st_size if partial.exists() else 0
            if offset > size:
                partial.unlink()
                offset = 0
            if offset == size:
                break
            attempt += 1
            try:
                self._download_from(url, partial, offset, size)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                range_rejected = isinstance(exc, urllib.error.HTTPError) and exc.code == 416
                if range_rejected and attempt <= self.retries:
                    # The partial file does not fit the file on the server: start over.
                    logger.info(
                        "%s: the server rejected the range at byte %d; starting over", url, offset
                    )
                    partial.unlink(missing_ok=True)
                    continue
                self._failed(url, attempt, exc)
        os.replace(partial, target)
        logger.info("downloaded %s (%d bytes)", url, size)

    def _download_from(self, url: str, partial: Path, offset: int, size: int) -> None:
        with self._open(url, offset) as response:
            mode = "ab"
            if offset and response.status != 206:
                logger.info("%s: the server ignored the Range request; starting over", url)
                mode, offset = "wb", 0
            elif offset:
                _check_content_range(url, response.headers.get("Content-Range", ""), offset)
                logger.info("%s: resuming at byte %d", url, offset)
            with partial.open(mode) as handle:
                received = offset
                while chunk := response.read(CHUNK_SIZE):
                    received += len(chunk)
                    if received > size:
                        raise DownloadError(
                            f"{url} is larger than the {size} bytes the signed feed lists"
                        )
                    handle.write(chunk)
        if received < size:
            raise http.client.IncompleteRead(b"", size - received)


def _check_content_range(url: str, header: str, offset: int) -> None:
    """Raise DownloadError unless a 206 response starts at `offset`."""
    unit, _, rest = header.partition(" ")
    start = rest.split("-", 1)[0]
    if unit != "bytes" or not start.isdigit() or int(start) != offset:
        raise DownloadError(
            f"{url}: expected a Content-Range starting at byte {offset}, found {header!r}"
        )
