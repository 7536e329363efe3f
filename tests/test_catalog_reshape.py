"""A catalog's table when the catalog gains columns or changes its key, with objects over it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, add_catalog_column, remove_catalog_rows

from pipeline.apply_store import ensure_tables, load_catalog, prepare_catalog_tables
from pipeline.database import Database, open_database
from pipeline.errors import ApplyError

ENTRY = {"id": "knp", "path": "catalogs/knp/rows.csv"}
# Objects a database may hold over the knp catalog's table.
AUDIT = [
    "CREATE TABLE knp_audit (code TEXT)",
    "CREATE TABLE knp_refs (id INTEGER PRIMARY KEY, code TEXT REFERENCES catalog_knp (code))",
]
SQLITE_TRIGGER = (
    "CREATE TRIGGER knp_audit_insert AFTER INSERT ON catalog_knp"
    " BEGIN INSERT INTO knp_audit VALUES (new.code); END"
)
POSTGRES_TRIGGER = [
    "CREATE FUNCTION knp_audited() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO knp_audit VALUES (NEW.code); RETURN NEW; END $$",
    "CREATE TRIGGER knp_audit_insert AFTER INSERT ON catalog_knp"
    " FOR EACH ROW EXECUTE FUNCTION knp_audited()",
]


def reshape_knp(root: Path, key: list[str] | None = None) -> None:
    """Add a column `note` to the knp catalog, and change its key when `key` is given."""
    add_catalog_column(root, "knp", "note", lambda row: f"n{row[0]}")
    if key is not None:
        path = root / "catalogs" / "knp" / "catalog.json"
        description = json.loads(path.read_text("utf-8"))
        description["key"] = key
        path.write_text(json.dumps(description, ensure_ascii=False), "utf-8")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    content = tmp_path / "content"
    shutil.copytree(REPO_ROOT / "catalogs", content / "catalogs")
    return content


def loaded_database(db: Database, root: Path, trigger: list[str]) -> Database:
    """Load knp into `db` and add a table referencing it and a trigger on it."""
    db.execute("BEGIN")
    ensure_tables(db)
    load_catalog(db, root, ENTRY, "2026.12.0")
    for statement in [*AUDIT, *trigger]:
        db.execute(statement)
    db.execute("INSERT INTO knp_refs (id, code) VALUES (1, '010')")
    db.execute("COMMIT")
    return db


@pytest.fixture
def sqlite_db(tmp_path: Path, root: Path) -> Iterator[Database]:
    db = open_database("sqlite:///customer.sqlite", tmp_path, create=True)
    try:
        yield loaded_database(db, root, [SQLITE_TRIGGER])
    finally:
        db.close()


@pytest.fixture
def postgres_db(tmp_path: Path, root: Path, postgres_database: str) -> Iterator[Database]:
    with open_database(postgres_database, tmp_path) as db:
        yield loaded_database(db, root, POSTGRES_TRIGGER)


def postgres_triggers(db: Database) -> list[tuple[object, ...]]:
    """Return the names of the triggers on catalog_knp, not PostgreSQL's own."""
    return db.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'catalog_knp'::regclass"
        " AND NOT tgisinternal"
    )


def reload(db: Database, root: Path) -> dict[str, int]:
    db.execute("BEGIN")
    try:
        counts = load_catalog(db, root, ENTRY, "2026.12.1")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return counts


def test_added_column_keeps_objects(sqlite_db: Database, root: Path) -> None:
    reshape_knp(root)
    sqlite_db.execute("DELETE FROM knp_audit")

    counts = reload(sqlite_db, root)

    # The rows stay, so they change instead of being added again, and the trigger is kept.
    assert counts["added"] == 0
    assert counts["changed"] == counts["rows"]
    notes = sqlite_db.execute("SELECT note FROM catalog_knp WHERE code = '010'")
    assert notes == [("n010",)]
    triggers = sqlite_db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    assert triggers == [("knp_audit_insert",)]
    assert sqlite_db.execute("SELECT count(*) FROM knp_refs") == [(1,)]


def test_new_key_recreates_triggers(sqlite_db: Database, root: Path) -> None:
    reshape_knp(root, key=["code", "note"])
    # code alone is no key any more, so nothing may reference it.
    sqlite_db.execute("DROP TABLE knp_refs")
    sqlite_db.execute("DELETE FROM knp_audit")

    counts = reload(sqlite_db, root)

    # The table is created anew, and its trigger after the rows, so it saw no insert.
    assert counts["added"] == counts["rows"]
    triggers = sqlite_db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    assert triggers == [("knp_audit_insert",)]
    assert sqlite_db.execute("SELECT count(*) FROM knp_audit") == [(0,)]


def test_new_key_names_referencing_table(sqlite_db: Database, root: Path) -> None:
    reshape_knp(root, key=["code", "note"])
    before = sqlite_db.execute("SELECT count(*) FROM catalog_knp")

    with pytest.raises(ApplyError) as error:
        reload(sqlite_db, root)

    message = str(error.value)
    assert message.startswith(
        "catalog knp: its key changed, so table catalog_knp is created again,"
        " and dropping it failed: FOREIGN KEY constraint failed"
    )
    assert "tables referencing it: knp_refs" in message
    assert sqlite_db.execute("SELECT count(*) FROM catalog_knp") == before


