"""Real bank files: every statement parses, and MT940/MT942 agree with the `mt-940` package.

The files are read from the shared data folder and never copied into the
repository. They are parsed with the shipped definitions, which declare the
deviations these banks send: envelope lines, SOH and ETX bytes, messages
without `:20:` and a missing final line break.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import mt940
import pytest
from conftest import require_shared_data

from pipeline.treasury import TreasuryFormat, load_format, parse_file

pytestmark = pytest.mark.realdata

REPO_ROOT = Path(__file__).resolve().parent.parent
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


def test_every_statement_file_is_known() -> None:
    folder = require_shared_data("statements/mt940")
    assert sorted(p.name for p in folder.glob("*.sta")) == sorted(MT940_FILES)
    assert [p.name for p in require_shared_data("statements/1c").glob("*.txt")] == ["kl_to_1c.txt"]


@pytest.mark.parametrize("name", MT940_FILES)
def test_mt940_matches_reference_reader(name: str) -> None:
    path = require_shared_data(f"statements/mt940/{name}")
    records = parse_file(shipped_format(name), path)
    reference = list(mt940.parse(str(path)))
    assert len(records) == len(reference)
    for index, (ours, theirs) in enumerate(zip(records, reference, strict=True)):
        data = theirs.data
        where = f"{name} transaction {index}"
        sign = -1 if ours["debit_credit"] in ("D", "RC") else 1
        assert ours["doc_date"] == data["date"].isoformat(), where
        assert Decimal(ours["amount"]) / 100 * sign == data["amount"].amount, where
        assert ours["debit_credit"] == data["status"], where
        assert ours["currency"] == data["amount"].currency, where
        assert ours["doc_number"] == data["customer_reference"], where
        assert ours.get("bank_reference") == data.get("bank_reference"), where


def test_betterplace_file_has_no_transactions() -> None:
    path = require_shared_data("statements/mt940/betterplace_missing_crlf_at_end.sta")
    assert parse_file(shipped_format(path.name), path) == []


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
