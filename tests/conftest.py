"""Shared fixtures: external tools, git repositories and the shared real-world data."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Public real-world files read by the `realdata` tests; PIPELINE_SHARED_DATA points
# elsewhere when the checkout does not sit beside the shared folder.
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Debian package that provides each external tool the tests call.
TOOL_PACKAGES = {
    "7zz": "7zip",
    "minisign": "minisign",
    "chromium": "chromium",
    "openssl": "openssl",
    "ssh-keygen": "openssh-client",
    "sqlite3": "sqlite3",
    "psql": "postgresql-client",
    "pg_dump": "postgresql-client",
}


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Return the path of an external tool; skip the test when it is missing.

    Under CI=true a missing tool fails the test instead, because CI must run
    every test.
    """
    path = shutil.which(name)
    if path:
        return path
    package = TOOL_PACKAGES.get(name, name)
    message = f"{name} is not installed (Debian package {package})"
    if under_ci():
        pytest.fail(message + "; CI must run every test")
    pytest.skip(message)


def require_shared_data(relative: str) -> Path:
    """Return a file of the shared real-world data folder; skip (fail under CI) when absent."""
    path = SHARED_DATA / relative
    if path.exists():
        return path
    message = f"real-world data file {path} is missing"
    if under_ci():
        pytest.fail(message + "; CI must run every test")
    pytest.skip(message)


@pytest.fixture(scope="session")
def migrations_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A content folder with the repository's migrations only.

    Generating a sample records its checks in the content folder's cache,
    which must not be the checkout's.
    """
    root = tmp_path_factory.mktemp("content")
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    return root


@contextlib.contextmanager
def running(command: list[str], cwd: Path, **options: object) -> Iterator[subprocess.Popen[str]]:
    """Start `command`, by default with its standard error captured; kill it if still running.

    `options` go to `subprocess.Popen`, `stderr` included.
    """
    options.setdefault("stderr", subprocess.PIPE)
    process = subprocess.Popen(command, cwd=cwd, text=True, **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(process: subprocess.Popen[str], ready: Callable[[], bool], condition: str) -> None:
    """Wait up to two minutes until `ready()`; fail when `process` ends first.

    `condition` describes what `ready` checks, for the message of a timeout.
    """
    deadline = time.monotonic() + 120
    while not ready():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"timed out waiting until {condition}"
        time.sleep(0.02)


def stop(process: subprocess.Popen[str], number: int = signal.SIGTERM) -> str:
    """Send signal `number` to `process`, wait for it to end and return its standard error."""
    process.send_signal(number)
    _, errors = process.communicate(timeout=120)
    return str(errors)


def ended_process_id() -> int:
    """Return the id of a process that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity and return its standard output."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Release Tests",
        "GIT_AUTHOR_EMAIL": "tests@parus-kaz.example",
        "GIT_COMMITTER_NAME": "Release Tests",
        "GIT_COMMITTER_EMAIL": "tests@parus-kaz.example",
    }
    result = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """An empty git repository with main as its branch."""
    repo = tmp_path / "content"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "core.autocrlf", "false")
    return repo


POSTGRES_URL_ENV = "PIPELINE_TEST_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _postgres_reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _postgres_binaries() -> Path | None:
    """Return the folder of local PostgreSQL server binaries (initdb, pg_ctl), if any."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root, so root runs it as the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """URL of a PostgreSQL server's maintenance database.

    The server on 127.0.0.1:5432 (or the URL in PIPELINE_TEST_POSTGRES) when it
    accepts connections; otherwise a throwaway server started from local PostgreSQL
    binaries on a free loopback port and stopped after the session.
    """
    url = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    if _postgres_reachable(url):
        yield url
        return
    binaries = _postgres_binaries()
    if binaries is None:
        message = f"PostgreSQL is not reachable at {url} and no local initdb was found"
        if under_ci():
            pytest.fail(message + "; CI must run every test")
        pytest.skip(message)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path_factory.mktemp("pgdata")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-w",
                "start",
                "-l",
                str(data / "server.log"),
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            check=False,
            capture_output=True,
        )


@pytest.fixture
def postgres_database(postgres_server: str):  # type: ignore[no-untyped-def]
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    import uuid

    import psycopg

    name = f"pipeline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Folders of the demo content and the settings a copy of it needs.
DEMO_FOLDERS = ("catalogs", "migrations", "packages")
PIPELINE_TABLE = """\
[tool.pipeline]
product = "parus-kaz-budget"
sample_databases = [{ url = "sqlite:///.samples/small.sqlite", generate = "small" }]
"""


@pytest.fixture
def demo_repo(git_repo: Path) -> Path:
    """A content repository holding this repository's demo content in one commit."""
    for folder in DEMO_FOLDERS:
        shutil.copytree(REPO_ROOT / folder, git_repo / folder)
    (git_repo / "pyproject.toml").write_text(PIPELINE_TABLE, encoding="utf-8")
    (git_repo / ".gitignore").write_text(".samples/\n", encoding="utf-8")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "Add the demo content", "--date", "2026-12-01T09:00:00Z")
    return git_repo


def add_catalog_column(
    root: Path, catalog_id: str, name: str, value: Callable[[list[str]], str] = lambda row: "-"
) -> None:
    """Append a text column to a catalog of the content tree at `root`, `value(row)` per row."""
    folder = root / "catalogs" / catalog_id
    description = json.loads((folder / "catalog.json").read_text("utf-8"))
    description["columns"].append(
        {"name": name, "type": "text", "title": {"kk": "Ескертпе", "ru": "Примечание"}}
    )
    (folder / "catalog.json").write_text(json.dumps(description, ensure_ascii=False), "utf-8")
    with (folder / "rows.csv").open(encoding="utf-8", newline="") as source:
        rows = list(csv.reader(source))
    rows[0].append(name)
    for row in rows[1:]:
        row.append(value(row))
    with (folder / "rows.csv").open("w", encoding="utf-8", newline="") as target:
        csv.writer(target, lineterminator="\n").writerows(rows)


def remove_catalog_rows(root: Path, catalog_id: str, prefix: str) -> None:
    """Remove the rows of a catalog's rows.csv that start with `prefix`."""
    rows = root / "catalogs" / catalog_id / "rows.csv"
    lines = rows.read_text("utf-8").splitlines(True)
    rows.write_text("".join(line for line in lines if not line.startswith(prefix)), "utf-8")
