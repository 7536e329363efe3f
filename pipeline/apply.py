"""Apply a verified bundle to a customer or test database, all or nothing.

`apply_bundle` runs these steps in order:

1. Verify the bundle as `inv verify` does, then extract it into a temporary
   folder and check every extracted file against the manifest's SHA-256.
2. Take the database's apply lock; a second apply waits up to
   `lock_timeout` seconds and then fails.
3. Read the installed version (`pipeline_updates`). A second apply of the
   installed version is a no-op; a bundle for another base release, or an
   older one without `allow_downgrade`, is rejected.
4. Back up the database (SQLite backup API, or `pg_dump -Fc`) and record the
   backup's SHA-256.
5. Write the journal file before the first change. It names the backup and,
   for SQLite, the original file's SHA-256 and header, so `recover` can undo
   a half-done apply after a crash.
6. In one transaction, apply the pending migrations through the runner (each
   in a SAVEPOINT), the catalogs, the report, form, treasury and fix
   definitions and the history row. Then run the integrity checks. Fix
   payload files are moved into the installation folder, and each old file
   is kept aside until the end.
7. COMMIT, or with `dry_run` ROLLBACK, through the same code path.

On any failure the transaction is rolled back and the payload files are put
back. Two kinds of migration cannot run inside that transaction
(`needs_own_transaction`): one marked no-transaction, and on SQLite one
marked rebuild-tables, which needs foreign keys off. Before such a migration
the journal is marked `partial` and the work before it is committed. The
migration runs on its own, and the rest of the apply continues in a new
transaction. After such a step, a failure or `recover` after a crash
restores the database from the backup: the same bytes for SQLite, the same
dump for PostgreSQL. The dry-run runs the migrations with the same
transaction boundaries (`pipeline.database.apply_pending`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipeline import archive
from pipeline.apply_store import PAUSE_ENV as PAUSE_ENV
from pipeline.apply_store import TESTING_ENV as TESTING_ENV
from pipeline.apply_store import (
    check_applicable,
    delete_definition,
    ensure_tables,
    load_catalog,
    pause_point,
    prepare_catalog_tables,
    record_update,
    store_definition,
)
from pipeline.apply_store import installed_version as stored_version
from pipeline.build import ARCHIVE_FOLDERS
from pipeline.config import DEFAULT_MAX_RATIO
from pipeline.content import DEFINITION_FILES, Kind
from pipeline.database import (
    HISTORY_TABLE,
    Database,
    MigrationRun,
    RunnerHooks,
    applied_migrations,
    apply_pending,
    check_integrity,
    commit,
    display_name,
    ensure_history,
    interruptible_statements,
    needs_own_transaction,
    open_database,
    redact_url,
)
from pipeline.db_backup import (
    backup_database,
    backup_suffix,
    engine_of,
    file_sha256,
    postgres_name,
    read_sqlite_header,
    restore_exact,
    sqlite_file,
)
from pipeline.db_schema import list_tables
from pipeline.definitions import install_path_problem
from pipeline.dryrun_workers import terminate_as_interrupt
from pipeline.errors import ApplyError, MigrationError, PipelineError
from pipeline.fsutil import atomic_output, atomic_write_text
from pipeline.keys import PublicKey
from pipeline.manifest import MANIFEST_NAME, parse_manifest
from pipeline.migrations import Migration, load_migrations
from pipeline.sqlite_interrupt import STOP_SIGNALS, signals_interrupt_statements
from pipeline.trust import TrustedKey, check_key_usable, find_trusted_key
from pipeline.verify import MAX_MANIFEST_BYTES, parse_trusted_comment, verify_bundle

logger = logging.getLogger(__name__)

# Definition kinds stored in pipeline_definitions, in the order they load.
STORED_KINDS = (Kind.REPORT, Kind.FORM, Kind.TREASURY, Kind.FIX)
LOCK_POLL_SECONDS = 0.1
# Backups of one database that an apply keeps in its backup folder, the newest first.
DEFAULT_KEEP_BACKUPS = 5

Status = Literal["applied", "already-applied", "dry-run"]


@dataclass
class ApplyResult:
    """The outcome of one apply on one database."""

    bundle_version: str
    from_version: str | None
    status: Status
    migrations: list[MigrationRun] = field(default_factory=list)
    catalogs: dict[str, dict[str, int]] = field(default_factory=dict)
    backup: Path | None = None
    backup_sha256: str | None = None
    seconds: float = 0.0
    definitions: dict[str, list[str]] = field(default_factory=dict)
    payload: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the result as plain JSON data."""
        data = asdict(self)
        data["backup"] = str(self.backup) if self.backup else None
        return data


