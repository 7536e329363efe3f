"""Catalog rows in the dry-run: the catalogs a release would ship, loaded as apply loads them.

`apply` loads every catalog of a bundle with `apply_store.load_catalog`,
which also writes the catalog's added and changed rows into the application
table of the same name (`knp`, for one). A migration that constrains such a
table can pass on the sample's own rows and still fail at the customer on
the catalog's rows. So the dry-run loads the catalogs that the release would
ship into its throwaway copy after the migrations, with that same function:

- a release passes the catalogs it ships (`release_catalogs`): every catalog
  for a full bundle or a first release, else those changed since the base
  release tag;
- `inv dry-run` takes the catalogs of the work tree that differ from the
  base release tag that a release of HEAD would have (`shipped_catalogs`),
  uncommitted and untracked files included. Without a git repository or a
  release tag, every catalog ships, as in a first release.

Each catalog is loaded in full mode from the content tree, so an application
table gets every row of a catalog, not only the rows a delta bundle carries.
That covers what any customer at the base release receives.

Customers also hold the rows of the catalogs that earlier releases shipped,
and the pending migrations meet them. So a catalog whose table a pending
migration changes (`constrained_catalogs`: ALTER TABLE, a new index or
trigger on it, a rebuild, a write to its rows) loads into the copy before
the migrations with the rows customers hold (`held_rows`): those of the
base release. Every catalog that a loaded catalog's tables reference
through foreign keys loads too (`with_parents`), so each row finds the
parent rows that the customers hold.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import git

from pipeline import sqlite_schema
from pipeline.apply_store import (
    CATALOG_TABLE_PREFIX,
    CATALOGS_TABLE,
    MANAGED_TABLES,
    catalog_table,
    catalog_table_fits,
    create_catalog_table,
    ensure_tables,
    load_catalog,
)
from pipeline.cache import file_identity, inputs_key
from pipeline.catalog_model import ROWS_FILE, relative_path
from pipeline.catalogs import load_description
from pipeline.collect import ChangeSet, find_base_tag, has_release_tags
from pipeline.content import KIND_FOLDERS, Kind, classify, definition_path, list_items
from pipeline.database import Database, SQLiteDatabase, check_integrity
from pipeline.db_schema import list_tables
from pipeline.errors import ApplyError, CollectError, MigrationError
from pipeline.findings import Finding
from pipeline.migrations import NAME_CHARACTERS, Migration, split_statements, sql_names
from pipeline.snapshot import export_commit
from pipeline.versions import TAG_PREFIX, Version

logger = logging.getLogger(__name__)

# The version recorded in `pipeline_catalogs` of the copy when the dry-run has none.
DRY_RUN_VERSION = "dry-run"
# The version recorded for the rows customers hold before the migrations.
BASE_VERSION = "base release"


def release_catalogs(content: Path, changes: ChangeSet, full: bool) -> list[str]:
    """Return the catalogs a release of `changes` ships, sorted, as the bundle build picks them."""
    present = list_items(content, Kind.CATALOG)
    if full or changes.base_tag is None:
        return present
    changed = set(changes.items(Kind.CATALOG))
    return [catalog_id for catalog_id in present if catalog_id in changed]


def shipped_catalogs(root: Path) -> list[str]:
    """Return the catalogs of the work tree at `root` that differ from its base release, sorted.

    The base is the release tag that `collect` picks for a release of HEAD.
    Every catalog counts when `root` is not a git repository with commits or
    has no release tag before HEAD.
    """
    return shipped_since_base(root)[0]


def shipped_since_base(root: Path) -> tuple[list[str], str | None]:
    """Return `shipped_catalogs` and the commit of the base release, None when there is none.

    A release tag on HEAD itself is the base: customers hold that release,
    and the work tree's changes go into the next one.
    """
    present = list_items(root, Kind.CATALOG)
    if not has_release_tags(root):
        logger.debug("every catalog ships, because the repository has no release tag")
        return present, None
    try:
        base = _tag_on_head(root) or find_base_tag(root, "HEAD")
    except CollectError as exc:
        logger.debug("every catalog ships, because the base release is unknown: %s", exc)
        return present, None
    if base is None:
        logger.debug("every catalog ships, because no release tag precedes HEAD")
        return present, None
    if not present:
        return [], base[1]
    changed = _changed_catalogs(root, base[1])
    logger.debug("catalogs changed since %s: %s", base[0], sorted(changed) or "none")
    return [catalog_id for catalog_id in present if catalog_id in changed], base[1]


@dataclass(frozen=True)
class BaseRelease:
    """The release that customers hold: a commit of a repository.

    `folder` is where `held_rows` exports the catalogs of that commit, one
    folder per catalog, shared by every sample of one dry-run. `versions`
    are those of the migrations the release has (`released_versions`).
    """

    repo: Path
    commit: str
    folder: Path
    versions: frozenset[str] = frozenset()


def released_versions(repo: Path, commit: str) -> frozenset[str]:
    """Return the versions of the migration files in the tree of `commit`.

    Raises:
        CollectError: the repository or the commit cannot be read.
    """
    folder = KIND_FOLDERS[Kind.MIGRATION]
    try:
        with git.Repo(repo) as handle:
            listed = handle.git.ls_tree("--name-only", commit, f"{folder}/")
    except (git.GitCommandError, git.InvalidGitRepositoryError) as exc:
        raise CollectError(f"{repo}: cannot list the migrations of {commit}: {exc}") from exc
    names = (line.rsplit("/", 1)[-1] for line in listed.splitlines())
    return frozenset(name.split("_", 1)[0] for name in names if "_" in name)


def held_rows(
    db: Database,
    root: Path,
    migrations: Sequence[Migration],
    shipped: Collection[str],
    base: BaseRelease | None,
) -> tuple[list[str], list[Finding]]:
    """Load into `db` the catalog rows that customers hold before `migrations` run.

    These are the catalogs whose tables the migrations change or read
    (`migration_tables`), the catalogs whose tables reference those, and
    every catalog all of them reference. A catalog the release does not ship
    has the rows of the content tree,
    which it has not changed since the base release. A catalog it ships has
    the rows of the base release, read from `base`. Without a base release
    no customer holds its rows, so it is left out. The rows are committed:
    `db` is a throwaway copy, and the migrations must meet them as they meet
    them at the customers.

    Returns the catalogs loaded, sorted, and one finding per catalog that
    does not load into the sample before the migrations.
    """
    present = list_items(root, Kind.CATALOG)
    domains: dict[str, set[str]] = {}
    if db.engine == "postgresql":
        for domain, table in db.execute(_DOMAIN_COLUMNS_SQL):
            domains.setdefault(str(domain).lower(), set()).add(str(table).lower())
    owners = {name.lower(): catalog for catalog in present for name in _own_names(catalog)}
    written = migration_tables(migrations, db.engine, owners, domains)
    parents = db.foreign_key_parents()
    # The catalogs whose rows reference a changed catalog's rows meet the migrations too.
    constrained = _with_children(
        {owners[name] for name in written if name in owners}, owners, parents
    )
    if not constrained:
        return [], []
    candidates = [
        catalog_id
        for catalog_id in with_parents(db, constrained, present)
        if catalog_id not in shipped or base is not None
    ]
    findings = []
    loaded = []
    db.execute("BEGIN")
    try:
        ensure_tables(db)
        for catalog_id in candidates:
            source = root if catalog_id not in shipped else _base_catalog(base, catalog_id)
            if source is None:
                continue
            loaded.append(catalog_id)
            problem = _load_one(db, source, catalog_id, BASE_VERSION)
            if problem is not None:
                findings.append(_held_finding(db, catalog_id, problem))
        try:
            db.execute("COMMIT")
        except db.errors as exc:
            # A deferred foreign key is checked here.
            findings.append(_held_finding(db, ", ".join(loaded), db.describe_error(exc)))
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
    return loaded, findings


def _held_finding(db: Database, catalogs: str, problem: str) -> Finding:
    first = catalogs.split(", ", 1)[0]
    return Finding(
        rule="dry-run.catalog",
        file=relative_path(first, ROWS_FILE),
        message=f"on {db.label}, before the migrations, with the rows customers hold of"
        f" {catalogs}: {problem}; the sample cannot hold these rows, so the migrations cannot"
        " be checked against them",
    )


def _base_catalog(base: BaseRelease | None, catalog_id: str) -> Path | None:
    """Return a content tree with the catalog as the base release has it; None when it has none.

    Each catalog is exported once per dry-run. Samples running at the same
    time may export it together: each writes its own folder and the first
    rename wins.
    """
    if base is None:
        return None
    tree = base.folder / catalog_id
    path = relative_path(catalog_id, ROWS_FILE)
    if not tree.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f".{catalog_id}.", dir=base.folder))
        folder = Path(path).parent.as_posix()
        export_commit(base.repo, base.commit, staging, paths=(folder,))
        try:
            staging.rename(tree)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return tree if (tree / path).is_file() else None


def _tag_on_head(root: Path) -> tuple[str, str] | None:
    """Return the highest release tag on HEAD and HEAD's commit, or None when there is none."""
    try:
        with git.Repo(root) as handle:
            head = handle.head.commit.hexsha
            listed = handle.git.tag("--points-at", "HEAD", "--list", f"{TAG_PREFIX}*")
    except (git.GitCommandError, git.InvalidGitRepositoryError, ValueError) as exc:
        raise CollectError(f"{root}: cannot list the release tags on HEAD: {exc}") from exc
    versions = [version for tag in listed.split() if (version := Version.from_tag(tag))]
    if not versions:
        return None
    return max(versions).tag, head


