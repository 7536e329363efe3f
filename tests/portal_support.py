"""Shared pieces of the portal and update tests: a chain of three real releases and a
test web server on 127.0.0.1 with Range support and fault injection."""

# The kk fix title is Cyrillic on purpose.

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import REPO_ROOT, git

from pipeline import signing
from pipeline.portal import publish
from pipeline.release import release
from pipeline.trust import TrustedKey, write_trusted_keys
from pipeline.versions import Version

VERSIONS = ("2026.10.0", "2026.11.0", "2026.12.0")
PRODUCT = "parus-kaz-budget"
DEMO_FOLDERS = ("catalogs", "migrations", "packages")
PIPELINE_TABLE = """\
[tool.pipeline]
product = "parus-kaz-budget"
sample_databases = [{ url = "sqlite:///.samples/small.sqlite", generate = "small" }]
"""
# A fix title that uses every letter of the Kazakh alphabet missing from Russian.
KAZAKH_TITLE = (
    "Әкімдіктің өңірлік ғимараттары мен шаһар бюджетінің қаржыландыру жоспарында"
    " ұзын сомалар түзетілді"
)
KAZAKH_LETTERS = "әғқңөұүһі"


@dataclass(frozen=True)
class Chain:
    """Three signed releases of the demo content and the keys that signed them."""

    dists: dict[str, Path]
    secret_key: Path
    public_key: Path
    trusted_keys: Path

    def bundle(self, version: str) -> Path:
        return self.dists[version] / f"{PRODUCT}-{version}.7z"

    def key(self) -> signing.SecretKey:
        return signing.load_secret_key(self.secret_key)


_CHAINS: dict[str, Chain] = {}


def _commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, "--date", "2026-12-01T09:00:00Z")


def _retitle_fix(repo: Path) -> None:
    fix = sorted((repo / "packages/fixes").iterdir())[0] / "fix.json"
    definition = json.loads(fix.read_text(encoding="utf-8"))
    definition["title"]["kk"] = KAZAKH_TITLE
    fix.write_text(json.dumps(definition, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _add_migration(repo: Path) -> None:
    numbers = [int(p.name[:4]) for p in (repo / "migrations").glob("*.sql")]
    name = f"{max(numbers) + 1:04d}_update_journal.sql"
    (repo / "migrations" / name).write_text(
        "CREATE TABLE update_journal (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\n",
        encoding="utf-8",
    )


def build_chain(factory: pytest.TempPathFactory) -> Chain:
    """Release 2026.10.0, 2026.11.0 and 2026.12.0 of the demo content once per session."""
    if "chain" in _CHAINS:
        return _CHAINS["chain"]
    root = factory.mktemp("chain")
    repo = root / "content"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "core.autocrlf", "false")
    for folder in DEMO_FOLDERS:
        shutil.copytree(REPO_ROOT / folder, repo / folder)
    (repo / "pyproject.toml").write_text(PIPELINE_TABLE, encoding="utf-8")
    (repo / ".gitignore").write_text(".samples/\n", encoding="utf-8")
    _commit(repo, "Add the demo content")

    keys = root / "keys"
    signing.generate_keypair(keys / "release.key", keys / "minisign.pub")
    secret = signing.load_secret_key(keys / "release.key")
    trusted = keys / "trusted-keys.json"
    write_trusted_keys(
        trusted,
        [
            TrustedKey(
                public=secret.public,
                valid_from=datetime(2026, 1, 1, tzinfo=UTC),
                comment="release key 2026",
            )
        ],
    )
    changes: dict[str, Callable[[Path], None]] = {
        "2026.11.0": _retitle_fix,
        "2026.12.0": _add_migration,
    }
    dists: dict[str, Path] = {}
    for version in VERSIONS:
        if version in changes:
            changes[version](repo)
            _commit(repo, f"Change the content for {version}")
        dists[version] = root / "dist" / version
        release(repo, dists[version], secret, version=Version.parse(version))
        git(repo, "tag", f"release/{version}")
    chain = Chain(dists, keys / "release.key", keys / "minisign.pub", trusted)
    _CHAINS["chain"] = chain
    return chain


def publish_chain(chain: Chain, portal: Path, channels: dict[str, str] | None = None) -> None:
    """Publish every release of the chain to `portal`, oldest first."""
    from pipeline.portal_feed import load_trust

    trusted = load_trust(chain.trusted_keys)
    for version in VERSIONS:
        channel = (channels or {}).get(version, "stable")
        publish(chain.bundle(version), portal, chain.key(), trusted, channel=channel)


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Return every file below `folder` with its bytes, for before-and-after comparisons."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@dataclass
class ServerLog:
    """Requests the test server received, and faults it should inject."""

    requests: list[tuple[str, str | None]] = field(default_factory=list)
    # Paths whose first full response is cut off after half the body.
    truncate_once: set[str] = field(default_factory=set)
    # Paths served with this status every time.
    fail_with: dict[str, int] = field(default_factory=dict)
    # Paths served with a 302 redirect to the given URL.
    redirect: dict[str, str] = field(default_factory=dict)


class PortalHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder with single-range `Range: bytes=N-` support and injected faults."""

    log_state: ServerLog

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        state = self.log_state
        state.requests.append((path, self.headers.get("Range")))
        if path in state.fail_with:
            self.send_error(state.fail_with[path])
            return
        if path in state.redirect:
            self.send_response(302)
            self.send_header("Location", state.redirect[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        target = Path(self.translate_path(path))
        if not target.is_file():
            http.server.SimpleHTTPRequestHandler.do_GET(self)
            return
        data = target.read_bytes()
        start = 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and range_header.endswith("-"):
            start = int(range_header.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if path in state.truncate_once and start == 0:
            state.truncate_once.discard(path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def serve(portal: Path) -> Iterator[tuple[str, ServerLog]]:
    """Serve `portal` on a free port of 127.0.0.1; yield its URL and the request log.

    The server's root is the portal's parent, so the portal URL has a path
    (`/<name>/`) and a client that leaves it requests files outside it.
    """
    state = ServerLog()

    class Handler(PortalHandler):
        log_state = state

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(portal.parent), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{portal.name}/", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
