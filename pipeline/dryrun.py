"""Dry-run: pending migrations and report queries against throwaway copies of sample databases.

For every configured sample database:

1. generate a missing sample when its `generate` size is set (a SQLite file,
   or a PostgreSQL database that is loaded once and then used as a template);
2. copy it (a SQLite file into a temporary folder, or a PostgreSQL
   `CREATE DATABASE ... TEMPLATE`), so the sample itself never changes;
3. lint the pending migrations against the copy's row counts;
4. apply the pending migrations with the runner and the transaction boundaries
   that `apply` uses (`pipeline.database.apply_pending`);
5. run the schema, integrity and foreign key checks;
6. load the catalogs that the release would ship, as apply loads them
   (`pipeline.dryrun_catalogs`), so a catalog row that a migrated table
   rejects fails the dry-run; on a kept migrated copy, a catalog whose
   files and parent catalogs did not change keeps its stored result;
7. compile every report and form query (`query` of `packages/reports/*/report.json`
   and `packages/forms/*/form.json`) with EXPLAIN against the migrated schema;
8. drop the copy, also on failure, on Ctrl+C and on SIGTERM. A PostgreSQL
   copy records its process and host in a comment, so after a SIGKILL the
   next dry-run on that host drops it.

Samples run in parallel worker processes when `jobs` is above 1
(`pipeline.dryrun_workers`), and `shard` takes every N-th sample for one
job of a CI matrix (`report_merge` joins the reports again). A failure is
returned as a failed result with findings, and so is a sample that cannot
be opened or copied, or whose worker process died also when it ran again
alone, so the other samples still run. Only an empty selection of samples
and malformed migration files raise. On SIGTERM or Ctrl+C the parent stops
its worker processes. A
PostgreSQL worker cancels its running statement and drops its clone. A
SQLite worker is killed at once, because a running SQLite statement ignores
signals until it ends, and the parent removes the folder of its copy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline import sqlite_schema
from pipeline.apply_store import catalog_table, prepare_catalog_tables
from pipeline.cache import (
    MISSING,
    ResultCache,
    blob_id,
    cache_path,
    file_identity,
    folder_blob_ids,
    inputs_key,
    pipeline_fingerprint,
)
from pipeline.config import Config, SampleDatabase
from pipeline.console import Progress, StepLine
from pipeline.content import Kind, definition_path, list_items
from pipeline.database import (
    Database,
    MigrationRun,
    RunnerHooks,
    RunResult,
    SQLiteDatabase,
    StatementError,
    check_integrity,
    display_name,
    ensure_history,
    interruptible_statements,
    migration_statements,
    open_database,
    pending_migrations,
    redact_url,
    run_migrations,
    table_row_counts,
)
from pipeline.dryrun_catalogs import (
    BaseRelease,
    CatalogLoad,
    catalog_digest,
    constrained_catalogs,
    held_rows,
    loaded_catalogs,
    migration_tables,
    released_versions,
    shipped_since_base,
)
from pipeline.dryrun_kept import WHOLE_DIGEST_BYTES, KeptCopy, abandoned_staging
from pipeline.dryrun_workers import WorkerLost, run_in_processes, terminate_as_interrupt
from pipeline.errors import ConfigError, MigrationError, ValidationError
from pipeline.findings import CheckCase, Finding, errors_only
from pipeline.migration_lint import (
    LintContext,
    ReportQuery,
    UsedObjects,
    lint_migrations,
    load_report_queries,
    used_objects,
)
from pipeline.migrations import Migration, MigrationFileError, load_migrations, sql_names
from pipeline.processes import process_exists
from pipeline.sample_checks import SampleChecks, identity_key
from pipeline.samples import ensure_sample
from pipeline.sqlite_interrupt import signals_interrupt_statements

__all__ = [
    "DatabaseResult",
    "DryRunResult",
    "MigrationRun",
    "ReportQuery",
    "Shard",
    "dry_run",
    "load_report_queries",
    "select_shard",
]

logger = logging.getLogger(__name__)

CLONE_PREFIX = "pipeline_dry_run_"
# Page cache of a SQLite copy, in KiB: index builds and integrity_check on a large
# sample spill less with it than with the SQLite default of 2 MiB.
COPY_CACHE_KIB = 65536


@dataclass(frozen=True)
class Shard:
    """One job's share of the sample databases: every `count`-th one, starting at `index`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse `I/N` with 1 <= I <= N.

        Raises:
            ConfigError: the text is not of that form.
        """
        index, _, count = text.partition("/")
        if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
            raise ConfigError(
                f"--shard: expected I/N with 1 <= I <= N, such as 1/2, found {text!r}"
            )
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def select_shard(samples: Sequence[SampleDatabase], shard: Shard) -> list[SampleDatabase]:
    """Return the samples at positions index-1, index-1+count, ... of the configured order."""
    return list(samples[shard.index - 1 :: shard.count])


@dataclass
class DatabaseResult:
    """The dry-run of one sample database."""

    database: str
    url: str
    engine: str
    engine_version: str
    passed: bool
    applied: list[MigrationRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    # The process id and thread id that ran the dry-run, such as `pid 812 thread 1402`.
    worker: str = ""
    # True when this run checked the whole sample before the migrations, so the
    # checks after them covered only the tables they changed.
    sample_checked: bool = False
    # The tables that the checks after the migrations covered, None for the
    # whole database: a sample that passed the full checks before gets only
    # the tables its migrations changed unchecked.
    checked_tables: list[str] | None = None
    # The catalogs loaded into the copy after the migrations, as apply loads them.
    catalogs: list[str] = field(default_factory=list)
    # Those of `catalogs` that the release does not ship: catalogs that loaded
    # ones reference. Their rows are those the customers hold from earlier releases.
    catalogs_not_shipped: list[str] = field(default_factory=list)
    # The catalogs loaded before the migrations with the rows customers hold,
    # because the migrations change or read their tables (`dryrun_catalogs.held_rows`).
    catalogs_before: list[str] = field(default_factory=list)
    # Those of `catalogs` whose result on a kept migrated copy came from its
    # record, because neither their files nor those of the catalogs they
    # reference changed (`pipeline.dryrun_catalogs`).
    catalogs_reused: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatabaseResult:
        """Read one result back from a JSON report."""
        return cls(
            database=data["database"],
            url=data["url"],
            engine=data["engine"],
            engine_version=data["engine_version"],
            passed=data["passed"],
            applied=[MigrationRun(**run) for run in data.get("applied", [])],
            findings=[Finding(**finding) for finding in data.get("findings", [])],
            error=data.get("error"),
            worker=data.get("worker", ""),
            sample_checked=data.get("sample_checked", False),
            checked_tables=data.get("checked_tables"),
            catalogs=data.get("catalogs", []),
            catalogs_reused=data.get("catalogs_reused", []),
            catalogs_not_shipped=data.get("catalogs_not_shipped", []),
            catalogs_before=data.get("catalogs_before", []),
        )


@dataclass
class DryRunResult:
    """The dry-run of every sample database (of one shard, when `shard` is set)."""

    results: list[DatabaseResult]
    shard: Shard | None = None
    # True when this shard selected no sample and `allow_empty_shard` let it pass.
    empty_shard: bool = False
    # Results taken from the cache instead of a run; not part of the JSON report.
    cached: int = 0

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def to_json(self) -> dict[str, Any]:
        """Return the result as plain JSON data."""
        shard = None if self.shard is None else asdict(self.shard)
        return {
            "passed": self.passed,
            "shard": shard,
            "results": [asdict(result) for result in self.results],
        }

    def summary(self) -> list[str]:
        """Return the human summary: one line per database, one per migration and finding."""
        lines = []
        if self.empty_shard:
            lines.append(
                f"shard {self.shard}: no sample database in this shard,"
                " passed because empty shards are allowed"
            )
        for result in self.results:
            status = "passed" if result.passed else "FAILED"
            lines.append(
                f"{result.database} ({result.engine} {result.engine_version}): {status},"
                f" {len(result.applied)} migration(s) applied"
            )
            for run in result.applied:
                mode = "" if run.transactional else ", without a transaction"
                lines.append(f"  {run.path}: {run.seconds:.3f} s{mode}")
            if result.checked_tables is not None:
                scope = ", ".join(result.checked_tables) or "none"
                lines.append(
                    f"  checks after the migrations: changed tables only ({scope});"
                    " the sample passed the full checks before"
                )
            if result.catalogs_before:
                lines.append(
                    "  catalogs loaded before the migrations, with the rows customers hold:"
                    f" {', '.join(result.catalogs_before)}"
                )
            if result.catalogs:
                line = f"  catalogs loaded after the migrations: {', '.join(result.catalogs)}"
                if result.catalogs_not_shipped:
                    line += (
                        f" (not shipped, rows of earlier releases:"
                        f" {', '.join(result.catalogs_not_shipped)})"
                    )
                if result.catalogs_reused:
                    line += (
                        f" (unchanged, results from the kept copy's record:"
                        f" {', '.join(result.catalogs_reused)})"
                    )
                lines.append(line)
            # A failed migration is also a finding; print its error only once.
            if result.error and not errors_only(result.findings):
                lines.append(f"  error: {result.error}")
            lines.extend(f"  {finding.severity}: {finding}" for finding in result.findings)
        return lines

    def cases(self) -> list[CheckCase]:
        """Return JUnit check cases: one per applied migration and one for each database's checks.

        The class name is the engine, such as `dry-run.sqlite`, and each test name
        starts with the database and the engine version, such as
        `small.sqlite (sqlite 3.40.1): migrations/0002_kbk.sql`.
        """
        cases = []
        for result in self.results:
            classname = f"dry-run.{result.engine}"
            prefix = f"{result.database} ({result.engine} {result.engine_version})"
            for run in result.applied:
                mode = "" if run.transactional else " (no transaction)"
                cases.append(
                    CheckCase(
                        name=f"{prefix}: {run.path}{mode}",
                        classname=classname,
                        seconds=run.seconds,
                    )
                )
            findings = list(result.findings)
            if result.error and not errors_only(findings):
                findings.append(
                    Finding(rule="dry-run", file=result.database, message=result.error)
                )
            cases.append(
                CheckCase(name=f"{prefix}: checks", classname=classname, findings=findings)
            )
        return cases


@dataclass(frozen=True)
class _Inputs:
    """Inputs shared by every sample's dry-run, sent to each worker process."""

    config: Config
    queries: tuple[ReportQuery, ...]
    query_findings: tuple[Finding, ...]
    used: UsedObjects
    bundle_version: str | None
    # With the cache on, SQLite samples get the full checks once; these sample
    # files passed them before, so only the changed tables are checked again.
    use_cache: bool = False
    checked_samples: frozenset[str] = frozenset()
    # The catalogs to load after the migrations (`pipeline.dryrun_catalogs`).
    catalogs: tuple[str, ...] = ()
    # {sample URL: key of its kept migrated copy} (`_kept_key`); empty without the cache.
    kept_keys: Mapping[str, str] = field(default_factory=dict)
    # {catalog: digest of its files} of `catalogs`; empty without the cache.
    catalog_blobs: Mapping[str, str] = field(default_factory=dict)
    # The release customers hold, whose catalog rows load before the migrations.
    base: BaseRelease | None = None
    # The folder of the temporary SQLite copies; None takes the system's.
    scratch: Path | None = None


