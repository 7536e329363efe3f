"""Catalog results reused on a kept migrated copy: what loads again, and what is compiled again."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import add_catalog_column

from pipeline import dryrun_catalogs
from pipeline.apply_store import ensure_tables, load_catalog
from pipeline.cache import CACHE_FOLDER
from pipeline.config import Config, SampleDatabase
from pipeline.database import Database, SQLiteDatabase
from pipeline.dryrun import DryRunResult, dry_run
from pipeline.dryrun_catalogs import constrained_catalogs
from pipeline.dryrun_kept import FOLDER
from pipeline.migrations import Migration
from pipeline.samples import generate_sample

REPO_ROOT = Path(__file__).resolve().parent.parent
CATALOGS = ["kato", "kbe", "knp"]
# An application table for the kbe catalog whose rows reference the knp table.
KBE_TABLE = (
    "CREATE TABLE kbe (\n"
    "    code TEXT PRIMARY KEY,\n"
    "    name_ru TEXT NOT NULL,\n"
    "    name_kk TEXT NOT NULL,\n"
    "    knp_code TEXT REFERENCES knp (code)\n"
    ");\n"
)


def write_report(root: Path, code: str, sql: str) -> None:
    folder = root / "packages" / "reports" / code
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"code": code, "query": sql}), "utf-8")


def write_migration(root: Path, name: str, sql: str) -> None:
    (root / "migrations" / name).write_text(sql, "utf-8")


def append_row(root: Path, catalog: str, line: str) -> None:
    with (root / "catalogs" / catalog / "rows.csv").open("a", encoding="utf-8") as rows:
        rows.write(line)


def edit_row(root: Path, catalog: str, prefix: str, line: str = "") -> None:
    """Replace the row starting with `prefix` by `line`; an empty line removes it."""
    rows = root / "catalogs" / catalog / "rows.csv"
    lines = rows.read_text("utf-8").splitlines(True)
    rows.write_text("".join(line if row.startswith(prefix) else row for row in lines), "utf-8")


def load_knp_into_sample(root: Path, orphan_code: str) -> None:
    """Give the sample the knp catalog's table and a row referencing `orphan_code` in it."""
    sample = SQLiteDatabase(
        "sqlite:///sample.sqlite", root / "sample.sqlite", create=False, lock_timeout_ms=1000
    )
    sample.execute("BEGIN")
    ensure_tables(sample)
    load_catalog(sample, root, {"id": "knp", "path": "catalogs/knp/rows.csv"}, "2025.1")
    # Deferred, so the loader's DELETE passes and only the checks after the load find an orphan.
    sample.execute(
        "CREATE TABLE payment_purposes (id INTEGER PRIMARY KEY,"
        " knp_code TEXT NOT NULL REFERENCES catalog_knp (code) DEFERRABLE INITIALLY DEFERRED)"
    )
    sample.execute("INSERT INTO payment_purposes (knp_code) VALUES (?)", (orphan_code,))
    sample.execute("COMMIT")
    sample.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    root = tmp_path / "content"
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    shutil.copytree(REPO_ROOT / "catalogs", root / "catalogs")
    write_report(root, "payments_by_kbk", "SELECT kbk_code, sum(amount) FROM payment_documents")
    generate_sample(root, root / "sample.sqlite", "small")
    return Config(root=root, sample_databases=(SampleDatabase("sqlite:///sample.sqlite"),))


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The catalogs really loaded into a copy, in order."""
    seen: list[str] = []
    original = dryrun_catalogs._load_one

    def recording(db: Database, root: Path, catalog_id: str, version: str) -> str | None:
        seen.append(catalog_id)
        return original(db, root, catalog_id, version)

    monkeypatch.setattr(dryrun_catalogs, "_load_one", recording)
    return seen


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The report queries compiled with EXPLAIN, in order."""
    seen: list[str] = []
    original = Database.explain_query

    def recording(self: Database, sql: str, parameters: Any = None) -> None:
        seen.append(sql)
        original(self, sql, parameters)

    monkeypatch.setattr(Database, "explain_query", recording)
    return seen


def comparable(result: DryRunResult) -> list[tuple[object, ...]]:
    return [(r.passed, r.error, r.findings, r.catalogs) for r in result.results]


