"""Deterministic SQLite sample databases for the dry-run.

`generate_sample` applies the repository's migrations with the runner up to a
schema version, then fills the tables with data shaped like a customer's.
Organizations get valid 12-digit BINs and accounts get Kazakh IBANs with
correct ISO 13616 check digits. Codes keep their form: 9-digit KATO, KNP with
leading zeros, 2-digit KBe. Amounts are in tiyn, dates span 2022-2026. Some
values are NULL or at an edge (zero amounts, 255-character names, Kazakh
letters), because those are the values that break reports.

The same repository, size and version always give the same bytes: the data
come from a seeded `random.Random`, the history rows get a fixed time, and the
file is rebuilt with VACUUM before it is moved into place.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import string
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pipeline.apply_store import catalog_table, prepare_catalog_tables
from pipeline.config import SAMPLE_SIZES, Config, SampleDatabase
from pipeline.console import Progress
from pipeline.content import Kind, list_items
from pipeline.database import (
    HISTORY_TABLE,
    Database,
    check_integrity,
    display_name,
    open_database,
    redact_url,
    run_migrations,
)
from pipeline.errors import ConfigError, MigrationError
from pipeline.fsutil import atomic_output
from pipeline.migrations import Migration, load_migrations, sql_names
from pipeline.sample_checks import SampleChecks

logger = logging.getLogger(__name__)

# Written into the history table in place of the real time, so that two runs match.
SAMPLE_APPLIED_AT = "2026-01-01T00:00:00+00:00"
NAME_MAX_LENGTH = 255
FIRST_DATE = date(2022, 1, 1)
LAST_DATE = date(2026, 12, 31)
# Rows of one table written between two progress updates.
ROWS_PER_STEP = 10_000

Row = TypeVar("Row")


@dataclass(frozen=True)
class SamplePlan:
    """Row counts of one sample size."""

    organizations: int
    payment_documents: int
    treasury_statements: int


PLANS = {
    "small": SamplePlan(organizations=40, payment_documents=600, treasury_statements=120),
    "medium": SamplePlan(
        organizations=2_000, payment_documents=100_000, treasury_statements=10_000
    ),
    "large": SamplePlan(
        organizations=10_000, payment_documents=1_000_000, treasury_statements=50_000
    ),
}

# Regions of Kazakhstan with their KATO codes (code, ru, kk).
REGIONS = [
    ("710000000", "г. Астана", "Астана қ."),
    ("750000000", "г. Алматы", "Алматы қ."),
    ("790000000", "г. Шымкент", "Шымкент қ."),
    ("110000000", "Акмолинская область", "Ақмола облысы"),
    ("150000000", "Актюбинская область", "Ақтөбе облысы"),
    ("190000000", "Алматинская область", "Алматы облысы"),
    ("230000000", "Атырауская область", "Атырау облысы"),
    ("310000000", "Жамбылская область", "Жамбыл облысы"),
    ("350000000", "Карагандинская область", "Қарағанды облысы"),
    ("390000000", "Костанайская область", "Қостанай облысы"),
    ("430000000", "Кызылординская область", "Қызылорда облысы"),
    ("470000000", "Мангистауская область", "Маңғыстау облысы"),
    ("550000000", "Павлодарская область", "Павлодар облысы"),
    ("610000000", "Туркестанская область", "Түркістан облысы"),
    ("630000000", "Восточно-Казахстанская область", "Шығыс Қазақстан облысы"),
]

# District name stems: kk, ru adjective, ru adjective in the genitive case.
DISTRICTS = [
    ("Қарасай", "Карасайский", "Карасайского"),
    ("Талғар", "Талгарский", "Талгарского"),
    ("Іле", "Илийский", "Илийского"),
    ("Еңбекшіқазақ", "Енбекшиказахский", "Енбекшиказахского"),
    ("Көксу", "Коксуский", "Коксуского"),
    ("Ақсу", "Аксуский", "Аксуского"),
    ("Сарқан", "Саркандский", "Саркандского"),
    ("Алакөл", "Алакольский", "Алакольского"),
    ("Ұйғыр", "Уйгурский", "Уйгурского"),
    ("Балқаш", "Балхашский", "Балхашского"),
    ("Үржар", "Урджарский", "Урджарского"),
    ("Шардара", "Шардаринский", "Шардаринского"),
]

# NOTE: the names are short illustrative labels, not the official texts of the
# KNP and budget classifiers; the catalogs carry the official texts.
KNP_CODES = [
    ("010", "Обязательные пенсионные взносы", "Міндетті зейнетақы жарналары"),
    ("012", "Социальные отчисления", "Әлеуметтік аударымдар"),
    ("017", "Взносы на медицинское страхование", "Медициналық сақтандыру жарналары"),
    ("019", "Пенсионные взносы работодателя", "Жұмыс берушінің зейнетақы жарналары"),
    ("119", "Прочие переводы", "Басқа аударымдар"),
    ("311", "Оплата товаров", "Тауарлар үшін төлем"),
    ("321", "Оплата услуг", "Қызметтер үшін төлем"),
    ("342", "Оплата работ", "Жұмыстар үшін төлем"),
    ("710", "Заработная плата", "Жалақы"),
    ("856", "Командировочные расходы", "Іссапар шығыстары"),
    ("911", "Налоговые платежи в бюджет", "Бюджетке салық төлемдері"),
]
KBK_CODES = [
    ("101101", "Корпоративный подоходный налог", "Корпоративтік табыс салығы"),
    ("101201", "Индивидуальный подоходный налог", "Жеке табыс салығы"),
    ("104101", "Налог на имущество", "Мүлік салығы"),
    ("105101", "Налог на добавленную стоимость", "Қосылған құн салығы"),
    ("201301", "Штрафы и пени", "Айыппұлдар мен өсімпұлдар"),
    ("206106", "Прочие неналоговые поступления", "Басқа да салықтық емес түсімдер"),
    ("305101", "Поступления от продажи земли", "Жер сатудан түсетін түсімдер"),
]
KBE_CODES = ["11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "24", "27", "29"]
BANK_CODES = ["070", "601", "722", "856", "914", "998"]
CURRENCIES = ["KZT"] * 85 + ["USD"] * 7 + ["EUR"] * 3 + ["RUB"] * 2 + [None] * 3

ORGANIZATION_NAMES = [
    ("ГУ «Аппарат акима {ru} района»", "«{kk} ауданы әкімінің аппараты» ММ"),
    ("ГУ «Отдел образования {ru} района»", "«{kk} ауданының білім бөлімі» ММ"),
    ("ГУ «Отдел финансов {ru} района»", "«{kk} ауданының қаржы бөлімі» ММ"),
    (
        "ГУ «Отдел занятости и социальных программ {ru} района»",
        "«{kk} ауданының жұмыспен қамту және әлеуметтік бағдарламалар бөлімі» ММ",
    ),
    ("КГУ «Средняя школа № {n}» {ru} района", "{kk} ауданының «№ {n} орта мектебі» КММ"),
    ("КГКП «Ясли-сад № {n}» {ru} района", "{kk} ауданының «№ {n} бөбекжай-бақшасы» МКҚК"),
]
PURPOSES = [
    "Оплата по договору № {n} от {d}",
    "Заработная плата за {m} / {m} айға жалақы",
    "Коммунальные услуги; счёт № {n}",
    "Оплата за «Қазақтелеком» АҚ, интернет 'корпоративный'",
    "Командировочные расходы, Өскемен — Астана",
    "Возврат ошибочно зачисленных сумм",
]


def iban_check_digits(country: str, bban: str) -> str:
    """Return the two ISO 13616 (MOD 97-10) check digits of an IBAN."""
    rearranged = bban + country + "00"
    number = int("".join(str(int(char, 36)) for char in rearranged))
    return f"{98 - number % 97:02d}"


def is_valid_iban(iban: str) -> bool:
    """Return True when MOD 97 of the rearranged IBAN is 1, as ISO 13616 requires."""
    if len(iban) < 5 or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged.upper())) % 97 == 1


def bin_check_digit(digits: str) -> int | None:
    """Return the 12th digit of a BIN or IIN from its first 11, or None when no digit is valid.

    The sum of the digits weighted 1..11 is taken modulo 11; a result of 10
    is retried with the weights 3..11, 1, 2, and a second 10 means that the
    first 11 digits are never issued.
    """
    values = [int(char) for char in digits]
    weight_sets: tuple[list[int], ...] = (list(range(1, 12)), [*range(3, 12), 1, 2])
    for weights in weight_sets:
        remainder = sum(v * w for v, w in zip(values, weights, strict=True)) % 11
        if remainder != 10:
            return remainder
    return None


def is_valid_bin(value: str) -> bool:
    """Return True for 12 digits whose last digit is the check digit of the first 11."""
    return len(value) == 12 and value.isdigit() and bin_check_digit(value[:11]) == int(value[11])


class _SampleData:
    """Rows of one sample, drawn from one seeded random generator in a fixed order."""

    def __init__(self, plan: SamplePlan, seed: str) -> None:
        self.plan = plan
        self.random = random.Random(seed)
        self.kato_leaves: list[str] = []
        self.account_count = 0

    def kato(self) -> Iterator[tuple[str, str | None, str, str]]:
        for region_code, region_ru, region_kk in REGIONS:
            yield region_code, None, region_ru, region_kk
            for index, (kk, ru, _) in enumerate(self.random.sample(DISTRICTS, 4)):
                district = f"{region_code[:2]}{11 + index:02d}00000"
                yield district, region_code, f"{ru} район", f"{kk} ауданы"
                self.kato_leaves.append(district)
                for settlement in range(1, self.random.randint(2, 4)):
                    code = f"{district[:4]}{settlement * 10:02d}000"
                    yield code, district, f"с. {kk}-{settlement}", f"{kk}-{settlement} ауылы"
                    self.kato_leaves.append(code)

    def organizations(self) -> Iterator[tuple[int, str, str, str | None, str | None]]:
        for number in range(1, self.plan.organizations + 1):
            kk, _, ru_genitive = self.random.choice(DISTRICTS)
            template_ru, template_kk = self.random.choice(ORGANIZATION_NAMES)
            school = self.random.randint(1, 120)
            name_ru = template_ru.format(ru=ru_genitive, kk=kk, n=school)
            name_kk: str | None = template_kk.format(ru=ru_genitive, kk=kk, n=school)
            if number == 1:
                # A name of the maximum length, which a report must fit.
                name_ru = (name_ru + " — " + "Қ" * NAME_MAX_LENGTH)[:NAME_MAX_LENGTH]
            elif self.random.random() < 0.05 or number == 2:
                # Organization 2 always lacks a kk name, so NOT NULL on name_kk fails.
                name_kk = None
            kato = self.random.choice(self.kato_leaves) if self.random.random() < 0.95 else None
            yield number, self._bin(number), name_ru, name_kk, kato

    def _bin(self, serial: int) -> str:
        while True:
            year = self.random.randint(0, 24)
            month = self.random.randint(1, 12)
            # Digit 5 is 4 (resident legal entity), digit 6 is 0 (head office) or 1 (branch).
            branch = 1 if self.random.random() < 0.1 else 0
            first = f"{year:02d}{month:02d}4{branch}{serial:05d}"
            check = bin_check_digit(first)
            if check is not None:
                return f"{first}{check}"

    def accounts(self) -> Iterator[tuple[int, int, str, str | None]]:
        number = 0
        for organization in range(1, self.plan.organizations + 1):
            for _ in range(self.random.choice((1, 1, 1, 2, 3))):
                number += 1
                bank = self.random.choice(BANK_CODES)
                letters = "".join(self.random.choices(string.ascii_uppercase, k=3))
                bban = f"{bank}{letters}{number:010d}"
                iban = f"KZ{iban_check_digits('KZ', bban)}{bban}"
                currency = self.random.choice(CURRENCIES)
                yield number, organization, iban, None if number == 2 else currency
        self.account_count = number

    def payment_documents(self, with_kbk: bool) -> Iterator[tuple[Any, ...]]:
        days = (LAST_DATE - FIRST_DATE).days
        for number in range(1, self.plan.payment_documents + 1):
            doc_date = FIRST_DATE + timedelta(days=self.random.randint(0, days))
            roll = self.random.random()
            if roll < 0.02:
                amount = 0
            elif roll < 0.025:
                amount = 999_999_999_999_99
            else:
                amount = int(10 ** self.random.uniform(2, 10))
            row: tuple[Any, ...] = (
                number,
                self.random.randint(1, self.account_count),
                str(self.random.randint(1, 99_999)) if self.random.random() < 0.98 else None,
                doc_date.isoformat(),
                amount,
                self.random.choice(KNP_CODES)[0] if self.random.random() < 0.97 else None,
                self.random.choice(KBE_CODES) if self.random.random() < 0.95 else None,
                self._purpose(doc_date) if self.random.random() < 0.96 else None,
            )
            if with_kbk:
                row += (self.random.choice(KBK_CODES)[0] if self.random.random() < 0.6 else None,)
            if number == 1:
                first = row
            elif number == 2:
                # The same account, number and date as document 1, so a unique index
                # over them fails; no purpose, so NOT NULL on purpose fails too.
                row = (number, *first[1:4], row[4], row[5], row[6], None, *row[8:])
            yield row

    def _purpose(self, doc_date: date) -> str:
        template = self.random.choice(PURPOSES)
        return template.format(
            n=self.random.randint(1, 9_999),
            d=doc_date.strftime("%d.%m.%Y"),
            m=doc_date.strftime("%m.%Y"),
        )

    def treasury_statements(self) -> Iterator[tuple[Any, ...]]:
        balances = [0] * (self.account_count + 1)
        for number in range(self.plan.treasury_statements):
            account = number % self.account_count + 1
            statement_date = FIRST_DATE + timedelta(days=number // self.account_count)
            opening = balances[account]
            credit = self.random.choice((0, int(10 ** self.random.uniform(3, 9))))
            debit = min(opening + credit, int(10 ** self.random.uniform(2, 9)))
            closing = opening + credit - debit
            balances[account] = closing
            imported_at = f"{statement_date.isoformat()}T18:00:00Z"
            source = f"statement_{account}_{statement_date:%Y%m%d}.txt"
            yield (
                account,
                statement_date.isoformat(),
                opening,
                debit,
                credit,
                closing,
                source,
                imported_at,
            )


class _Steps:
    """Show the step one sample's generation is at, and the rows written, on a progress line."""

    def __init__(self, progress: Progress | None, sample: str) -> None:
        self.progress = progress
        self.sample = sample

    def show(self, step: str) -> None:
        if self.progress is not None:
            self.progress.status(f"{self.sample}: {step}")

    def count(self, table: str, rows: Iterable[Row]) -> Iterable[Row]:
        """Pass `rows` through, showing how many of them have been written so far."""
        if self.progress is None:
            return rows
        return self._counting(self.progress, table, rows)

    def _counting(self, progress: Progress, table: str, rows: Iterable[Row]) -> Iterator[Row]:
        written = 0
        for row in rows:
            yield row
            written += 1
            if written % ROWS_PER_STEP == 0:
                progress.advance(0, detail=f"{self.sample}: {table} {written:,} rows written")
        self.show(f"{table} {written:,} rows written")