COPIES_PREFIX = "pipeline-dry-run-"
_COPIES_FOLDER = re.compile(r"^pipeline-dry-run-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-")


def copies_prefix() -> str:
    """Return the name prefix of a temporary folder of SQLite copies made by this process."""
    return f"{COPIES_PREFIX}{os.getpid()}-{_host_tag()}-"


def remove_abandoned_copies(root: Path) -> None:
    """Remove the SQLite copies of dry-runs on this host whose process has ended.

    A dry-run killed with SIGKILL, or a worker killed with its parent, cannot
    remove its copies. Their folders in the temporary folder carry the process
    id and the host (`copies_prefix`). The staging copies in the cache folder
    of `root` carry the process id (`KeptCopy.staging_path`).
    NOTE: a process id that the system has given to a new process since keeps
    the copies until that process ends too.
    """
    host = _host_tag()
    for entry in Path(tempfile.gettempdir()).glob(f"{COPIES_PREFIX}*"):
        match = _COPIES_FOLDER.match(entry.name)
        if match is None or match["host"] != host or entry.is_symlink() or not entry.is_dir():
            continue
        if not process_exists(int(match["pid"])):
            _remove_abandoned(entry, shutil.rmtree)
    for entry in abandoned_staging(root):
        _remove_abandoned(entry, os.unlink)


def _remove_abandoned(path: Path, remove: Callable[[Path], object]) -> None:
    try:
        remove(path)
    except OSError as exc:
        logger.warning("cannot remove the dry-run copy %s of an ended process: %s", path, exc)
    else:
        logger.warning("removed the dry-run copy %s, because its process has ended", path)