@pytest.mark.postgres
def test_postgres_added_column_keeps_view(postgres_db: Database, root: Path) -> None:
    postgres_db.execute("CREATE VIEW knp_names AS SELECT code, name_ru FROM catalog_knp")
    reshape_knp(root)

    counts = reload(postgres_db, root)

    assert counts["changed"] == counts["rows"]
    assert len(postgres_db.execute("SELECT name_ru FROM knp_names WHERE code = '010'")) == 1
    assert postgres_triggers(postgres_db) == [("knp_audit_insert",)]


@pytest.mark.postgres
def test_postgres_new_key_recreates_trigger(postgres_db: Database, root: Path) -> None:
    postgres_db.execute("DROP TABLE knp_refs")
    reshape_knp(root, key=["code", "note"])

    counts = reload(postgres_db, root)

    assert counts["added"] == counts["rows"]
    assert postgres_triggers(postgres_db) == [("knp_audit_insert",)]


def test_new_application_table_gets_every_row(sqlite_db: Database, root: Path) -> None:
    kbe = {"id": "kbe", "path": "catalogs/kbe/rows.csv"}
    sqlite_db.execute("BEGIN")
    load_catalog(sqlite_db, root, kbe, "2026.12.0")
    sqlite_db.execute("COMMIT")
    # A later release creates the application table and changes one catalog row.
    sqlite_db.execute("CREATE TABLE kbe (code TEXT PRIMARY KEY, name_ru TEXT NOT NULL)")
    rows = root / "catalogs" / "kbe" / "rows.csv"
    text = rows.read_text("utf-8")
    rows.write_text(text.replace("Резидент: центральное правительство", "Правительство"), "utf-8")

    sqlite_db.execute("BEGIN")
    counts = load_catalog(sqlite_db, root, kbe, "2026.12.1")
    sqlite_db.execute("COMMIT")

    # The empty table gets every row, as a fresh install would have it, not only the change.
    assert counts["changed"] == 1
    written = sqlite_db.execute("SELECT count(*) FROM kbe")
    assert written == [(counts["rows"],)]
    assert sqlite_db.execute("SELECT name_ru FROM kbe WHERE code = '11'") == [("Правительство",)]


def test_delta_into_reshaped_table_rejected(sqlite_db: Database, root: Path) -> None:
    reshape_knp(root, key=["code", "note"])
    delta = {"id": "knp", "mode": "delta", "path": "catalogs/knp/delta.json"}
    before = sqlite_db.execute("SELECT count(*) FROM catalog_knp")

    with pytest.raises(ApplyError) as error:
        load_catalog(sqlite_db, root, delta, "2026.12.1")

    assert str(error.value) == (
        "catalog knp: the bundle ships a delta of it, but table catalog_knp has another key"
        " or other columns than the bundle describes, so no delta can start from its rows;"
        " apply a full bundle of this release"
    )
    assert sqlite_db.execute("SELECT count(*) FROM catalog_knp") == before


@pytest.mark.postgres
def test_postgres_new_key_names_referencing_table(postgres_db: Database, root: Path) -> None:
    reshape_knp(root, key=["code", "note"])

    with pytest.raises(ApplyError) as error:
        reload(postgres_db, root)

    # The failed DROP leaves the transaction usable, so the message names what blocked it.
    message = str(error.value)
    assert message.startswith(
        "catalog knp: its key changed, so table catalog_knp is created again, and dropping it"
        " failed: cannot drop table catalog_knp because other objects depend on it"
    )
    assert "constraint knp_refs_code_fkey on table knp_refs depends on table catalog_knp" in (
        message
    )
    assert "tables referencing it: knp_refs" in message


def test_referenced_row_removal_named(sqlite_db: Database, root: Path) -> None:
    remove_catalog_rows(root, "knp", "010,")
    before = sqlite_db.execute("SELECT count(*) FROM catalog_knp")

    with pytest.raises(ApplyError) as error:
        reload(sqlite_db, root)

    # knp_refs holds a row that references code 010, which the catalog no longer has.
    assert str(error.value) == (
        "catalog knp: row code=010 cannot be removed from table catalog_knp:"
        " FOREIGN KEY constraint failed; tables referencing it: knp_refs"
    )
    assert sqlite_db.execute("SELECT count(*) FROM catalog_knp") == before


def test_columns_added_before_migrations(sqlite_db: Database, root: Path) -> None:
    reshape_knp(root)
    before = sqlite_db.execute("SELECT count(*) FROM catalog_knp")

    sqlite_db.execute("BEGIN")
    prepare_catalog_tables(sqlite_db, root, ["kato", "kbe", "knp"])
    # A migration of the release can then use the new column.
    sqlite_db.execute("CREATE VIEW knp_notes AS SELECT code, note FROM catalog_knp")
    sqlite_db.execute("COMMIT")
    tables = {row[0] for row in sqlite_db.execute("SELECT name FROM sqlite_master")}

    assert sqlite_db.execute("SELECT count(*) FROM knp_notes") == before
    assert {"catalog_kato", "catalog_kbe"} <= tables
