"""Time each stage of a whole release at scale, and verify against `7zz t`.

    .venv/bin/python benchmarks/scale_release.py /tmp/scale [--archive-benchmarks]

The repository comes from `benchmarks/scale_content.py`. The script releases
version 2027.01.0 of HEAD with a throwaway signing key into a temporary
folder, through `pipeline.release.release`, and records the time at the
start of each stage, so each stage's time is the gap to the next one. The
dry-run covers every sample database of the repository's configuration.

Reference tool in the same run: `7zz t` on the bundle the release wrote,
against `pipeline.verify.verify_bundle` on the same bundle (target: at most
1.2 times). The archive writer's own benchmarks (`archive_build.py`, against
`7zz a` with threads on, and `archive_verify.py`) run after it with
`--archive-benchmarks`, when those scripts are present.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import PROJECT, measure, print_comparison, print_machine, run_tool

from pipeline import signing
from pipeline.release import release
from pipeline.verify import verify_bundle
from pipeline.versions import Version

VERSION = Version(2027, 1, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="content repository from scale_content.py")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of verify and 7zz t")
    parser.add_argument(
        "--archive-benchmarks",
        action="store_true",
        help="also run benchmarks/archive_build.py and archive_verify.py when present",
    )
    args = parser.parse_args()
    repo = args.repo.resolve()
    sevenzip = shutil.which("7zz")
    if sevenzip is None:
        raise SystemExit("7zz is not installed (Debian package 7zip)")
    print_machine()

    with tempfile.TemporaryDirectory(prefix="scale-release-") as work_name:
        work = Path(work_name)
        secret_path, public_path = work / "release.key", work / "release.pub"
        signing.generate_keypair(secret_path, public_path, None)
        secret = signing.load_secret_key(secret_path, None)

        marks: list[tuple[str, float]] = []
        started = time.perf_counter()
        result = release(
            repo,
            work / "out",
            secret,
            version=VERSION,
            progress=lambda message: marks.append((message, time.perf_counter())),
        )
        finished = time.perf_counter()
        marks.append(("end", finished))
        for (message, at), (_, next_at) in itertools.pairwise(marks):
            stage = message.split(":", 1)[0]
            print(f"{stage:<10} {next_at - at:8.2f} s   ({message})")
        print(f"{'release':<10} {finished - started:8.2f} s   (whole release)")

        bundle = next(path for path in result.files if path.suffix == ".7z")
        manifest_signature = work / "out" / "manifest.json.minisig"
        print(f"bundle {bundle.name}: {bundle.stat().st_size} bytes")
        ours = measure(
            lambda: verify_bundle(bundle, [secret.public], manifest_signature=manifest_signature),
            args.rounds,
        )
        reference = measure(lambda: run_tool(sevenzip, "t", str(bundle)), args.rounds)
        print_comparison("verify_bundle", ours, "7zz t", reference)

    if args.archive_benchmarks:
        for script in ("archive_build.py", "archive_verify.py"):
            path = PROJECT / "benchmarks" / script
            if path.is_file():
                print(f"--- {script}", flush=True)
                subprocess.run([sys.executable, str(path)], cwd=PROJECT, check=True)
            else:
                print(f"--- {script} is not present; skipped")


if __name__ == "__main__":
    main()
