"""Generate a large content repository for the benchmarks.

    .venv/bin/python benchmarks/scale_content.py /tmp/scale [--rows N] [--samples SIZES]

The repository gets 20 catalogs (one of them with `--rows` rows), 300 report
definitions, 200 fixes and 60 migrations, written as real git commits over 12
months and tagged `release/2026.01.0` to `release/2026.12.0`. One more month
of changes sits on top of the last tag, so a release at HEAD has work to do.
The sample databases are generated at the schema of the last tag, so the
dry-run has pending migrations.

The output depends only on the arguments: text comes from a seeded
`random.Random`, and commits carry fixed author and committer dates.
"""

# The kk and ru texts are Cyrillic on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from pipeline.samples import generate_sample  # noqa: E402

MONTHS = 12
YEAR = 2026
TOTAL_CATALOGS = 20
TOTAL_REPORTS = 300
TOTAL_FIXES = 200
TOTAL_MIGRATIONS = 60
BIG_CATALOG = "organizations"
# Rows of the big catalog whose name changes in a month: every row whose index
# modulo this number equals the month number.
CHANGE_STRIDE = 1000

# Small catalogs: id, row count, kk title, ru title. One of them references another.
SMALL_CATALOGS = [
    ("countries", 250, "Елдер", "Страны"),
    ("currencies", 180, "Валюталар", "Валюты"),
    ("banks", 400, "Банктер", "Банки"),
    ("units", 120, "Өлшем бірліктері", "Единицы измерения"),
    ("kbk", 20_000, "Бюджеттік сыныптама", "Бюджетная классификация"),
    ("programs", 5_000, "Бюджеттік бағдарламалар", "Бюджетные программы"),
    ("specifics", 900, "Экономикалық сыныптама", "Экономическая классификация"),
    ("funds", 60, "Қорлар", "Фонды"),
    ("taxes", 300, "Салықтар", "Налоги"),
    ("positions", 3_000, "Лауазымдар", "Должности"),
    ("departments", 8_000, "Бөлімшелер", "Подразделения"),
    ("contracts", 50_000, "Шарттар", "Договоры"),
    ("vehicles", 10_000, "Көлік құралдары", "Транспортные средства"),
    ("buildings", 4_000, "Ғимараттар", "Здания"),
    ("grants", 700, "Гранттар", "Гранты"),
    ("documents", 1_500, "Құжат түрлері", "Виды документов"),
]

KK_WORDS = ["есеп", "төлем", "бюджет", "қаржы", "ұйым", "шот", "сома", "кезең", "жоспар", "құжат"]
RU_WORDS = ["отчёт", "платёж", "бюджет", "финансы", "организация", "счёт", "сумма", "период"]


