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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import git

from pipeline.apply_store import CATALOGS_TABLE, catalog_table, ensure_tables, load_catalog
from pipeline.catalog_model import ROWS_FILE, relative_path
from pipeline.collect import ChangeSet, find_base_tag, has_release_tags
from pipeline.content import KIND_FOLDERS, Kind, classify, list_items
from pipeline.database import Database, SQLiteDatabase, check_integrity
from pipeline.errors import ApplyError, CollectError
from pipeline.findings import Finding

logger = logging.getLogger(__name__)

# The version recorded in `pipeline_catalogs` of the copy when the dry-run has none.
DRY_RUN_VERSION = "dry-run"


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
    present = list_items(root, Kind.CATALOG)
    if not present:
        return []
    if not has_release_tags(root):
        logger.debug("every catalog ships, because the repository has no release tag")
        return present
    try:
        base = find_base_tag(root, "HEAD")
    except CollectError as exc:
        logger.debug("every catalog ships, because the base release is unknown: %s", exc)
        return present
    if base is None:
        logger.debug("every catalog ships, because no release tag precedes HEAD")
        return present
    changed = _changed_catalogs(root, base[1])
    logger.debug("catalogs changed since %s: %s", base[0], sorted(changed) or "none")
    return [catalog_id for catalog_id in present if catalog_id in changed]


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


@contextlib.contextmanager
def loaded_catalogs(
    db: Database,
    root: Path,
    catalogs: Sequence[str],
    bundle_version: str | None,
    reported: Collection[str] = (),
) -> Iterator[list[Finding]]:
    """Load `catalogs` from the content tree at `root` into `db` as apply does, then roll back.

    The catalogs load in one transaction, each in a savepoint, so a catalog
    that fails leaves the others loaded. Then the schema check and the
    integrity and foreign key checks of the written tables and the tables
    referencing them run (`check_integrity`), in place of the deferred
    constraint check of a COMMIT. The block runs inside the transaction,
    so report queries see the catalog tables, and the transaction is rolled
    back afterwards: the database is left as it was, which lets a kept
    migrated copy serve the next dry-run too (`pipeline.dryrun_kept`).

    Yields one finding per catalog that fails, naming its file, and one per
    problem of the checks whose message is not in `reported` (the checks
    after the migrations reported those already).
    NOTE: a deferred foreign key that a trigger breaks in a table outside
    the written ones is found by apply's COMMIT, not by these checks.
    """
    if not catalogs:
        yield []
        return
    findings = []
    version = bundle_version or DRY_RUN_VERSION
    try:
        db.execute("BEGIN")
        ensure_tables(db)
        written = {CATALOGS_TABLE}
        for catalog_id in catalogs:
            written.update((catalog_table(catalog_id), catalog_id))
            problem = _load_one(db, root, catalog_id, version)
            if problem is not None:
                findings.append(
                    Finding(
                        rule="dry-run.catalog",
                        file=relative_path(catalog_id, ROWS_FILE),
                        message=f"on {db.label}: {problem}",
                    )
                )
        # Where SQLite checked every key at each write, a scan of the tables
        # referencing the catalogs (a million payment documents) finds nothing new.
        scan = not (isinstance(db, SQLiteDatabase) and db.immediate_foreign_keys())
        findings.extend(
            finding
            for finding in check_integrity(db, written, foreign_keys=scan)
            if finding.message not in reported
        )
        yield findings
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


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
    if problem is not None:
        db.execute("ROLLBACK TO SAVEPOINT pipeline_dry_run_catalog")
    db.execute("RELEASE SAVEPOINT pipeline_dry_run_catalog")
    return problem