def _copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database, opening the source read-only.

    In rollback-journal mode the file is copied as plain bytes inside a read
    transaction: the shared lock keeps every writer from changing the file
    until the copy is done, and a byte copy is faster than the backup API. A
    database in WAL mode keeps committed pages in its `-wal` file, so it is
    copied with the backup API.
    """
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        (mode,) = reader.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() != "wal":
            reader.execute("BEGIN")
            # The first read takes the shared lock that the copy relies on.
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            shutil.copyfile(source, target)
            reader.execute("COMMIT")
            return
        writer = sqlite3.connect(target)
        try:
            reader.backup(writer)
        finally:
            writer.close()
    finally:
        reader.close()


@contextlib.contextmanager
def _sqlite_copy(
    config: Config,
    sample: SampleDatabase,
    target: Path | None = None,
    scratch: Path | None = None,
) -> Iterator[Database]:
    """Copy a SQLite sample and open the copy; the copy goes to `target`, else a temporary folder.

    A copy in a temporary folder is removed afterwards; the caller owns `target`.
    """
    path = sample.sqlite_path(config.root)
    if not path.is_file():
        if sample.generate is None:
            raise ConfigError(
                f"sample database {path} not found; create it, or set generate ="
                f' "small" for {sample.url} in [tool.pipeline] sample_databases'
            )
        ensure_sample(config.root, sample)
    with contextlib.ExitStack() as stack:
        if target is None:
            folder = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=copies_prefix(), dir=scratch)
            )
            target = Path(folder) / path.name
        try:
            _copy_sqlite(path, target)
        except sqlite3.Error as exc:
            raise MigrationError(f"cannot copy sample database {path}: {exc}") from exc
        db = open_database(
            f"sqlite:///{target}", config.root, lock_timeout_ms=config.lock_timeout_ms
        )
        stack.enter_context(interruptible_statements(db))
        db.label = display_name(sample.url)
        # Memory-mapped reads take about a third off integrity_check on a 137 MB
        # sample (benchmarks/dryrun_sqlite.py); the copy is private to this run.
        db.execute("PRAGMA mmap_size = 1073741824")
        # The copy is thrown away, or kept only after its migrations passed, so it
        # needs no durable writes. The rollback journal stays (in memory), because
        # a failed migration is rolled back.
        db.execute("PRAGMA journal_mode = MEMORY")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute(f"PRAGMA cache_size = -{COPY_CACHE_KIB}")
        try:
            yield db
        finally:
            db.close()


def _drop_clone(url: str, name: str) -> None:
    """Drop a clone over a fresh connection, ending any session still connected to it."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    try:
        with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    except psycopg.Error as exc:
        # The next dry-run on this host drops the clone once this process has
        # ended (`_drop_abandoned_clones`).
        logger.error("cannot drop the dry-run copy %s: %s", name, exc)
        return
    logger.debug("dropped the dry-run copy %s", name)


def clone_comment(template: str, pid: int, host: str) -> str:
    """Return the comment of a clone: the sample, and the process and host that made it."""
    return f"pipeline dry-run copy of {template} by process {pid} on host {host}"


_CLONE_COMMENT = re.compile(r"by process (?P<pid>\d+) on host (?P<host>\S+)$")
_CLONE_NAME = re.compile(r"^pipeline_dry_run_(?P<pid>\d+)_(?P<host>[0-9a-f]{8})_[0-9a-f]{8}$")