def catalog_record(root: Path) -> Path:
    (path,) = (root / CACHE_FOLDER / FOLDER).glob("*.catalogs.json")
    return path


def test_only_changed_catalog_loads(config: Config, loads: list[str]) -> None:
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    loads.clear()

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert first.passed
    assert first.results[0].catalogs_reused == []
    assert loads == ["knp"]
    assert result.passed
    assert result.results[0].catalogs == CATALOGS
    assert result.results[0].catalogs_reused == ["kato", "kbe"]
    assert comparable(result) == comparable(dry_run(config, catalogs=CATALOGS))
    assert (
        "  catalogs loaded after the migrations: kato, kbe, knp"
        " (unchanged, results from the kept copy's record: kato, kbe)"
    ) in result.summary()


def test_referencing_catalog_loads_again(config: Config, loads: list[str]) -> None:
    write_migration(config.root, "0004_kbe.sql", KBE_TABLE)
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    loads.clear()

    after_knp = dry_run(config, use_cache=True, catalogs=CATALOGS)
    knp_loads = list(loads)
    edit_row(config.root, "kbe", "29,", "29,false,9,Бейрезидент,Нерезидент\n")
    loads.clear()
    after_kbe = dry_run(config, use_cache=True, catalogs=CATALOGS)

    # kbe's table references knp's, so a change of either loads both.
    assert knp_loads == ["kbe", "knp"]
    assert loads == ["kbe", "knp"]
    assert after_knp.passed
    assert after_kbe.passed
    assert after_kbe.results[0].catalogs_reused == ["kato"]


def test_rejected_changed_row_found(config: Config, loads: list[str]) -> None:
    write_migration(
        config.root,
        "0004_knp_name_length.sql",
        "-- pipeline: rebuild-tables\n"
        "CREATE TABLE knp_new (\n"
        "    code TEXT PRIMARY KEY,\n"
        "    name_ru TEXT NOT NULL CHECK (length(name_ru) <= 80),\n"
        "    name_kk TEXT NOT NULL\n"
        ");\n"
        "INSERT INTO knp_new SELECT code, name_ru, name_kk FROM knp;\n"
        "DROP TABLE knp;\n"
        "ALTER TABLE knp_new RENAME TO knp;\n",
    )
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    append_row(config.root, "knp", "914,Өсімпұл," + "П" * 81 + "\n")
    loads.clear()

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert first.passed
    assert loads == ["knp"]
    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.file == "catalogs/knp/rows.csv"
    assert finding.message == (
        "on sample.sqlite: catalog knp: row code=914 of catalogs/knp/rows.csv cannot be"
        " written into table knp: CHECK constraint failed: length(name_ru) <= 80"
    )
    assert comparable(result) == comparable(dry_run(config, catalogs=CATALOGS))


def test_removed_referenced_row_found(config: Config, loads: list[str]) -> None:
    load_knp_into_sample(config.root, "311")
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    edit_row(config.root, "knp", "311,")
    loads.clear()

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert first.passed
    assert loads == ["knp"]
    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.rule == "database.foreign-key"
    assert finding.message.startswith(
        "foreign key check: table payment_purposes foreign key (knp_code) -> catalog_knp(code):"
        " 1 row(s) have no matching row in parent table catalog_knp"
    )
    assert comparable(result) == comparable(dry_run(config, catalogs=CATALOGS))


def test_stored_findings_load_all(config: Config, loads: list[str]) -> None:
    load_knp_into_sample(config.root, "311")
    edit_row(config.root, "knp", "311,")
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    edit_row(config.root, "kbe", "29,", "29,false,9,Бейрезидент,Нерезидент\n")
    loads.clear()

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert not first.passed
    assert loads == CATALOGS
    assert result.results[0].catalogs_reused == []
    assert comparable(result) == comparable(first)


def test_trigger_loads_all(config: Config, loads: list[str]) -> None:
    write_migration(
        config.root,
        "0004_knp_audit.sql",
        "CREATE TABLE knp_audit (code TEXT);\n"
        "CREATE TRIGGER knp_written AFTER INSERT ON knp BEGIN\n"
        "    INSERT INTO knp_audit VALUES (new.code);\n"
        "END;\n",
    )
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    edit_row(config.root, "kbe", "29,", "29,false,9,Бейрезидент,Нерезидент\n")
    loads.clear()

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert result.passed
    assert loads == CATALOGS


