"""Dry-run: pending migrations and report queries against throwaway copies of sample databases.

For every configured sample database:

1. generate a missing SQLite sample when its `generate` size is set;
2. copy it (the SQLite backup API into a temporary folder, or a PostgreSQL
   `CREATE DATABASE ... TEMPLATE`), so the sample itself never changes;
3. apply the pending migrations with the same runner that `apply` uses;
4. run the integrity and foreign key checks;
5. compile every report and form query (`query` of `packages/reports/*/report.json`
   and `packages/forms/*/form.json`) with EXPLAIN against the migrated schema;
6. drop the copy, also on failure.

A failure is returned as findings in the result; only a misconfigured sample
(missing file without `generate`, unsupported URL) raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.config import Config, SampleDatabase
from pipeline.content import Kind, definition_path, list_items
from pipeline.database import (
    Database,
    MigrationRun,
    RunResult,
    StatementError,
    display_name,
    open_database,
    redact_url,
    run_migrations,
)
from pipeline.errors import ConfigError, MigrationError, ValidationError
from pipeline.findings import CheckCase, Finding, errors_only
from pipeline.migrations import load_migrations
from pipeline.samples import generate_sample

__all__ = ["DatabaseResult", "DryRunResult", "MigrationRun", "ReportQuery", "dry_run"]

logger = logging.getLogger(__name__)


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


@dataclass
class DryRunResult:
    """The dry-run of every sample database."""

    results: list[DatabaseResult]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def to_json(self) -> dict[str, Any]:
        """Return the result as plain JSON data."""
        return {"passed": self.passed, "results": [asdict(result) for result in self.results]}

    def cases(self) -> list[CheckCase]:
        """Return one JUnit check case per sample database."""
        cases = []
        for result in self.results:
            findings = list(result.findings)
            if result.error and not errors_only(findings):
                findings.append(Finding(rule="dry-run", file=result.database, message=result.error))
            case = CheckCase(
                name=result.database,
                classname=f"dry-run.{result.engine}",
                findings=findings,
                seconds=sum(run.seconds for run in result.applied),
            )
            cases.append(case)
        return cases


@dataclass(frozen=True)
class ReportQuery:
    """The `query` of one report or form definition."""

    code: str
    kind: Kind
    path: str
    sql: str


def load_report_queries(root: Path) -> tuple[list[ReportQuery], list[Finding]]:
    """Read the `query` field of every report and form definition.

    A definition without a query is skipped; one that is not readable JSON
    gives a warning, because the validate stage reports it in full.
    """
    queries: list[ReportQuery] = []
    findings: list[Finding] = []
    for kind in (Kind.REPORT, Kind.FORM):
        for code in list_items(root, kind):
            file = definition_path(root, kind, code)
            path = file.relative_to(root).as_posix()
            try:
                document = json.loads(file.read_bytes().decode("utf-8").removeprefix("\ufeff"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                findings.append(
                    Finding(
                        rule="dry-run.query",
                        file=path,
                        message=f"{kind} {code}: query not checked, the file is not"
                        f" UTF-8 JSON: {exc}",
                        severity="warning",
                    )
                )
                continue
            sql = document.get("query") if isinstance(document, dict) else None
            if isinstance(sql, str) and sql.strip():
                queries.append(ReportQuery(code, kind, path, sql))
            else:
                logger.debug("%s has no query to check", path)
    return queries, findings


def _copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database with the backup API, opening the source read-only."""
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        writer = sqlite3.connect(target)
        try:
            reader.backup(writer)
        finally:
            writer.close()
    finally:
        reader.close()


@contextlib.contextmanager
def _sqlite_copy(config: Config, sample: SampleDatabase) -> Iterator[Database]:
    path = sample.sqlite_path(config.root)
    if not path.is_file():
        if sample.generate is None:
            raise ConfigError(
                f"sample database {path} not found; create it, or set generate ="
                f' "small" for {sample.url} in [tool.pipeline] sample_databases'
            )
        generate_sample(config.root, path, sample.generate)
    with tempfile.TemporaryDirectory(prefix="pipeline-dry-run-") as folder:
        copy = Path(folder) / path.name
        try:
            _copy_sqlite(path, copy)
        except sqlite3.Error as exc:
            raise MigrationError(f"cannot copy sample database {path}: {exc}") from exc
        db = open_database(
            f"sqlite:///{copy}", config.root, lock_timeout_ms=config.lock_timeout_ms
        )
        try:
            yield db
        finally:
            db.close()


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
    copy_name = f"pipeline_dry_run_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True)
    try:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(copy_name), sql.Identifier(template)
            )
        )
        try:
            db = open_database(
                urlsplit(url)._replace(path=f"/{copy_name}").geturl(),
                config.root,
                lock_timeout_ms=config.lock_timeout_ms,
                statement_timeout_ms=config.statement_timeout_ms,
            )
            try:
                yield db
            finally:
                db.close()
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(copy_name)))
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot copy sample database {redact_url(sample.url)}: {exc}"
        ) from exc
    finally:
        admin.close()


def _check_database(
    db: Database,
    sample: SampleDatabase,
    queries: Sequence[ReportQuery],
    config: Config,
    bundle_version: str | None,
) -> DatabaseResult:
    result = DatabaseResult(
        database=display_name(sample.url),
        url=redact_url(sample.url),
        engine=db.engine,
        engine_version=db.engine_version,
        passed=False,
    )
    run = RunResult(applied=result.applied, findings=result.findings)
    try:
        run_migrations(db, load_migrations(config.root, db.engine), bundle_version, run)
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
        return result
    except MigrationError as exc:
        result.error = str(exc)
        result.findings.append(
            Finding(rule="dry-run.migration", file=result.database, message=str(exc))
        )
        return result
    for query in queries:
        try:
            db.explain_query(query.sql)
        except ValidationError as exc:
            result.findings.append(
                Finding(
                    rule="dry-run.query",
                    file=query.path,
                    json_path="$.query",
                    message=f"{query.kind} {query.code} on {result.database}: {exc}",
                )
            )
    result.passed = not errors_only(result.findings)
    return result


def dry_run(
    config: Config,
    databases: Sequence[SampleDatabase] | None = None,
    bundle_version: str | None = None,
) -> DryRunResult:
    """Migrate a throwaway copy of every sample database and check it and the report queries.

    `databases` defaults to the configured sample databases; `bundle_version`
    is written into the copies' history rows.

    Raises:
        ConfigError: a sample is missing without `generate`, or its URL is unsupported.
        MigrationError: the migration files are malformed, or a copy cannot be made.
    """
    samples = config.sample_databases if databases is None else tuple(databases)
    if not samples:
        logger.warning("no sample databases configured; nothing to dry-run")
    queries, query_findings = load_report_queries(config.root)
    results: list[DatabaseResult] = []
    for sample in samples:
        logger.info("dry-run on %s", redact_url(sample.url))
        if sample.engine == "sqlite":
            copy = _sqlite_copy(config, sample)
        elif sample.engine in ("postgresql", "postgres"):
            copy = _postgres_copy(config, sample)
        else:
            raise ConfigError(
                f"unsupported sample database URL {redact_url(sample.url)!r}:"
                " expected sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
            )
        with copy as db:
            result = _check_database(db, sample, queries, config, bundle_version)
        result.findings.extend(query_findings)
        logger.info(
            "dry-run on %s %s: %d migration(s) applied, %d finding(s)",
            result.database,
            "passed" if result.passed else "failed",
            len(result.applied),
            len(result.findings),
        )
        results.append(result)
    return DryRunResult(results)