def _host_tag() -> str:
    """Return the part of a clone's name that stands for this host."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _drop_abandoned_clones(admin: Any) -> None:
    """Drop the clones whose dry-run process on this host no longer exists.

    A dry-run killed with SIGKILL cannot drop its clone. The clone's comment
    names the process and host that made it (`clone_comment`), so the next
    dry-run on the same host drops it. The name of a clone killed before it got
    the comment contains both too. A clone without either, or made on another
    host, is left alone.
    NOTE: a process id that the system has given to a new process since
    keeps the clone until that process ends too.
    """
    import psycopg
    from psycopg import sql

    rows = admin.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE datname LIKE %s",
        (CLONE_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    host = socket.gethostname()
    for name, comment in rows:
        match = _CLONE_COMMENT.search(str(comment or ""))
        ours = match is not None and match["host"] == host
        if match is None:
            # Killed before the comment was set: the name contains the host and process.
            match = _CLONE_NAME.match(str(name))
            ours = match is not None and match["host"] == _host_tag()
        if match is None or not ours or process_exists(int(match["pid"])):
            continue
        logger.warning(
            "dropping the dry-run copy %s, because its process %s has ended", name, match["pid"]
        )
        try:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        except psycopg.Error as exc:
            # A copy left behind costs space, not correctness, so the dry-run goes on.
            logger.warning("cannot drop the dry-run copy %s: %s", name, exc)


def _clone_advice(error: Exception, sample: SampleDatabase) -> str:
    """Return the next step for a failed clone of a PostgreSQL sample, by the error's SQLSTATE."""
    state = getattr(error, "sqlstate", None)
    if state == "55006":
        return (
            "; no other session may be connected to the sample while PostgreSQL copies it,"
            " so close those sessions and run again"
        )
    if state == "3D000":
        size = sample.generate or "small"
        return (
            f"; create it with `inv samples --database {redact_url(sample.url)} --size {size}`,"
            " or correct the database name in the URL"
        )
    if state is None:
        parts = urlsplit(sample.url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
        return (
            f"; check that a PostgreSQL server listens on {where} and that the URL's user"
            " may connect"
        )
    return ""


@contextlib.contextmanager
def _postgres_copy(config: Config, sample: SampleDatabase) -> Iterator[Database]:
    """Create a throwaway database from the sample as its template; drop it afterwards.

    PostgreSQL copies a template only while no other session is connected to it.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    url = sample.url.replace("postgresql+psycopg://", "postgresql://", 1)
    template = str(conninfo_to_dict(url).get("dbname") or "")
    if not template:
        raise ConfigError(f"{redact_url(sample.url)}: expected a database name in the URL")
    ensure_sample(config.root, sample)
    copy_name = f"{CLONE_PREFIX}{os.getpid()}_{_host_tag()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as admin:
            _drop_abandoned_clones(admin)
            try:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(copy_name), sql.Identifier(template)
                    )
                )
                comment = clone_comment(template, os.getpid(), socket.gethostname())
                admin.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(copy_name), sql.Literal(comment)
                    )
                )
            except BaseException:
                # A clone without its comment is one that no later run would drop.
                _drop_clone(url, copy_name)
                raise
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot copy sample database {redact_url(sample.url)}:"
            f" {str(exc).strip()}{_clone_advice(exc, sample)}"
        ) from exc
    logger.debug("cloned %s into %s", template, copy_name)
    try:
        db = open_database(
            urlsplit(url)._replace(path=f"/{copy_name}").geturl(),
            config.root,
            lock_timeout_ms=config.lock_timeout_ms,
            statement_timeout_ms=config.statement_timeout_ms,
        )
        db.label = display_name(sample.url)
        try:
            yield db
        finally:
            db.close()
    finally:
        _drop_clone(url, copy_name)


class _ProgressHooks(RunnerHooks):
    """Show the migration a sample has reached, then its checks, on a progress line."""

    def __init__(self, progress: StepLine, database: str, last: Migration | None) -> None:
        self.progress = progress
        self.database = database
        self.last = last

    def before_migration(self, migration: Migration) -> None:
        self.progress.status(f"{self.database}: {migration.path}")

    def after_migration(self, migration: Migration) -> None:
        if migration == self.last:
            self.progress.status(f"{self.database}: integrity checks")


def _check_database(
    db: Database, sample: SampleDatabase, inputs: _Inputs, progress: StepLine | None = None
) -> _Checked:
    """Migrate and check a copy, then load the catalogs and compile the report queries.

    The catalogs are rolled back, so the copy is then as the migrations left it.
    """
    config = inputs.config
    result = DatabaseResult(
        database=display_name(sample.url),
        url=redact_url(sample.url),
        engine=db.engine,
        engine_version=db.engine_version,
        passed=False,
    )
    run = RunResult(applied=result.applied, findings=result.findings)
    checked_before = False
    if db.engine == "sqlite" and inputs.use_cache:
        checked_before = str(sample.sqlite_path(config.root).resolve()) in inputs.checked_samples
        if not checked_before:
            if progress is not None:
                progress.status(f"{result.database}: integrity checks of the sample")
            problems = check_integrity(db)
            if problems:
                result.findings.extend(
                    replace(
                        finding, message=f"the sample before the migrations: {finding.message}"
                    )
                    for finding in problems
                )
                result.error = f"{result.database} fails its own integrity checks"
                return _Checked(result)
            checked_before = result.sample_checked = True
    try:
        migrations = load_migrations(config.root, db.engine)
        ensure_history(db)
        pending = pending_migrations(db, migrations)
        # Before the lint, so a file that does not split is named.
        for migration in pending:
            migration_statements(migration, db.engine)
        hooks = None
        if progress is not None:
            hooks = _ProgressHooks(progress, result.database, pending[-1] if pending else None)
            if not pending:
                progress.status(f"{result.database}: integrity checks")
        # Customers got the base release's catalog rows after its migrations, so those
        # run first. `_late_migrations` picks the ones that run after the rows load.
        released = inputs.base.versions if inputs.base is not None else frozenset()
        present = list_items(config.root, Kind.CATALOG)
        catalog_tables = {catalog_table(catalog_id).lower() for catalog_id in present}
        late = _late_migrations(pending, released, catalog_tables, db.engine)
        early_checked: list[str] | None = []
        if len(late) < len(pending) and constrained_catalogs(late, present, db.engine):
            base_migrations = [m for m in migrations if m.version < late[0].version]
            run_migrations(
                db,
                base_migrations,
                inputs.bundle_version,
                run,
                checked_before=checked_before,
                hooks=hooks,
            )
            early_checked = run.checked_tables
        preloaded, problems = held_rows(db, config.root, late, inputs.catalogs, inputs.base)
        result.catalogs_before = preloaded
        if problems:
            result.findings.extend(problems)
            result.error = (
                f"{result.database}: the catalog rows customers hold do not load into the"
                " sample, so the migrations cannot be checked against them"
            )
            return _Checked(result)
        row_counts = table_row_counts(db)
        context = LintContext(
            db.engine,
            inputs.used,
            row_counts,
            lock_timeout_ms=config.lock_timeout_ms if db.engine == "postgresql" else None,
        )
        lint_findings = lint_migrations(pending, context)
        result.findings[:0] = lint_findings
        linted = len(lint_findings)
        # Apply creates the missing catalog tables before the migrations, empty.
        db.execute("BEGIN")
        try:
            prepare_catalog_tables(db, config.root, present)
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
        run_migrations(
            db,
            migrations,
            inputs.bundle_version,
            run,
            checked_before=checked_before,
            hooks=hooks,
        )
        result.checked_tables = run.checked_tables
        if early_checked is None or result.checked_tables is None:
            result.checked_tables = None
        else:
            result.checked_tables = sorted({*early_checked, *result.checked_tables})
    except StatementError as exc:
        result.error = str(exc)
        result.findings.append(
            Finding(
                rule="dry-run.migration",
                file=exc.path,
                line=exc.line,
                message=f"failed on {result.database}: {exc.database_message}",
            )
        )
        return _Checked(result)
    except MigrationFileError as exc:
        result.error = str(exc)
        result.findings.append(
            Finding(rule="dry-run.migration", file=exc.path, line=exc.line, message=exc.problem)
        )
        return _Checked(result)
    except MigrationError as exc:
        result.error = str(exc)
        result.findings.append(
            Finding(rule="dry-run.migration", file=result.database, message=str(exc))
        )
        return _Checked(result)
    checks = result.findings[linted:]
    record = None
    # A temporary object of a migration lives only on this connection, and a
    # kept copy is opened on a new one, so such a copy is not kept.
    if not errors_only(checks) and not _temporary_objects(db):
        record = {
            "engine_version": result.engine_version,
            "applied": [asdict(run) for run in result.applied],
            "findings": [asdict(finding) for finding in checks],
            "checked_tables": result.checked_tables,
            "sample_checked": result.sample_checked,
            "row_counts": dict(row_counts),
            # The rows loaded before the migrations: the kept copy is used only
            # while these catalogs' files are unchanged (`_held_unchanged`).
            "catalogs_before": {
                catalog_id: catalog_digest(config.root, catalog_id) for catalog_id in preloaded
            },
        }
    catalogs = _check_catalogs_and_queries(db, inputs, result, progress)
    return _Checked(result, record, catalogs)


def _late_migrations(
    pending: Sequence[Migration],
    released: Collection[str],
    catalog_tables: Collection[str],
    engine: str,
) -> list[Migration]:
    """Return the pending migrations that run after the rows customers hold are loaded.

    These are the migrations the base release does not have, and every one
    from the first released migration that names a catalog's table: it ran
    at the customers after a release had loaded that catalog.
    """
    for index, migration in enumerate(pending):
        if migration.version not in released:
            return list(pending[index:])
        if migration_tables([migration], engine, catalog_tables) & set(catalog_tables):
            return list(pending[index:])
    return []


def _temporary_objects(db: Database) -> bool:
    """Tell whether the connection has temporary tables, views, indexes or triggers."""
    if not isinstance(db, SQLiteDatabase):
        return False
    return bool(db.execute("SELECT count(*) FROM sqlite_temp_master")[0][0])


@dataclass
class _Checked:
    """A sample's dry-run result, and what a kept copy of it stores.

    `migrated` is the record of the migrations and the checks after them
    when those passed (`_check_kept` reads it). `catalogs` is the record of
    the catalog load and the query compilation (`loaded_catalogs` reads it).
    """

    result: DatabaseResult
    migrated: dict[str, Any] | None = None
    catalogs: dict[str, Any] | None = None


def _check_catalogs_and_queries(
    db: Database,
    inputs: _Inputs,
    result: DatabaseResult,
    progress: StepLine | None,
    stored: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Load the catalogs and compile every report query in their transaction, then roll back.

    With the cache on, returns the record a kept copy stores for the next
    run, and `stored` is that of the previous run on the same copy. EXPLAIN
    reads no rows, so a query's result depends on the schema alone. A query
    compiled before is not compiled again when the schema is the same, or
    when the query names none of the objects that differ
    (`sqlite_schema.changed_objects`).
    """
    root = inputs.config.root
    reported = {finding.message for finding in result.findings}
    query_findings = []
    blobs = inputs.catalog_blobs if inputs.use_cache else None
    with loaded_catalogs(
        db,
        root,
        inputs.catalogs,
        inputs.bundle_version,
        reported,
        preloaded=result.catalogs_before,
        blobs=blobs,
        stored=stored,
    ) as load:
        if progress is not None:
            progress.status(f"{result.database}: report queries")
        known, changed = _known_queries(db, load, stored)
        compiled: dict[str, str | None] = {}
        for query in inputs.queries:
            digest = hashlib.sha256(query.sql.encode()).hexdigest()
            if digest in known and _unaffected(query.sql, db.engine, changed):
                problem = known[digest]
            else:
                try:
                    db.explain_query(query.sql)
                except ValidationError as exc:
                    problem = str(exc)
                else:
                    problem = None
            compiled[digest] = problem
            if problem is not None:
                query_findings.append(
                    Finding(
                        rule="dry-run.query",
                        file=query.path,
                        json_path="$.query",
                        message=f"{query.kind} {query.code} on {result.database}: {problem}",
                    )
                )
    result.catalogs = list(load.catalogs)
    result.catalogs_not_shipped = list(load.unshipped)
    result.catalogs_reused = list(load.reused)
    result.findings.extend(load.findings)
    result.findings.extend(query_findings)
    result.passed = not errors_only(result.findings)
    if load.record is None:
        return None
    if load.schema is not None:
        load.record["queries"] = compiled
    return load.record


def _known_queries(
    db: Database, load: CatalogLoad, stored: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any], set[str]]:
    """Return the stored query results and the schema objects changed since they were taken."""
    if stored is None or load.objects is None or not isinstance(db, SQLiteDatabase):
        return {}, set()
    known = stored.get("queries")
    if not isinstance(known, dict):
        return {}, set()
    if stored.get("schema") == load.schema:
        return known, set()
    before = stored.get("objects")
    if not isinstance(before, dict):
        return {}, set()
    return known, sqlite_schema.changed_objects(db.connection, before, load.objects)