def _columns(db: Database, table: str) -> set[str]:
    if db.engine == "sqlite":
        return {str(row[1]) for row in db.execute(f'PRAGMA table_info("{table}")')}
    rows = db.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return {str(row[0]) for row in rows}


# Tables of the application schema that the generator fills.
APPLICATION_TABLES = frozenset({"kato", "knp", "organizations", "accounts", "payment_documents"})
DOCUMENT_COLUMNS = (
    "id",
    "account_id",
    "doc_number",
    "doc_date",
    "amount",
    "knp_code",
    "kbe",
    "purpose",
)
STATEMENT_COLUMNS = (
    "account_id",
    "statement_date",
    "opening_balance",
    "debit_turnover",
    "credit_turnover",
    "closing_balance",
    "source_file",
    "imported_at",
)


def _fill(db: Database, data: _SampleData, steps: _Steps) -> None:
    tables = set(db.tables())
    if not APPLICATION_TABLES.issubset(tables):
        # Another content repository's schema: the sample keeps its migrated,
        # empty tables, which still proves the migrations and report queries run.
        logger.info(
            "sample left empty: the schema lacks the tables %s",
            ", ".join(sorted(APPLICATION_TABLES - tables)),
        )
        return
    with_kbk = "kbk" in tables and "kbk_code" in _columns(db, "payment_documents")
    loads: list[tuple[str, Sequence[str], Iterable[Sequence[Any]]]] = [
        ("kato", ("code", "parent_code", "name_ru", "name_kk"), data.kato()),
        ("knp", ("code", "name_ru", "name_kk"), KNP_CODES),
        ("organizations", ("id", "bin", "name_ru", "name_kk", "kato_code"), data.organizations()),
        ("accounts", ("id", "organization_id", "iban", "currency"), data.accounts()),
    ]
    if with_kbk:
        loads.append(("kbk", ("code", "name_ru", "name_kk"), KBK_CODES))
    columns = DOCUMENT_COLUMNS + (("kbk_code",) if with_kbk else ())
    loads.append(("payment_documents", columns, data.payment_documents(with_kbk)))
    if "treasury_statements" in tables:
        loads.append(("treasury_statements", STATEMENT_COLUMNS, data.treasury_statements()))
    for table, names, rows in loads:
        db.insert_rows(table, names, steps.count(table, rows))


