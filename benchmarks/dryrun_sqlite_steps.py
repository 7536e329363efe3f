"""Time each step of a SQLite dry-run on one sample: copy, migrations and each check.

Run: .venv/bin/python benchmarks/dryrun_sqlite_steps.py SAMPLE [--rounds 3]

SAMPLE is a sample database at schema version 0001, such as the
`large.sqlite` that `benchmarks/dryrun_sqlite.py --keep FOLDER` keeps. Each
round copies it into a temporary folder, sets the pragmas the dry-run sets on
its copy, runs the SQLite migrations 0002 and 0003 with `executescript`, then
times `PRAGMA integrity_check`, `PRAGMA quick_check` and `PRAGMA
foreign_key_check` one after another. Prints the median of each step, so the
share of the checks in the dry-run's time can be read off.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import print_machine  # noqa: E402

from pipeline.dryrun import COPY_CACHE_KIB  # noqa: E402

MIGRATIONS = (
    ROOT / "migrations" / "0002_budget_classification.sql",
    ROOT / "migrations" / "0003_treasury_statements.sqlite.sql",
)
STEPS = ("copy", "migrations", "integrity_check", "quick_check", "foreign_key_check")


def one_round(sample: Path, folder: Path) -> dict[str, float]:
    seconds: dict[str, float] = {}
    copy = folder / sample.name
    start = time.perf_counter()
    shutil.copyfile(sample, copy)
    seconds["copy"] = time.perf_counter() - start
    connection = sqlite3.connect(copy, isolation_level=None)
    try:
        for pragma in (
            "mmap_size = 1073741824",
            "journal_mode = MEMORY",
            "synchronous = OFF",
            "temp_store = MEMORY",
            f"cache_size = -{COPY_CACHE_KIB}",
        ):
            connection.execute(f"PRAGMA {pragma}")
        start = time.perf_counter()
        for migration in MIGRATIONS:
            connection.executescript(f"BEGIN;\n{migration.read_text('utf-8')}\nCOMMIT;")
        seconds["migrations"] = time.perf_counter() - start
        for check in STEPS[2:]:
            start = time.perf_counter()
            connection.execute(f"PRAGMA {check}").fetchall()
            seconds[check] = time.perf_counter() - start
    finally:
        connection.close()
        copy.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", type=Path, help="SQLite sample at schema version 0001")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median counts)")
    args = parser.parse_args()
    print_machine()
    print(f"sqlite3 library {sqlite3.sqlite_version}; sample {args.sample}")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="dryrun-steps-") as folder:
        for _ in range(args.rounds):
            rounds.append(one_round(args.sample, Path(folder)))
    for step in STEPS:
        print(f"{step:<18} {statistics.median(r[step] for r in rounds):7.3f} s")


if __name__ == "__main__":
    main()