def _changed_catalogs(root: Path, base_commit: str) -> set[str]:
    """Return the ids of the catalogs whose files in the work tree differ from `base_commit`."""
    folder = KIND_FOLDERS[Kind.CATALOG]
    try:
        handle = git.Repo(root)
        with handle:
            # The work tree against the commit: committed, staged and unstaged changes.
            changed = handle.git.diff(
                "--name-only", "-z", "--no-renames", base_commit, "--", folder
            )
            untracked = handle.git.ls_files("--others", "--exclude-standard", "-z", "--", folder)
    except (git.GitCommandError, git.InvalidGitRepositoryError) as exc:
        raise CollectError(f"{root}: cannot list the changed catalogs: {exc}") from exc
    items = set()
    for path in (changed + "\0" + untracked).split("\0"):
        entry = classify(path) if path else None
        if entry is not None and entry.kind is Kind.CATALOG:
            items.add(entry.item)
    return items


# The table whose rows or constraints a statement changes: the target of
# ALTER TABLE (and its new name), a write, DROP TABLE, a new index or trigger.
_NAME = rf'(?:"(?:[^"]|"")+"|`(?:[^`]|``)+`|\[[^\]]+\]|[{NAME_CHARACTERS}]+)'
_NAME_PARTS = re.compile(_NAME)
_TABLE = rf"{_NAME}(?:\s*\.\s*{_NAME})?"
_TARGET = re.compile(
    r"^(?:ALTER\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?"
    r"|(?:INSERT|REPLACE)(?:\s+OR\s+\w+)?\s+INTO"
    r"|UPDATE(?:\s+OR\s+\w+)?(?:\s+ONLY)?"
    r"|DELETE\s+FROM(?:\s+ONLY)?"
    r"|DROP\s+TABLE(?:\s+IF\s+EXISTS)?"
    r"|CREATE\s+(?:TEMP\w*\s+|UNLOGGED\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?(?=\s+\S+\s+AS\b)"
    rf"|CREATE\s+(?:UNIQUE\s+)?INDEX(?:\s+CONCURRENTLY)?(?:\s+IF\s+NOT\s+EXISTS)?(?:\s+{_TABLE})?"
    r"\s+ON(?:\s+ONLY)?"
    r"|CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\w*\s+)?(?:CONSTRAINT\s+)?TRIGGER"
    rf"(?:\s+IF\s+NOT\s+EXISTS)?\s+{_TABLE}\s.*?\bON)"
    rf"\s+({_TABLE})(?:\s+RENAME\s+TO\s+({_TABLE}))?",
    re.IGNORECASE | re.DOTALL,
)
# TRUNCATE empties every table of its list; ALTER DOMAIN constrains every column of the domain.
_TRUNCATE = re.compile(
    r"^TRUNCATE(?:\s+TABLE)?\s+(?P<tables>.*?)(?:\s+(?:RESTART|CONTINUE|CASCADE|RESTRICT)\b.*)?$",
    re.IGNORECASE | re.DOTALL,
)
_ALTER_DOMAIN = re.compile(rf"^ALTER\s+DOMAIN\s+({_TABLE})", re.IGNORECASE)
# Each domain and the tables with a column of it, or of a domain built on it.
_DOMAIN_COLUMNS_SQL = """
WITH RECURSIVE uses(table_name, domain) AS (
    SELECT c.relname, t.oid
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_type t ON t.oid = a.atttypid
    WHERE n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped
        AND t.typtype = 'd'
    UNION
    SELECT uses.table_name, t.typbasetype
    FROM uses JOIN pg_type t ON t.oid = uses.domain
    WHERE t.typtype = 'd' AND t.typbasetype <> 0
)
SELECT t.typname, uses.table_name FROM uses JOIN pg_type t ON t.oid = uses.domain
WHERE t.typtype = 'd'
"""
# Statements that write rows from what they read.
_WRITE = re.compile(
    r"^(?:INSERT|REPLACE|UPDATE|DELETE|MERGE|WITH|CREATE\s+(?:TEMP\w*\s+|UNLOGGED\s+)?TABLE"
    r"(?:\s+IF\s+NOT\s+EXISTS)?\s+\S+\s+AS)\b",
    re.IGNORECASE,
)
# Statements that change no table's rows or constraints.
_NO_TARGET = re.compile(
    rf"^(?:CREATE\s+(?:TEMP\w*\s+|UNLOGGED\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?\s+{_TABLE}\s*\("
    r"|(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\w*\s+)?VIEW|DROP\s+(?:VIEW|INDEX|TRIGGER)"
    r"|CREATE\s+(?:TYPE|SEQUENCE|SCHEMA|EXTENSION)|ALTER\s+TYPE"
    r"|SELECT|ANALYZE|SET|RESET|COMMENT|GRANT|REVOKE)\b)",
    re.IGNORECASE,
)


