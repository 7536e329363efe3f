"""Time `verify_bundle` on a real signed bundle of ~100 MB against `7zz t` on the same file.

Run: .venv/bin/python benchmarks/verify_bundle.py [--size-mb 100] [--rounds 3] [--keep DIR]

A temporary content repository gets the demo content plus one fix whose
payload is the generated content of benchmarks/archive_build.py. The release
of that repository is signed with a fresh key, then `verify_bundle` (every
check, as `inv verify` runs them) and `7zz t` are timed alternately. Prints
the median of each and their ratio. With `--keep DIR` the bundle and its
key are kept in DIR, and a later run with the same DIR times them again
without building.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "benchmarks"))

from archive_build import generate_content  # noqa: E402

from pipeline.keys import (  # noqa: E402
    PublicKey,
    generate_keypair,
    load_public_key,
    load_secret_key,
)
from pipeline.release import release  # noqa: E402
from pipeline.verify import verify_bundle  # noqa: E402
from pipeline.versions import Version  # noqa: E402


def git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def content_repository(folder: Path, size_mb: int) -> Path:
    """Write a content repository with the demo content and one large fix; return it."""
    repo = folder / "content"
    for name in ("catalogs", "migrations", "packages"):
        shutil.copytree(PROJECT / name, repo / name)
    (repo / "pyproject.toml").write_text(
        '[tool.pipeline]\nsample_databases = [{ url = "sqlite:///.samples/s.sqlite",'
        ' generate = "small" }]\n',
        encoding="utf-8",
    )
    (repo / ".gitignore").write_text(".samples/\n", encoding="utf-8")
    template = PROJECT / "packages/fixes/payment-order-total-rounding/fix.json"
    fix = repo / "packages/fixes/bench-large-payload"
    generate_content(fix / "payload", size_mb)
    definition = json.loads(template.read_text(encoding="utf-8"))
    definition["id"] = fix.name
    definition["files"] = [
        {"source": path.relative_to(fix).as_posix(), "install": path.relative_to(fix).as_posix()}
        for path in sorted((fix / "payload").rglob("*"))
        if path.is_file()
    ]
    (fix / "fix.json").write_text(json.dumps(definition, ensure_ascii=False), encoding="utf-8")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add content")
    return repo


def prepared_bundle(work: Path, size_mb: int) -> tuple[Path, PublicKey]:
    """Return the signed bundle in work/dist and its public key, releasing it when missing."""
    dist = work / "dist"
    bundles = sorted(dist.glob("*.7z")) if dist.is_dir() else []
    if bundles and (work / "k.pub").is_file():
        return bundles[0], load_public_key(work / "k.pub")
    work.mkdir(parents=True, exist_ok=True)
    repo = content_repository(work, size_mb)
    generate_keypair(work / "k.key", work / "k.pub")
    secret = load_secret_key(work / "k.key")
    result = release(repo, dist, secret, version=Version.parse("2026.12.0"))
    return dist / result.build.bundle.name, secret.public


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="payload size in MB")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each")
    parser.add_argument("--keep", type=Path, help="keep the bundle here and reuse it")
    args = parser.parse_args()
    seven_zip = shutil.which("7zz")
    if seven_zip is None:
        sys.exit("7zz is not installed (Debian package 7zip)")
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as name:
        work = args.keep or Path(name)
        bundle, public = prepared_bundle(work, args.size_mb)
        ours: list[float] = []
        reference: list[float] = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run([seven_zip, "t", str(bundle)], check=True, capture_output=True)
            reference.append(time.perf_counter() - start)
            start = time.perf_counter()
            verify_bundle(bundle, [public])
            ours.append(time.perf_counter() - start)
        size = bundle.stat().st_size
        print(f"bundle: {size} bytes")
        print(f"verify_bundle: median {statistics.median(ours):.3f} s")
        print(f"7zz t:         median {statistics.median(reference):.3f} s")
        print(
            f"time ratio (medians): {statistics.median(ours) / statistics.median(reference):.3f}"
        )


if __name__ == "__main__":
    main()
