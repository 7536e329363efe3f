"""Time a dry-run whose results all come from the cache, against a full dry-run.

    .venv/bin/python benchmarks/dryrun_incremental.py /tmp/scale [--jobs 2] [--rounds 3]
        [--catalog units]

The repository comes from `benchmarks/scale_content.py` with its three SQLite
samples. In one process the script:

1. runs the full dry-run without the cache (`dry_run(config, jobs=JOBS)`),
   `--rounds` times, and keeps the best time;
2. deletes `.pipeline-cache/dry-run.json` and runs the dry-run with the cache
   on once, which stores every sample's result;
3. runs it with the cache again, `--rounds` times: every result comes from
   the cache, and the best time is kept;
4. appends one row to `catalogs/<catalog>/rows.csv` in the work tree and runs
   the dry-run with the cache once. The catalog then differs from the base
   release, so the release would ship it, and every sample runs again to load
   it. Each sample runs on its kept migrated copy, where the catalogs that did
   not change keep the results of step 2 and only the changed one loads. The
   script restores the file afterwards.

Targets: steps 3 and 4 each take at most 10% of step 1. Interpreter start-up
and imports are not counted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from timing import print_machine

from pipeline.cache import CACHE_FOLDER
from pipeline.config import load_config
from pipeline.dryrun import DryRunResult, dry_run


def timed(run: Callable[[], DryRunResult]) -> tuple[float, DryRunResult]:
    """Return the seconds a dry-run took and its result; exit when it failed."""
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    if not result.passed:
        raise SystemExit("the dry-run failed; run `inv dry-run` in the repository to see why")
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="content repository from scale_content.py")
    parser.add_argument("--jobs", type=int, default=2, help="samples at once (default: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of steps 1 and 3")
    parser.add_argument("--catalog", default="units", help="catalog to change in step 4")
    args = parser.parse_args()
    root = args.repo.resolve()
    config = load_config(root)
    print_machine()

    full = min(timed(lambda: dry_run(config, jobs=args.jobs))[0] for _ in range(args.rounds))
    (root / CACHE_FOLDER / "dry-run.json").unlink(missing_ok=True)
    timed(lambda: dry_run(config, jobs=args.jobs, use_cache=True))
    cached_runs = [
        timed(lambda: dry_run(config, jobs=args.jobs, use_cache=True)) for _ in range(args.rounds)
    ]
    cached, cached_result = min(cached_runs, key=lambda run: run[0])

    rows = root / "catalogs" / args.catalog / "rows.csv"
    original = rows.read_bytes()
    try:
        # "Z" sorts after every generated code, so the rows stay in key order.
        last = original.rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b",")
        last[0] = b"Z999999"
        rows.write_bytes(original + b",".join(last) + b"\n")
        changed, changed_result = timed(lambda: dry_run(config, jobs=args.jobs, use_cache=True))
    finally:
        rows.write_bytes(original)

    samples = len(cached_result.results)
    print(f"full run without the cache:   {full:8.3f} s, {samples} samples")
    print(f"every result from the cache:  {cached:8.3f} s, {cached_result.cached} reused")
    print(
        f"after changing {args.catalog}:      {changed:8.3f} s, {changed_result.cached} reused,"
        f" catalogs: {', '.join(changed_result.results[0].catalogs)},"
        f" of them unchanged: {', '.join(changed_result.results[0].catalogs_reused) or 'none'}"
    )
    print(f"ratio cached / full: {cached / full:.3f}")
    print(f"ratio after the catalog change / full: {changed / full:.3f}")


if __name__ == "__main__":
    main()