def constrained_catalogs(
    migrations: Sequence[Migration],
    present: Collection[str],
    engine: str,
    domains: Mapping[str, Collection[str]] | None = None,
) -> set[str]:
    """Return the catalogs of `present` whose tables the `migrations` change or read.

    A catalog's tables are its application table (`knp`) and the pipeline's
    copy of it (`catalog_knp`). See `migration_tables` for what counts.
    """
    tables = {name.lower(): catalog for catalog in present for name in _own_names(catalog)}
    names = migration_tables(migrations, engine, tables, domains)
    return {tables[name] for name in names if name in tables}


def migration_tables(
    migrations: Sequence[Migration],
    engine: str,
    known: Collection[str] = (),
    domains: Mapping[str, Collection[str]] | None = None,
) -> set[str]:
    """Return the tables whose rows or constraints the `migrations` change, and what writes read.

    Names are in lower case. A write (INSERT, UPDATE, DELETE, CREATE TABLE
    ... AS) counts every name of its text too, because rows it reads decide
    what it writes. So does a statement that changes a `known` table, which
    may add a reference to another one. Any statement counts the `known`
    catalog tables (`catalog_knp`) it names, because a view, trigger or
    foreign key over one needs the table that customers hold. A statement
    of a form not recognized here counts every name of its text, and
    `known` names when its text does not scan.
    `domains` ({domain: tables with a column of it}, lower case) resolves
    `ALTER DOMAIN`.
    NOTE: a write that a migration makes through a function it calls, or
    through SQL it builds at run time, names no table and is not seen.
    """
    found: set[str] = set()
    for migration in migrations:
        try:
            statements = [statement.sql for statement in split_statements(migration.text, engine)]
        except MigrationError:
            statements = [migration.text]
        for sql in statements:
            targets = _statement_targets(sql, engine, known, domains or {})
            found.update(targets)
            # A write reads rows, and a change of a catalog's table may add a
            # reference to another catalog, whose rows then must be there.
            if _WRITE.match(sql) or targets & set(known):
                found.update(sql_names(sql, engine) or known)
            elif CATALOG_TABLE_PREFIX in sql.lower():
                # A view, trigger or foreign key over a catalog table needs that table.
                named = sql_names(sql, engine) or ()
                found.update(n for n in named if n.startswith(CATALOG_TABLE_PREFIX) and n in known)
    return found


