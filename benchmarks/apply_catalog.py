"""Time applying a KATO catalog delta against reloading the full catalog, on SQLite.

Run: .venv/bin/python benchmarks/apply_catalog.py [--rounds 3] [--changed 0.01]

The catalog is the real KATO (16,264 rows, `kato_2022_ru.csv` in the shared
data folder). The base database contains it in `catalog_kato`. The new version
renames `--changed` of the rows, adds 50 and removes 50. Three ways to bring
the database to the new version are timed, each in one transaction on a fresh
copy of the base database:

- delta: `load_catalog` with mode `delta` (the shipped delta.json);
- full: `load_catalog` with mode `full` (rows.csv compared with the table,
  only the difference written);
- reload: DELETE every row, then INSERT every row of rows.csv, as a
  reference that does not use the pipeline.

Each figure is the best wall-clock time of the rounds. The script prints the
ratios delta / reload and full / reload.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from pipeline.apply_store import canonical_digest, ensure_tables, load_catalog  # noqa: E402
from pipeline.database import open_database  # noqa: E402

SOURCE = (
    Path(os.environ.get("PIPELINE_SHARED_DATA", PROJECT.parent / "shared" / "data"))
    / "catalogs"
    / "kato_2022_ru.csv"
)
COLUMNS = ["id", "parent_id", "code", "name"]
ADDED = 50
REMOVED = 50


def read_source() -> list[dict[str, str]]:
    text = SOURCE.read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text), delimiter=";"))


def write_catalog(folder: Path, rows: list[dict[str, str]]) -> None:
    """Write catalogs/kato/ with the demo description minus its kk column, and rows.csv."""
    description = json.loads((PROJECT / "catalogs/kato/catalog.json").read_text("utf-8"))
    description["columns"] = [c for c in description["columns"] if c["name"] in COLUMNS]
    target = folder / "catalogs" / "kato"
    target.mkdir(parents=True, exist_ok=True)
    (target / "catalog.json").write_text(json.dumps(description, ensure_ascii=False), "utf-8")
    ordered = sorted(rows, key=lambda row: row["id"])
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ordered)
    (target / "rows.csv").write_text(out.getvalue(), "utf-8")


def new_version(base: list[dict[str, str]], share: float) -> tuple[list[dict[str, str]], dict]:
    """Return the new rows and the delta document from `base` to them."""
    step = max(1, round(1 / share))
    changed = [dict(row, name=row["name"] + " (жаңа)") for row in base[::step]]
    changed_ids = {row["id"] for row in changed}
    removed = [row for row in base[1::step][:REMOVED] if row["id"] not in changed_ids]
    removed_ids = {row["id"] for row in removed}
    top = max(int(row["id"]) for row in base)
    added = [
        {"id": str(top + n), "parent_id": "0", "code": f"{990000000 + n}", "name": f"Жаңа {n}"}
        for n in range(1, ADDED + 1)
    ]
    by_id = {row["id"]: row for row in base if row["id"] not in removed_ids}
    by_id.update({row["id"]: row for row in changed})
    by_id.update({row["id"]: row for row in added})
    rows = list(by_id.values())
    document = {
        "format": 1,
        "catalog": "kato",
        "key": ["id"],
        "columns": COLUMNS,
        "base": {"rows": len(base), "sha256": canonical_digest(COLUMNS, ["id"], base)},
        "result": {"rows": len(rows), "sha256": canonical_digest(COLUMNS, ["id"], rows)},
        "added": added,
        "changed": changed,
        "removed": [[row["id"]] for row in removed],
    }
    return rows, document


def best(rounds: int, prepare: Callable[[], Path], run: Callable[[Path], None]) -> float:
    times = []
    for _ in range(rounds):
        path = prepare()
        started = time.perf_counter()
        run(path)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changed", type=float, default=0.01, help="share of rows renamed")
    options = parser.parse_args()
    if not SOURCE.is_file():
        raise SystemExit(f"{SOURCE} not found: the benchmark needs the real KATO file")

    base_rows = read_source()
    new_rows, document = new_version(base_rows, options.changed)
    with tempfile.TemporaryDirectory(prefix="bench-apply-catalog-") as name:
        work = Path(name)
        write_catalog(work / "base", base_rows)
        write_catalog(work / "full", new_rows)
        write_catalog(work / "delta", new_rows)
        (work / "delta/catalogs/kato/rows.csv").unlink()
        (work / "delta/catalogs/kato/delta.json").write_text(
            json.dumps(document, ensure_ascii=False), "utf-8"
        )
        base_db = work / "base.sqlite"
        with open_database(f"sqlite:///{base_db}", work, create=True) as db:
            db.execute("BEGIN")
            ensure_tables(db)
            load_catalog(db, work / "base", {"id": "kato"}, "2026.11.0")
            db.execute("COMMIT")

        def prepare() -> Path:
            copy = work / "copy.sqlite"
            shutil.copyfile(base_db, copy)
            return copy

        def through_pipeline(folder: Path, entry: dict[str, str]) -> Callable[[Path], None]:
            def run(path: Path) -> None:
                with open_database(f"sqlite:///{path}", work) as db:
                    db.execute("BEGIN")
                    load_catalog(db, folder, entry, "2026.12.0")
                    db.execute("COMMIT")

            return run

        def reload(path: Path) -> None:
            connection = sqlite3.connect(path, isolation_level=None)
            with (work / "full/catalogs/kato/rows.csv").open(encoding="utf-8") as handle:
                rows = list(csv.reader(handle))[1:]
            connection.execute("BEGIN")
            connection.execute("DELETE FROM catalog_kato")
            connection.executemany("INSERT INTO catalog_kato VALUES (?, ?, ?, ?)", rows)
            connection.execute("COMMIT")
            connection.close()

        delta_entry = {"id": "kato", "mode": "delta", "path": "catalogs/kato/delta.json"}
        delta = best(options.rounds, prepare, through_pipeline(work / "delta", delta_entry))
        full = best(options.rounds, prepare, through_pipeline(work / "full", {"id": "kato"}))
        reference = best(options.rounds, prepare, reload)

    print(f"KATO: {len(base_rows)} rows before, {len(new_rows)} after;")
    print(
        f"  delta: {len(document['added'])} added, {len(document['changed'])} changed,"
        f" {len(document['removed'])} removed"
    )
    print(f"delta  (load_catalog, mode delta): {delta:.3f} s")
    print(f"full   (load_catalog, mode full):  {full:.3f} s")
    print(f"reload (DELETE + INSERT, sqlite3): {reference:.3f} s")
    print(f"ratio delta / reload: {delta / reference:.2f}")
    print(f"ratio full / reload:  {full / reference:.2f}")
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
