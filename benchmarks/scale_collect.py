"""Time the collect stage over 12 months of history against `git diff --name-status`.

    .venv/bin/python benchmarks/scale_collect.py /tmp/scale [--rounds 5]

The repository comes from `benchmarks/scale_content.py`. collect runs at HEAD
with `release/2026.01.0` as its base, so the range covers the twelve months
after that tag. The reference is `git diff --name-status` between the same
two commits, run as a process. Target: collect takes at most 2 times as long.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from timing import measure, print_comparison, print_machine, run_tool

from pipeline.collect import collect
from pipeline.versions import Version

BASE_TAG = "release/2026.01.0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="content repository from scale_content.py")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each (best counts)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    # Only tags below 2026.02.0 qualify, so the base is release/2026.01.0.
    before = Version(2026, 2, 0)

    changes = collect(repo, "HEAD", before=before)
    assert changes.base_tag == BASE_TAG, changes.base_tag
    print_machine()
    print(f"collect HEAD since {changes.base_tag}: {len(changes.changes)} changed content files")

    ours = measure(lambda: collect(repo, "HEAD", before=before), args.rounds)
    reference = measure(
        lambda: run_tool("git", "diff", "--name-status", BASE_TAG, "HEAD", cwd=repo), args.rounds
    )
    print_comparison("collect", ours, "git diff --name-status", reference)


if __name__ == "__main__":
    main()