def _statement_targets(
    sql: str, engine: str, tables: Collection[str], domains: Mapping[str, Collection[str]]
) -> set[str]:
    """Return the tables whose rows or constraints one statement may change, lower case."""
    match = _TARGET.match(sql)
    if match:
        return {_bare(name) for name in match.groups() if name}
    truncate = _TRUNCATE.match(sql)
    if truncate:
        listed = re.sub(r"\bONLY\b|\*", " ", truncate["tables"], flags=re.IGNORECASE)
        return {_bare(name.strip()) for name in listed.split(",") if name.strip()}
    domain = _ALTER_DOMAIN.match(sql)
    if domain:
        return set(domains.get(_bare(domain.group(1)), ()))
    if _NO_TARGET.match(sql):
        return set()
    return set(sql_names(sql, engine) or tables)


def _own_names(catalog_id: str) -> tuple[str, str]:
    return catalog_id, catalog_table(catalog_id)


def _bare(name: str) -> str:
    """Return a table name without its schema and quotes, in lower case."""
    last = str(_NAME_PARTS.findall(name)[-1])
    if last[:1] == '"':
        last = last[1:-1].replace('""', '"')
    elif last[:1] == "`":
        last = last[1:-1].replace("``", "`")
    elif last[:1] == "[":
        last = last[1:-1]
    return last.lower()