def _unaffected(sql: str, engine: str, changed: set[str]) -> bool:
    """Tell whether a query names none of the `changed` schema objects."""
    if not changed:
        return True
    names = sql_names(sql, engine)
    return names is not None and not names & changed


def _check_kept(
    db: Database,
    sample: SampleDatabase,
    inputs: _Inputs,
    stored: Mapping[str, Any],
    progress: StepLine | None,
    stored_catalogs: Mapping[str, Any] | None = None,
) -> _Checked:
    """Check a kept migrated copy: the stored migration result, the lint, catalogs and queries.

    The lint runs again, because it reads the report queries and catalog
    descriptions, which the kept copy's key leaves out. It gets the row
    counts that the sample had before the migrations. `stored_catalogs` is
    the record of the previous catalog load on the copy.

    Raises:
        KeyError, TypeError, ValueError: the stored record is malformed.
    """
    result = DatabaseResult(
        database=display_name(sample.url),
        url=redact_url(sample.url),
        engine=db.engine,
        engine_version=str(stored["engine_version"]),
        passed=False,
        applied=[MigrationRun(**run) for run in stored["applied"]],
        checked_tables=_names_or_none(stored["checked_tables"]),
        sample_checked=bool(stored["sample_checked"]),
        catalogs_before=sorted(str(catalog_id) for catalog_id in stored["catalogs_before"]),
    )
    checks = [Finding(**finding) for finding in stored["findings"]]
    # The key covers the migration files, so the migrations that ran are the pending ones.
    applied = {run.path for run in result.applied}
    pending = [m for m in load_migrations(inputs.config.root, db.engine) if m.path in applied]
    context = LintContext(db.engine, inputs.used, dict(stored["row_counts"]))
    result.findings.extend(lint_migrations(pending, context))
    result.findings.extend(checks)
    catalogs = _check_catalogs_and_queries(db, inputs, result, progress, stored_catalogs)
    return _Checked(result, catalogs=catalogs)


def _open_kept(
    kept: KeptCopy, sample: SampleDatabase, inputs: _Inputs, record: Mapping[str, Any]
) -> Database | None:
    """Open a kept copy for a catalog load that is rolled back; None when it cannot be used."""
    try:
        db = open_database(
            f"sqlite:///{kept.path}",
            inputs.config.root,
            lock_timeout_ms=inputs.config.lock_timeout_ms,
        )
    except MigrationError as exc:
        logger.warning("cannot open the kept copy %s: %s", kept.path, exc)
        return None
    try:
        db.label = display_name(sample.url)
        db.execute("PRAGMA mmap_size = 1073741824")
        # A journal on disk with full syncs: after a crash in the catalog load,
        # the next open rolls the hot journal back, so the copy stays as kept.
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute(f"PRAGMA cache_size = -{COPY_CACHE_KIB}")
        # The first read rolls back a hot journal, so the header is compared after it.
        db.execute("SELECT count(*) FROM sqlite_master")
    except sqlite3.Error as exc:
        logger.warning("cannot read the kept copy %s: %s", kept.path, exc)
        db.close()
        return None
    if not kept.header_matches(record):
        logger.info("kept copy %s changed since it was kept; not used", kept.path)
        db.close()
        return None
    return db


def _dry_run_kept(
    sample: SampleDatabase, inputs: _Inputs, key: str, progress: StepLine | None
) -> DatabaseResult:
    """Dry-run a SQLite sample on its kept migrated copy, or migrate a copy and keep it.

    A copy whose record has `key` is used without copying or migrating. Any
    other case runs the full dry-run on a new copy in the cache folder, which
    replaces the kept one when its migrations and checks pass.
    """
    config = inputs.config
    kept = KeptCopy(config.root, sample.sqlite_path(config.root))
    with kept.locked() as owned:
        if not owned:
            copy = _sqlite_copy(config, sample, scratch=inputs.scratch)
            return _dry_run_copy(sample, inputs, copy, progress).result
        record = kept.read_record(key)
        if record is not None and not _held_unchanged(config.root, record):
            record = None
        db = None if record is None else _open_kept(kept, sample, inputs, record)
        if record is not None and db is not None:
            logger.info("dry-run on %s: on the kept migrated copy", redact_url(sample.url))
            if progress is not None:
                progress.status(f"{display_name(sample.url)}: catalogs on the kept copy")
            try:
                with interruptible_statements(db):
                    checked = _check_kept(
                        db,
                        sample,
                        inputs,
                        record["result"],
                        progress,
                        kept.read_catalog_record(key),
                    )
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("kept copy record %s is malformed: %r", kept.record_path, exc)
            else:
                kept.write_catalog_record(key, checked.catalogs)
                return checked.result
            finally:
                db.close()
        staging = kept.staging_path()
        try:
            copy = _sqlite_copy(config, sample, staging)
            checked = _dry_run_copy(sample, inputs, copy, progress)
            if checked.migrated is not None and _keep(kept, staging, key, checked.migrated):
                kept.write_catalog_record(key, checked.catalogs)
        finally:
            staging.unlink(missing_ok=True)
        return checked.result


