"""Real bank files: every statement parses, and MT940/MT942 agree with the `mt-940` package.

The files are read from the shared data folder and never copied into the
repository. They are parsed with the shipped definitions, which declare the
deviations these banks send: envelope lines, SOH and ETX bytes, messages
without `:20:` and a missing final line break. None of them has a reversal
entry (RC or RD), so a statement of this repository with both checks the
signs of reversals against the same reference.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import mt940
import pytest
from conftest import require_shared_data

from pipeline.treasury import TreasuryFormat, load_format, parse_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "treasury"
# The 5.1.1 default negates only D; reversal_sign also negates RC, as booking does.
REFERENCE_OPTIONS = mt940.Options(reversal_sign=True)
MT940_FILES = [
    "betterplace_missing_crlf_at_end.sta",
    "cmxl_mt940.sta",
    "jejik_abnamro.sta",
    "jejik_ing.sta",
    "jejik_rabobank-iban.sta",
    "mBank_mt940.sta",
    "mBank_mt942.sta",
    "self-provided_multiline.sta",
]


def shipped_format(name: str) -> TreasuryFormat:
    """Return the shipped definition for a real file: MT942 for interim reports."""
    format_id = "mt942-bank-interim-import" if "mt942" in name else "mt940-bank-statement-import"
    return load_format(REPO_ROOT, format_id)


@pytest.mark.realdata
def test_every_statement_file_is_known() -> None:
    folder = require_shared_data("statements/mt940")
    assert sorted(p.name for p in folder.glob("*.sta")) == sorted(MT940_FILES)
    assert [p.name for p in require_shared_data("statements/1c").glob("*.txt")] == ["kl_to_1c.txt"]


@pytest.mark.realdata
@pytest.mark.parametrize("name", MT940_FILES)
def test_mt940_matches_reference_reader(name: str) -> None:
    path = require_shared_data(f"statements/mt940/{name}")
    assert_matches_reference(path, shipped_format(name))


def test_reversal_entries_match_reference_reader() -> None:
    path = DATA / "reversal-entries.sta"
    fmt = shipped_format(path.name)
    assert [r["debit_credit"] for r in parse_file(fmt, path)] == ["RC", "RD", "C"]
    assert_matches_reference(path, fmt)


def test_wrapped_sample_matches_reference_reader() -> None:
    # The shipped sample has an RC entry, in KZ-1048 between SOH and ETX bytes.
    folder = REPO_ROOT / "packages/treasury/mt940-statement-import"
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    assert_matches_reference(folder / "samples/statement-2026-12-02-wrapped.sta", fmt)


def assert_matches_reference(path: Path, fmt: TreasuryFormat) -> None:
    """Compare each transaction of `path` with what the `mt-940` package reads from it.

    The reference gives a reversal of a credit (RC) a negative amount, like the
    debit it is, and a reversal of a debit (RD) a positive one. Our records
    keep the amount unsigned beside the mark, so the expected signed amount is
    built with the package's own `Amount` and the same options.
    """
    records = parse_file(fmt, path)
    reference = list(mt940.parse(str(path), options=REFERENCE_OPTIONS))
    assert len(records) == len(reference)
    for index, (ours, theirs) in enumerate(zip(records, reference, strict=True)):
        data = theirs.data
        where = f"{path.name} transaction {index}"
        signed = mt940.models.Amount(
            str(Decimal(ours["amount"]) / 100),
            ours["debit_credit"],
            ours["currency"],
            options=REFERENCE_OPTIONS,
        )
        assert ours["doc_date"] == data["date"].isoformat(), where
        assert signed == data["amount"], where
        assert ours["debit_credit"] == data["status"], where
        assert ours["currency"] == data["amount"].currency, where
        assert ours["doc_number"] == data["customer_reference"], where
        assert ours.get("bank_reference") == data.get("bank_reference"), where


@pytest.mark.realdata
def test_betterplace_file_has_no_transactions() -> None:
    path = require_shared_data("statements/mt940/betterplace_missing_crlf_at_end.sta")
    assert parse_file(shipped_format(path.name), path) == []


@pytest.mark.realdata
def test_russian_1c_file_parses() -> None:
    path = require_shared_data("statements/1c/kl_to_1c.txt")
    records = parse_file(load_format(REPO_ROOT, "1c-ru-statement-import"), path)
    assert len(records) == 1
    record = records[0]
    assert record["document_kind"] == "Платежное поручение"
    assert record["doc_number"] == "3"
    assert record["doc_date"] == "2023-03-31"
    assert record["amount"] == 10_815_912
    assert record["payer_name"] == "ООО Плательщик"
    assert record["payee_name"] == "ЭнергоСистемы"
    assert record["iban"] == "00000000000000000001"
    assert record["purpose"] == "Оплата по счету N 1024 от 01.01.23г 18026,52"
