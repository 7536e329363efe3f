"""Backups of a database and restores from them, with verification.

SQLite backups are made with the SQLite backup API into a file; PostgreSQL
backups with `pg_dump` in custom format. A backup is verified by restoring it
into a scratch database (a temporary SQLite file, or a temporary PostgreSQL
database that is dropped afterwards) and comparing it table by table with the
source: row counts and order-independent checksums (`pipeline.db_schema`).

`restore_exact` is what a failed apply uses to undo a step that could not be
rolled back. For SQLite it brings back the same bytes: the backup API rewrites
only the header's change counter, schema cookie and version-valid-for number
(bytes 24-27, 40-43 and 92-95), so the restore writes the backup's pages with
the original 100-byte header and checks the SHA-256 of the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import SampleDatabase
from pipeline.database import Database, display_name, open_database, redact_url
from pipeline.db_schema import TableSum, database_checksums
from pipeline.errors import DatabaseToolError
from pipeline.fsutil import atomic_output

logger = logging.getLogger(__name__)

SQLITE_HEADER_SIZE = 100
# How long a backup waits for a lock that another session holds, as `apply` does by default.
DEFAULT_LOCK_TIMEOUT_MS = 30_000
# Database that PostgreSQL scratch databases and restores are managed from.
MAINTENANCE_DATABASE = "postgres"


@dataclass(frozen=True)
class Backup:
    """A backup file, its SHA-256 and the engine it came from."""

    path: Path
    sha256: str
    engine: str
    seconds: float


@dataclass
class Comparison:
    """Table-by-table comparison of two databases; `differences` is empty when they match."""

    tables: dict[str, TableSum] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences


def engine_of(url: str) -> str:
    """Return `sqlite` or `postgresql` for a database URL."""
    engine = SampleDatabase(url).engine
    return "postgresql" if engine in ("postgresql", "postgres") else engine


def sqlite_file(url: str, root: Path) -> Path:
    """Return the file of an `sqlite:///` URL, relative paths taken from `root`."""
    return SampleDatabase(url).sqlite_path(root)


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def backup_suffix(url: str) -> str:
    return ".sqlite" if engine_of(url) == "sqlite" else ".dump"


def backup_database(
    url: str, root: Path, target: Path, *, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
) -> Backup:
    """Write a backup of the database at `url` to `target`, whole or not at all.

    The backup waits at most `lock_timeout_ms` for a lock that another session
    holds: a SQLite write in progress, or a PostgreSQL lock that conflicts with
    the ACCESS SHARE lock `pg_dump` takes on every table.

    Raises:
        DatabaseToolError: the database cannot be read, the lock timeout passed,
            or `pg_dump` failed.
    """
    started = time.perf_counter()
    engine = engine_of(url)
    with atomic_output(target, 0o600) as tmp:
        if engine == "sqlite":
            _sqlite_backup(sqlite_file(url, root), tmp, lock_timeout_ms)
        else:
            _pg_dump(url, tmp, lock_timeout_ms)
    backup = Backup(target, file_sha256(target), engine, time.perf_counter() - started)
    logger.info("backed up %s to %s (sha256 %s)", display_name(url), target, backup.sha256)
    return backup


class _LockTimeout(Exception):
    """The lock timeout of a SQLite backup passed while the source was locked."""


def _sqlite_backup(
    source: Path, target: Path, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
) -> None:
    if not source.is_file():
        raise DatabaseToolError(f"SQLite database {source} not found")
    deadline = time.monotonic() + lock_timeout_ms / 1000

    # Python's backup() retries a busy step without a limit, so the progress
    # callback, which it calls after every step, ends the wait.
    def give_up_when_locked(status: int, remaining: int, total: int) -> None:
        busy = status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        if busy and time.monotonic() >= deadline:
            raise _LockTimeout

    try:
        reader = sqlite3.connect(
            f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=lock_timeout_ms / 1000
        )
        try:
            writer = sqlite3.connect(target)
            try:
                reader.backup(writer, progress=give_up_when_locked)
            finally:
                writer.close()
        finally:
            reader.close()
    except _LockTimeout:
        raise DatabaseToolError(
            f"backup of {source} timed out: no read lock was granted within the lock timeout"
            f" ({lock_timeout_ms} ms), because another connection is writing to it; wait for"
            " that write to finish, or close the program that makes it, then run again, or"
            " raise --lock-timeout"
        ) from None
    except sqlite3.Error as exc:
        raise DatabaseToolError(f"backup of {source} to {target} failed: {exc}") from exc


# pg_dump's error when --lock-wait-timeout passed, such as
# `ERROR:  canceling statement due to statement timeout` with
# `Query was: LOCK TABLE public.knp IN ACCESS SHARE MODE` (pg_dump 15).
_PG_DUMP_LOCK = re.compile(r"LOCK TABLE (?P<table>.+?) IN ACCESS SHARE MODE")
_LOCK_HOLDERS_SQL = """
SELECT l.pid, l.mode, a.state, left(a.query, 80)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.relation = to_regclass(%s) AND l.pid <> pg_backend_pid()
ORDER BY l.pid
"""


def _pg_dump(url: str, target: Path, lock_timeout_ms: int) -> None:
    # pg_dump reads a bare number as milliseconds, and 0 would wait without a limit.
    wait = f"--lock-wait-timeout={max(1, lock_timeout_ms)}"
    try:
        _run_tool(["pg_dump", "--format=custom", wait, "--file", str(target), _conninfo(url)], url)
    except DatabaseToolError as exc:
        found = _PG_DUMP_LOCK.search(str(exc))
        if found is None or "statement timeout" not in str(exc):
            raise
        table = found["table"]
        raise DatabaseToolError(
            f"backup of {display_name(url)} timed out: no lock on table {table} was granted"
            f" within the lock timeout ({lock_timeout_ms} ms){_lock_holders(url, table)};"
            " wait for that session to finish, or end it, then run again, or raise"
            " --lock-timeout"
        ) from exc


def _lock_holders(url: str, table: str) -> str:
    """Name the sessions that hold a lock on `table`, for the message of a lock timeout."""
    import psycopg

    try:
        with psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5) as probe:
            rows = probe.execute(_LOCK_HOLDERS_SQL, (table,)).fetchall()
    except psycopg.Error as exc:
        logger.debug("cannot list the sessions that lock %s: %s", table, exc)
        return ""
    holders = "; ".join(
        f"process {pid} holds {mode} on it ({state}: {query!r})"
        for pid, mode, state, query in rows[:5]
    )
    return f", because {holders}" if holders else ""


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _run_tool(command: list[str], url: str) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise DatabaseToolError(
            f"{command[0]} not found; install the PostgreSQL client tools (postgresql-client)"
        )
    printable = " ".join([command[0], *(redact_url(a) for a in command[1:])])
    logger.debug("running %s", printable)
    result = subprocess.run([tool, *command[1:]], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DatabaseToolError(
            f"{printable} failed on {display_name(url)} with exit code {result.returncode}:"
            f" {result.stderr.strip()[-2000:]}"
        )


def read_sqlite_header(path: Path) -> bytes:
    """Return the first 100 bytes of a SQLite file."""
    with path.open("rb") as handle:
        return handle.read(SQLITE_HEADER_SIZE)


def restore_exact(
    backup: Path, url: str, root: Path, *, header: bytes | None = None, sha256: str | None = None
) -> None:
    """Put the database at `url` back to the state of `backup`.

    SQLite: the file is replaced by the backup's bytes with the original
    `header`, and its SHA-256 must equal `sha256` when one is given.
    PostgreSQL: the database is dropped, created again with the same owner,
    encoding and locale, and `pg_restore` loads the backup into it.

    Raises:
        DatabaseToolError: the restore failed or the result differs from `sha256`.
    """
    if engine_of(url) == "sqlite":
        path = sqlite_file(url, root)
        data = backup.read_bytes()
        if header is not None:
            data = header + data[SQLITE_HEADER_SIZE:]
        with atomic_output(path, path.stat().st_mode & 0o777 if path.exists() else 0o644) as tmp:
            tmp.write_bytes(data)
        if sha256 is not None and file_sha256(path) != sha256:
            raise DatabaseToolError(
                f"restored {path} from {backup}, but its SHA-256 {file_sha256(path)} differs from"
                f" the {sha256} recorded before the apply; restore {backup} by hand"
            )
    else:
        _recreate_postgres(url)
        _run_tool(["pg_restore", "--exit-on-error", "--dbname", _conninfo(url), str(backup)], url)
    logger.info("restored %s from %s", display_name(url), backup)


def _maintenance_url(url: str) -> str:
    return urlsplit(_conninfo(url))._replace(path=f"/{MAINTENANCE_DATABASE}").geturl()


def postgres_name(url: str) -> str:
    """Return the database name of a PostgreSQL URL."""
    name = urlsplit(_conninfo(url)).path.lstrip("/")
    if not name:
        raise DatabaseToolError(f"{redact_url(url)}: expected a database name in the URL")
    return name


def _recreate_postgres(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = postgres_name(url)
    try:
        with psycopg.connect(_maintenance_url(url), autocommit=True) as admin:
            found = admin.execute(
                "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate,"
                " datctype FROM pg_database WHERE datname = %s",
                (name,),
            ).fetchone()
            if found is None:
                raise DatabaseToolError(f"database {name} not found on {redact_url(url)}")
            owner, encoding, collate, ctype = found
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
            admin.execute(
                sql.SQL(
                    "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {}"
                    " LC_COLLATE {} LC_CTYPE {}"
                ).format(
                    sql.Identifier(name),
                    sql.Identifier(owner),
                    sql.Literal(encoding),
                    sql.Literal(collate),
                    sql.Literal(ctype),
                )
            )
    except psycopg.Error as exc:
        raise DatabaseToolError(
            f"cannot recreate database {name} for the restore: {exc};"
            " close other sessions on it and run the restore again"
        ) from exc


@contextlib.contextmanager
def scratch_database(engine: str, like_url: str) -> Iterator[str]:
    """Yield the URL of a new, empty database of `engine`, removed afterwards.

    A PostgreSQL scratch database is created on the server of `like_url`.
    """
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pipeline-scratch-") as folder:
            yield f"sqlite:///{Path(folder).resolve() / 'scratch.sqlite'}"
        return
    import psycopg
    from psycopg import sql

    name = f"pipeline_scratch_{uuid.uuid4().hex[:12]}"
    admin_url = _maintenance_url(like_url)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(_conninfo(like_url))._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def restore_into_empty(backup: Path, url: str, root: Path) -> None:
    """Load `backup` into the empty database at `url` (a new SQLite file is created).

    Raises:
        DatabaseToolError: the restore failed.
    """
    if engine_of(url) == "sqlite":
        path = sqlite_file(url, root)
        try:
            reader = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
            try:
                writer = sqlite3.connect(path)
                try:
                    reader.backup(writer)
                finally:
                    writer.close()
            finally:
                reader.close()
        except sqlite3.Error as exc:
            raise DatabaseToolError(f"cannot restore {backup} into {path}: {exc}") from exc
    else:
        _run_tool(
            [
                "pg_restore",
                "--exit-on-error",
                "--no-owner",
                "--dbname",
                _conninfo(url),
                str(backup),
            ],
            url,
        )


def compare_databases(
    first: Database, second: Database, skip: frozenset[str] = frozenset()
) -> Comparison:
    """Compare two databases table by table: the same tables, row counts and checksums."""
    left = database_checksums(first, skip)
    right = database_checksums(second, skip)
    comparison = Comparison(tables=left)
    a, b = display_name(first.url), display_name(second.url)
    for table in sorted(set(left) | set(right)):
        if table not in right:
            comparison.differences.append(f"table {table} is in {a} but not in {b}")
        elif table not in left:
            comparison.differences.append(f"table {table} is in {b} but not in {a}")
        elif left[table].rows != right[table].rows:
            comparison.differences.append(
                f"table {table}: {left[table].rows} rows in {a}, {right[table].rows} in {b}"
            )
        elif left[table].sha256 != right[table].sha256:
            comparison.differences.append(
                f"table {table}: same row count ({left[table].rows}) but different values"
            )
    return comparison


def verify_backup(backup: Path, url: str, root: Path) -> Comparison:
    """Restore `backup` into a scratch database and compare it with the database at `url`."""
    engine = engine_of(url)
    with scratch_database(engine, url) as scratch:
        restore_into_empty(backup, scratch, root)
        with (
            open_database(url, root) as source,
            open_database(scratch, root) as copy,
        ):
            return compare_databases(source, copy)


def restore_database(backup: Path, url: str, root: Path) -> Comparison:
    """Restore `backup` over the database at `url`, verified against a scratch restore.

    The backup is first restored into a scratch database; then the target is
    replaced and compared table by table with the scratch copy.

    Raises:
        DatabaseToolError: the backup is missing, a restore failed, or the
            restored database differs from the scratch copy.
    """
    if not backup.is_file():
        raise DatabaseToolError(f"backup {backup} not found")
    engine = engine_of(url)
    with scratch_database(engine, url) as scratch:
        restore_into_empty(backup, scratch, root)
        if engine == "sqlite":
            path = sqlite_file(url, root)
            with atomic_output(path, 0o644) as tmp:
                restore_into_empty(backup, f"sqlite:///{tmp.resolve()}", root)
        else:
            restore_exact(backup, url, root)
        with open_database(url, root) as target, open_database(scratch, root) as copy:
            comparison = compare_databases(copy, target)
    if not comparison.equal:
        raise DatabaseToolError(
            f"restored {display_name(url)} from {backup}, but it differs from the backup: "
            + "; ".join(comparison.differences[:5])
        )
    return comparison


@contextlib.contextmanager
def database_copy(url: str, root: Path) -> Iterator[str]:
    """Yield the URL of a throwaway copy of the database at `url`, removed afterwards.

    SQLite: the backup API into a temporary folder. PostgreSQL: `CREATE
    DATABASE ... TEMPLATE`, which needs the source to have no other sessions.

    Raises:
        DatabaseToolError: the copy cannot be made.
    """
    if engine_of(url) == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pipeline-copy-") as folder:
            copy = Path(folder).resolve() / sqlite_file(url, root).name
            _sqlite_backup(sqlite_file(url, root), copy)
            yield f"sqlite:///{copy}"
        return
    import psycopg
    from psycopg import sql

    name = f"pipeline_copy_{uuid.uuid4().hex[:12]}"
    admin_url = _maintenance_url(url)
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(postgres_name(url))
                )
            )
    except psycopg.Error as exc:
        raise DatabaseToolError(
            f"cannot copy {redact_url(url)}: {exc}; close other sessions on it and retry"
        ) from exc
    try:
        yield urlsplit(_conninfo(url))._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
