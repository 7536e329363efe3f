"""Time the dry-run of the demo migrations on PostgreSQL samples against `psql` on a clone.

Run: .venv/bin/python benchmarks/dryrun_postgres.py [--sizes small,medium,large] [--rounds 3]
     [--server postgresql://postgres@127.0.0.1:5432] [--keep-samples]

For each size, loads the sample once into the template database
`parus_bench_SIZE` on the server (dropped at the end unless --keep-samples),
then times, alternating:

- `pipeline.dryrun.dry_run`: clone with CREATE DATABASE ... TEMPLATE, lint,
  migrations 0002-0003 with SET CONSTRAINTS ALL IMMEDIATE, the NOT VALID
  constraint validation and one orphan query per foreign key, EXPLAIN of the
  report queries, DROP DATABASE;
- `psql`: CREATE DATABASE ... TEMPLATE, `psql -1 -v ON_ERROR_STOP=1 -f 0002 -f 0003`,
  DROP DATABASE.

Prints the median of each and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Config, SampleDatabase  # noqa: E402
from pipeline.dryrun import dry_run  # noqa: E402
from pipeline.migrations import load_migrations  # noqa: E402
from pipeline.samples import drop_sample, ensure_sample  # noqa: E402


def psql_run(psql: str, server: str, template: str, files: list[Path]) -> float:
    clone = f"parus_bench_psql_{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    subprocess.run(
        [
            psql,
            "-q",
            "-d",
            f"{server}/postgres",
            "-c",
            f'CREATE DATABASE "{clone}" TEMPLATE "{template}"',
        ],
        check=True,
        capture_output=True,
    )
    try:
        command = [psql, "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", f"{server}/{clone}"]
        for file in files:
            command += ["-f", str(file)]
        subprocess.run(command, check=True, capture_output=True)
    finally:
        subprocess.run(
            [
                psql,
                "-q",
                "-d",
                f"{server}/postgres",
                "-c",
                f'DROP DATABASE "{clone}" WITH (FORCE)',
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large", help="comma-separated sizes")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each variant")
    parser.add_argument(
        "--server", default="postgresql://postgres@127.0.0.1:5432", help="server URL, no database"
    )
    parser.add_argument("--keep-samples", action="store_true", help="keep the template databases")
    args = parser.parse_args()
    psql = shutil.which("psql")
    if psql is None:
        sys.exit("psql is not installed (Debian package postgresql-client)")
    files = [ROOT / m.path for m in load_migrations(ROOT, "postgresql")[1:]]
    templates = []
    try:
        with psycopg.connect(f"{args.server}/postgres") as connection:
            version = connection.execute("SHOW server_version").fetchone()
        client = subprocess.run([psql, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"PostgreSQL server {version[0] if version else '?'}; {client}")
        for size in args.sizes.split(","):
            template = f"parus_bench_{size}"
            templates.append(template)
            sample = SampleDatabase(f"{args.server}/{template}", generate=size)
            start = time.perf_counter()
            if ensure_sample(ROOT, sample):
                print(f"{size}: loaded the template in {time.perf_counter() - start:.1f} s")
            config = Config(root=ROOT, sample_databases=(sample,))
            ours: list[float] = []
            reference: list[float] = []
            for _ in range(args.rounds):
                reference.append(psql_run(psql, args.server, template, files))
                start = time.perf_counter()
                result = dry_run(config)
                ours.append(time.perf_counter() - start)
                if not result.passed:
                    sys.exit("dry-run failed: " + "\n".join(result.summary()))
            ours_median = statistics.median(ours)
            reference_median = statistics.median(reference)
            print(
                f"{size:<6}: dry-run {ours_median:.3f} s, psql on a template clone"
                f" {reference_median:.3f} s, ratio {ours_median / reference_median:.2f}"
            )
    finally:
        if not args.keep_samples:
            # Samples are marked as templates, which DROP DATABASE refuses; drop_sample
            # clears the mark first.
            for template in templates:
                drop_sample(f"{args.server}/{template}")


if __name__ == "__main__":
    main()