def _names_or_none(value: Any) -> list[str] | None:
    """Return a stored list of names as it is, or None.

    Raises:
        TypeError: `value` is neither None nor a list of strings.
    """
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"expected a list of names or null, found {value!r}")
    return value


def _held_unchanged(root: Path, record: Mapping[str, Any]) -> bool:
    """Tell whether the catalogs loaded into a kept copy before its migrations are unchanged."""
    result = record.get("result")
    loaded_before = result.get("catalogs_before") if isinstance(result, dict) else None
    if not isinstance(loaded_before, dict):
        return False
    return all(
        catalog_digest(root, str(catalog_id)) == digest
        for catalog_id, digest in loaded_before.items()
    )


def _keep(kept: KeptCopy, staging: Path, key: str, migrated: dict[str, Any]) -> bool:
    """Flush a migrated copy to disk and keep it; a failure costs the next run time only.

    Returns whether the copy was kept.
    """
    try:
        # The copy was written without syncs, and a kept copy must survive a power
        # loss. A small one need not be synced, because its record has its hash.
        with staging.open("rb+") as handle:
            if os.fstat(handle.fileno()).st_size > WHOLE_DIGEST_BYTES:
                os.fsync(handle.fileno())
        kept.install(staging, key, migrated)
    except OSError as exc:
        logger.warning("cannot keep the migrated copy %s: %s", kept.path, exc)
        return False
    return True


def _unavailable(sample: SampleDatabase, error: Exception) -> DatabaseResult:
    """Return the failed result of a sample that could not be opened or copied."""
    logger.error("dry-run on %s not started: %s", redact_url(sample.url), error)
    return _failed(sample, "dry-run.sample", error)


def _failed(sample: SampleDatabase, rule: str, error: Exception) -> DatabaseResult:
    """Return a failed result of `sample` with one finding of `rule` whose message is `error`."""
    name = display_name(sample.url)
    return DatabaseResult(
        database=name,
        url=redact_url(sample.url),
        engine=sample.engine,
        engine_version="unknown",
        passed=False,
        findings=[Finding(rule=rule, file=name, message=str(error))],
        error=str(error),
        worker=_worker(),
    )


def _worker() -> str:
    return f"pid {os.getpid()} thread {threading.get_ident()}"


def _dry_run_one(
    sample: SampleDatabase, inputs: _Inputs, progress: StepLine | None = None
) -> DatabaseResult:
    """Dry-run one sample without the report query findings; the function each worker runs.

    `progress` shows the step the sample is at; worker processes get none.
    """
    logger.info("dry-run on %s", redact_url(sample.url))
    if progress is not None:
        progress.status(f"{display_name(sample.url)}: copying")
    kept_key = inputs.kept_keys.get(sample.url)
    # A SQLite statement ignores a signal until it ends, so where the parent owns
    # the copies (`inputs.scratch`), SIGTERM ends the worker at once instead.
    killable = sample.engine == "sqlite" and inputs.scratch is not None
    with contextlib.nullcontext() if killable else terminate_as_interrupt():
        if sample.engine == "sqlite" and kept_key is not None:
            result = _dry_run_kept(sample, inputs, kept_key, progress)
        elif sample.engine == "sqlite":
            copy = _sqlite_copy(inputs.config, sample, scratch=inputs.scratch)
            result = _dry_run_copy(sample, inputs, copy, progress).result
        elif sample.engine in ("postgresql", "postgres"):
            copy = _postgres_copy(inputs.config, sample)
            result = _dry_run_copy(sample, inputs, copy, progress).result
        else:
            result = _unavailable(
                sample,
                ConfigError(
                    f"unsupported sample database URL {redact_url(sample.url)!r}:"
                    " expected sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
                ),
            )
    result.worker = _worker()
    return result


def _dry_run_copy(
    sample: SampleDatabase,
    inputs: _Inputs,
    copy: contextlib.AbstractContextManager[Database],
    progress: StepLine | None,
) -> _Checked:
    """Make the copy, dry-run it and drop it; return what `_check_database` returns."""
    with contextlib.ExitStack() as stack:
        try:
            db = stack.enter_context(copy)
        except (ConfigError, MigrationError) as exc:
            return _Checked(_unavailable(sample, exc))
        return _check_database(db, sample, inputs, progress)


def _dry_run_counted(
    sample: SampleDatabase, inputs: _Inputs, progress: Progress | None
) -> DatabaseResult:
    """Dry-run one sample in this process, and count it on the progress line when done."""
    result = _dry_run_one(sample, inputs, progress)
    if progress is not None:
        progress.advance(detail=f"{result.database}: done")
    return result


def _finish(result: DatabaseResult, inputs: _Inputs) -> DatabaseResult:
    """Add the findings of report definitions whose query could not be read, and log the result.

    A cached result is stored after this step, so it has those findings already.
    """
    result.findings.extend(inputs.query_findings)
    result.passed = result.passed and not errors_only(inputs.query_findings)
    logger.info(
        "dry-run on %s %s: %d migration(s) applied, %d finding(s)",
        result.database,
        "passed" if result.passed else "failed",
        len(result.applied),
        len(result.findings),
    )
    return result