def test_cascading_key_loads_all(config: Config, loads: list[str]) -> None:
    write_migration(
        config.root,
        "0004_knp_notes.sql",
        "CREATE TABLE knp_notes (\n"
        "    code TEXT REFERENCES knp (code) ON DELETE CASCADE,\n"
        "    note TEXT\n"
        ");\n",
    )
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    edit_row(config.root, "kbe", "29,", "29,false,9,Бейрезидент,Нерезидент\n")
    loads.clear()

    dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert loads == CATALOGS


def test_malformed_record_loads_all(config: Config, loads: list[str]) -> None:
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    record = catalog_record(config.root)
    record.write_text("{not json", "utf-8")
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    loads.clear()

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert result.passed
    assert loads == CATALOGS
    assert json.loads(record.read_text("utf-8"))["load"]["integrity"] == []


def test_record_of_other_key_ignored(config: Config, loads: list[str]) -> None:
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    record = catalog_record(config.root)
    stored = json.loads(record.read_text("utf-8"))
    stored["key"] = "0" * 64
    record.write_text(json.dumps(stored), "utf-8")
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    loads.clear()

    dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert loads == CATALOGS


def test_unchanged_schema_compiles_nothing(config: Config, compiled: list[str]) -> None:
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    compiled.clear()

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert result.passed
    assert compiled == []


def test_query_on_new_column_compiled(config: Config, compiled: list[str]) -> None:
    query = "SELECT code, note FROM catalog_kbe"
    write_report(config.root, "kbe_notes", query)
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    add_catalog_column(config.root, "kbe", "note")
    compiled.clear()

    second = dry_run(config, use_cache=True, catalogs=CATALOGS)

    # Only the query that names the changed table catalog_kbe is compiled again.
    assert not first.passed
    assert [f.file for f in first.results[0].findings] == [
        "packages/reports/kbe_notes/report.json"
    ]
    assert compiled == [query]
    assert second.passed


def test_query_through_changed_view_compiled(config: Config, compiled: list[str]) -> None:
    load_knp_into_sample(config.root, "311")
    write_migration(
        config.root,
        "0004_knp_view.sql",
        "CREATE VIEW knp_names AS SELECT name_ru FROM catalog_knp;\n",
    )
    query = "SELECT name_ru FROM knp_names"
    write_report(config.root, "knp_names", query)
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    rename_knp_column(config.root, "name_ru", "title_ru")
    compiled.clear()

    second = dry_run(config, use_cache=True, catalogs=CATALOGS)

    # The load creates catalog_knp anew without name_ru, so the view it names breaks.
    assert first.passed
    assert compiled == [query]
    assert not second.passed
    messages = [finding.message for finding in second.results[0].findings]
    assert any("view knp_names" in message and "name_ru" in message for message in messages)
    assert any(message.startswith("report knp_names on sample.sqlite:") for message in messages)
    assert comparable(second) == comparable(dry_run(config, catalogs=CATALOGS))


def test_view_broken_by_reshape_found(config: Config) -> None:
    load_knp_into_sample(config.root, "311")
    write_migration(
        config.root,
        "0004_knp_view.sql",
        "CREATE VIEW knp_names AS SELECT name_ru FROM catalog_knp;\n",
    )
    rename_knp_column(config.root, "name_ru", "title_ru")

    # The checks after the migrations compiled the view on this connection already.
    result = dry_run(config, catalogs=CATALOGS)

    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.message == (
        "schema check: view knp_names does not compile: no such column: name_ru;"
        " create the view again over the new schema"
    )


def rename_knp_column(root: Path, old: str, new: str) -> None:
    folder = root / "catalogs" / "knp"
    description = json.loads((folder / "catalog.json").read_text("utf-8"))
    for column in description["columns"]:
        if column["name"] == old:
            column["name"] = new
    (folder / "catalog.json").write_text(json.dumps(description, ensure_ascii=False), "utf-8")
    rows = (folder / "rows.csv").read_text("utf-8").split("\n", 1)
    (folder / "rows.csv").write_text(rows[0].replace(old, new) + "\n" + rows[1], "utf-8")


# -- catalogs the release does not ship --------------------------------------------------------

