"""Time a validate run that reuses the cache after one catalog changed, against a full run.

    .venv/bin/python benchmarks/scale_incremental.py /tmp/scale [--catalog units]

The repository comes from `benchmarks/scale_content.py`. The script:

1. deletes `.pipeline-cache/` and runs validate with the cache on (the full
   run, which also fills the cache);
2. appends one row to `catalogs/<catalog>/rows.csv` in the work tree;
3. runs validate with the cache again: only that catalog and the catalogs
   that reference it are checked;
4. restores the file.

Target: the second run takes at most 10% of the full run. Both runs are in
this process, so interpreter start-up and imports are not counted.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from timing import print_machine

from pipeline.cache import CACHE_FOLDER
from pipeline.validate import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="content repository from scale_content.py")
    parser.add_argument("--catalog", default="units", help="catalog to change (default: units)")
    args = parser.parse_args()
    root = args.repo.resolve()
    rows = root / "catalogs" / args.catalog / "rows.csv"
    original = rows.read_bytes()
    print_machine()

    shutil.rmtree(root / CACHE_FOLDER, ignore_errors=True)
    started = time.perf_counter()
    full = validate(root, use_cache=True)
    full_seconds = time.perf_counter() - started

    try:
        # "Z" sorts after every generated code, so the rows stay in key order.
        last = original.rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b",")
        last[0] = b"Z999999"
        rows.write_bytes(original + b",".join(last) + b"\n")
        started = time.perf_counter()
        second = validate(root, use_cache=True)
        second_seconds = time.perf_counter() - started
    finally:
        rows.write_bytes(original)

    checked = len(second.cases) - second.cached
    print(f"full run:   {full_seconds:8.3f} s, {len(full.cases)} items checked")
    print(f"second run: {second_seconds:8.3f} s, {checked} items checked, {second.cached} reused")
    print(f"ratio second / full: {second_seconds / full_seconds:.3f}")


if __name__ == "__main__":
    main()