def _with_children(
    catalogs: Collection[str], owners: Mapping[str, str], parents: Mapping[str, Collection[str]]
) -> set[str]:
    """Return `catalogs` and every catalog whose tables reference theirs, at any depth."""
    selected = set(catalogs)
    grown = True
    while grown:
        grown = False
        for child, referenced in parents.items():
            owner = owners.get(child)
            if owner is None or owner in selected:
                continue
            if any(owners.get(parent) in selected for parent in referenced):
                selected.add(owner)
                grown = True
    return selected


def with_parents(db: Database, catalogs: Collection[str], present: Collection[str]) -> list[str]:
    """Return `catalogs` and every catalog of `present` their tables reference, at any depth."""
    parents = db.foreign_key_parents()
    owners = {name.lower(): catalog for catalog in present for name in _own_names(catalog)}
    selected = set(catalogs)
    pending = list(selected)
    while pending:
        catalog_id = pending.pop()
        for table in _own_names(catalog_id):
            for parent in parents.get(table.lower(), ()):
                owner = owners.get(parent)
                if owner is not None and owner not in selected:
                    selected.add(owner)
                    pending.append(owner)
    return sorted(selected)


def catalog_digest(root: Path, catalog_id: str) -> str:
    """Return a digest of the files of a catalog folder, by their identities (`file_identity`)."""
    folder = definition_path(root, Kind.CATALOG, catalog_id).parent
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return inputs_key((path.relative_to(root).as_posix(), file_identity(path)) for path in files)


@dataclass
class CatalogLoad:
    """The findings of a catalog load into one database, and its record.

    `record` is what a kept migrated copy stores for the next dry-run on it
    (`loaded_catalogs` reads it back as `stored`); None without one.
    `objects` are the schema objects with the catalogs loaded
    (`sqlite_schema.schema_objects`) and `schema` their fingerprint; both are
    None for PostgreSQL.
    """

    findings: list[Finding] = field(default_factory=list)
    # Every catalog of the load, sorted, and those of them the release does not ship.
    catalogs: list[str] = field(default_factory=list)
    unshipped: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    objects: dict[str, str] | None = None
    schema: str | None = None

    def read_schema(self, db: Database) -> None:
        """Take the schema objects and fingerprint of a SQLite database."""
        if isinstance(db, SQLiteDatabase):
            self.objects = sqlite_schema.schema_objects(db.connection)
            self.schema = sqlite_schema.schema_fingerprint(self.objects)