KNP_NAME_LIMIT = (
    "-- pipeline: rebuild-tables\n"
    "CREATE TABLE knp_new (\n"
    "    code TEXT PRIMARY KEY,\n"
    "    name_ru TEXT NOT NULL CHECK (length(name_ru) <= 40),\n"
    "    name_kk TEXT NOT NULL\n"
    ");\n"
    "INSERT INTO knp_new SELECT code, name_ru, name_kk FROM knp;\n"
    "DROP TABLE knp;\n"
    "ALTER TABLE knp_new RENAME TO knp;\n"
)


def write_purposes_catalog(root: Path, rows: str) -> None:
    """Add a catalog whose application table references the knp table."""
    folder = root / "catalogs" / "purposes"
    description = json.loads((root / "catalogs" / "knp" / "catalog.json").read_text("utf-8"))
    description["id"] = "purposes"
    description["columns"] = [
        {"name": "code", "type": "text", "required": True, "title": {"kk": "Код", "ru": "Код"}},
        {"name": "knp_code", "type": "text", "title": {"kk": "ТМК", "ru": "КНП"}},
    ]
    folder.mkdir()
    (folder / "catalog.json").write_text(json.dumps(description, ensure_ascii=False), "utf-8")
    (folder / "rows.csv").write_text("code,knp_code\n" + rows, "utf-8")


def test_migration_meets_unshipped_rows(config: Config) -> None:
    write_migration(config.root, "0004_knp_name_length.sql", KNP_NAME_LIMIT)

    result = dry_run(config, catalogs=[])

    # Customers hold knp's rows before the migration, and row 019 breaks its new CHECK.
    assert not result.passed
    (sample,) = result.results
    assert sample.catalogs_before == ["knp"]
    assert sample.catalogs == []
    (finding,) = sample.findings
    assert finding.rule == "dry-run.migration"
    assert finding.file == "migrations/0004_knp_name_length.sql"
    assert "CHECK constraint failed: length(name_ru) <= 40" in finding.message
    assert (
        "  catalogs loaded before the migrations, with the rows customers hold: knp"
        in result.summary()
    )


def test_migration_insert_meets_unshipped_rows(config: Config) -> None:
    write_migration(
        config.root,
        "0004_knp_penalty.sql",
        "INSERT INTO knp (code, name_ru, name_kk) VALUES ('912', 'Пени', 'Өсімпұл');\n",
    )

    result = dry_run(config, catalogs=[])

    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.file == "migrations/0004_knp_penalty.sql"
    assert "UNIQUE constraint failed: knp.code" in finding.message


def test_new_catalog_table_not_loaded(config: Config) -> None:
    write_migration(config.root, "0004_kbe.sql", KBE_TABLE)

    result = dry_run(config, catalogs=[])

    assert result.passed
    assert result.results[0].catalogs == []
    assert result.results[0].catalogs_before == []


def add_purposes_table(root: Path) -> None:
    """Give the sample an application table for the purposes catalog, as earlier releases did."""
    with sqlite3.connect(root / "sample.sqlite") as connection:
        connection.execute(
            "CREATE TABLE purposes (code TEXT PRIMARY KEY, knp_code TEXT REFERENCES knp (code))"
        )


def test_unshipped_catalog_loads_parents(config: Config) -> None:
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    write_purposes_catalog(config.root, "P1,914\nP2,311\n")
    add_purposes_table(config.root)
    write_migration(
        config.root, "0004_purpose_notes.sql", "ALTER TABLE purposes ADD COLUMN note TEXT;\n"
    )

    result = dry_run(config, catalogs=[])

    # Code 914 is in the knp catalog only, not among the sample's own rows.
    assert result.passed
    assert result.results[0].catalogs_before == ["knp", "purposes"]


def test_unshipped_row_without_parent_found(config: Config) -> None:
    write_purposes_catalog(config.root, "P1,999\n")
    add_purposes_table(config.root)
    write_migration(
        config.root, "0004_purpose_notes.sql", "ALTER TABLE purposes ADD COLUMN note TEXT;\n"
    )

    result = dry_run(config, catalogs=[])

    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.file == "catalogs/purposes/rows.csv"
    assert finding.message.startswith(
        "on sample.sqlite, before the migrations, with the rows customers hold of purposes:"
        " catalog purposes: row code=P1 of catalogs/purposes/rows.csv cannot be written into"
        " table purposes:"
    )