@dataclass
class Journal:
    """The record of an apply in progress, written before its first change.

    `phase` is `started` (nothing committed), `partial` (a migration that runs
    on its own may have committed part of the work) or `committed` (only
    clean-up left).
    """

    database: str
    bundle_version: str
    from_version: str | None
    backup: str
    backup_sha256: str
    phase: str = "started"
    database_sha256: str | None = None
    sqlite_header: str | None = None
    payload: list[dict[str, str | None]] = field(default_factory=list)

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n", 0o600)

    @classmethod
    def read(cls, path: Path) -> Journal:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ApplyError(
                f"{path}: unreadable apply journal ({exc}); restore the database from its"
                " backup by hand with `inv db.restore`"
            ) from exc


# -- locations ---------------------------------------------------------------------------------


def default_backup_dir(database: str, root: Path) -> Path:
    """Return where backups go by default: `backups/` beside a SQLite file, else under `root`."""
    if engine_of(database) == "sqlite":
        return sqlite_file(database, root).parent / "backups"
    return root / "backups"


def journal_path(database: str, root: Path, backup_dir: Path | None = None) -> Path:
    """Return the journal file of applies to `database`."""
    folder = backup_dir or default_backup_dir(database, root)
    tag = hashlib.sha256(redact_url(database).encode()).hexdigest()[:8]
    return folder / f"{display_name(database)}-{tag}.apply-journal.json"


# -- lock --------------------------------------------------------------------------------------