@contextlib.contextmanager
def loaded_catalogs(
    db: Database,
    root: Path,
    catalogs: Sequence[str],
    bundle_version: str | None,
    reported: Collection[str] = (),
    *,
    preloaded: Collection[str] = (),
    blobs: Mapping[str, str] | None = None,
    stored: Mapping[str, Any] | None = None,
) -> Iterator[CatalogLoad]:
    """Load `catalogs` from the content tree at `root` into `db` as apply does, then roll back.

    `catalogs` are those the release ships. They load with every catalog
    their tables reference (`with_parents`), except the catalogs the release
    does not ship that are `preloaded` (`held_rows` put the rows customers
    hold into `db` already). `CatalogLoad.catalogs` lists every catalog
    loaded, and `CatalogLoad.unshipped` those the release does not ship.

    The catalogs load in one transaction, each in a savepoint, so a catalog
    that fails leaves the others loaded. Then the schema check and the
    integrity and foreign key checks of the written tables and the tables
    referencing them run (`check_integrity`), in place of the deferred
    constraint check of a COMMIT. The block runs inside the transaction,
    so report queries see the catalog tables, and the transaction is rolled
    back afterwards: the database is left as it was, which lets a kept
    migrated copy serve the next dry-run too (`pipeline.dryrun_kept`).

    The result has one finding per catalog that fails, naming its file, and
    one per problem of the checks whose message is not in `reported` (the
    checks after the migrations reported those already).

    On a SQLite kept copy, `blobs` ({catalog: digest of its files}) makes the
    result carry a record, and `stored` is the record of the previous run on
    the same copy. A catalog whose files and whose parent catalogs' files are
    those of the stored record is not loaded again, and its stored result
    is used (see `_plan`).
    NOTE: a deferred foreign key that a trigger breaks in a table outside
    the written ones is found by apply's COMMIT, not by these checks.
    """
    load = CatalogLoad()
    if catalogs:
        present = list_items(root, Kind.CATALOG)
        load.catalogs = [
            catalog_id
            for catalog_id in with_parents(db, catalogs, present)
            if catalog_id in catalogs or catalog_id not in preloaded
        ]
        load.unshipped = [catalog_id for catalog_id in load.catalogs if catalog_id not in catalogs]
    if not load.catalogs:
        if blobs is not None and isinstance(db, SQLiteDatabase):
            load.read_schema(db)
            load.record = {
                "catalogs": {},
                "integrity": [],
                "schema": load.schema,
                "objects": load.objects,
            }
        yield load
        return
    version = bundle_version or DRY_RUN_VERSION
    # The checks after the migrations reported the problems of this schema already.
    before = db.schema_objects()
    try:
        db.execute("BEGIN")
        ensure_tables(db)
        plan = _plan(db, root, load.catalogs, version, blobs, stored)
        written = {CATALOGS_TABLE}
        ended = False
        for catalog_id in load.catalogs:
            if catalog_id not in plan.load:
                load.reused.append(catalog_id)
                problem = plan.stored_problems.get(catalog_id)
                # A failed load rolls its table back, so only a passed one leaves it.
                if problem is None:
                    create_catalog_table(db, load_description(root, catalog_id))
            else:
                load.loaded.append(catalog_id)
                written.update((catalog_table(catalog_id), catalog_id))
                problem = _load_one(db, root, catalog_id, version)
                plan.problems[catalog_id] = problem
                # A trigger's RAISE(ROLLBACK), an interrupt or a full disk makes SQLite
                # roll back the whole transaction. A further catalog would then be
                # written outside one, which changes a kept copy for good.
                ended = not db.in_transaction
                if ended:
                    problem = (
                        f"{problem}; SQLite then rolled back the whole catalog load, so"
                        " the catalogs after this one were not loaded"
                    )
            if problem is not None:
                where = f"on {db.label}"
                if catalog_id in load.unshipped:
                    where += ", with the rows customers hold from earlier releases"
                load.findings.append(
                    Finding(
                        rule="dry-run.catalog",
                        file=relative_path(catalog_id, ROWS_FILE),
                        message=f"{where}: {problem}",
                    )
                )
            if ended:
                # The catalogs after this one were never tried, so the result leaves them out.
                tried = load.catalogs[: load.catalogs.index(catalog_id) + 1]
                load.catalogs = tried
                load.unshipped = [name for name in load.unshipped if name in tried]
                break
        schema = None
        if isinstance(db, SQLiteDatabase):
            # The schema check reads no rows, so its result is valid for any copy with this schema.
            load.read_schema(db)
            same = stored is not None and stored.get("schema") == load.schema
            known = stored.get("schema_problems") if stored is not None else None
            if same and isinstance(known, list):
                schema = [str(problem) for problem in known]
            else:
                # The tables this load created have the pipeline's plain DDL, so
                # only the tables and views that use them need probes.
                own_tables = {*MANAGED_TABLES, *(catalog_table(name) for name in load.catalogs)}
                created = {table.lower() for table in own_tables}
                schema = db.schema_problems_since(before, created=created)
        # The transaction is rolled back, so no COMMIT checks the deferred constraints.
        deferred = _deferred_problem(db)
        # Where the engine checked every key at each write, a scan of the tables
        # referencing the catalogs (a million payment documents) finds nothing new.
        scan = deferred is not None or not db.writes_checked()
        checks = check_integrity(db, written, foreign_keys=scan, schema=schema)
        if deferred is not None and not any(f.rule == "database.foreign-key" for f in checks):
            checks.append(
                Finding(
                    rule="database.integrity",
                    file=db.label,
                    message=f"deferred constraint check after the catalog load: {deferred}",
                )
            )
        integrity = [finding for finding in checks if finding.message not in reported]
        load.findings.extend(integrity)
        # A load that ended early has no result for the catalogs after the failing one.
        if plan.keys is not None and not ended:
            load.record = {
                "catalogs": {
                    name: {"key": plan.keys[name], "problem": plan.problems[name]}
                    for name in load.catalogs
                },
                "integrity": [asdict(finding) for finding in integrity],
                "schema": load.schema,
                "objects": load.objects,
                "schema_problems": schema,
            }
        yield load
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def _deferred_problem(db: Database) -> str | None:
    """Check the deferred constraints as a COMMIT would, and return why they fail, or None."""
    try:
        db.check_deferred_constraints()
    except db.errors as exc:
        return db.describe_error(exc)
    return None