def test_unshipped_catalog_change_reruns(config: Config, loads: list[str]) -> None:
    write_migration(config.root, "0004_knp_name_length.sql", KNP_NAME_LIMIT)
    for code in ("019", "911", "912", "913"):
        edit_row(config.root, "knp", f"{code},")
    first = dry_run(config, use_cache=True, catalogs=[])
    append_row(config.root, "knp", "915,Өсімпұл," + "П" * 41 + "\n")
    loads.clear()

    second = dry_run(config, use_cache=True, catalogs=[])

    assert first.passed
    assert second.cached == 0
    assert loads == ["knp"]
    assert not second.passed
    assert comparable(second) == comparable(dry_run(config, catalogs=[]))


def test_child_leaving_reloads_parent(config: Config, loads: list[str]) -> None:
    # kbe loads before knp, and its row contains a name that knp's rows change.
    write_migration(
        config.root,
        "0004_kbe_names.sql",
        "CREATE UNIQUE INDEX knp_name_ru ON knp (name_ru);\n"
        "CREATE TABLE kbe (code TEXT PRIMARY KEY, name_ru TEXT REFERENCES knp (name_ru),"
        " name_kk TEXT);\n",
    )
    (config.root / "catalogs" / "kbe" / "rows.csv").write_text(
        "code,resident,sector,name_kk,name_ru\n11,true,1,Тауарлар,Оплата товаров\n", "utf-8"
    )
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    loads.clear()

    second = dry_run(config, use_cache=True, catalogs=["kato", "knp"])

    assert not first.passed
    assert loads == ["knp"]
    assert second.passed
    assert comparable(second) == comparable(dry_run(config, catalogs=["kato", "knp"]))


def test_malformed_row_counts_migrate_again(config: Config) -> None:
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    (record_path,) = (config.root / CACHE_FOLDER / FOLDER).glob("*[0-9a-f].json")
    record = json.loads(record_path.read_text("utf-8"))
    record["result"]["row_counts"] = "ab"
    record_path.write_text(json.dumps(record), "utf-8")
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert result.passed
    assert comparable(result) == comparable(dry_run(config, catalogs=CATALOGS))


def test_temporary_trigger_not_kept(config: Config) -> None:
    write_migration(
        config.root,
        "0004_freeze_knp.sql",
        "CREATE TEMP TRIGGER knp_frozen BEFORE UPDATE ON main.knp\n"
        "BEGIN SELECT RAISE(ABORT, 'knp names are frozen'); END;\n",
    )
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")

    second = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert not first.passed
    assert not second.passed
    assert comparable(second) == comparable(dry_run(config, catalogs=CATALOGS))


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(
        root, "-c", "user.name=QA", "-c", "user.email=qa@example.kz", "commit", "-q", "-m", message
    )


def tag_release(root: Path, tag: str) -> None:
    """Make `root` a git repository whose HEAD is the release `tag`."""
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "Release the base")
    git(root, "tag", tag)


def test_shipped_catalog_preloaded_from_base(config: Config) -> None:
    tag_release(config.root, "release/2026.11.0")
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    write_migration(
        config.root,
        "0004_knp_penalty.sql",
        "INSERT INTO knp (code, name_ru, name_kk) VALUES ('914', 'Пеня', 'Өсімпұл');\n",
    )
    commit_all(config.root, "Add the penalty code")

    result = dry_run(config)

    # Code 914 is new in this release, so customers do not hold it before the migration.
    assert result.passed
    (sample,) = result.results
    assert sample.catalogs_before == ["knp"]
    assert sample.catalogs == ["knp"]