@contextlib.contextmanager
def database_lock(database: str, root: Path, timeout: float) -> Iterator[None]:
    """Hold the apply lock of `database`, waiting up to `timeout` seconds for it.

    SQLite: an exclusive `flock` on `<file>.apply-lock` beside the database.
    PostgreSQL: a session advisory lock taken in the server's maintenance
    database, so the target database itself can be dropped for a restore.
    Both are released when the process dies.

    Raises:
        ApplyError: another apply held the lock for longer than `timeout`, or
            the SQLite file does not exist.
    """
    deadline = time.monotonic() + timeout
    message = (
        f"another apply holds the lock of {display_name(database)}; waited {timeout:g} s."
        " Wait for it to finish, or raise --lock-timeout"
    )
    if engine_of(database) == "sqlite":
        path = sqlite_file(database, root)
        if not path.is_file():
            # Checked before the lock file is created, so a rejected apply leaves nothing behind.
            raise ApplyError(
                f"{path}: SQLite database not found; check the --database URL"
                " (relative paths start from --repo)"
            )
        lock_file = path.with_name(path.name + ".apply-lock")
        with lock_file.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ApplyError(message) from None
                    time.sleep(LOCK_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    import psycopg

    from pipeline.db_backup import MAINTENANCE_DATABASE

    key = zlib.crc32(f"parus-apply:{postgres_name(database)}".encode())
    admin_url = database.replace("postgresql+psycopg://", "postgresql://", 1)
    admin_url = admin_url.rsplit("/", 1)[0] + f"/{MAINTENANCE_DATABASE}"
    try:
        connection = psycopg.connect(admin_url, autocommit=True)
    except psycopg.Error as exc:
        raise ApplyError(f"cannot connect to {redact_url(admin_url)} for the lock: {exc}") from exc
    try:
        while not connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() >= deadline:
                raise ApplyError(message)
            time.sleep(LOCK_POLL_SECONDS)
        yield
    finally:
        connection.close()


# -- the apply ---------------------------------------------------------------------------------


def installed_version(database: str, root: Path = Path(".")) -> str | None:
    """Return the release installed in `database`, or None when no bundle was applied."""
    with open_database(database, root) as db:
        return stored_version(db)


def _public_keys(keys: Sequence[PublicKey | TrustedKey]) -> list[PublicKey]:
    return [key.public if isinstance(key, TrustedKey) else key for key in keys]


def _check_trusted_key(keys: Sequence[PublicKey | TrustedKey], key_id: str, comment: str) -> None:
    """Check the validity period of the signing key when `keys` carry one."""
    trusted = [key for key in keys if isinstance(key, TrustedKey)]
    if not trusted:
        return
    key = find_trusted_key(trusted, key_id)
    when = parse_trusted_comment(comment).get("time")
    try:
        signed_at = datetime.fromisoformat(when) if when else datetime.now(UTC)
    except ValueError as exc:
        raise ApplyError(f"trusted comment time {when!r} is not an ISO date-time") from exc
    check_key_usable(key, signed_at)


def _extract(
    bundle: Path, work: Path, max_ratio: float, password: str | None
) -> tuple[Path, dict[str, Any]]:
    """Extract a verified bundle and check each file against the manifest once more."""
    manifest_data = archive.read_file(bundle, MANIFEST_NAME, MAX_MANIFEST_BYTES, password)
    manifest = parse_manifest(manifest_data, f"{bundle}:{MANIFEST_NAME}")
    limit = sum(entry["size"] for entry in manifest["files"]) + len(manifest_data)
    extracted = work / "bundle"
    archive.extract_all(bundle, extracted, max_total=limit, max_ratio=max_ratio, password=password)
    for entry in manifest["files"]:
        path = extracted / entry["path"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            raise ApplyError(
                f"{bundle}: {entry['path']} changed after verification; verify the bundle again"
            )
    return extracted, manifest


@contextlib.contextmanager
def _created_database(database: str, root: Path, folder: Path, create: bool) -> Iterator[None]:
    """Create a missing SQLite file when `create` is set, and remove it if the apply fails.

    The file, its lock file and a backup folder made on the way are removed
    only when no journal is left: a journal means the undo failed, and
    `inv db.recover` needs everything as it is.
    """
    if not create or engine_of(database) != "sqlite" or sqlite_file(database, root).exists():
        yield
        return
    path = sqlite_file(database, root)
    folder_existed = folder.exists()
    open_database(database, root, create=True).close()
    logger.info("created the empty SQLite database %s", path)
    try:
        yield
    except BaseException:
        if not journal_path(database, root, folder).exists():
            for leftover in (path, path.with_name(path.name + ".apply-lock")):
                leftover.unlink(missing_ok=True)
            if not folder_existed:
                shutil.rmtree(folder, ignore_errors=True)
            logger.info("removed the SQLite database %s created for the failed apply", path)
        raise


def apply_bundle(
    bundle: Path,
    database: str,
    keys: Sequence[PublicKey | TrustedKey],
    *,
    root: Path = Path("."),
    install_dir: Path | None = None,
    dry_run: bool = False,
    allow_downgrade: bool = False,
    lock_timeout: float = 30.0,
    backup_dir: Path | None = None,
    create: bool = False,
    keep_backups: int = DEFAULT_KEEP_BACKUPS,
    max_ratio: float = DEFAULT_MAX_RATIO,
    password: str | None = None,
) -> ApplyResult:
    """Apply `bundle` to `database`, running the steps of the module docstring.

    `install_dir` receives the fix payload files; without it they are not
    installed. `backup_dir` defaults to `default_backup_dir`; after the apply
    it keeps the newest `keep_backups` backups of this database. With `create`, a
    missing SQLite file is created empty once the bundle has verified, for a
    fresh install, and removed again with its lock file when the apply fails
    and left no journal. `max_ratio` is verification's limit on the unpacked
    size divided by the archive size. `password` opens an encrypted bundle.

    Raises:
        VerificationError: the bundle failed verification.
        ApplyError: the bundle does not apply, the lock timed out, a journal of
            a half-done apply exists, or a step failed. The message states
            that the database is as it was before.
        SignatureError: the signing key is not valid at the signing time.
    """
    if keep_backups < 1:
        raise ApplyError(f"--keep-backups {keep_backups}: expected at least 1")
    started = time.perf_counter()
    verified = verify_bundle(bundle, _public_keys(keys), max_ratio=max_ratio, password=password)
    _check_trusted_key(keys, verified.key_id, verified.trusted_comment)
    folder = backup_dir or default_backup_dir(database, root)
    # SIGTERM (a CI timeout, a service manager) undoes the apply as Ctrl+C does.
    with (
        terminate_as_interrupt(),
        _created_database(database, root, folder, create),
        tempfile.TemporaryDirectory(prefix="parus-apply-") as work,
    ):
        extracted, manifest = _extract(bundle, Path(work), max_ratio, password)
        with database_lock(database, root, lock_timeout), _pruning(database, folder, keep_backups):
            result = _apply_locked(
                _Context(
                    bundle=bundle,
                    database=database,
                    root=root,
                    extracted=extracted,
                    manifest=manifest,
                    install_dir=install_dir,
                    dry_run=dry_run,
                    allow_downgrade=allow_downgrade,
                    lock_timeout=lock_timeout,
                    backup_dir=folder,
                )
            )
    result.seconds = time.perf_counter() - started
    logger.info(
        "%s %s on %s in %.2f s",
        result.status,
        result.bundle_version,
        display_name(database),
        result.seconds,
    )
    return result


@dataclass
class _Context:
    bundle: Path
    database: str
    root: Path
    extracted: Path
    manifest: dict[str, Any]
    install_dir: Path | None
    dry_run: bool
    allow_downgrade: bool
    lock_timeout: float
    backup_dir: Path

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


def _open(context: _Context) -> Database:
    return open_database(
        context.database, context.root, lock_timeout_ms=int(context.lock_timeout * 1000)
    )


def _apply_locked(context: _Context) -> ApplyResult:
    journal_file = journal_path(context.database, context.root, context.backup_dir)
    if journal_file.exists():
        raise ApplyError(
            f"{journal_file} records a half-done apply of {display_name(context.database)};"
            " run `inv db.recover` first"
        )
    with _open(context) as db:
        installed = stored_version(db)
        result = ApplyResult(context.version, installed, "applied")
        if installed == context.version:
            logger.info("%s is installed already; nothing to do", context.version)
            result.status = "already-applied"
            return result
        check_applicable(installed, context.manifest, context.allow_downgrade)
        pending = _pending(db, load_migrations(context.extracted, db.engine))
    backup = backup_database(
        context.database,
        context.root,
        context.backup_dir / _backup_name(context, installed),
        lock_timeout_ms=int(context.lock_timeout * 1000),
    )
    result.backup, result.backup_sha256 = backup.path, backup.sha256
    journal = Journal(
        database=redact_url(context.database),
        bundle_version=context.version,
        from_version=installed,
        backup=str(backup.path),
        backup_sha256=backup.sha256,
    )
    if engine_of(context.database) == "sqlite":
        path = sqlite_file(context.database, context.root)
        journal.database_sha256 = file_sha256(path)
        journal.sqlite_header = read_sqlite_header(path).hex()
    journal.write(journal_file)
    pause_point("backup")
    try:
        _run_steps(context, journal, journal_file, pending, result)
    except BaseException as exc:
        try:
            with _stop_signals_held():
                _undo(context, journal, journal_file)
        except PipelineError as undo_error:
            raise ApplyError(
                f"apply of {context.version} to {display_name(context.database)} failed and"
                f" could not be undone: {exc}. {undo_error}"
            ) from exc
        if isinstance(exc, PipelineError):
            raise ApplyError(
                f"apply of {context.version} to {display_name(context.database)} failed and was"
                f" undone; the database is as before: {exc}"
            ) from exc
        raise
    return result


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Ignore Ctrl+C and SIGTERM in the block, so a second one cannot cut the undo short.

    Signal handlers can be set only in the main thread, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _pruning(database: str, folder: Path, keep: int) -> Iterator[None]:
    """Prune the backups of `database` once the apply ends, whether it succeeded or not."""
    try:
        yield
    finally:
        try:
            prune_backups(database, folder, keep)
        except (OSError, ApplyError) as exc:
            # The apply's own outcome matters more than the clean-up, so it is not replaced.
            logger.warning(
                "old backups of %s in %s not pruned: %s", display_name(database), folder, exc
            )


def prune_backups(database: str, folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` apply backups of `database` in `folder`; return them.

    Only files named as `apply` names its backups of this database are
    considered, and a backup that a journal of a half-done apply names is kept.
    """
    if keep < 1:
        raise ApplyError(f"--keep-backups {keep}: expected at least 1")
    name = re.escape(display_name(database).rsplit(".", 1)[0])
    # `_backup_name`: NAME-FROM-to-VERSION-STAMP.SUFFIX, FROM being a version or `none`.
    pattern = re.compile(
        rf"{name}-(?:none|[0-9][0-9.]*)-to-[0-9][0-9.]*-(\d{{8}}T\d{{12}}Z)"
        + re.escape(backup_suffix(database))
    )
    stamps = {}
    for path in folder.glob("*") if folder.is_dir() else []:
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            stamps[path] = match.group(1)
    candidates = sorted(stamps, key=stamps.__getitem__, reverse=True)
    journal = journal_path(database, Path("."), folder)
    protected = {Journal.read(journal).backup} if journal.exists() else set()
    deleted = []
    for path in candidates[keep:]:
        if str(path) in protected:
            continue
        path.unlink(missing_ok=True)
        deleted.append(path)
    if deleted:
        logger.info(
            "deleted %d old backup(s) of %s; the newest %d are in %s",
            len(deleted),
            display_name(database),
            keep,
            folder,
        )
    return deleted


def _backup_name(context: _Context, installed: str | None) -> str:
    moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = display_name(context.database).rsplit(".", 1)[0]
    suffix = backup_suffix(context.database)
    return f"{name}-{installed or 'none'}-to-{context.version}-{moment}{suffix}"


def _pending(db: Database, migrations: Sequence[Migration]) -> list[Migration]:
    """Return the bundle's migrations that the database lacks.

    Applied migrations that the bundle does not ship (a downgrade) stay as
    they are: the schema keeps its newer version.
    """
    applied = applied_migrations(db) if HISTORY_TABLE in list_tables(db) else {}
    pending = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded != migration.checksum:
            raise ApplyError(
                f"migration {migration.name} of the bundle differs from the one applied to"
                f" {display_name(db.url)} (checksum {recorded}); the bundle was built from"
                " modified history and cannot be applied"
            )
    extra = sorted(set(applied) - {m.version for m in migrations})
    if extra:
        logger.info("keeping applied migration(s) %s that the bundle lacks", ", ".join(extra))
    return pending


def _run_steps(
    context: _Context,
    journal: Journal,
    journal_file: Path,
    pending: Sequence[Migration],
    result: ApplyResult,
) -> None:
    # Ctrl+C stops a long SQLite statement at once, and the steps are undone as on any error.
    with _open(context) as db, interruptible_statements(db), signals_interrupt_statements():
        sequences = _sequence_values(db)
        try:
            _run_transaction(context, db, journal, journal_file, pending, result)
        except BaseException:
            _rollback_quietly(db)
            _reset_sequences(db, sequences)
            raise
        if context.dry_run:
            _reset_sequences(db, sequences)
    if context.dry_run:
        _undo(context, journal, journal_file)
        return
    journal.phase = "committed"
    journal.write(journal_file)
    pause_point("commit")
    _finish(journal, journal_file)


def _sequence_values(db: Database) -> dict[str, tuple[int, bool]]:
    """Return `(last_value, is_called)` of every PostgreSQL sequence; SQLite has none."""
    if db.engine != "postgresql":
        return {}
    names = db.execute(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) FROM pg_sequences"
    )
    values = {}
    for (name,) in names:
        last_value, is_called = db.execute(f"SELECT last_value, is_called FROM {name}")[0]
        values[str(name)] = (int(last_value), bool(is_called))
    return values


def _reset_sequences(db: Database, before: dict[str, tuple[int, bool]]) -> None:
    """Set sequences back after a rollback, because PostgreSQL never rolls back `nextval`."""
    try:
        for name, (last_value, is_called) in before.items():
            current = db.execute(f"SELECT last_value, is_called FROM {name}")[0]
            if (int(current[0]), bool(current[1])) != (last_value, is_called):
                db.execute("SELECT setval(%s, %s, %s)", (name, last_value, is_called))
                logger.debug("sequence %s set back to %d", name, last_value)
    except db.errors as exc:
        logger.warning("cannot set the sequences of %s back: %s", display_name(db.url), exc)


def _rollback_quietly(db: Database) -> None:
    try:
        db.execute("ROLLBACK")
    except db.errors as exc:
        logger.debug("ROLLBACK on %s: %s", display_name(db.url), exc)


def _run_transaction(
    context: _Context,
    db: Database,
    journal: Journal,
    journal_file: Path,
    pending: Sequence[Migration],
    result: ApplyResult,
) -> None:
    db.execute("BEGIN")
    ensure_history(db)
    ensure_tables(db)
    # NOTE: on a new database these tables are still empty while the migrations run, so a
    # migration that needs catalog rows fails there, and no dry-run tries that order.
    catalog_ids = [str(entry["id"]) for entry in context.manifest["catalogs"]]
    prepare_catalog_tables(db, context.extracted, catalog_ids)
    hooks = _JournalHooks(journal, journal_file, db.engine)
    batch = apply_pending(db, pending, context.version, result.migrations, hooks)
    for entry in context.manifest["catalogs"]:
        try:
            counts = load_catalog(db, context.extracted, entry, context.version)
        except db.errors as exc:
            # A write that SQLite cannot compile, such as a foreign key of another
            # table that references a column of the catalog table that is not unique.
            raise ApplyError(f"catalog {entry['id']}: {db.describe_error(exc)}") from exc
        result.catalogs[entry["id"]] = counts
        pause_point("catalog")
    result.definitions = _store_definitions(db, context)
    pause_point("definitions")
    record_update(
        db,
        context.version,
        result.from_version,
        file_sha256(context.bundle),
        journal.backup,
        journal.backup_sha256,
    )
    problems = [f for f in check_integrity(db) if f.severity == "error"]
    if problems:
        raise MigrationError(
            f"integrity check failed after the apply: {'; '.join(map(str, problems[:5]))}"
        )
    result.payload = _install_payload(context, journal, journal_file)
    pause_point("payload")
    if context.dry_run:
        db.execute("ROLLBACK")
        result.status = "dry-run"
    else:
        commit(db, ", ".join([m.path for m in batch] + ["catalogs and definitions"]))
        pause_point("after-commit")


class _JournalHooks(RunnerHooks):
    """Runner hooks that mark the journal `partial` before a step commits, and pause for tests."""

    def __init__(self, journal: Journal, journal_file: Path, engine: str) -> None:
        self.journal = journal
        self.journal_file = journal_file
        self.engine = engine

    def before_commit(self) -> None:
        # Written before the COMMIT, so that a crash right after it still
        # leads `recover` to restore the backup.
        if self.journal.phase != "partial":
            self.journal.phase = "partial"
            self.journal.write(self.journal_file)

    def after_commit(self) -> None:
        pause_point("step-commit")

    def after_statement(self, index: int) -> None:
        if index == 0:
            pause_point("migration-statement")

    def after_migration(self, migration: Migration) -> None:
        if not migration.transactional:
            pause_point("no-transaction")
        elif needs_own_transaction(migration, self.engine):
            pause_point("rebuild-tables")
        else:
            pause_point("migration")


def _store_definitions(db: Database, context: _Context) -> dict[str, list[str]]:
    """Store every shipped definition and delete the ones the release deleted."""
    stored: dict[str, list[str]] = {}
    for kind in STORED_KINDS:
        folder = context.extracted / ARCHIVE_FOLDERS[kind]
        items = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        for item in items:
            path = folder / item / DEFINITION_FILES[kind]
            if not path.is_file():
                continue
            text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
            document = json.loads(text)
            version = str(document.get("version") or context.version)
            text = json.dumps(document, ensure_ascii=False)
            store_definition(db, kind.value, item, version, text)
            stored.setdefault(kind.value, []).append(item)
        for change in context.manifest["changes"].get(kind.value, []):
            deleted = change["change"] == "deleted" and change["item"] not in items
            is_definition = change["path"].endswith("/" + DEFINITION_FILES[kind])
            if deleted and is_definition and delete_definition(db, kind.value, change["item"]):
                stored.setdefault(f"{kind.value}-deleted", []).append(change["item"])
    return stored


def _payload_files(context: _Context) -> list[tuple[Path, str]]:
    folder = context.extracted / ARCHIVE_FOLDERS[Kind.FIX]
    files: list[tuple[Path, str]] = []
    if not folder.is_dir():
        return files
    for fix in sorted(folder.iterdir()):
        definition = fix / DEFINITION_FILES[Kind.FIX]
        if not definition.is_file():
            continue
        for entry in json.loads(definition.read_text(encoding="utf-8")).get("files", []):
            problem = install_path_problem(entry["install"])
            if problem:
                raise ApplyError(f"{definition}: install path {entry['install']!r}: {problem}")
            files.append((fix / entry["source"], entry["install"]))
    return files


def _install_payload(context: _Context, journal: Journal, journal_file: Path) -> list[str]:
    """Move the fix payload files into the installation folder, keeping old files aside.

    Each file replaces its target with `os.replace`, so a target is either
    the old or the new file. The journal lists every step before it happens.
    """
    files = _payload_files(context)
    if context.install_dir is None:
        if files:
            logger.info("no installation folder given: %d payload files not installed", len(files))
        return []
    if context.dry_run:
        return _check_payload_writable(context.install_dir, files)
    saved_folder = journal_file.with_suffix(".files")
    installed: list[str] = []
    for index, (source, install) in enumerate(files):
        target = context.install_dir / install
        saved = saved_folder / str(index) if target.exists() else None
        journal.payload.append({"target": str(target), "saved": str(saved) if saved else None})
        journal.write(journal_file)
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, saved)
        with atomic_output(target) as tmp:
            shutil.copyfile(source, tmp)
        installed.append(install)
    logger.info("installed %d payload files into %s", len(installed), context.install_dir)
    return installed


def _check_payload_writable(install_dir: Path, files: list[tuple[Path, str]]) -> list[str]:
    """Check that each payload file could be installed, without writing anything.

    A dry run never touches the installation folder: for each target it checks
    that an existing target is a regular file and that the nearest existing
    folder on its path is writable.

    Raises:
        ApplyError: a target is a folder, or its folder cannot be written.
    """
    for _, install in files:
        target = install_dir / install
        if target.exists() and not target.is_file():
            raise ApplyError(f"payload target {target} exists and is not a regular file")
        folder = target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise ApplyError(
                f"payload target {target}: folder {folder} is not writable;"
                " fix its permissions before applying"
            )
    logger.info("dry run: %d payload files could be installed into %s", len(files), install_dir)
    return [install for _, install in files]


def _undo_payload(journal: Journal) -> None:
    for step in reversed(journal.payload):
        target = Path(str(step["target"]))
        saved = step["saved"]
        if saved is None:
            target.unlink(missing_ok=True)
        elif Path(saved).is_file():
            with atomic_output(target) as tmp:
                shutil.copyfile(saved, tmp)
    journal.payload.clear()


def _finish(journal: Journal, journal_file: Path) -> None:
    shutil.rmtree(journal_file.with_suffix(".files"), ignore_errors=True)
    journal_file.unlink(missing_ok=True)


def _undo(context: _Context, journal: Journal, journal_file: Path) -> None:
    """Put the payload back and, after a committed partial step, restore the backup."""
    _undo_payload(journal)
    if journal.phase == "partial":
        logger.warning(
            "part of the apply was committed on %s; restoring it from %s",
            display_name(context.database),
            journal.backup,
        )
        _restore_from_journal(context.database, context.root, journal)
    _finish(journal, journal_file)


def _restore_from_journal(database: str, root: Path, journal: Journal) -> None:
    backup = Path(journal.backup)
    if file_sha256(backup) != journal.backup_sha256:
        raise ApplyError(
            f"backup {backup} does not match the SHA-256 {journal.backup_sha256} recorded in the"
            " journal; restore the database by hand from another backup"
        )
    if engine_of(database) == "sqlite":
        _check_no_other_connection(sqlite_file(database, root), backup)
    header = bytes.fromhex(journal.sqlite_header) if journal.sqlite_header else None
    restore_exact(backup, database, root, header=header, sha256=journal.database_sha256)


def _check_no_other_connection(path: Path, backup: Path) -> None:
    """Raise before a file restore that a connection of another program would undo.

    The last connection to close a WAL database checkpoints and deletes its
    `-wal` file (SQLite's WAL documentation, seen with SQLite 3.40). A `-wal`
    file with frames left after the apply's connection has closed means that
    another connection keeps the database open, and SQLite would lay those
    frames over the restored file.
    NOTE: a database in rollback-journal mode shows no such trace. A program
    that keeps it open during a failed apply keeps reading the replaced file
    until it reopens the database.

    Raises:
        ApplyError: the `-wal` file is not empty; the journal stays for `recover`.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise ApplyError(
            f"{path}: backup {backup} not restored, because the write-ahead log {wal} is not"
            " empty, so another connection keeps the database open. Close every program"
            " that uses the database, then run `inv db.recover`"
        )


# -- recovery ----------------------------------------------------------------------------------


RecoverAction = Literal["nothing", "undone", "restored", "finished"]


@dataclass(frozen=True)
class RecoverResult:
    """Outcome of `recover`: the state it found and the action it took."""

    action: RecoverAction
    bundle_version: str | None
    journal: Path


def recover(
    database: str,
    root: Path = Path("."),
    *,
    backup_dir: Path | None = None,
    lock_timeout: float = 30.0,
) -> RecoverResult:
    """Finish or undo an apply that was interrupted, using its journal and backup.

    - No journal: nothing to do.
    - The database's installed version is the journal's bundle version, or
      the phase is `committed`: the transaction committed, and the process
      died before or during the clean-up. The payload files were installed
      before the COMMIT, so they stay; finish the clean-up.
    - `started`: the database rolled the open transaction back by itself
      (SQLite from its rollback journal on first open, PostgreSQL when the
      session died); put the payload files back.
    - `partial`: a migration that runs on its own may have committed part of
      the work; restore the backup.

    Raises:
        ApplyError: the journal or the backup is unusable, or the lock timed out.
    """
    journal_file = journal_path(database, root, backup_dir)
    with database_lock(database, root, lock_timeout):
        if not journal_file.exists():
            return RecoverResult("nothing", None, journal_file)
        journal = Journal.read(journal_file)
        # Opening the database and reading from it lets SQLite roll back a hot journal.
        with open_database(database, root) as db:
            installed = stored_version(db)
        committed = installed == journal.bundle_version
        if committed and journal.phase != "committed":
            logger.info(
                "%s has %s installed although the journal records phase %s,"
                " so the COMMIT went through",
                display_name(database),
                installed,
                journal.phase,
            )
        if committed or journal.phase == "committed":
            _finish(journal, journal_file)
            action: RecoverAction = "finished"
        else:
            _undo_payload(journal)
            action = "undone"
            if journal.phase == "partial":
                _restore_from_journal(database, root, journal)
                action = "restored"
            _finish(journal, journal_file)
    logger.info("recovered %s: %s %s", display_name(database), action, journal.bundle_version)
    return RecoverResult(action, journal.bundle_version, journal_file)