@dataclass
class _Plan:
    """The catalogs to load, and the stored results of the others."""

    load: set[str]
    # {catalog: why it failed, or None}, stored or from this run.
    problems: dict[str, str | None]
    stored_problems: dict[str, str | None]
    keys: dict[str, str] | None


def _plan(
    db: Database,
    root: Path,
    catalogs: Sequence[str],
    version: str,
    blobs: Mapping[str, str] | None,
    stored: Mapping[str, Any] | None,
) -> _Plan:
    """Decide which catalogs to load: all of them, or those whose inputs changed.

    A catalog's load depends on its own files, on the rows of the tables its
    tables reference, and on the rows of the tables referencing them, directly
    or through other tables. The catalogs among those are its group
    (`_related`), so the key of a catalog covers the files of every catalog
    of its group, and a group that gains or loses a catalog changes the keys.
    A catalog whose key changed is loaded with its whole group, so its rows
    meet the rows a full load gives the others. The others keep their stored
    results, which holds only when:

    - the stored checks after the load found nothing, so the tables that are
      not written again were sound;
    - no trigger is on a written table and no foreign key acts (CASCADE,
      SET NULL, SET DEFAULT) on a change of one, so a catalog writes only
      its own tables.

    A catalog whose table exists in another shape than its description's
    loads too, because its load would create the table anew.

    Otherwise, or without `blobs` and `stored`, every catalog loads.
    """
    everything = _Plan(set(catalogs), {}, {}, None)
    if blobs is None or not isinstance(db, SQLiteDatabase):
        return everything
    connection = db.connection
    graph = sqlite_schema.foreign_key_graph(connection)
    tables = {name.lower() for name in list_tables(db)}
    own = {
        catalog_id: {catalog_id.lower(), catalog_table(catalog_id).lower()} & tables
        for catalog_id in catalogs
    }
    dependencies = _related(catalogs, own, graph)
    digests = {
        catalog_id: blobs.get(catalog_id) or catalog_digest(root, catalog_id)
        for catalog_id in catalogs
    }
    keys = {
        catalog_id: inputs_key(
            [(catalog_id, digests[catalog_id])]
            + [(parent, digests[parent]) for parent in sorted(dependencies[catalog_id])],
            f"bundle {version}",
        )
        for catalog_id in catalogs
    }
    everything.keys = keys
    if stored is None:
        return everything
    entries = stored.get("catalogs")
    if not isinstance(entries, dict) or stored.get("integrity") != []:
        return everything
    written = set().union(*own.values())
    acting = any(keys_of.acting_parents & written for keys_of in graph.values())
    if acting or sqlite_schema.trigger_tables(connection) & written:
        logger.debug("%s: every catalog loads, because a load can write other tables", db.label)
        return everything
    changed = {
        catalog_id
        for catalog_id in catalogs
        if not isinstance(entries.get(catalog_id), dict)
        or entries[catalog_id].get("key") != keys[catalog_id]
        or catalog_table_fits(db, load_description(root, catalog_id)) is False
    }
    load = changed.union(*(dependencies[catalog_id] for catalog_id in changed))
    stored_problems = {
        catalog_id: entries[catalog_id].get("problem")
        for catalog_id in catalogs
        if catalog_id not in load
    }
    return _Plan(load, dict(stored_problems), stored_problems, keys)


