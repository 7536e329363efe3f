"""Time the dry-run of the demo migrations on SQLite samples against the `sqlite3` CLI.

Run: .venv/bin/python benchmarks/dryrun_sqlite.py [--sizes small,medium,large] [--rounds 3]
     [--keep FOLDER]

For each sample size, generates the sample at schema version 0001 (kept in
`--keep` between runs), then times, alternating:

- `pipeline.dryrun.dry_run` as `inv dry-run` runs it, with the cache on but no
  stored result to reuse: copy (a byte copy under a read lock), lint,
  migrations 0002-0003 statement by statement, the foreign key check of the
  tables each migration changes, `integrity_check` and `foreign_key_check` of
  the tables the migrations changed (the sample passed the full checks once,
  which `pipeline.sample_checks` records), EXPLAIN of the report queries,
  removal of the copy;
- the same with the cache off, as a release runs it: the checks at the end
  then cover the whole database;
- `cp` of the sample plus `sqlite3 COPY < migrations`, the same SQL without checks;
- the same plus `PRAGMA foreign_key_check; PRAGMA integrity_check;`, the full
  checks that the dry-run without cache runs too.

Prints the median of each and the ratio of the dry-run to each baseline.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.cache import CACHE_FOLDER, cache_path  # noqa: E402
from pipeline.config import Config, SampleDatabase  # noqa: E402
from pipeline.dryrun import dry_run  # noqa: E402
from pipeline.dryrun_kept import FOLDER as KEPT_FOLDER  # noqa: E402
from pipeline.migrations import load_migrations  # noqa: E402
from pipeline.samples import generate_sample  # noqa: E402

CHECKS = "PRAGMA foreign_key_check;\nPRAGMA integrity_check;\n"


def cli_run(cli: str, sample: Path, work: Path, script: str) -> float:
    copy = work / "cli-copy.sqlite"
    start = time.perf_counter()
    shutil.copyfile(sample, copy)
    subprocess.run(
        [cli, "-bail", str(copy)], input=script, text=True, check=True, capture_output=True
    )
    copy.unlink()
    return time.perf_counter() - start


def pipeline_run(config: Config, use_cache: bool = False) -> float:
    # The stored results and the kept migrated copies go, so each run copies,
    # migrates and checks again; the record of the sample's full checks stays.
    cache_path(config.root, "dry-run").unlink(missing_ok=True)
    shutil.rmtree(config.root / CACHE_FOLDER / KEPT_FOLDER, ignore_errors=True)
    start = time.perf_counter()
    result = dry_run(config, use_cache=use_cache)
    seconds = time.perf_counter() - start
    if not result.passed:
        sys.exit("dry-run failed: " + "\n".join(result.summary()))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large", help="comma-separated sizes")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each variant")
    parser.add_argument("--keep", type=Path, help="folder to keep the generated samples in")
    args = parser.parse_args()
    cli = shutil.which("sqlite3")
    if cli is None:
        sys.exit("sqlite3 is not installed (Debian package sqlite3)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="dryrun-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    migrations = "".join(m.text + "\n" for m in load_migrations(ROOT, "sqlite")[1:])

    version = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout.split()[0]
    print(f"sqlite3 CLI {version}; Python sqlite3 library {__import__('sqlite3').sqlite_version}")

    try:
        for size in args.sizes.split(","):
            sample = work / f"{size}.sqlite"
            if not sample.exists():
                generate_sample(ROOT, sample, size)
            config = Config(root=ROOT, sample_databases=(SampleDatabase(f"sqlite:///{sample}"),))
            # The first cached run checks a sample that has no record yet in full.
            pipeline_run(config, use_cache=True)
            ours: list[float] = []
            full: list[float] = []
            plain: list[float] = []
            checked: list[float] = []
            for _ in range(args.rounds):
                plain.append(cli_run(cli, sample, work, migrations))
                ours.append(pipeline_run(config, use_cache=True))
                checked.append(cli_run(cli, sample, work, migrations + CHECKS))
                full.append(pipeline_run(config))
            ours_median = statistics.median(ours)
            full_median = statistics.median(full)
            plain_median = statistics.median(plain)
            checked_median = statistics.median(checked)
            print(
                f"{size:<6} {sample.stat().st_size / 1e6:7.1f} MB:"
                f" dry-run {ours_median:.3f} s,"
                f" sqlite3 CLI {plain_median:.3f} s (ratio {ours_median / plain_median:.2f});"
                f" dry-run without cache {full_median:.3f} s,"
                f" sqlite3 CLI with the same checks {checked_median:.3f} s"
                f" (ratio {full_median / checked_median:.2f})"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