def _catalog_files(root: Path, catalogs: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Return `(repository path, blob id)` of every file of each of `catalogs`."""
    return {
        catalog_id: folder_blob_ids(root, definition_path(root, Kind.CATALOG, catalog_id).parent)
        for catalog_id in catalogs
    }


def _shared_key_entries(
    root: Path,
    catalogs: Sequence[str],
    files: Mapping[str, list[tuple[str, str]]],
    migrations: Sequence[tuple[str, str]],
) -> list[tuple[str, str]]:
    """Return the blob ids of the inputs that every sample's dry-run reads.

    These are the `migrations` files, every catalog description (the lint reads
    its columns), every file of the catalogs the release ships (`files`), and
    every report and form definition (the query). Nothing is parsed, so a
    run whose results all come from the cache reads no query. An edit of a
    definition outside its query runs the samples again. The other files of
    the catalogs the release does not ship count by their identities
    (`file_identity`): a migration that changes a catalog's table loads that
    catalog too, and a loaded catalog loads the catalogs it references.
    """
    entries = list(migrations)
    for catalog_id in list_items(root, Kind.CATALOG):
        path = definition_path(root, Kind.CATALOG, catalog_id)
        if catalog_id in catalogs:
            entries.extend(files[catalog_id])
            continue
        entries.append((path.relative_to(root).as_posix(), blob_id(path)))
        for other in sorted(path.parent.rglob("*")):
            if other != path and other.is_file():
                entries.append((other.relative_to(root).as_posix(), file_identity(other)))
    entries.append(("catalogs loaded", " ".join(catalogs)))
    for kind in (Kind.REPORT, Kind.FORM):
        for code in list_items(root, kind):
            path = definition_path(root, kind, code)
            entries.append((path.relative_to(root).as_posix(), blob_id(path)))
    return entries


def _sample_identity(sample: SampleDatabase, config: Config) -> str | None:
    """Return the identity of a SQLite sample's file (`file_identity`), or None.

    None means that no result of the sample can be reused: it is no SQLite
    file, or the file is missing. A PostgreSQL sample has no file whose
    identity shows that its data did not change, so it always runs.
    """
    if sample.engine != "sqlite":
        return None
    identity = file_identity(sample.sqlite_path(config.root))
    return None if identity == MISSING else identity


def _cache_key(
    identity: str,
    config: Config,
    shared: Sequence[tuple[str, str]],
    bundle_version: str | None,
) -> str:
    """Return the cache key of the dry-run of a sample file of `identity`.

    The key covers the sample file's identity, the `shared` inputs
    (`_shared_key_entries`), the SQLite library version, the bundle version
    and the lock timeout. The cache itself adds the pipeline fingerprint.
    """
    extra = (
        f"sqlite {sqlite3.sqlite_version}\nbundle {bundle_version}"
        f"\nlock timeout {config.lock_timeout_ms}"
    )
    return inputs_key([("sample", identity), *shared], extra)


def _kept_key(
    identity: str,
    config: Config,
    migrations: Sequence[tuple[str, str]],
    bundle_version: str | None,
) -> str:
    """Return the key of the kept migrated copy of a sample file of `identity`.

    The key covers what the migrated copy and the checks after the
    migrations depend on. These are the sample file's identity, the
    `migrations` entries (the files' blob ids, the base release and the
    catalog folders present) and the SQLite library version. The bundle
    version counts too, because the history rows contain it, and so do the
    lock timeout and the pipeline fingerprint. Catalogs and report queries
    are left out, because each run loads and compiles them on the copy again.
    """
    extra = (
        f"sqlite {sqlite3.sqlite_version}\nbundle {bundle_version}"
        f"\nlock timeout {config.lock_timeout_ms}\npipeline {pipeline_fingerprint()}"
    )
    return inputs_key([("sample", identity), *migrations], extra)


def _load_inputs(
    config: Config,
    bundle_version: str | None,
    use_cache: bool,
    checked_samples: frozenset[str],
    catalogs: Sequence[str],
    kept_keys: Mapping[str, str],
    catalog_files: Mapping[str, list[tuple[str, str]]],
    base: BaseRelease | None,
) -> _Inputs:
    """Read and parse the report queries, which only a sample that runs needs."""
    queries, query_findings = load_report_queries(config.root)
    return _Inputs(
        config,
        tuple(queries),
        tuple(query_findings),
        used_objects(config.root, queries),
        bundle_version,
        use_cache=use_cache,
        checked_samples=checked_samples,
        catalogs=tuple(catalogs),
        kept_keys=dict(kept_keys),
        catalog_blobs={
            catalog_id: inputs_key(entries) for catalog_id, entries in catalog_files.items()
        },
        base=base,
    )


def _sample_keys(
    root: Path, samples: Sequence[SampleDatabase], identities: Mapping[str, str | None]
) -> dict[str, str | None]:
    """Return {resolved file: key} of the SQLite samples' checks (`sample_checks`).

    `identities` are those of `_sample_identity` by URL, taken before any copy is made.
    """
    return {
        str(sample.sqlite_path(root).resolve()): identity_key(identities[sample.url])
        for sample in samples
        if sample.engine == "sqlite"
    }


def _run_samples(
    samples: Sequence[SampleDatabase],
    inputs: _Inputs,
    jobs: int,
    progress: Progress | None = None,
) -> list[DatabaseResult]:
    if jobs <= 1 or len(samples) <= 1:
        with signals_interrupt_statements():
            return [_dry_run_counted(sample, inputs, progress) for sample in samples]
    workers = min(jobs, len(samples))
    context: Any = None
    if not all(sample.engine == "sqlite" for sample in samples):
        # Workers fork from a clean server process that has imported this module
        # once, so none inherits an open psycopg connection and none imports again.
        # SIGTERM stops them: a PostgreSQL worker then cancels its statement and
        # drops its clone, and a SQLite worker ends at once (`_dry_run_one`).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        stop_signal = signal.SIGTERM
    elif _can_fork():
        # Forked workers start in milliseconds, with this module already imported.
        # Threads would share one SQLite library, whose memory statistics take a
        # process-wide mutex on each allocation. Two index builds in threads took
        # nearly as long as one after the other (docs/benchmarks.md).
        # A running SQLite statement ignores SIGTERM until it ends, so SIGKILL stops them.
        context = multiprocessing.get_context("fork")
        stop_signal = signal.SIGKILL
    if context is not None:
        # The workers' SQLite copies go with this folder, also when a worker is killed.
        with tempfile.TemporaryDirectory(prefix=copies_prefix()) as scratch:
            outcomes = run_in_processes(
                functools.partial(_dry_run_in_worker, replace(inputs, scratch=Path(scratch))),
                samples,
                workers,
                context,
                progress=progress,
                detail=_done,
                stop_signal=stop_signal,
            )
        return _results(samples, outcomes)
    # Another thread could hold a lock that a forked worker would then wait for.
    # NOTE: on Ctrl+C the samples already running finish before the copies are dropped.
    with terminate_as_interrupt(), ThreadPoolExecutor(workers) as threads:
        count = len(samples)
        return list(threads.map(_dry_run_counted, samples, [inputs] * count, [progress] * count))


def _can_fork() -> bool:
    """Tell whether worker processes can fork from this one: it runs no other thread."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _dry_run_in_worker(
    inputs: _Inputs, sample: SampleDatabase, steps: StepLine | None
) -> DatabaseResult:
    return _dry_run_one(sample, inputs, steps)


def _done(result: DatabaseResult) -> str:
    return f"{result.database}: done"


def _results(
    samples: Sequence[SampleDatabase], outcomes: Sequence[DatabaseResult | WorkerLost]
) -> list[DatabaseResult]:
    """Return the results of worker processes, a failed one for each sample whose worker died."""
    results = []
    for sample, outcome in zip(samples, outcomes, strict=True):
        if isinstance(outcome, WorkerLost):
            outcome = _failed(sample, "dry-run.worker", outcome)
        results.append(outcome)
    return results