def git(repo: Path, *args: str, date: str | None = None) -> str:
    """Run git in `repo` with a fixed identity and, when given, a fixed commit date."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Scale Content",
        "GIT_AUTHOR_EMAIL": "scale@parus-kaz.example",
        "GIT_COMMITTER_NAME": "Scale Content",
        "GIT_COMMITTER_EMAIL": "scale@parus-kaz.example",
    }
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def write_json(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def text(kk: str, ru: str) -> dict[str, str]:
    return {"kk": kk, "ru": ru}


def column(name: str, kind: str, kk: str, ru: str, **extra: object) -> dict[str, object]:
    return {"name": name, "type": kind, "title": text(kk, ru), **extra}


def catalog_description(
    catalog_id: str, kk: str, ru: str, key: list[str], columns: list[dict[str, object]]
) -> dict[str, object]:
    return {
        "id": catalog_id,
        "title": text(kk, ru),
        "description": text(f"{kk}: сынақ деректері", f"{ru}: тестовые данные"),
        "key": key,
        "columns": columns,
        "source": {"name": "Қаржы министрлігі", "document": "Бұйрық № 1", "date": "2026-01-01"},
        "effective_date": "2026-01-01",
    }


def big_catalog_description() -> dict[str, object]:
    return catalog_description(
        BIG_CATALOG,
        "Ұйымдар тізілімі",
        "Реестр организаций",
        ["bin"],
        [
            column("bin", "text", "БСН", "БИН", required=True, pattern="^[0-9]{12}$"),
            column(
                "name_ru", "text", "Атауы орыс тілінде", "Наименование на русском", required=True
            ),
            column(
                "name_kk",
                "text",
                "Атауы қазақ тілінде",
                "Наименование на казахском",
                required=True,
            ),
            column("kato_code", "text", "ӘАОС коды", "Код КАТО", references="kato.code"),
            column("knp_code", "text", "ТМК коды", "Код КНП", references="knp.code"),
            column("registered", "date", "Тіркелген күні", "Дата регистрации", required=True),
            column("active", "boolean", "Белсенді", "Действует", required=True),
            column("employees", "integer", "Қызметкерлер саны", "Численность", required=True),
            column("capital", "decimal", "Жарғылық капитал", "Уставный капитал", null_value="-"),
        ],
    )


def read_codes(project_catalog: Path, name: str) -> list[str]:
    with (project_catalog / "rows.csv").open(encoding="utf-8", newline="") as handle:
        return sorted({row[name] for row in csv.DictReader(handle)})


def big_catalog_rows(
    rows: int, month: int, kato: list[str], knp: list[str]
) -> Iterator[list[str]]:
    """Yield the rows of the big catalog as of `month`; row i changes in months i % stride."""
    for index in range(rows):
        changes = 1 if 1 <= index % CHANGE_STRIDE <= month else 0
        yield [
            f"{100_000_000_000 + index * 7:012d}",
            f"ТОО «Организация {index}» ред. {changes}",
            f"«{index} ұйымы» ЖШС",
            kato[index % len(kato)],
            knp[index % len(knp)] if index % 5 else "",
            f"{2000 + index % 26}-{1 + index % 12:02d}-{1 + index % 28:02d}",
            "true" if index % 7 else "false",
            str(index % 5000),
            f"{index % 100000}.{index % 100:02d}" if index % 3 else "-",
        ]


def write_rows(path: Path, header: list[str], rows: Iterator[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_small_catalog(root: Path, index: int, month: int) -> None:
    catalog_id, count, kk, ru = SMALL_CATALOGS[index]
    columns = [
        column("code", "text", "Коды", "Код", required=True, pattern="^[A-Z][0-9]{6}$"),
        column(
            "name_kk", "text", "Атауы қазақ тілінде", "Наименование на казахском", required=True
        ),
        column("name_ru", "text", "Атауы орыс тілінде", "Наименование на русском", required=True),
        column("valid_from", "date", "Басталу күні", "Дата начала", required=True),
    ]
    if catalog_id == "banks":
        columns.append(
            column("country", "text", "Ел", "Страна", required=True, references="countries.code")
        )
    folder = root / "catalogs" / catalog_id
    write_json(folder / "catalog.json", catalog_description(catalog_id, kk, ru, ["code"], columns))
    header = [str(c["name"]) for c in columns]
    # A small catalog grows by a few rows in the months that are a multiple of its position.
    total = count + (month // (index + 1))

    def rows() -> Iterator[list[str]]:
        for row in range(total):
            values = [f"C{row:06d}", f"{kk} {row}", f"{ru} {row}", f"20{10 + row % 16}-01-01"]
            if catalog_id == "banks":
                values.append(f"C{row % 250:06d}")
            yield values

    write_rows(folder / "rows.csv", header, rows())


def write_migration(root: Path, version: int) -> None:
    table = f"audit_log_{version:04d}"
    sql = (
        f"-- Audit table {version:04d} of the scale content.\n\n"
        f"CREATE TABLE {table} (\n"
        "    id INTEGER PRIMARY KEY,\n"
        "    organization_id INTEGER REFERENCES organizations (id),\n"
        "    note TEXT NOT NULL\n"
        ");\n\n"
        f"CREATE INDEX {table}_organization ON {table} (organization_id);\n"
    )
    path = root / "migrations" / f"{version:04d}_audit_log_{version:04d}.sql"
    path.write_text(sql, encoding="utf-8")


def write_report(root: Path, template: dict[str, object], number: int) -> None:
    code = f"payments-report-{number:03d}"
    document = json.loads(json.dumps(template))
    document["code"] = code
    document["title"] = text(f"Төлемдер туралы № {number} есеп", f"Отчёт о платежах № {number}")
    write_json(root / "packages" / "reports" / code / "report.json", document)


def write_fix(root: Path, number: int, rng: random.Random) -> None:
    fix_id = f"fix-{number:04d}"
    folder = root / "packages" / "fixes" / fix_id
    payload = folder / "payload" / "config" / f"fix_{number:04d}.ini"
    payload.parent.mkdir(parents=True, exist_ok=True)
    payload.write_text(f"[fix]\nnumber = {number}\nseed = {rng.randrange(10**9)}\n", "utf-8")
    kk_word = rng.choice(KK_WORDS)
    ru_word = rng.choice(RU_WORDS)
    write_json(
        folder / "fix.json",
        {
            "id": fix_id,
            "title": text(f"№ {number} түзету: {kk_word}", f"Исправление № {number}: {ru_word}"),
            "description": text(
                f"Бағдарламадағы қате түзетілді ({kk_word}).",
                f"Исправлена ошибка программы ({ru_word}).",
            ),
            "component": rng.choice(["payments", "reports", "treasury", "catalogs"]),
            "tickets": [f"PKB-{10_000 + number}"],
            "severity": rng.choice(["critical", "major", "minor"]),
            "files": [
                {
                    "source": f"payload/config/fix_{number:04d}.ini",
                    "install": f"Config/fix_{number:04d}.ini",
                }
            ],
        },
    )


def spread(total: int, done: int, month: int, months: int) -> range:
    """Return the item numbers added in `month` (1-based) when `total` are spread over `months`."""
    start = done + (total - done) * (month - 1) // months
    end = done + (total - done) * month // months
    return range(start + 1, end + 1)


def generate(target: Path, rows: int, samples: list[str], seed: int) -> None:
    """Write the scale content repository into the empty or missing folder `target`."""
    if target.exists() and any(target.iterdir()):
        raise SystemExit(f"{target} is not empty; pass a new folder")
    target.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    git(target, "init", "-q", "-b", "main")
    git(target, "config", "core.autocrlf", "false")
    for folder in ("catalogs", "migrations", "packages"):
        shutil.copytree(PROJECT / folder, target / folder)
    shutil.copy(PROJECT / ".gitignore", target / ".gitignore")
    sample_lines = "".join(
        f'    {{ url = "sqlite:///.samples/{size}.sqlite", generate = "{size}" }},\n'
        for size in samples
    )
    (target / "pyproject.toml").write_text(
        f'[tool.pipeline]\nproduct = "parus-kaz-budget"\nsample_databases = [\n{sample_lines}]\n',
        encoding="utf-8",
    )
    kato = read_codes(PROJECT / "catalogs" / "kato", "code")
    knp = read_codes(PROJECT / "catalogs" / "knp", "code")
    report_template = json.loads(
        (PROJECT / "packages/reports/knp-payments-monthly/report.json").read_text("utf-8")
    )
    write_json(target / "catalogs" / BIG_CATALOG / "catalog.json", big_catalog_description())
    demo_migrations = len({p.name[:4] for p in (PROJECT / "migrations").glob("*.sql")})
    demo_reports = len(list((PROJECT / "packages/reports").iterdir()))
    demo_fixes = len(list((PROJECT / "packages/fixes").iterdir()))

    last_tagged_migration = ""
    # Month 13 is the work after the last release tag.
    for month in range(1, MONTHS + 2):
        year, number = (YEAR, month) if month <= MONTHS else (YEAR + 1, 1)
        date = f"{year}-{number:02d}-20T12:00:00+05:00"
        write_rows(
            target / "catalogs" / BIG_CATALOG / "rows.csv",
            [str(c["name"]) for c in big_catalog_description()["columns"]],  # type: ignore[union-attr]
            big_catalog_rows(rows, min(month, MONTHS), kato, knp),
        )
        for index in range(len(SMALL_CATALOGS)):
            write_small_catalog(target, index, month)
        git(target, "add", "catalogs")
        git(target, "commit", "-q", "-m", f"Update catalogs for {year}.{number:02d}", date=date)

        periods = MONTHS + 1
        for version in spread(TOTAL_MIGRATIONS, demo_migrations, month, periods):
            write_migration(target, version)
        for report in spread(TOTAL_REPORTS, demo_reports, month, periods):
            write_report(target, report_template, report)
        for fix in spread(TOTAL_FIXES, demo_fixes, month, periods):
            write_fix(target, fix, rng)
        git(target, "add", "-A")
        git(
            target,
            "commit",
            "-q",
            "-m",
            f"Add fixes and reports of {year}.{number:02d}",
            date=date,
        )
        if month <= MONTHS:
            git(target, "tag", f"release/{year}.{number:02d}.0")
            last_tagged_migration = max(p.name[:4] for p in (target / "migrations").glob("*.sql"))
        print(f"month {year}.{number:02d} committed", file=sys.stderr)

    for size in samples:
        path = target / ".samples" / f"{size}.sqlite"
        generate_sample(target, path, size, upto=last_tagged_migration)
        print(f"sample {size} at schema {last_tagged_migration}: {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="new folder for the content repository")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big catalog")
    parser.add_argument(
        "--samples",
        default="small,medium,large",
        help="comma-separated sample sizes to generate (default: small,medium,large; '' for none)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="seed of the text generator")
    args = parser.parse_args()
    samples = [size for size in args.samples.split(",") if size]
    generate(args.target, args.rows, samples, args.seed)


if __name__ == "__main__":
    main()
