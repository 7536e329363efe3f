"""Time reading, hashing and checking a bundle archive against `7zz t` on the same archive.

Run: .venv/bin/python benchmarks/archive_verify.py [--size-mb 100] [--rounds 3] [--keep FOLDER]

Generates the content of benchmarks/archive_build.py, writes it once with
`pipeline.archive.write_archive`, then times, alternating, `7zz t` (decode and
check every CRC), `pipeline.archive.digest_entries` (check every entry,
decode, check every CRC, and hash every file with SHA-256) and
`pipeline.archive.extract_all`, which `inv verify` runs: the same, writing every
file to disk and hashing it on the way. Prints the best and median wall-clock
time of each and the ratios of the medians.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archive_build import MTIME, generate_content

from pipeline.archive import digest_entries, extract_all, write_archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="content size in MB")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each reader")
    parser.add_argument("--keep", type=Path, help="folder to keep the content and archive in")
    args = parser.parse_args()
    seven_zip = shutil.which("7zz")
    if seven_zip is None:
        sys.exit("7zz is not installed (Debian package 7zip)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="archive-bench-"))
    try:
        staging = work / "staging"
        if not staging.exists():
            generate_content(staging, args.size_mb)
        bundle = work / "ours.7z"
        if not bundle.exists():
            write_archive(staging, bundle, MTIME)
        unpacked = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file())
        ours: list[float] = []
        extracting: list[float] = []
        reference: list[float] = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run([seven_zip, "t", str(bundle)], check=True, capture_output=True)
            reference.append(time.perf_counter() - start)
            start = time.perf_counter()
            digests = digest_entries(bundle, max_total=unpacked * 2, max_ratio=1000)
            ours.append(time.perf_counter() - start)
            target = work / "extracted"
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            extract_all(bundle, target, max_total=unpacked * 2, max_ratio=1000)
            extracting.append(time.perf_counter() - start)
            shutil.rmtree(target)
        print(f"archive: {bundle.stat().st_size} bytes, {unpacked} unpacked, {len(digests)} files")
        print(f"digest_entries: best {min(ours):.3f} s, median {statistics.median(ours):.3f} s")
        print(
            f"7zz t:          best {min(reference):.3f} s,"
            f" median {statistics.median(reference):.3f} s"
        )
        print(
            f"extract_all:    best {min(extracting):.3f} s,"
            f" median {statistics.median(extracting):.3f} s"
        )
        base = statistics.median(reference)
        print(f"time ratio digest_entries / 7zz t (medians): {statistics.median(ours) / base:.3f}")
        print(
            f"time ratio extract_all / 7zz t (medians): {statistics.median(extracting) / base:.3f}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