def test_shipped_catalog_base_rows_meet_migration(config: Config) -> None:
    tag_release(config.root, "release/2026.11.0")
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")
    write_migration(
        config.root,
        "0004_knp_penalty.sql",
        "INSERT INTO knp (code, name_ru, name_kk) VALUES ('912', 'Пени', 'Өсімпұл');\n",
    )
    commit_all(config.root, "Add the penalty code")

    result = dry_run(config)

    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.file == "migrations/0004_knp_penalty.sql"
    assert "UNIQUE constraint failed: knp.code" in finding.message


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('CREATE UNIQUE INDEX knp_names ON main."knp" (name_ru);', {"knp"}),
        ("ALTER TABLE knp_new RENAME TO knp;", {"knp"}),
        ("ALTER TABLE main.[knp] ADD COLUMN note TEXT;", {"knp"}),
        ('CREATE INDEX old_names ON "knp.old" (name_ru);', set()),
        ("INSERT INTO purposes (code) SELECT code FROM knp;", {"knp"}),
        ("ALTER TABLE kbe ADD COLUMN knp_code TEXT REFERENCES knp (code);", {"kbe", "knp"}),
        ("DELETE FROM knp№2;", set()),
        ("DELETE FROM `k``np`;", set()),
        ("CREATE TABLE audit (code TEXT REFERENCES knp (code));", set()),
        ("CREATE INDEX audit_code ON audit (code);", set()),
        ("TRUNCATE payment_documents, knp;", {"knp"}),
        # The names in a trigger's text count too, so its quoted name adds kato.
        (
            'CREATE TRIGGER "guard ON kato" BEFORE INSERT ON knp BEGIN SELECT 1; END;',
            {"knp", "kato"},
        ),
        ("WITH old AS (SELECT 1) UPDATE knp SET name_ru = name_kk;", {"knp"}),
        ("UPDATE catalog_kbe SET name_ru = 'x';", {"kbe"}),
        ("-- knp is not touched\nSELECT 1;", set()),
    ],
)
def test_constrained_catalogs_by_statement(sql: str, expected: set[str]) -> None:
    migration = Migration("0004", "check", "migrations/0004_check.sql", None, sql, "", True)

    found = constrained_catalogs([migration], CATALOGS, "sqlite")

    assert found == expected


def test_altered_domain_constrains_its_tables() -> None:
    sql = "ALTER DOMAIN short_name ADD CONSTRAINT short CHECK (length(VALUE) <= 40);"
    migration = Migration("0004", "check", "migrations/0004_check.sql", None, sql, "", True)

    found = constrained_catalogs([migration], CATALOGS, "postgresql", {"short_name": {"knp"}})

    assert found == {"knp"}


def test_child_rows_meet_parent_delete(config: Config) -> None:
    write_purposes_catalog(config.root, "P1,019\n")
    add_purposes_table(config.root)
    write_migration(config.root, "0004_drop_019.sql", "DELETE FROM knp WHERE code = '019';\n")

    result = dry_run(config, catalogs=[])

    # Customers' purposes rows reference 019, so the DELETE fails at them.
    assert result.results[0].catalogs_before == ["knp", "purposes"]
    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.file == "migrations/0004_drop_019.sql"
    assert "FOREIGN KEY constraint failed" in finding.message


def test_rows_read_by_migration_loaded(config: Config) -> None:
    write_migration(
        config.root,
        "0004_short_purposes.sql",
        "CREATE TABLE short_purposes (\n"
        "    code TEXT PRIMARY KEY,\n"
        "    name_ru TEXT NOT NULL CHECK (length(name_ru) <= 40)\n"
        ");\n"
        "INSERT INTO short_purposes (code, name_ru) SELECT code, name_ru FROM knp;\n",
    )

    result = dry_run(config, catalogs=[])

    assert result.results[0].catalogs_before == ["knp"]
    assert not result.passed
    assert "CHECK constraint failed" in result.results[0].findings[0].message


def test_failed_reused_catalog_leaves_no_table(config: Config) -> None:
    with sqlite3.connect(config.root / "sample.sqlite") as connection:
        connection.executescript("PRAGMA foreign_keys = OFF;\n" + KNP_NAME_LIMIT)
    write_report(config.root, "knp_names", "SELECT code, name_ru FROM catalog_knp")
    first = dry_run(config, use_cache=True, catalogs=CATALOGS)
    edit_row(config.root, "kbe", "29,", "29,false,9,Бейрезидент,Нерезидент\n")

    second = dry_run(config, use_cache=True, catalogs=CATALOGS)

    # knp fails to load, so catalog_knp is gone and the report query fails too.
    assert not first.passed
    assert second.results[0].catalogs_reused == ["kato", "knp"]
    assert comparable(second) == comparable(dry_run(config, catalogs=CATALOGS))


