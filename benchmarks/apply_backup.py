"""Time the pipeline's backup and restore against the engines' own tools on the same database.

Run: .venv/bin/python benchmarks/apply_backup.py [--size medium] [--rounds 3]
     [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

SQLite: a generated sample database of `--size`. `backup_database` (the
SQLite backup API into a file, then SHA-256) is timed against
`sqlite3 DB ".backup FILE"`, and `restore_into_empty` against
`sqlite3 NEW ".restore FILE"`.

PostgreSQL, with `--postgres`: the sample is transferred into a database that
the script creates on that server and drops at the end. `backup_database`
(`pg_dump -Fc`, then SHA-256) is timed against `pg_dump -Fc`, and
`restore_into_empty` against `pg_restore --no-owner` into an empty database.

Each figure is the best wall-clock time of the rounds; the target ratio is at
most 1.3.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from pipeline.db_backup import backup_database, restore_into_empty  # noqa: E402
from pipeline.dbtools import transfer_database  # noqa: E402
from pipeline.migrations import schema_version  # noqa: E402
from pipeline.samples import generate_sample  # noqa: E402


def best(rounds: int, run: Callable[[int], None], before: Callable[[int], None]) -> float:
    times = []
    for index in range(rounds):
        before(index)
        started = time.perf_counter()
        run(index)
        times.append(time.perf_counter() - started)
    return min(times)


def nothing(_: int) -> None:
    return None


def report(name: str, ours: float, theirs: float, tool: str) -> None:
    print(f"{name}: pipeline {ours:.3f} s, {tool} {theirs:.3f} s, ratio {ours / theirs:.2f}")


def sqlite_figures(sample: Path, work: Path, rounds: int) -> None:
    url = f"sqlite:///{sample}"
    ours = best(rounds, lambda i: backup_database(url, work, work / f"ours-{i}.sqlite"), nothing)
    theirs = best(
        rounds,
        lambda i: subprocess.run(
            ["sqlite3", str(sample), f".backup {work / f'tool-{i}.sqlite'}"], check=True
        ),
        nothing,
    )
    report("SQLite backup ", ours, theirs, "sqlite3 .backup")

    backup = work / "ours-0.sqlite"

    def clear(prefix: str) -> Callable[[int], None]:
        return lambda i: (work / f"{prefix}-{i}.sqlite").unlink(missing_ok=True)

    ours = best(
        rounds,
        lambda i: restore_into_empty(backup, f"sqlite:///{work / f'r-ours-{i}.sqlite'}", work),
        clear("r-ours"),
    )
    theirs = best(
        rounds,
        lambda i: subprocess.run(
            ["sqlite3", str(work / f"r-tool-{i}.sqlite"), f".restore {backup}"], check=True
        ),
        clear("r-tool"),
    )
    report("SQLite restore", ours, theirs, "sqlite3 .restore")


def postgres_figures(sample: Path, server: str, work: Path, rounds: int) -> None:
    import psycopg

    base = server.rsplit("/", 1)[0]
    names = [f"bench_backup_{uuid.uuid4().hex[:8]}"] + [
        f"bench_restore_{uuid.uuid4().hex[:8]}" for _ in range(2 * rounds)
    ]
    with psycopg.connect(server, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{base}/{names[0]}"
        transfer_database(f"sqlite:///{sample}", url, repo=PROJECT)
        ours = best(rounds, lambda i: backup_database(url, work, work / f"ours-{i}.dump"), nothing)
        theirs = best(
            rounds,
            lambda i: subprocess.run(
                ["pg_dump", "--format=custom", "--file", str(work / f"tool-{i}.dump"), url],
                check=True,
            ),
            nothing,
        )
        report("PostgreSQL backup ", ours, theirs, "pg_dump -Fc")
        backup = work / "ours-0.dump"
        targets = [f"{base}/{name}" for name in names[1:]]
        ours = best(rounds, lambda i: restore_into_empty(backup, targets[i], work), nothing)
        theirs = best(
            rounds,
            lambda i: subprocess.run(
                [
                    "pg_restore",
                    "--exit-on-error",
                    "--no-owner",
                    "--dbname",
                    targets[rounds + i],
                    str(backup),
                ],
                check=True,
            ),
            nothing,
        )
        report("PostgreSQL restore", ours, theirs, "pg_restore")
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="maintenance database URL of a PostgreSQL server")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-apply-backup-") as name:
        work = Path(name)
        sample = generate_sample(
            PROJECT, work / "sample.sqlite", options.size, upto=schema_version(PROJECT)
        )
        print(f"sample: {options.size}, {sample.stat().st_size} bytes")
        sqlite_figures(sample, work, options.rounds)
        if options.postgres:
            postgres_figures(sample, options.postgres, work, options.rounds)


if __name__ == "__main__":
    main()