def _related(
    catalogs: Sequence[str],
    own: Mapping[str, set[str]],
    graph: Mapping[str, sqlite_schema.ForeignKeys],
) -> dict[str, set[str]]:
    """Return {catalog: the other catalogs whose loads can change its result}.

    Two catalogs are related when the tables of one reference those of the
    other, at any depth. A parent's rows decide whether a child's rows find
    their keys, and a child's rows decide whether a parent's rows may change,
    so relations go both ways and chain: each catalog gets its whole group.
    """
    group = {catalog_id: {catalog_id} for catalog_id in catalogs}
    for catalog_id in catalogs:
        seen: set[str] = set()
        pending = list(own[catalog_id])
        while pending:
            keys = graph.get(pending.pop())
            for parent in keys.parents if keys is not None else ():
                if parent not in seen:
                    seen.add(parent)
                    pending.append(parent)
        for other in catalogs:
            if other != catalog_id and own[other] & seen and group[other] is not group[catalog_id]:
                merged = group[catalog_id] | group[other]
                for member in merged:
                    group[member] = merged
    return {catalog_id: group[catalog_id] - {catalog_id} for catalog_id in catalogs}


def _load_one(db: Database, root: Path, catalog_id: str, version: str) -> str | None:
    """Load one catalog in a savepoint; return why it failed, or None."""
    entry = {"id": catalog_id, "mode": "full", "path": relative_path(catalog_id, ROWS_FILE)}
    db.execute("SAVEPOINT pipeline_dry_run_catalog")
    try:
        counts = load_catalog(db, root, entry, version)
    except ApplyError as exc:
        problem: str | None = str(exc)
    except db.errors as exc:
        problem = f"catalog {catalog_id}: {db.describe_error(exc)}"
    else:
        problem = None
        logger.debug("%s: catalog %s loaded: %s", db.label, catalog_id, counts)
    if not db.in_transaction:
        # SQLite rolled back the whole load, savepoint included, so the caller stops.
        return problem
    if problem is not None:
        db.execute("ROLLBACK TO SAVEPOINT pipeline_dry_run_catalog")
    db.execute("RELEASE SAVEPOINT pipeline_dry_run_catalog")
    return problem