def test_returning_catalog_folder_rebuilds_copy(config: Config) -> None:
    tag_release(config.root, "release/2026.11.0")
    write_migration(
        config.root,
        "0004_knp_fines.sql",
        "INSERT INTO knp (code, name_ru, name_kk) VALUES ('913', 'Штрафы', 'Айыппұлдар');\n",
    )
    commit_all(config.root, "Add the fines code")
    knp = config.root / "catalogs" / "knp"
    saved = config.root.parent / "knp-saved"
    shutil.move(knp, saved)
    without = dry_run(config, use_cache=True)
    shutil.move(saved, knp)

    back = dry_run(config, use_cache=True)

    assert without.passed
    assert not back.passed
    assert comparable(back) == comparable(dry_run(config))


def test_release_tag_on_head_is_base(config: Config) -> None:
    tag_release(config.root, "release/2026.10.0")
    append_row(config.root, "knp", "914,Айыппұлдар,Штрафы\n")
    commit_all(config.root, "Add KNP 914")
    git(config.root, "tag", "release/2026.11.0")
    write_migration(
        config.root,
        "0004_knp_914.sql",
        "INSERT INTO knp (code, name_ru, name_kk) VALUES ('914', 'Штрафы', 'Айыппұлдар');\n",
    )

    result = dry_run(config)

    # Customers hold 2026.11.0, whose knp has 914, so the uncommitted INSERT fails.
    assert not result.passed
    assert "UNIQUE constraint failed: knp.code" in result.results[0].findings[0].message


def test_malformed_checked_tables_migrate_again(config: Config) -> None:
    dry_run(config, use_cache=True, catalogs=CATALOGS)
    (record_path,) = (config.root / CACHE_FOLDER / FOLDER).glob("*[0-9a-f].json")
    record = json.loads(record_path.read_text("utf-8"))
    record["result"]["checked_tables"] = 5
    record_path.write_text(json.dumps(record), "utf-8")
    append_row(config.root, "knp", "914,Өсімпұл,Пеня\n")

    result = dry_run(config, use_cache=True, catalogs=CATALOGS)

    assert result.passed
    assert result.summary()


def test_released_migration_runs_before_held_rows(config: Config) -> None:
    append_row(config.root, "knp", "914,Айыппұлдар,Штрафы\n")
    write_migration(
        config.root,
        "0004_knp_914.sql",
        "INSERT INTO knp (code, name_ru, name_kk) VALUES ('914', 'Штрафы', 'Айыппұлдар');\n",
    )
    tag_release(config.root, "release/2026.11.0")
    write_migration(config.root, "0005_notes.sql", "CREATE TABLE document_notes (note TEXT);\n")
    commit_all(config.root, "Add document notes")

    result = dry_run(config)

    # The sample predates 0004, which customers ran before they got row 914.
    assert result.passed
    assert [run.version for run in result.results[0].applied] == ["0002", "0003", "0004", "0005"]


def test_held_rows_meet_table_of_released_migration(config: Config) -> None:
    write_migration(
        config.root,
        "0004_kbe.sql",
        "CREATE TABLE kbe (code TEXT PRIMARY KEY, resident TEXT, sector TEXT,"
        " name_kk TEXT, name_ru TEXT);\n",
    )
    tag_release(config.root, "release/2026.11.0")
    write_migration(
        config.root,
        "0005_kbe_short_names.sql",
        "-- pipeline: rebuild-tables\n"
        "CREATE TABLE kbe_new (code TEXT PRIMARY KEY, resident TEXT, sector TEXT,"
        " name_kk TEXT, name_ru TEXT CHECK (length(name_ru) <= 40));\n"
        "INSERT INTO kbe_new SELECT * FROM kbe;\n"
        "DROP TABLE kbe;\n"
        "ALTER TABLE kbe_new RENAME TO kbe;\n",
    )
    commit_all(config.root, "Limit KBE names")

    result = dry_run(config)

    # 0004 made the kbe table at the customers, and the base release's kbe rows went into it.
    assert result.results[0].catalogs_before == ["kbe"]
    assert not result.passed
    (finding,) = result.results[0].findings
    assert finding.file == "migrations/0005_kbe_short_names.sql"
    assert "CHECK constraint failed" in finding.message
