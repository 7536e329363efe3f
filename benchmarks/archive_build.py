"""Time the bundle archive writer against the 7-Zip CLI on ~100 MB of generated content.

Run: .venv/bin/python benchmarks/archive_build.py [--size-mb 100] [--rounds 1] [--keep FOLDER]

The content is generated deterministically (a fixed seed): reference catalogs
as CSV with Kazakh and Russian text, SQL migrations, Treasury statements as XML
and definitions as JSON. The script writes the same staged folder once with
`pipeline.archive.write_archive` and once with `7zz a -mx5 -mmt=on` per round,
and prints the median wall-clock and CPU time and the size of each, and the
ratios writer / 7zz.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.archive import Compression, write_archive

MTIME = 1_796_374_800  # 2026-12-04T10:00:00Z
SEED = 20261204

KK_WORDS = [
    "Қазақстан",
    "Республикасы",
    "бюджет",
    "қаржы",
    "министрлігі",
    "салық",
    "төлем",
    "шоттар",
    "қазынашылық",
    "мекеме",
    "жоспар",
    "қаржыландыру",
    "шығыстар",
    "кірістер",
    "облыс",
    "аудан",
    "қала",
    "әкімдігі",
    "білім",
    "денсаулық",
    "сақтау",
    "мәдениет",
    "спорт",
    "ауыл",
    "шаруашылығы",
    "көлік",
    "жол",
    "құрылыс",
    "тұрғын",
    "үй",
]
RU_WORDS = [
    "Республика",
    "Казахстан",
    "бюджет",
    "финансы",
    "министерство",
    "налог",
    "платеж",
    "счета",
    "казначейство",
    "учреждение",
    "план",
    "финансирования",
    "расходы",
    "доходы",
    "область",
    "район",
    "город",
    "акимат",
    "образование",
    "здравоохранение",
    "культура",
    "спорт",
    "сельское",
    "хозяйство",
    "транспорт",
    "дороги",
]
LAT_WORDS = ["amount", "account", "code", "region", "program", "subprogram", "specifics", "status"]


def _phrase(rng: random.Random, words: list[str], low: int, high: int) -> str:
    return " ".join(rng.choices(words, k=rng.randint(low, high)))


def _catalog_csv(rng: random.Random, rows: int) -> str:
    lines = ["code,parent,title_kk,title_ru,valid_from,valid_to,amount,status"]
    for number in range(rows):
        code = f"{rng.randint(100, 999)}{number:06d}"
        lines.append(
            f'{code},{code[:3]},"{_phrase(rng, KK_WORDS, 3, 9)}",'
            f'"{_phrase(rng, RU_WORDS, 3, 9)}",2026-{rng.randint(1, 12):02d}-01,'
            f"{'' if rng.random() < 0.7 else '2027-12-31'},"
            f"{rng.randint(0, 10**9) / 100:.2f},{rng.choice(('active', 'closed', 'draft'))}"
        )
    return "\n".join(lines) + "\n"


def _migration_sql(rng: random.Random, rows: int, table: str) -> str:
    lines = [
        f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, code TEXT NOT NULL,"
        " title_kk TEXT, title_ru TEXT, amount NUMERIC(18, 2));"
    ]
    for number in range(rows):
        lines.append(
            f"INSERT INTO {table} (id, code, title_kk, title_ru, amount) VALUES ({number},"
            f" '{rng.randint(10**5, 10**6)}', '{_phrase(rng, KK_WORDS, 2, 6)}',"
            f" '{_phrase(rng, RU_WORDS, 2, 6)}', {rng.randint(0, 10**8) / 100:.2f});"
        )
    return "\n".join(lines) + "\n"


def _statement_xml(rng: random.Random, documents: int) -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<statement>"]
    for number in range(documents):
        parts.append(
            f'  <document id="{number}" date="2026-{rng.randint(1, 12):02d}-'
            f'{rng.randint(1, 28):02d}">\n'
            f'    <payer bin="{rng.randint(10**11, 10**12 - 1)}">'
            f"{_phrase(rng, RU_WORDS, 2, 5)}</payer>\n"
            f'    <amount currency="KZT">{rng.randint(0, 10**9) / 100:.2f}</amount>\n'
            f"    <purpose>{_phrase(rng, KK_WORDS, 4, 10)}</purpose>\n"
            "  </document>"
        )
    parts.append("</statement>")
    return "\n".join(parts) + "\n"


def _definition_json(rng: random.Random, fields: int) -> str:
    definition = {
        "code": f"F-{rng.randint(1, 999):03d}",
        "title": {"kk": _phrase(rng, KK_WORDS, 3, 6), "ru": _phrase(rng, RU_WORDS, 3, 6)},
        "fields": [
            {
                "name": f"{rng.choice(LAT_WORDS)}_{number}",
                "caption": {
                    "kk": _phrase(rng, KK_WORDS, 1, 4),
                    "ru": _phrase(rng, RU_WORDS, 1, 4),
                },
                "width": rng.randint(4, 40),
            }
            for number in range(fields)
        ],
    }
    return json.dumps(definition, ensure_ascii=False, indent=2) + "\n"


def generate_content(root: Path, size_mb: int) -> int:
    """Write the benchmark content under `root`; return its total size in bytes."""
    rng = random.Random(SEED)
    scale = size_mb / 100
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {"manifest.json": '{"version": "2026.12.0"}\n'}
    files["catalogs/kbk/rows.csv"] = _catalog_csv(rng, int(120_000 * scale))
    for number in range(12):
        files[f"catalogs/c{number:02d}/rows.csv"] = _catalog_csv(rng, int(9_000 * scale))
    for number in range(20):
        files[f"migrations/{number + 1:04d}_load.sql"] = _migration_sql(
            rng, int(5_800 * scale), f"t{number}"
        )
    for number in range(8):
        files[f"packages/treasury/s{number}/sample.xml"] = _statement_xml(rng, int(6_500 * scale))
    for number in range(300):
        files[f"packages/reports/r{number:03d}.json"] = _definition_json(rng, int(65 * scale))
    total = 0
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        path.write_bytes(data)
        total += len(data)
    return total


def _timed(action: Callable[[], object]) -> tuple[float, float]:
    """Run `action`; return its wall-clock seconds and its CPU seconds (process and children).

    A busy machine shows as wall-clock time well above CPU time.
    """
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    action()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        (end.ru_utime + end.ru_stime) - (begin.ru_utime + begin.ru_stime)
        for begin, end in zip(before, after, strict=True)
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="content size in MB")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs of each writer")
    parser.add_argument("--keep", type=Path, help="folder to keep the content and archives in")
    args = parser.parse_args()
    seven_zip = shutil.which("7zz")
    if seven_zip is None:
        sys.exit("7zz is not installed (Debian package 7zip)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="archive-bench-"))
    try:
        staging = work / "staging"
        if staging.exists():
            shutil.rmtree(staging)
        total = generate_content(staging, args.size_mb)
        ours = work / "ours.7z"
        reference = work / "7zz.7z"
        command = [seven_zip, "a", "-mx5", "-mmt=on", str(reference), "."]
        ours_times: list[tuple[float, float]] = []
        reference_times: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            reference.unlink(missing_ok=True)
            reference_times.append(
                _timed(
                    lambda: subprocess.run(command, cwd=staging, check=True, capture_output=True)
                )
            )
            ours_times.append(_timed(lambda: write_archive(staging, ours, MTIME, Compression())))
        ours_size = ours.stat().st_size
        reference_size = reference.stat().st_size
        files = sum(1 for path in staging.rglob("*") if path.is_file())
        ours_wall = statistics.median(wall for wall, _ in ours_times)
        reference_wall = statistics.median(wall for wall, _ in reference_times)
        print(f"content: {total} bytes in {files} files; {args.rounds} rounds, medians")
        print(
            f"write_archive:      wall {ours_wall:7.2f} s"
            f"  cpu {statistics.median(cpu for _, cpu in ours_times):7.2f} s  {ours_size} bytes"
        )
        print(
            f"7zz a -mx5 -mmt=on: wall {reference_wall:7.2f} s"
            f"  cpu {statistics.median(cpu for _, cpu in reference_times):7.2f} s"
            f"  {reference_size} bytes"
        )
        print(f"time ratio (wall): {ours_wall / reference_wall:.3f}")
        print(f"size ratio: {ours_size / reference_size:.4f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
