"""Measure the peak memory of the stages that read the 1,000,000-row catalog.

    .venv/bin/python benchmarks/scale_memory.py /tmp/scale

The repository comes from `benchmarks/scale_content.py`. Each stage runs in a
fresh Python process, which reports its own peak resident set size
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and that of the git and 7-Zip
processes it waited for (`RUSAGE_CHILDREN`). Target: at most 300 MB for
validate and build. Stages:

- `check-catalog`: the catalog check of `organizations` alone;
- `validate`: the whole validate stage, all 523 items;
- `snapshot`: `pipeline.snapshot.export_commit` of HEAD (git archive into a
  temporary file, then extraction);
- `archive`: `pipeline.archive.write_archive` of the snapshot's `catalogs/`
  folder alone, the part of the build that compresses the big catalog;
- `build`: a full build (every item whole, so the big catalog is in the
  bundle) from that snapshot;
- `python-baseline`: the interpreter with the pipeline imported, for scale.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import PROJECT, print_machine

STAGES = ("python-baseline", "check-catalog", "validate", "snapshot", "archive", "build")
TARGET_MB = 300


def run_stage(stage: str, repo: Path) -> None:
    """Run one stage in this process (the child)."""
    from pipeline import archive, catalogs, validate
    from pipeline.build import build_bundle
    from pipeline.collect import collect
    from pipeline.release import _snapshot_config
    from pipeline.snapshot import export_commit
    from pipeline.versions import Version

    if stage == "check-catalog":
        assert catalogs.check_catalog(repo, "organizations") == []
    elif stage == "validate":
        validate.validate(repo)
    elif stage in ("snapshot", "archive", "build"):
        changes = collect(repo, "HEAD")
        with tempfile.TemporaryDirectory() as work:
            content = export_commit(repo, changes.commit, Path(work) / "content")
            if stage == "archive":
                archive.write_archive(content / "catalogs", Path(work) / "catalogs.7z", 0)
            if stage == "build":
                config = _snapshot_config(repo, content)
                build_bundle(
                    config, content, changes, Version(2027, 1, 0), Path(work) / "out", full=True
                )


def peak_mb(who: int) -> float:
    # Linux reports ru_maxrss in kibibytes.
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="content repository from scale_content.py")
    parser.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        help="measure only this stage (repeat for several; default: every stage)",
    )
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repo = args.repo.resolve()
    if args.child:
        run_stage(args.child, repo)
        report = {
            "self": peak_mb(resource.RUSAGE_SELF),
            "children": peak_mb(resource.RUSAGE_CHILDREN),
        }
        print(json.dumps(report))
        return

    print_machine()
    for stage in args.stage or STAGES:
        done = subprocess.run(
            [sys.executable, __file__, str(repo), "--child", stage],
            cwd=PROJECT,
            check=True,
            capture_output=True,
            text=True,
        )
        report = json.loads(done.stdout.strip().splitlines()[-1])
        verdict = (
            ""
            if stage == "python-baseline"
            else ("  within target" if report["self"] <= TARGET_MB else f"  ABOVE {TARGET_MB} MB")
        )
        print(
            f"{stage:<16} peak RSS {report['self']:7.1f} MB;"
            f" largest child process {report['children']:7.1f} MB{verdict}"
        )


if __name__ == "__main__":
    main()
