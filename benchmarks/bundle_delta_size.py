"""Compare the size of a bundle with a catalog delta against one with the full catalog.

Run: .venv/bin/python benchmarks/bundle_delta_size.py [--changed 0.01]

A temporary content repository gets the real KATO classifier (16,264 rows,
`kato_2022_ru.csv` in the shared data folder, or the folder named by
PIPELINE_SHARED_DATA) through `catalog.import`, and a release tag. The
refresh then renames `--changed` of the rows, adds 50 and removes 50 leaves,
as a month's KATO update does. The same refresh commit is built twice: as
the usual bundle, which carries `catalogs/kato/delta.json`, and with
`--full`, which carries the whole `rows.csv`. The script prints both sizes
and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from pipeline.build import build_bundle  # noqa: E402
from pipeline.catalogs import import_catalog  # noqa: E402
from pipeline.collect import collect  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.snapshot import export_commit  # noqa: E402
from pipeline.versions import Version  # noqa: E402

SHARED = Path(os.environ.get("PIPELINE_SHARED_DATA", PROJECT.parent / "shared" / "data"))


def git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def refreshed_source(source: Path, target: Path, changed: float) -> None:
    """Write the KATO file with a share of names changed, 50 leaves removed and 50 rows added."""
    lines = source.read_text(encoding="utf-8-sig").splitlines()
    header, rows = lines[0], lines[1:]
    parents = {row.split(";")[1] for row in rows}
    leaves = {row for row in rows if row.split(";")[0] not in parents}
    removed = set(sorted(leaves)[:50])
    step = max(1, int(1 / changed))
    kept = []
    for index, row in enumerate(r for r in rows if r not in removed):
        fields = row.split(";")
        if index % step == 0:
            fields[3] += " (обновлено)"
        kept.append(";".join(fields))
    top = rows[0].split(";")
    for number in range(50):
        kept.append(
            ";".join([str(9_000_000 + number), top[0], f"99{number:07d}", f"Новый {number}"])
        )
    target.write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")


def build(repo: Path, out: Path, full: bool) -> int:
    changes = collect(repo)
    with tempfile.TemporaryDirectory() as work:
        content = export_commit(repo, changes.commit, Path(work) / "content")
        built = build_bundle(
            load_config(content), content, changes, Version.parse("2026.12.1"), out, full=full
        )
    return built.bundle.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changed", type=float, default=0.01, help="share of rows renamed")
    args = parser.parse_args()
    source = SHARED / "catalogs" / "kato_2022_ru.csv"
    if not source.is_file():
        sys.exit(f"{source} not found; set PIPELINE_SHARED_DATA to the shared data folder")
    with tempfile.TemporaryDirectory() as name:
        repo = Path(name) / "content"
        (repo / "catalogs/kato").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        description = json.loads((PROJECT / "catalogs/kato/catalog.json").read_text("utf-8"))
        description["columns"] = [c for c in description["columns"] if c["name"] != "name_kk"]
        (repo / "catalogs/kato/catalog.json").write_text(
            json.dumps(description, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        import_catalog(repo, "kato", source, key="id", delimiter=";")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "Import KATO")
        git(repo, "tag", "release/2026.12.0")
        refreshed = Path(name) / "refreshed.csv"
        refreshed_source(source, refreshed, args.changed)
        delta = import_catalog(repo, "kato", refreshed, key="id", delimiter=";")
        git(repo, "commit", "-q", "-am", "Refresh KATO")
        delta_size = build(repo, Path(name) / "delta", full=False)
        full_size = build(repo, Path(name) / "full", full=True)
    print(f"refresh: {delta.summary()}")
    print(f"bundle with the delta: {delta_size:,} bytes")
    print(f"bundle with the full catalog: {full_size:,} bytes")
    print(f"ratio delta / full: {delta_size / full_size:.3f}")


if __name__ == "__main__":
    main()
