"""Time the dry-run of four SQLite samples in parallel processes against one after another.

Run: .venv/bin/python benchmarks/dryrun_parallel.py [--size medium] [--jobs 2] [--rounds 3]
     [--keep FOLDER]

Generates one sample of `--size` and copies it to four files (the dry-run
never changes them), then times, alternating, `dry_run(config)` with the four
samples one after another and `dry_run(config, jobs=JOBS)`. Prints the median
of each and the ratio parallel / serial.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Config, SampleDatabase  # noqa: E402
from pipeline.dryrun import dry_run  # noqa: E402
from pipeline.samples import generate_sample  # noqa: E402

SAMPLES = 4


def timed(config: Config, jobs: int) -> float:
    start = time.perf_counter()
    result = dry_run(config, jobs=jobs)
    seconds = time.perf_counter() - start
    if not result.passed or len(result.results) != SAMPLES:
        sys.exit("dry-run failed: " + "\n".join(result.summary()))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", help="sample size: small, medium or large")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each variant")
    parser.add_argument("--keep", type=Path, help="folder to keep the generated samples in")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dryrun-parallel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        first = work / f"{args.size}.sqlite"
        if not first.exists():
            generate_sample(ROOT, first, args.size)
        samples = []
        for index in range(SAMPLES):
            copy = work / f"{args.size}-{index}.sqlite"
            if not copy.exists():
                shutil.copyfile(first, copy)
            samples.append(SampleDatabase(f"sqlite:///{copy}"))
        config = Config(root=ROOT, sample_databases=tuple(samples))
        serial: list[float] = []
        parallel: list[float] = []
        for _ in range(args.rounds):
            serial.append(timed(config, 1))
            parallel.append(timed(config, args.jobs))
        serial_median = statistics.median(serial)
        parallel_median = statistics.median(parallel)
        print(f"{SAMPLES} {args.size} samples, {os.cpu_count()} CPUs, {args.jobs} jobs:")
        print(
            f"one after another {serial_median:.3f} s, parallel {parallel_median:.3f} s,"
            f" ratio {parallel_median / serial_median:.2f}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