def _select_migrations(root: Path, dialect: str, size: str, upto: str | None) -> list[Migration]:
    if size not in PLANS:
        raise ConfigError(
            f"unknown sample size {size!r}: expected one of {', '.join(SAMPLE_SIZES)}"
        )
    migrations = load_migrations(root, dialect)
    if not migrations:
        raise MigrationError(f"{root / 'migrations'}: no migrations to build a sample from")
    versions = [m.version for m in migrations]
    target = upto or versions[0]
    if target not in versions:
        raise MigrationError(
            f"no migration with version {target!r}: expected one of {', '.join(versions)}"
        )
    return migrations[: versions.index(target) + 1]


def _load(
    db: Database, root: Path, migrations: Sequence[Migration], size: str, steps: _Steps
) -> None:
    """Migrate an empty database, fill it and give the history rows a fixed time.

    As apply does on a new database, the tables of the catalogs that the
    migrations name are created empty first, so a view over one can be made.
    """
    steps.show(f"migrations up to {migrations[-1].version}")
    named: set[str] = set()
    for migration in migrations:
        named |= sql_names(migration.text, db.engine) or set()
    catalog_ids = [c for c in list_items(root, Kind.CATALOG) if catalog_table(c) in named]
    if catalog_ids:
        db.execute("BEGIN")
        prepare_catalog_tables(db, root, catalog_ids)
        db.execute("COMMIT")
    run_migrations(db, migrations)
    data = _SampleData(PLANS[size], seed=f"parus-kaz-sample:{size}:{migrations[-1].version}")
    db.execute("BEGIN")
    try:
        _fill(db, data, steps)
        db.execute(
            f"UPDATE {HISTORY_TABLE} SET applied_at = {db.placeholder}, duration_ms = 0",
            (SAMPLE_APPLIED_AT,),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def generate_sample(
    root: Path,
    path: Path,
    size: str,
    upto: str | None = None,
    *,
    progress: Progress | None = None,
) -> Path:
    """Build a SQLite sample database at schema version `upto` (default: the first migration).

    The file is written atomically to `path` and returned. `progress` shows
    the step and the rows written on a terminal.

    Raises:
        ConfigError: `size` is not one of small, medium, large.
        MigrationError: `upto` names no migration, or a migration fails.
    """
    selected = _select_migrations(root, "sqlite", size, upto)
    logger.info("generating %s sample %s at schema version %s", size, path, selected[-1].version)
    steps = _Steps(progress, path.name)
    with atomic_output(path) as temporary:
        db = open_database(f"sqlite:///{temporary.resolve()}", root, create=True)
        try:
            _load(db, root, selected, size, steps)
            # VACUUM rebuilds the file from the rows alone, so no trace of the
            # real durations written by the runner is left in free pages.
            steps.show("VACUUM")
            db.execute("VACUUM")
        except sqlite3.Error as exc:
            raise MigrationError(f"filling sample {path} failed: {exc}") from exc
        finally:
            db.close()
    steps.show("integrity checks")
    _check_sample(root, path)
    return path


def _check_sample(root: Path, path: Path) -> None:
    """Run the full integrity and foreign key checks on a built sample, and record the pass.

    The record lets later dry-runs of this very file check only the tables
    their migrations change (pipeline.sample_checks).

    Raises:
        MigrationError: the sample fails a check, which the generator must never cause.
    """
    with open_database(f"sqlite:///{path.resolve()}", root) as db:
        problems = check_integrity(db)
    if problems:
        first_problems = "; ".join(finding.message for finding in problems[:5])
        raise MigrationError(f"generated sample {path} fails its own checks: {first_problems}")
    checks = SampleChecks(root)
    checks.record(path)
    checks.save()


def generate_postgres_sample(
    root: Path,
    url: str,
    size: str,
    upto: str | None = None,
    *,
    progress: Progress | None = None,
) -> str:
    """Create the PostgreSQL database named in `url` and load a sample into it.

    The rows are loaded into a database with a temporary name that is renamed
    at the end, so the sample appears whole or not at all. The result is the
    template that every dry-run clones. `progress` shows the step and the rows
    written on a terminal.

    Raises:
        ConfigError: `size` is unknown or the URL names no database.
        MigrationError: the database exists already, or loading failed.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    selected = _select_migrations(root, "postgresql", size, upto)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = str(conninfo_to_dict(conninfo).get("dbname") or "")
    if not name:
        raise ConfigError(f"{redact_url(url)}: expected a database name in the URL")
    loading = f"{name[:40]}_loading_{uuid.uuid4().hex[:8]}"
    logger.info("generating %s sample %s at schema version %s", size, name, selected[-1].version)
    try:
        admin = psycopg.connect(make_conninfo(conninfo, dbname="postgres"), autocommit=True)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to {redact_url(url)}: {exc}") from exc
    try:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall():
            raise MigrationError(
                f"sample database {name} exists already on {redact_url(url)};"
                " drop it first to generate it again"
            )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(loading)))
        try:
            target = urlsplit(conninfo)._replace(path=f"/{loading}").geturl()
            steps = _Steps(progress, name)
            with open_database(target, root) as db:
                _load(db, root, selected, size, steps)
                steps.show("ANALYZE")
                db.execute("ANALYZE")
            admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(loading), sql.Identifier(name)
                )
            )
            # A template database cannot be dropped by mistake, and any user
            # with CREATEDB can clone it; drop_sample() clears the mark first.
            admin.execute(
                sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name))
            )
        except BaseException:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(loading))
            )
            raise
    except psycopg.Error as exc:
        raise MigrationError(f"loading sample {name} failed: {exc}") from exc
    finally:
        admin.close()
    return url


def ensure_sample(
    root: Path,
    sample: SampleDatabase,
    *,
    upto: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> bool:
    """Generate a configured sample that is missing; return True when it was built.

    A sample without a `generate` size is left alone. `force` rebuilds an
    existing SQLite file; an existing PostgreSQL sample is always kept, because
    dropping a database is left to its owner. `progress` shows the generation
    on a terminal.

    Raises:
        ConfigError: the URL is unsupported.
        MigrationError: generation failed.
    """
    if sample.generate is None:
        return False
    if sample.engine == "sqlite":
        path = sample.sqlite_path(root)
        if path.is_file() and not force:
            return False
        generate_sample(root, path, sample.generate, upto, progress=progress)
        return True
    if sample.engine in ("postgresql", "postgres"):
        if postgres_database_exists(sample.url):
            return False
        generate_postgres_sample(root, sample.url, sample.generate, upto, progress=progress)
        return True
    raise ConfigError(
        f"unsupported sample database URL {redact_url(sample.url)!r}:"
        " expected sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
    )


def generate_samples(
    config: Config,
    samples: Sequence[SampleDatabase] | None = None,
    *,
    upto: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> list[tuple[str, bool]]:
    """Generate every sample that has a `generate` size; return (redacted URL, built) pairs.

    `samples` defaults to the configured sample databases. `progress` counts
    the samples and shows each one's step and rows written on a terminal.

    Raises:
        ConfigError: no sample has a `generate` size, or a URL is unsupported.
        MigrationError: generation failed.
    """
    chosen = [s for s in (config.sample_databases if samples is None else samples) if s.generate]
    if not chosen:
        raise ConfigError(
            f"no sample database to generate: give a sample a generate size in [tool.pipeline]"
            f" of {config.root / 'pyproject.toml'}, or pass --database URL --size SIZE"
        )
    results = []
    if progress is not None:
        progress.start(len(chosen))
    try:
        for sample in chosen:
            built = ensure_sample(config.root, sample, upto=upto, force=force, progress=progress)
            results.append((redact_url(sample.url), built))
            if progress is not None:
                outcome = "generated" if built else "exists, kept"
                progress.advance(detail=f"{display_name(sample.url)}: {outcome}")
    finally:
        if progress is not None:
            progress.close()
    return results


def drop_sample(url: str) -> None:
    """Drop a PostgreSQL sample database, first clearing its template mark.

    A database that does not exist is left alone. Sessions still connected to
    the sample are ended.

    Raises:
        MigrationError: the server cannot be reached or refused the drop.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = str(conninfo_to_dict(conninfo).get("dbname") or "")
    if not name:
        raise ConfigError(f"{redact_url(url)}: expected a database name in the URL")
    try:
        with psycopg.connect(make_conninfo(conninfo, dbname="postgres"), autocommit=True) as admin:
            if not admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchall():
                return
            identifier = sql.Identifier(name)
            admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(identifier))
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(identifier))
    except psycopg.Error as exc:
        raise MigrationError(f"cannot drop sample database {redact_url(url)}: {exc}") from exc
    logger.info("dropped sample database %s", redact_url(url))


def postgres_database_exists(url: str) -> bool:
    """Return True when the database named in a PostgreSQL URL exists on its server.

    Raises:
        MigrationError: the server cannot be reached.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = conninfo_to_dict(conninfo).get("dbname")
    try:
        with psycopg.connect(make_conninfo(conninfo, dbname="postgres")) as admin:
            rows = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return bool(rows.fetchall())
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to {redact_url(url)}: {exc}") from exc