def _check_empty(
    config: Config,
    databases: Sequence[SampleDatabase] | None,
    shard: Shard | None,
    allow_empty_shard: bool,
) -> None:
    """Raise for an empty selection of samples, unless it is an allowed empty shard."""
    configured = len(config.sample_databases if databases is None else databases)
    if configured == 0:
        raise ConfigError(
            "no sample database to dry-run on: set sample_databases in [tool.pipeline] of"
            f" {config.root / 'pyproject.toml'}, or pass --database URL"
        )
    if shard is not None and not allow_empty_shard:
        raise ConfigError(
            f"no sample database to dry-run on: shard {shard} of {configured} sample"
            " database(s) selects none; use fewer shards, or pass --allow-empty-shard"
        )
    logger.warning("shard %s: no sample database in this shard", shard)


def dry_run(
    config: Config,
    databases: Sequence[SampleDatabase] | None = None,
    bundle_version: str | None = None,
    *,
    jobs: int = 1,
    shard: Shard | None = None,
    use_cache: bool = False,
    allow_empty_shard: bool = False,
    catalogs: Sequence[str] | None = None,
    base: tuple[Path, str] | None = None,
    progress: Progress | None = None,
) -> DryRunResult:
    """Migrate a throwaway copy of every sample database and check it and the report queries.

    `databases` defaults to the configured sample databases; `bundle_version`
    is written into the copies' history rows. `jobs` above 1 runs that many
    samples at once in separate processes; `shard` keeps only this job's share.
    With `use_cache`, a SQLite sample whose passing result is stored in
    `.pipeline-cache/dry-run.json` under the same inputs is not run again; a
    failing result is never stored. A shard that selects no sample raises
    unless `allow_empty_shard` is set; then it passes and its summary says so.
    `catalogs` are loaded into each copy after the migrations; None takes the
    catalogs that differ from the base release (`shipped_catalogs`). `base`
    is the repository and commit of the release customers hold, whose rows
    of the catalogs the migrations change load before the migrations
    (`held_rows`); with `catalogs` None it is that base release.
    `progress` counts the samples that run and shows the step and migration
    each one is at (only the count for samples in worker processes).

    Raises:
        ConfigError: there is no sample database to dry-run on.
        MigrationError: the migration files are malformed.
    """
    samples = list(config.sample_databases if databases is None else databases)
    if shard is not None:
        samples = select_shard(samples, shard)
        logger.info("shard %s: %d sample database(s)", shard, len(samples))
    if not samples:
        _check_empty(config, databases, shard, allow_empty_shard)
        return DryRunResult([], shard, empty_shard=True)
    remove_abandoned_copies(config.root)
    if catalogs is None:
        loaded, base_commit = shipped_since_base(config.root)
        base = (config.root, base_commit) if base_commit is not None else None
    else:
        loaded = sorted(catalogs)
    if base is None:
        return _dry_run_samples(
            config, samples, bundle_version, loaded, None, jobs, shard, use_cache, progress
        )
    # The folder that `held_rows` exports the base release's catalogs to.
    with tempfile.TemporaryDirectory(prefix="pipeline-base-") as exports:
        versions = released_versions(base[0], base[1])
        release = BaseRelease(base[0], base[1], Path(exports), versions)
        return _dry_run_samples(
            config, samples, bundle_version, loaded, release, jobs, shard, use_cache, progress
        )


def _dry_run_samples(
    config: Config,
    samples: Sequence[SampleDatabase],
    bundle_version: str | None,
    loaded: Sequence[str],
    base: BaseRelease | None,
    jobs: int,
    shard: Shard | None,
    use_cache: bool,
    progress: Progress | None,
) -> DryRunResult:
    """Dry-run `samples`, reusing stored results with `use_cache`; see `dry_run`."""
    sample_checks = SampleChecks(config.root) if use_cache else None
    # One read of each sample file gives both the key of its checks and that of its result.
    identities: dict[str, str | None] = {}
    if use_cache:
        identities = {sample.url: _sample_identity(sample, config) for sample in samples}
    sample_keys = _sample_keys(config.root, samples, identities) if use_cache else {}
    checked = frozenset(
        path
        for path, key in sample_keys.items()
        if sample_checks is not None and sample_checks.passed(Path(path), key)
    )
    cache = ResultCache(cache_path(config.root, "dry-run")) if use_cache else None
    keys: dict[int, str] = {}
    reused: dict[int, DatabaseResult] = {}
    catalog_files = _catalog_files(config.root, loaded) if cache is not None else {}
    migrations: list[tuple[str, str]] = []
    if cache is not None:
        migrations = folder_blob_ids(config.root, config.root / "migrations")
        shared = _shared_key_entries(config.root, loaded, catalog_files, migrations)
        shared.append(("base release", base.commit if base is not None else "none"))
        for index, sample in enumerate(samples):
            identity = identities[sample.url]
            if identity is None:
                continue
            key = _cache_key(identity, config, shared, bundle_version)
            keys[index] = key
            record = cache.get_record(redact_url(sample.url), key)
            if record is not None:
                reused[index] = DatabaseResult.from_json(record)
    pending = [sample for index, sample in enumerate(samples) if index not in reused]
    inputs = _Inputs(
        config, (), (), UsedObjects(), bundle_version, catalogs=tuple(loaded), base=base
    )
    if pending:
        kept_keys = {}
        if cache is not None:
            # Which catalogs can load before the migrations depends on the folders present.
            kept_inputs = [
                *migrations,
                ("base release", base.commit if base is not None else "none"),
                ("catalogs", " ".join(list_items(config.root, Kind.CATALOG))),
            ]
            for sample in pending:
                identity = identities[sample.url]
                if identity is not None:
                    kept_keys[sample.url] = _kept_key(
                        identity, config, kept_inputs, bundle_version
                    )
        inputs = _load_inputs(
            config, bundle_version, use_cache, checked, loaded, kept_keys, catalog_files, base
        )
    if progress is not None:
        progress.start(len(pending))
    try:
        fresh = iter(_run_samples(pending, inputs, jobs, progress))
    finally:
        if progress is not None:
            progress.close()
    results = []
    for index, sample in enumerate(samples):
        result = reused.get(index)
        if result is None:
            result = _finish(next(fresh), inputs)
            # Only a passing result is stored, so a failure always runs again.
            if cache is not None and index in keys and result.passed:
                cache.put_record(redact_url(sample.url), keys[index], asdict(result))
        else:
            logger.info("dry-run on %s: reused the cached result", result.database)
        if sample_checks is not None and result.sample_checked:
            path = str(sample.sqlite_path(config.root).resolve())
            sample_checks.record(Path(path), sample_keys.get(path))
        results.append(result)
    if cache is not None:
        cache.save()
    if sample_checks is not None:
        sample_checks.save()
    return DryRunResult(results, shard, cached=len(reused))
