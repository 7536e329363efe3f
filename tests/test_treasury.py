"""Treasury formats: parsing, rendering, encodings and the conformance of samples."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import git

from pipeline.content import Kind, list_items
from pipeline.definitions import check_definition
from pipeline.errors import ValidationError
from pipeline.findings import Finding, errors_only
from pipeline.schema import validate_document
from pipeline.treasury import (
    TreasuryFormat,
    TreasuryFormatError,
    check_base_conformance,
    load_format,
    parse_bytes,
    parse_file,
    record_conformance,
    render_file,
    render_records,
)
from pipeline.treasury.checks import check_layout_fits_syntax
from pipeline.treasury.codec import ENCODING_NAMES
from pipeline.treasury.model import format_from_document

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "treasury"
FORMATS = REPO_ROOT / "packages" / "treasury"


def demo_document(format_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FORMATS / format_id / "format.json").read_text())
    return document


def variant(format_id: str, **changes: Any) -> TreasuryFormat:
    """Return a demo format with some definition fields replaced, checked against the schema."""
    document = {**demo_document(format_id), **changes}
    assert validate_document(document, "treasury", "format.json") == []
    return format_from_document(document)


def strict_mt940() -> TreasuryFormat:
    return variant("mt940-statement-import", accepts={"deviations": []})


def strict_mt940_utf8() -> TreasuryFormat:
    return variant("mt940-statement-import", encoding="utf-8", accepts={"deviations": []})


def error_of(fmt: TreasuryFormat, name: str) -> TreasuryFormatError:
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, (DATA / name).read_bytes(), name)
    return caught.value


def copy_format(tmp_path: Path, format_id: str) -> Path:
    root = tmp_path / "content"
    shutil.copytree(FORMATS / format_id, root / "packages" / "treasury" / format_id)
    return root


def rules(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


def payment_order(**changes: Any) -> dict[str, Any]:
    """Return a payment order with every field the payment-order export requires."""
    order: dict[str, Any] = {
        "doc_number": "1",
        "doc_date": "2026-12-04",
        "amount": 100,
        "payer_bin": "940140000385",
        "payer_iban": "KZ86125KZT5004100100",
        "payee_name": "Алматы",
        "payee_bin": "020240003456",
        "payee_iban": "KZ92826A1KZTD2011234",
        "payee_bank_bic": "ALMNKZKA",
        "knp_code": "342",
        "kbe": "17",
        "purpose": "Оплата",
    }
    order.update(changes)
    return order


# -- demo content ------------------------------------------------------------------------------


def test_demo_formats_pass_validation() -> None:
    ids = list_items(REPO_ROOT, Kind.TREASURY)
    assert ids == [
        "1c-kk-statement-import",
        "1c-ru-statement-import",
        "certificate-export",
        "financing-plan-export",
        "mt940-bank-statement-import",
        "mt940-statement-import",
        "mt942-bank-interim-import",
        "payment-order-export",
    ]
    for format_id in ids:
        assert check_definition(REPO_ROOT, Kind.TREASURY, format_id) == [], format_id


def test_demo_formats_cover_documents_and_syntaxes() -> None:
    formats = [load_format(REPO_ROOT, i) for i in list_items(REPO_ROOT, Kind.TREASURY)]
    documents = {f.document for f in formats}
    assert documents == {"statement", "payment_order", "financing_plan", "certificate"}
    syntaxes = {f.syntax for f in formats}
    assert syntaxes == {"mt940", "mt942", "1c_exchange", "fixed_width", "delimited"}
    exports = {(f.document, f.syntax, f.encoding) for f in formats if f.direction == "export"}
    assert ("financing_plan", "fixed_width", "kz1048") in exports
    assert ("certificate", "delimited", "utf-8") in exports


def test_financing_plan_fixed_width_line() -> None:
    fmt = load_format(REPO_ROOT, "financing-plan-export")
    sample = FORMATS / fmt.id / "samples" / "financing-plan-2027.txt"
    first = sample.read_bytes().decode("kz1048").split("\r\n")[0]
    assert len(first) == 105
    assert first[47:65] == "000000018450000.00"
    records = parse_file(fmt, sample)
    assert records[0]["period_start"] == "2027-01-01"
    assert records[0]["amount"] == 1_845_000_000


def test_certificate_negative_balance_round_trip() -> None:
    fmt = load_format(REPO_ROOT, "certificate-export")
    sample = FORMATS / fmt.id / "samples" / "certificates-2026-12-04.txt"
    records = parse_file(fmt, sample)
    assert records[1]["closing_balance"] == -1_250_000
    assert render_records(fmt, records, "records.json") == sample.read_bytes()


def test_mt940_sample_records() -> None:
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    records = parse_file(fmt, FORMATS / fmt.id / "samples" / "statement-2026-12-01.sta")
    assert len(records) == 2
    first = records[0]
    assert first["amount"] == 4_500_000
    assert first["debit_credit"] == "D"
    assert first["currency"] == "KZT"
    assert first["doc_date"] == "2026-12-01"
    assert first["opening_balance"] == 125_000_000
    assert first["knp_code"] == "311"
    assert first["purpose"] == "Қараша айы үшін жалақы төлеу"


def test_kazakh_1c_sample_keys() -> None:
    fmt = load_format(REPO_ROOT, "1c-kk-statement-import")
    records = parse_file(fmt, FORMATS / fmt.id / "samples" / "statement-2026-12-01.txt")
    payment, receipt = records
    assert payment["payer_iban"] == "KZ86125KZT5004100100"
    assert payment["payer_bin"] == "940140000385"
    assert payment["payer_kbe"] == "12"
    assert payment["payer_bank_bic"] == "KKMFKZ2A"
    assert payment["debit_amount"] == 4_500_000
    assert payment["operation_date"] == "2026-12-01"
    assert payment["knp_code"] == "311"
    assert payment["payee_name"] == "Сәрсенбаев Қайрат Өмірұлы"
    assert receipt["credit_amount"] == 15_000_000
    assert "debit_amount" not in receipt
    # РасчСчет comes from the account section, not the document.
    assert receipt["iban"] == "KZ86125KZT5004100100"


def test_export_renders_sample_bytes(tmp_path: Path) -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    samples = FORMATS / fmt.id / "samples"
    out = tmp_path / "orders.txt"
    count = render_file(fmt, samples / "payment-orders-2026-12-04.expected.json", out)
    assert count == 2
    assert out.read_bytes() == (samples / "payment-orders-2026-12-04.txt").read_bytes()
    text = out.read_bytes().decode("kz1048")
    assert text.startswith("НОМЕР;ДАТА;СУММА;")
    assert '"Желтоқсан айы үшін жылу энергиясына төлем; шот № 1187"' in text
    assert "\r\n" in text


# -- malformed MT940 ---------------------------------------------------------------------------


def test_missing_20_rejected_by_strict_format() -> None:
    error = error_of(strict_mt940(), "missing-20.sta")
    assert error.line == 1
    assert error.field == ":20:"
    assert "missing field :20:" in str(error)
    assert "found :25:" in str(error)


def test_missing_20_accepted_when_declared() -> None:
    fmt = variant(
        "mt940-statement-import", accepts={"deviations": ["missing_statement_reference"]}
    )
    records = parse_bytes(fmt, (DATA / "missing-20.sta").read_bytes(), "missing-20.sta")
    assert len(records) == 1
    assert "statement_reference" not in records[0]
    assert records[0]["amount"] == 25_000


def test_amount_with_dot_rejected_by_strict_format() -> None:
    error = error_of(strict_mt940(), "amount-with-dot.sta")
    assert error.line == 5
    assert error.field == ":61:/amount"
    assert "expected an amount with a decimal comma, such as 45000,00" in str(error)
    assert "found '250.00' with a decimal point" in str(error)


def test_amount_with_dot_accepted_when_declared() -> None:
    fmt = variant("mt940-statement-import", accepts={"deviations": ["decimal_point"]})
    records = parse_bytes(fmt, (DATA / "amount-with-dot.sta").read_bytes(), "dot.sta")
    assert records[0]["amount"] == 25_000


def test_missing_final_newline_rejected_by_strict_format() -> None:
    error = error_of(strict_mt940(), "missing-final-newline.sta")
    assert error.line == 8
    assert "does not end with a line break" in str(error)


def test_missing_final_newline_names_last_field() -> None:
    data = swift_message(MT940_FIELDS).removesuffix(b"\r\n-\r\n")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(strict_mt940_utf8(), data, "cut.sta")
    assert caught.value.line == 7
    assert caught.value.field == ":62F:"
    assert "cut.sta:7: the file does not end with a line break" in str(caught.value)


def test_1c_missing_final_newline_rejected() -> None:
    # Neither 1C definition accepts missing_final_newline: these banks end every line.
    data = kk_document("СуммаРасход=100.00").removesuffix(b"\n")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(kk_1c(), data, "cut.txt")
    assert caught.value.line == 9
    assert "the file does not end with a line break; expected CR LF after" in str(caught.value)


def test_1c_binary_byte_names_key() -> None:
    data = kk_document("СуммаРасход=100.00", "Получатель=Қаза\x00қ")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(kk_1c(), data, "binary.txt")
    assert caught.value.line == 8
    assert caught.value.field == "Получатель"
    assert "key Получатель: control byte U+0000 at column 16" in str(caught.value)


def test_missing_final_newline_accepted_by_demo_format() -> None:
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    data = (DATA / "missing-final-newline.sta").read_bytes()
    assert len(parse_bytes(fmt, data, "missing-final-newline.sta")) == 1


def test_binary_byte_rejected_with_line_and_field() -> None:
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    error = error_of(fmt, "binary-byte-in-86.sta")
    assert error.line == 6
    assert error.field == ":86:"
    assert "control byte U+0000" in str(error)
    assert "binary-byte-in-86.sta:6" in str(error)


def test_message_wrappers_need_declaration() -> None:
    error = error_of(strict_mt940(), "soh-etx-wrapped.sta")
    assert error.line == 1
    assert "U+0001" in str(error)
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    records = parse_bytes(fmt, (DATA / "soh-etx-wrapped.sta").read_bytes(), "wrapped.sta")
    assert [r["doc_number"] for r in records] == ["PP-1"]


def test_garbled_statement_line_names_field() -> None:
    error = error_of(strict_mt940(), "statement-line-garbled.sta")
    assert error.line == 5
    assert error.field == ":61:"
    assert "'26120D250,00'" in str(error)


MT940_FIELDS = {
    "20": "ST2612010001",
    "25": "KZ86125KZT5004100100",
    "28C": "00001/001",
    "60F": "C261130KZT1000,00",
    "61": "2612011201D250,00NTRFPP-1",
    "86": "/KNP/311/NAZN/Salary",
    "62F": "C261201KZT750,00",
}
MT942_FIELDS = {
    "20": "IR2612040007",
    "25": "KZ86125KZT5004100100",
    "28C": "00338/001",
    "34F": "KZT0,",
    "13D": "2612041015+0500",
    "61": "2612041204C1500,00NTRFNONREF",
    "86": "/KNP/311/NAZN/Salary",
}


def swift_message(fields: dict[str, str], *without: str) -> bytes:
    """Return one MT940 or MT942 message of `fields` in their order, minus the tags `without`."""
    lines = [f":{tag}:{value}" for tag, value in fields.items() if tag not in without]
    return ("\r\n".join([*lines, "-"]) + "\r\n").encode("ascii")


def swift_error(fmt: TreasuryFormat, data: bytes, name: str) -> TreasuryFormatError:
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, name)
    return caught.value


def test_only_20_rejected() -> None:
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    error = error_of(fmt, "only-20.sta")
    assert error.line == 1
    assert error.field == ":25:"
    assert str(error).startswith(
        "only-20.sta:1: missing field :25: (account identification) in the statement starting"
        " on this line"
    )
    assert "the format requires :20:, :25:, :28C:, :60F: and :62F:" in str(error)


def test_only_20_and_25_rejected() -> None:
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    error = error_of(fmt, "only-20-and-25.sta")
    assert error.line == 1
    assert error.field == ":28C:"
    assert "missing field :28C: (statement number)" in str(error)


@pytest.mark.parametrize("tag", ["20", "25", "28C", "60F", "62F"])
def test_mt940_required_tag_missing(tag: str) -> None:
    # Without missing_statement_reference a message that lacks :20: is rejected too.
    fmt = variant("mt940-statement-import", encoding="utf-8")
    error = swift_error(fmt, swift_message(MT940_FIELDS, tag), "statement.sta")
    assert error.line == 1
    assert error.field == f":{tag}:"
    assert f"missing field :{tag}:" in str(error)


@pytest.mark.parametrize("tag", ["20", "25", "28C", "34F", "13D"])
def test_mt942_required_tag_missing(tag: str) -> None:
    fmt = load_format(REPO_ROOT, "mt942-bank-interim-import")
    error = swift_error(fmt, swift_message(MT942_FIELDS, tag), "interim.sta")
    assert error.line == 1
    assert error.field == f":{tag}:"
    assert f"missing field :{tag}:" in str(error)
    if tag != "20":
        assert "the format requires :20:, :25:, :28C:, :34F: and :13D:" in str(error)


def test_required_tag_names_statement_start() -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    error = error_of(fmt, "second-statement-without-62F.sta")
    assert error.line == 9
    assert error.field == ":62F:"
    assert "missing field :62F: or :62M: (closing balance)" in str(error)


def test_bank_variant_relaxes_statement_number() -> None:
    old_number = {**MT940_FIELDS, "28": "00001/001"}
    data = swift_message(old_number, "28C")
    strict = variant("mt940-statement-import", encoding="utf-8")
    error = swift_error(strict, data, "old-number.sta")
    assert error.field == ":28C:"
    bank = load_format(REPO_ROOT, "mt940-bank-statement-import")
    assert parse_bytes(bank, data, "old-number.sta")[0]["amount"] == 25_000


def test_continued_statement_checks_tags_of_all_messages() -> None:
    # :62F: comes in the message that continues the statement.
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    first = swift_message(MT940_FIELDS, "62F")
    continued = b":61:2612011201D1,00NTRFPP-2\r\n:62F:C261201KZT749,00\r\n-\r\n"
    assert len(parse_bytes(fmt, first + continued, "continued.sta")) == 2
    error = swift_error(fmt, first + continued.replace(b":62F:", b":64:"), "cut.sta")
    assert error.line == 1
    assert error.field == ":62F:"


def test_statement_begun_before_file_needs_closing_balance() -> None:
    # The bank definition reads a message without :20: first in the file as the rest
    # of a statement whose first fields are not in the file.
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    tail = b":62F:C100323EUR42570,04\r\n-\r\n"
    assert parse_bytes(fmt, tail, "tail.sta") == []
    error = swift_error(fmt, b":61:2612011201D1,00NTRFPP-2\r\n-\r\n", "no-balance.sta")
    assert error.line == 1
    assert error.field == ":62F:"


def test_required_tags_in_schema() -> None:
    document = demo_document("mt940-statement-import")
    del document["required_tags"]
    findings = validate_document(document, "treasury", "format.json")
    assert [f.json_path for f in findings] == ["$"]
    assert "missing required field 'required_tags'" in findings[0].message
    document["required_tags"] = [":20:", "25"]
    findings = validate_document(document, "treasury", "format.json")
    assert [f.json_path for f in findings] == ["$.required_tags[1]"]


def test_mt940_format_rejects_mt942_file() -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    error = error_of(fmt, "mt942-interim-report.sta")
    assert error.line == 4
    assert error.field == ":34F:"
    assert str(error) == (
        "mt942-interim-report.sta:4: expected an MT940 statement (:60F: opening balance),"
        " found an MT942 interim report (:34F: floor limit indicator on line 4); parse the"
        " file with an MT942 definition"
    )


def test_mt942_format_rejects_mt940_file() -> None:
    fmt = load_format(REPO_ROOT, "mt942-bank-interim-import")
    error = error_of(fmt, "mt940-statement.sta")
    assert error.line == 4
    assert error.field == ":60F:"
    assert str(error) == (
        "mt940-statement.sta:4: expected an MT942 interim report (:34F: floor limit"
        " indicator), found an MT940 statement (:60F: opening balance on line 4); parse the"
        " file with an MT940 definition"
    )


def test_mt940_with_mt942_field_rejected() -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    mixed = dict(MT940_FIELDS)
    mixed["13D"] = "2612041015+0500"
    error = swift_error(fmt, swift_message(mixed), "mixed.sta")
    assert error.line == 8
    assert error.field == ":13D:"
    assert "found the MT942 field :13D: date and time indication on line 8" in str(error)
    assert "beside the MT940 field :60F: on line 4" in str(error)


def test_1c_format_rejects_mt940_file() -> None:
    fmt = load_format(REPO_ROOT, "1c-ru-statement-import")
    error = error_of(fmt, "mt940-statement.sta")
    assert error.line == 1
    assert str(error) == (
        "mt940-statement.sta:1: expected the first line '1CClientBankExchange', found"
        " ':20:ST2612010001', the start of an MT940 or MT942 file; parse it with an MT940 or"
        " MT942 definition"
    )


@pytest.mark.parametrize("deviations", [[], ["header_lines"]])
def test_mt940_format_rejects_1c_file(deviations: list[str]) -> None:
    fmt = variant("mt940-statement-import", accepts={"deviations": deviations})
    error = error_of(fmt, "1c-kk-good.txt")
    assert error.line == 1
    assert str(error) == (
        "1c-kk-good.txt:1: expected an MT940 file, found a 1CClientBankExchange file;"
        " parse it with a 1c_exchange definition"
    )


def sample_bytes(format_id: str, name: str) -> bytes:
    return (FORMATS / format_id / "samples" / name).read_bytes()


RU_1C_CP1251 = sample_bytes("1c-ru-statement-import", "statement-2026-12-03.txt")
KK_1C_KZ1048 = sample_bytes("1c-kk-statement-import", "statement-2026-12-01.txt")
MT940_KZ1048 = sample_bytes("mt940-statement-import", "statement-2026-12-01.sta")


@pytest.mark.parametrize(
    ("format_id", "data", "message"),
    [
        (
            "mt940-bank-statement-import",
            RU_1C_CP1251,
            "expected an MT940 file, found a 1CClientBankExchange file; parse it with a"
            " 1c_exchange definition",
        ),
        (
            "mt942-bank-interim-import",
            RU_1C_CP1251,
            "expected an MT942 file, found a 1CClientBankExchange file; parse it with a"
            " 1c_exchange definition",
        ),
        (
            "certificate-export",
            MT940_KZ1048,
            "expected a delimited file, found an MT940 or MT942 file; parse it with an MT940"
            " or MT942 definition",
        ),
        (
            "certificate-export",
            KK_1C_KZ1048,
            "expected a delimited file, found a 1CClientBankExchange file; parse it with a"
            " 1c_exchange definition",
        ),
    ],
    ids=["1c-to-mt940", "1c-to-mt942", "mt940-to-delimited", "1c-to-delimited"],
)
def test_utf8_definition_names_other_syntax(format_id: str, data: bytes, message: str) -> None:
    fmt = load_format(REPO_ROOT, format_id)
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, "other.txt")
    assert caught.value.line == 1
    assert caught.value.detail == message


@pytest.mark.parametrize("format_id", ["1c-ru-statement-import", "1c-kk-statement-import"])
def test_1c_names_unterminated_mt940_file(format_id: str) -> None:
    error = error_of(load_format(REPO_ROOT, format_id), "missing-final-newline.sta")
    assert error.line == 1
    assert error.detail.startswith("expected the first line '1CClientBankExchange', found ':20:")
    assert error.detail.endswith(
        "the start of an MT940 or MT942 file; parse it with an MT940 or MT942 definition"
    )


MT940_TEXT = swift_message(MT940_FIELDS).decode("ascii")
KK_1C_TEXT = KK_1C_KZ1048.decode("kz1048")


@pytest.mark.parametrize(
    ("format_id", "data", "message"),
    [
        (
            "mt940-bank-statement-import",
            MT940_TEXT.encode("utf-16"),
            "the file starts with a UTF-16 LE byte order mark (FF FE), so it is UTF-16 text;"
            " convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)",
        ),
        (
            "mt940-bank-statement-import",
            b"\xfe\xff" + MT940_TEXT.encode("utf-16-be"),
            "the file starts with a UTF-16 BE byte order mark (FE FF), so it is UTF-16 text;"
            " convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)",
        ),
        (
            "1c-kk-statement-import",
            KK_1C_TEXT.encode("utf-16"),
            "the file starts with a UTF-16 LE byte order mark (FF FE), so it is UTF-16 text;"
            " convert it to KZ-1048 (iconv -f UTF-16 -t RK1048)",
        ),
        (
            "mt940-statement-import",
            MT940_TEXT.encode("utf-32"),
            "the file starts with a UTF-32 LE byte order mark (FF FE 00 00), so it is UTF-32"
            " text; convert it to KZ-1048 (iconv -f UTF-32 -t RK1048)",
        ),
        (
            "1c-kk-statement-import",
            b"\xef\xbb\xbf" + KK_1C_KZ1048,
            "the file starts with a UTF-8 byte order mark (EF BB BF), which a KZ-1048 file"
            " does not have; remove its first three bytes (tail -c +4 FILE)",
        ),
        (
            "1c-kk-statement-import",
            b"\xef\xbb\xbf" + KK_1C_TEXT.encode("utf-8"),
            "the file starts with a UTF-8 byte order mark (EF BB BF), so it is UTF-8 text;"
            " parse it with a UTF-8 format definition, or remove the byte order mark and"
            " convert the file to KZ-1048 (iconv -f UTF-8 -t RK1048)",
        ),
        (
            "mt940-statement-import",
            b"\xef\xbb\xbf" + MT940_TEXT.encode("ascii"),
            "the file starts with a UTF-8 byte order mark (EF BB BF), which a KZ-1048 file"
            " does not have; remove its first three bytes (tail -c +4 FILE)",
        ),
    ],
    ids=[
        "utf16le",
        "utf16be",
        "utf16le-to-kz1048",
        "utf32le",
        "utf8-bom-on-kz1048",
        "utf8",
        "utf8-bom-on-ascii",
    ],
)
def test_byte_order_mark_named(format_id: str, data: bytes, message: str) -> None:
    error = swift_error(load_format(REPO_ROOT, format_id), data, "statement.txt")
    assert error.line == 1
    assert error.detail == message


def test_utf8_byte_order_mark_on_utf8_definition() -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    records = parse_bytes(fmt, b"\xef\xbb\xbf" + MT940_TEXT.encode("ascii"), "statement.sta")
    assert [record["amount"] for record in records] == [25000]


def test_utf8_definition_names_cp1251_file() -> None:
    line = (
        "C-0416|2026-12-04|KZ46601A871000456789|KZT|-12500.00|ГУ «Отдел финансов"
        " г. Кокшетау»|050540001234|Для представления\n"
    )
    data = (CERTIFICATE_HEADER + line).encode("cp1251")
    error = swift_error(load_format(REPO_ROOT, "certificate-export"), data, "cp1251.txt")
    assert error.line == 2
    assert error.detail == (
        "byte 0xc3 at offset 128 is not valid UTF-8; read as CP1251 the line is"
        f" {line.rstrip()!r}, so the file is probably CP1251: convert it to UTF-8"
        " (iconv -f CP1251 -t UTF-8) or parse it with a CP1251 format definition"
    )


def test_utf8_definition_names_kz1048_file() -> None:
    data = sample_bytes("certificate-export", "certificates-2026-12-04.txt")
    text = data.decode("utf-8")
    error = swift_error(
        load_format(REPO_ROOT, "certificate-export"), text.encode("kz1048"), "kz1048.txt"
    )
    assert error.line == 2
    assert "is not valid UTF-8; read as KZ-1048 the line is 'C-0415|" in error.detail
    assert error.detail.endswith(
        "so the file is probably KZ-1048: convert it to UTF-8 (iconv -f RK1048 -t UTF-8) or"
        " parse it with a KZ-1048 format definition"
    )


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("mt940-statement.sta", "an MT940 or MT942 file; parse it with an MT940 or MT942"),
        ("1c-kk-good.txt", "a 1CClientBankExchange file; parse it with a 1c_exchange"),
    ],
)
def test_delimited_format_rejects_other_syntax(name: str, found: str) -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    error = error_of(fmt, name)
    assert error.line == 1
    assert str(error) == f"{name}:1: expected a delimited file, found {found} definition"


def test_delimited_format_names_fixed_width_line() -> None:
    layout = {**demo_document("certificate-export")["layout"], "header": False}
    fmt = variant("certificate-export", layout=layout)
    line = b"CRT-0001  20261204KZ86125KZT5004100100\n"
    error = swift_error(fmt, line, "fixed.txt")
    assert error.line == 1
    assert "expected 8 columns separated by '|', found 1" in str(error)
    assert "the line has no '|', so the file may be fixed-width" in str(error)


def test_fixed_width_line_longer_than_layout() -> None:
    line = "00004220261204     1234.56Қазына              ;НАЗНАЧЕНИЕ\n"
    error = swift_error(fixed_format(), line.encode("kz1048"), "long.txt")
    assert error.line == 1
    assert "expected at most 46 characters, where the last column TEXT ends" in str(error)
    assert "found 57 with ';НАЗНАЧЕНИЕ' past it" in str(error)


def wrapped_purpose(*lines: str) -> str:
    """Parse one transaction whose :86: field has `lines`; return its purpose."""
    text = (
        ":20:ST1\r\n:25:KZ86125KZT5004100100\r\n:28C:1/1\r\n:60F:C261130KZT0,00\r\n"
        ":61:2612011201D1,00NTRFPP-1\r\n:86:"
        + "\r\n".join(lines)
        + "\r\n:62F:C261201KZT0,00\r\n-\r\n"
    )
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    purpose: str = parse_bytes(fmt, text.encode("utf-8"), "wrapped.sta")[0]["purpose"]
    return purpose


def test_mt940_full_width_line_joins_inside_word() -> None:
    first = "/NAZN/Қызметкерлерге желтоқсан айы үшін есептелген жалақы, сыйақы"
    assert len(first) == 65
    assert wrapped_purpose(first, "лар") == first + "лар"


def test_mt940_short_line_joins_with_space() -> None:
    assert (
        wrapped_purpose("/NAZN/Қызметкерлерге үшін", "жалақы")
        == "/NAZN/Қызметкерлерге үшін жалақы"
    )


def test_mt940_wrapped_subfield_keeps_word_break() -> None:
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    text = (
        ":20:ST1\r\n:25:KZ86125KZT5004100100\r\n:28C:1/1\r\n:60F:C261130KZT0,00\r\n"
        ":61:2612011201D1,00NTRFPP-1\r\n:86:/KNP/311/NAZN/Қызметкерлерге үшін\r\n"
        "жалақы\r\n:62F:C261201KZT0,00\r\n-\r\n"
    )
    records = parse_bytes(fmt, text.encode("kz1048"), "wrapped.sta")
    assert records[0]["purpose"] == "Қызметкерлерге үшін жалақы"


def test_mt940_cr_only_line_endings() -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    sample = FORMATS / fmt.id / "samples" / "statement-2026-12-01-envelope.sta"
    data = sample.read_bytes().replace(b"\r\n", b"\r")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, "cr-only.sta")
    assert str(caught.value).startswith("cr-only.sta:1: the file has CR-only line endings")
    assert "expected CR LF or LF line endings" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "data", "what"),
    [
        ("empty.sta", b"", "the file is empty"),
        ("blank-lines.sta", b"\r\n\r\n", "the file is empty"),
        ("envelope-only.sta", b"KCJBKZKX\r\n940\r\n", "the file has no field tags"),
    ],
)
def test_mt940_file_without_statement(name: str, data: bytes, what: str) -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, name)
    assert str(caught.value) == (
        f"{name}: no statement found: {what}; expected at least one message with fields"
        " such as :20: and :61:"
    )


# -- 1C exchange -------------------------------------------------------------------------------


def kk_1c(**accepts: Any) -> TreasuryFormat:
    base = demo_document("1c-kk-statement-import")["accepts"]
    return variant("1c-kk-statement-import", accepts={**base, **accepts})


def test_1c_section_case_rejected_when_not_declared() -> None:
    error = error_of(kk_1c(deviations=[]), "1c-kk-upper-case-sections.txt")
    assert error.line == 4
    assert error.field == "СекцияДокумент"
    assert "'СЕКЦИЯДОКУМЕНТ' differs from 'СекцияДокумент' in letter case" in str(error)


RU_1C_HEADER = "1CClientBankExchange\nВерсияФормата=1.03\nКодировка=windows-1251\n"


def ru_1c_error(name: str, body: str) -> TreasuryFormatError:
    """Parse a Russian 1C file written from `body`; `name` names its defect."""
    data = (RU_1C_HEADER + body + "КонецФайла\n").encode("cp1251")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(load_format(REPO_ROOT, "1c-ru-statement-import"), data, name)
    return caught.value


def ru_document(number: str, payer: str, amount: str = "Сумма=10.00\n") -> str:
    return (
        f"СекцияДокумент=Платежное поручение\nНомер={number}\n{amount}"
        f"ПлательщикСчет={payer}\nКонецДокумента\n"
    )


def test_1c_repeated_amount_key() -> None:
    body = (
        "СекцияДокумент=Платежное поручение\nНомер=1\nСумма=10.00\nСумма=99.00\nКонецДокумента\n"
    )
    error = ru_1c_error("repeated-amount.txt", body)
    assert error.line == 7
    assert error.field == "Сумма"
    assert "repeated-amount.txt:7: key Сумма repeated; it was first given on line 6" in str(error)


def test_1c_document_without_amount() -> None:
    error = ru_1c_error("no-amount.txt", ru_document("1", "KZ01", amount=""))
    assert error.line == 4
    assert error.field == "Сумма"
    assert "the document has no amount; expected one of the keys ['Сумма']" in str(error)


def test_1c_unclosed_document_before_next() -> None:
    unclosed = "СекцияДокумент=Платежное поручение\nНомер=1\nСумма=10.00\n"
    error = ru_1c_error("unclosed-document.txt", unclosed + ru_document("2", "KZ01"))
    assert error.line == 7
    assert error.field == "КонецДокумента"
    assert "document section opened on line 4 is not closed" in str(error)
    assert "before 'СекцияДокумент'" in str(error)


def two_accounts(*documents: str) -> bytes:
    accounts = "".join(
        f"СекцияРасчСчет\nРасчСчет={iban}\nКонецРасчСчет\n" for iban in ("KZ01", "KZ02")
    )
    return (RU_1C_HEADER + accounts + "".join(documents) + "КонецФайла\n").encode("cp1251")


def test_1c_documents_attributed_to_own_account() -> None:
    fmt = load_format(REPO_ROOT, "1c-ru-statement-import")
    data = two_accounts(ru_document("1", "KZ01"), ru_document("2", "KZ02"))
    records = parse_bytes(fmt, data, "two-accounts.txt")
    assert [(r["doc_number"], r["iban"]) for r in records] == [("1", "KZ01"), ("2", "KZ02")]


def test_1c_document_of_no_listed_account() -> None:
    fmt = load_format(REPO_ROOT, "1c-ru-statement-import")
    data = two_accounts(ru_document("1", "KZ01"), ru_document("2", "KZ99"))
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, "unknown-account.txt")
    assert caught.value.line == 15
    assert caught.value.field == "РасчСчет"
    assert "account sections ['KZ01', 'KZ02']" in str(caught.value)
    assert "['KZ99'] match none of them" in str(caught.value)


@pytest.mark.parametrize("format_id", ["1c-kk-statement-import", "1c-ru-statement-import"])
def test_utf8_file_with_single_byte_definition(format_id: str) -> None:
    fmt = load_format(REPO_ROOT, format_id)
    sample = FORMATS / "1c-kk-statement-import" / "samples" / "statement-2026-12-01.txt"
    data = sample.read_bytes().decode("kz1048").encode("utf-8")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, "utf8-statement.txt")
    message = str(caught.value)
    assert message.startswith("utf8-statement.txt:")
    assert "the file looks UTF-8" in message
    assert f"convert the file to {ENCODING_NAMES[fmt.encoding]}" in message
    assert "or parse it with a UTF-8 format definition" in message


def test_1c_section_case_accepted_when_declared() -> None:
    data = (DATA / "1c-kk-upper-case-sections.txt").read_bytes()
    records = parse_bytes(kk_1c(), data, "upper.txt")
    assert records == [
        {
            "document_kind": "Төлем тапсырмасы",
            "doc_number": "7",
            "doc_date": "2026-12-01",
            "debit_amount": 10_000,
            "payee_name": "Қазақстан Халық Банкі",
        }
    ]


KK_1C_HEADER = "1CClientBankExchange\nВерсияФормата=2.00\nКодировка=KZ-1048\n"


def kk_document(*amounts: str) -> bytes:
    """Return a Kazakh 1C file with one document that has the amount lines `amounts`."""
    document = "СекцияДокумент=Төлем тапсырмасы\nНомер=7\nДата=01.12.2026\n"
    lines = "".join(f"{amount}\n" for amount in amounts)
    text = KK_1C_HEADER + document + lines + "КонецДокумента\nКонецФайла\n"
    return text.encode("kz1048")


def test_1c_document_both_debit_and_credit() -> None:
    data = kk_document("СуммаРасход=100.00", "СуммаПриход=50.00")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(kk_1c(), data, "both-amounts.txt")
    assert caught.value.line == 4
    assert caught.value.field == "СуммаРасход"
    assert str(caught.value) == (
        "both-amounts.txt:4: the document has both a debit amount (СуммаРасход=100.00 on"
        " line 7) and a credit amount (СуммаПриход=50.00 on line 8); expected one of them,"
        " because a document is either a debit or a credit"
    )


@pytest.mark.parametrize("zero", ["СуммаПриход=0.00", "СуммаПриход=0", "СуммаПриход=0,00"])
def test_1c_document_with_zero_other_amount(zero: str) -> None:
    records = parse_bytes(kk_1c(), kk_document("СуммаРасход=100.00", zero), "zero.txt")
    assert records[0]["debit_amount"] == 10_000
    assert records[0]["credit_amount"] == 0


@pytest.mark.parametrize(
    ("amounts", "found"),
    [
        (
            ("СуммаРасход=0.00", "СуммаПриход=0"),
            "СуммаРасход=0.00 on line 7, СуммаПриход=0 on line 8",
        ),
        (("СуммаРасход=0,00",), "СуммаРасход=0,00 on line 7"),
    ],
)
def test_1c_document_with_only_zero_amounts(amounts: tuple[str, ...], found: str) -> None:
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(kk_1c(), kk_document(*amounts), "zero.txt")
    assert caught.value.line == 4
    assert caught.value.field == "СуммаРасход"
    assert caught.value.detail == (
        f"the document has only zero amounts ({found}); expected a non-zero debit or credit"
        " amount, because a document moves money"
    )


def test_1c_tab_in_value_rejected() -> None:
    text = (
        KK_1C_HEADER + "СекцияДокумент=Төлем тапсырмасы\nНомер=14\t82\n"
        "СуммаРасход=1.00\nКонецДокумента\nКонецФайла\n"
    )
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(kk_1c(), text.encode("kz1048"), "tab.txt")
    assert caught.value.line == 5
    assert caught.value.field == "Номер"
    assert caught.value.detail == (
        "key Номер: tab (U+0009) at column 9; expected a value without tabs, which exports"
        " reject as well"
    )


def test_export_file_with_empty_required_value() -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    data = sample_bytes("payment-order-export", "payment-orders-2026-12-04.txt")
    text = data.decode("kz1048").replace(";020240003456;", ";;")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, text.encode("kz1048"), "orders.txt")
    assert caught.value.line == 2
    assert caught.value.field == "БИН_ПОЛУЧАТЕЛЯ"
    assert caught.value.detail == (
        "missing value; the format payment-order-export requires column БИН_ПОЛУЧАТЕЛЯ in"
        " every record"
    )


def test_1c_export_file_with_empty_required_value() -> None:
    fmt = variant("1c-kk-statement-import", direction="export", required_fields=["Номер"])
    text = (
        KK_1C_HEADER + "СекцияДокумент=Төлем тапсырмасы\nНомер=\n"
        "СуммаРасход=1.00\nКонецДокумента\nКонецФайла\n"
    )
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, text.encode("kz1048"), "orders.txt")
    assert caught.value.line == 4
    assert caught.value.field == "Номер"
    assert "requires key Номер in every record" in caught.value.detail


CERTIFICATE_HEADER = "certificate_number|issue_date|iban|currency|balance|holder|holder_bin|note\n"
MT940_CREDIT_LINE = MT940_FIELDS["61"]


def mt940_amount(amount: str) -> bytes:
    return swift_message({**MT940_FIELDS, "61": MT940_CREDIT_LINE.replace("250,00", amount)})


def certificate_balance(balance: str) -> bytes:
    line = f"C-1|2026-12-04|KZ86125KZT5004100100|KZT|{balance}|ММ|940140000385|\n"
    return (CERTIFICATE_HEADER + line).encode("utf-8")


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        (
            strict_mt940_utf8(),
            mt940_amount("250.00"),
            "field :61:/amount: expected an amount with a decimal comma, such as 45000,00,"
            " found '250.00' with a decimal point",
        ),
        (
            strict_mt940_utf8(),
            mt940_amount("250"),
            "field :61:/amount: expected an amount with a decimal comma, such as 45000,00,"
            " found '250'",
        ),
        (
            variant(
                "mt940-statement-import",
                encoding="utf-8",
                accepts={"deviations": ["decimal_point"]},
            ),
            mt940_amount("250"),
            "field :61:/amount: expected an amount with a decimal comma or point, such as"
            " 45000,00 or 45000.00, found '250'",
        ),
        (
            kk_1c(deviations=[]),
            kk_document("СуммаРасход=100,00"),
            "field СуммаРасход: expected an amount with a decimal point, such as 45000.00,"
            " found '100,00' with a decimal comma",
        ),
        (
            kk_1c(),
            kk_document("СуммаРасход=1 000.00"),
            "field СуммаРасход: expected an amount with a decimal point or comma, such as"
            " 45000.00 or 45000,00, found '1 000.00'",
        ),
        (
            load_format(REPO_ROOT, "certificate-export"),
            certificate_balance("-12500,00"),
            "field balance: expected an amount with a decimal point, such as 45000.00,"
            " found '12500,00' with a decimal comma",
        ),
    ],
    ids=["mt940-point", "mt940-none", "mt940-both", "1c-comma", "1c-space", "delimited-comma"],
)
def test_amount_error_names_expected_separator(
    fmt: TreasuryFormat, data: bytes, message: str
) -> None:
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, "amounts.txt")
    assert caught.value.detail == message


def test_1c_unknown_version_rejected() -> None:
    error = error_of(kk_1c(), "1c-kk-version-3.txt")
    assert error.line == 2
    assert error.field == "ВерсияФормата"
    assert "expected one of ['1.01', '2.00'], found '3.00'" in str(error)


def test_1c_encoding_label_must_be_listed() -> None:
    error = error_of(kk_1c(encoding_labels=["Windows"]), "1c-kk-good.txt")
    assert error.line == 3
    assert error.field == "Кодировка"
    assert "found 'KZ-1048'" in str(error)


def test_1c_missing_end_of_file() -> None:
    error = error_of(kk_1c(), "1c-kk-without-end-of-file.txt")
    assert "missing the last line 'КонецФайла'" in str(error)


def test_1c_decimal_comma_needs_declaration() -> None:
    error = error_of(kk_1c(deviations=[]), "1c-kk-decimal-comma.txt")
    assert error.line == 7
    assert error.field == "СуммаРасход"
    assert "expected an amount with a decimal point, such as 45000.00" in str(error)
    assert "found '100,00' with a decimal comma" in str(error)
    data = (DATA / "1c-kk-decimal-comma.txt").read_bytes()
    assert parse_bytes(kk_1c(), data, "comma.txt")[0]["debit_amount"] == 10_000


def test_invalid_utf8_byte_names_line() -> None:
    fmt = variant(
        "1c-kk-statement-import",
        encoding="utf-8",
        accepts={"versions": ["2.00"], "encoding_labels": ["UTF-8"]},
    )
    error = error_of(fmt, "1c-utf8-invalid-byte.txt")
    assert error.line == 5
    assert "byte 0xff" in str(error)
    assert "not valid UTF-8" in str(error)


# -- encodings ---------------------------------------------------------------------------------

KAZAKH_LETTERS = "ӘәҒғҚқҢңӨөҰұҮүҺһІі"


@pytest.mark.parametrize("encoding", ["utf-8", "kz1048"])
def test_kazakh_letters_survive_export_and_import(encoding: str) -> None:
    fmt = variant("payment-order-export", encoding=encoding)
    record = payment_order(purpose=f"Барлық әріптер: {KAZAKH_LETTERS}")
    data = render_records(fmt, [record], "records.json")
    assert parse_bytes(fmt, data, "orders.txt") == [record]


def test_cp1251_export_names_kazakh_letter() -> None:
    fmt = variant("payment-order-export", encoding="cp1251")
    records = [
        payment_order(),
        payment_order(doc_number="2", payee_name="ТОО «Алтын»", purpose="Жылу үшін төлем"),
    ]
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, records, "records.json")
    message = str(caught.value)
    assert message.startswith("records.json $[1].purpose: ")
    assert caught.value.json_path == "$[1].purpose"
    assert "column НАЗНАЧЕНИЕ" in message
    assert "character 'ү' (U+04AF)" in message
    assert "cannot be written in CP1251" in message


def test_cp1251_export_keeps_kazakh_i() -> None:
    # CP1251 has І and і, the one pair of Kazakh letters it can write.
    fmt = variant("payment-order-export", encoding="cp1251")
    data = render_records(fmt, [payment_order(purpose="Білім")], "records.json")
    assert "Білім".encode("cp1251") in data


def test_kz1048_read_as_cp1251_reported_with_repair() -> None:
    fmt = variant(
        "1c-kk-statement-import",
        encoding="cp1251",
        accepts={"versions": ["1.01"], "encoding_labels": ["Windows"]},
    )
    error = error_of(fmt, "1c-kk-in-kz1048-read-as-cp1251.txt")
    message = str(error)
    assert error.line == 8
    assert error.field == "Получатель"
    assert "'Ќазаќстан'" in message
    assert "KZ-1048 text read as CP1251" in message
    assert "'Қазақстан Халық Банкі'" in message
    assert "parse it with a KZ-1048 definition" in message


def ru_statement(payee: str) -> bytes:
    """Return the Russian 1C sample statement in CP1251 with another payee name."""
    sample = FORMATS / "1c-ru-statement-import" / "samples" / "statement-2026-12-03.txt"
    text = sample.read_bytes().decode("cp1251")
    return text.replace("ТОО «Канцтовары Астана»", payee).encode("cp1251")


UKRAINIAN_NAMES = [
    "ТОВ «Київ-Сервіс»",
    "ПП «Європа-Ґрунт»",
    "ТОВ «Україна»",
    "ФОП Ільїн Олег",
    "ТОВ «Сєвєродонецьк-Агро»",
    "ФОП Пєсков Ігор",
    "ФОП Ґжицький Ярослав",
    "ФОП Сєров Ігор",
    "ТОВ «Прокоф'єв і партнери»",
]


@pytest.mark.parametrize("payee", UKRAINIAN_NAMES)
def test_ukrainian_name_in_cp1251_import(payee: str) -> None:
    fmt = load_format(REPO_ROOT, "1c-ru-statement-import")
    warnings: list[Finding] = []
    records = parse_bytes(fmt, ru_statement(payee), "ukrainian-payee.txt", warnings=warnings)
    assert records[0]["payee_name"] == payee
    assert warnings == []


@pytest.mark.parametrize("holder", UKRAINIAN_NAMES)
def test_ukrainian_name_in_utf8_export_and_import(holder: str) -> None:
    fmt = load_format(REPO_ROOT, "certificate-export")
    warnings: list[Finding] = []
    data = render_records(fmt, [certificate(holder)], "records.json", warnings=warnings)
    records = parse_bytes(fmt, data, "certificates.txt", warnings=warnings)
    assert records[0]["payer_name"] == holder
    assert warnings == []


def test_ukrainian_name_in_mt940_import() -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    fields = {**MT940_FIELDS, "86": "Повернення від ФОП Ільїн"}
    text = "".join(f":{tag}:{value}\r\n" for tag, value in fields.items()) + "-\r\n"
    records = parse_bytes(fmt, text.encode("utf-8"), "statement.sta")
    assert records[0]["purpose"] == "Повернення від ФОП Ільїн"


RU_PURPOSE = "Оплата за канцелярские товары по счёту № 41 от 01.12.2026"


def test_utf8_read_as_cp1251_in_import_repaired_whole() -> None:
    fmt = load_format(REPO_ROOT, "1c-ru-statement-import")
    sample = FORMATS / "1c-ru-statement-import" / "samples" / "statement-2026-12-03.txt"
    text = sample.read_bytes().decode("cp1251")
    misread = RU_PURPOSE.encode("utf-8").decode("cp1251")
    data = text.replace(RU_PURPOSE, misread).encode("cp1251")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, data, "statement.txt")
    error = caught.value
    assert error.line == 20
    assert error.field == "НазначениеПлатежа"
    assert "'в„–', 'РѕС‚' is UTF-8 text read as CP1251;" in error.detail
    assert f"expected {RU_PURPOSE!r};" in error.detail


def kk_1c_statement(*payees: str) -> bytes:
    """Return a KZ-1048 1C file with one payment order per payee; the first payee is on line 8."""
    lines = ["1CClientBankExchange", "ВерсияФормата=1.01", "Кодировка=Windows"]
    for number, payee in enumerate(payees, start=7):
        lines += [
            "СекцияДокумент=Платежное поручение",
            f"Номер={number}",
            "Дата=01.12.2026",
            "СуммаРасход=100.00",
            f"Получатель={payee}",
            "КонецДокумента",
        ]
    return ("\r\n".join([*lines, "КонецФайла"]) + "\r\n").encode("kz1048")


def kk_1c_read_as_cp1251() -> TreasuryFormat:
    return variant(
        "1c-kk-statement-import",
        encoding="cp1251",
        accepts={"versions": ["1.01"], "encoding_labels": ["Windows"]},
    )


def test_kz1048_evidence_elsewhere_in_file() -> None:
    # "баєдарлама їшін" could be Ukrainian, but line 14 shows that the file is
    # KZ-1048, which has no є, ї or ґ.
    data = kk_1c_statement("Бюджеттік бағдарлама үшін", "Қазақстан Халық Банкі")
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(kk_1c_read_as_cp1251(), data, "statement.txt")
    error = caught.value
    assert error.line == 8
    assert error.field == "Получатель"
    assert error.detail.startswith(
        "field Получатель: mojibake: 'баєдарлама', 'їшін' is KZ-1048 text read as CP1251,"
        " as 'Ќазаќстан' on line 14 shows; expected 'Бюджеттік бағдарлама үшін';"
    )


def test_kz1048_words_alone_taken_for_ukrainian() -> None:
    data = kk_1c_statement("Бюджеттік бағдарлама үшін")
    warnings: list[Finding] = []
    records = parse_bytes(kk_1c_read_as_cp1251(), data, "statement.txt", warnings=warnings)
    assert records[0]["payee_name"] == "Бюджеттік баєдарлама їшін"
    assert warnings == []


def test_kz1048_doubtful_word_warns() -> None:
    data = kk_1c_statement("Түркістан облысы")
    warnings: list[Finding] = []
    records = parse_bytes(kk_1c_read_as_cp1251(), data, "statement.txt", warnings=warnings)
    assert records[0]["payee_name"] == "Тїркістан облысы"
    assert [(w.severity, w.line) for w in warnings] == [("warning", 8)]
    assert "field Получатель: possible mojibake: 'Тїркістан' may be KZ-1048" in (
        warnings[0].message
    )
    assert "expected 'Түркістан облысы'" in warnings[0].message


def test_kz1048_evidence_elsewhere_in_records() -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    records = [
        payment_order(purpose="Бюджеттік баєдарлама їшін"),
        payment_order(doc_number="2", purpose=MOJIBAKE_HOLDER),
    ]
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, records, "records.json")
    error = caught.value
    assert error.json_path == "$[0].purpose"
    assert (
        "'баєдарлама', 'їшін' is KZ-1048 text read as CP1251, as 'Ќазаќстан' at"
        " $[1].purpose shows; expected 'Бюджеттік бағдарлама үшін';" in error.detail
    )


MOJIBAKE_HOLDER = "Ќазаќстан Республикасы"
REPAIRED_HOLDER = "Қазақстан Республикасы"


def certificate(holder: str) -> dict[str, Any]:
    """Return a canonical certificate record for the certificate export."""
    return {
        "doc_number": "C-1",
        "doc_date": "2026-12-04",
        "iban": "KZ86125KZT5004100100",
        "currency": "KZT",
        "closing_balance": 100,
        "payer_name": holder,
        "payer_bin": "940140000385",
    }


def test_kz1048_export_names_mojibake() -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    records = [payment_order(), payment_order(doc_number="2", purpose=MOJIBAKE_HOLDER)]
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, records, "records.json")
    error = caught.value
    assert error.json_path == "$[1].purpose"
    assert error.detail.startswith(
        "column НАЗНАЧЕНИЕ: mojibake: 'Ќазаќстан' is KZ-1048 text read as CP1251;"
        f" expected {REPAIRED_HOLDER!r};"
    )
    assert error.detail.endswith("; repair the value in the records before rendering")
    assert "use a format definition in KZ-1048" not in error.detail


def test_utf8_export_rejects_mojibake() -> None:
    fmt = load_format(REPO_ROOT, "certificate-export")
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, [certificate(MOJIBAKE_HOLDER)], "records.json")
    assert caught.value.json_path == "$[0].payer_name"
    assert "column holder: mojibake: 'Ќазаќстан' is KZ-1048 text" in caught.value.detail
    assert f"expected {REPAIRED_HOLDER!r}" in caught.value.detail


def test_utf8_import_rejects_mojibake() -> None:
    fmt = load_format(REPO_ROOT, "certificate-export")
    line = f"C-1|2026-12-04|KZ86125KZT5004100100|KZT|1.00|{MOJIBAKE_HOLDER}|940140000385|\n"
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, (CERTIFICATE_HEADER + line).encode("utf-8"), "certificates.txt")
    error = caught.value
    assert error.line == 2
    assert error.field == "holder"
    assert error.detail.startswith("field holder: mojibake: 'Ќазаќстан' is KZ-1048 text")
    assert f"expected {REPAIRED_HOLDER!r}" in error.detail
    assert error.detail.endswith(
        "; the text was misread before it was written to the file, so ask the sender for a"
        " corrected file"
    )


def test_mt940_import_rejects_mojibake() -> None:
    fmt = load_format(REPO_ROOT, "mt940-bank-statement-import")
    fields = {**MT940_FIELDS, "86": "/KNP/311/NAZN/Ќазаќстан"}
    text = "".join(f":{tag}:{value}\r\n" for tag, value in fields.items()) + "-\r\n"
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, text.encode("utf-8"), "statement.sta")
    assert caught.value.line == 6
    assert caught.value.field == ":86:"
    assert "expected '/KNP/311/NAZN/Қазақстан'" in caught.value.detail


def test_mojibake_warning_when_definition_says() -> None:
    fmt = variant("certificate-export", mojibake="warning")
    warnings: list[Finding] = []
    data = render_records(fmt, [certificate(MOJIBAKE_HOLDER)], "records.json", warnings=warnings)
    assert MOJIBAKE_HOLDER.encode("utf-8") in data
    assert [(w.severity, w.json_path) for w in warnings] == [("warning", "$[0].payer_name")]
    assert f"expected {REPAIRED_HOLDER!r}" in warnings[0].message
    parsed: list[Finding] = []
    records = parse_bytes(fmt, data, "certificates.txt", warnings=parsed)
    assert records[0]["payer_name"] == MOJIBAKE_HOLDER
    assert [(w.severity, w.line, w.file) for w in parsed] == [("warning", 2, "certificates.txt")]
    assert "field holder: mojibake: 'Ќазаќстан'" in parsed[0].message


def test_mojibake_setting_in_schema() -> None:
    document = {**demo_document("certificate-export"), "mojibake": "ignore"}
    findings = validate_document(document, "treasury", "format.json")
    assert [f.json_path for f in findings] == ["$.mojibake"]


def test_kz1048_export_other_character_advice() -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, [payment_order(payee_name="Łódź Sp.")], "records.json")
    assert caught.value.detail == (
        "character 'Ł' (U+0141) in 'Łódź Sp.' (column ПОЛУЧАТЕЛЬ) cannot be written in"
        " KZ-1048; replace the character, or use a format definition in UTF-8"
    )


# -- fixed width -------------------------------------------------------------------------------

FIXED_LAYOUT = {
    "line_ending": "lf",
    "date_format": "%Y%m%d",
    "columns": [
        {"name": "NUM", "start": 1, "width": 6, "align": "right", "pad": "0"},
        {"name": "DATE", "start": 7, "width": 8},
        {"name": "SUM", "start": 15, "width": 12, "align": "right"},
        {"name": "TEXT", "start": 27, "width": 20},
    ],
}
FIXED_MAPPING = {"NUM": "doc_number", "DATE": "doc_date", "SUM": "amount", "TEXT": "purpose"}


@pytest.mark.parametrize(
    ("purpose", "problem"),
    [
        ("Бірінші\nекінші", "character U+000A LINE FEED at offset 7"),
        ("Бірінші\r", "character U+000D CARRIAGE RETURN at offset 7"),
        ("Қоңырау\x07", "character U+0007 BELL at offset 7"),
        ("Жылу\tүшін", "character U+0009 TAB at offset 4"),
        ("Жылу\u2028үшін", "character U+2028 LINE SEPARATOR at offset 4"),
        ("Жылу\u2029үшін", "character U+2029 PARAGRAPH SEPARATOR at offset 4"),
        ("Жылу\x85үшін", "character U+0085 NEXT LINE at offset 4"),
        ("Жылу\x9bүшін", "character U+009B CONTROL CHARACTER at offset 4"),
        ("Жылу\u200bүшін", "character U+200B ZERO WIDTH SPACE at offset 4"),
        ("Жылу\u202eүшін", "character U+202E RIGHT-TO-LEFT OVERRIDE at offset 4"),
        ("\ufeffЖылу", "character U+FEFF ZERO WIDTH NO-BREAK SPACE at offset 0"),
        (" Қазына", "leading or trailing whitespace in ' Қазына'"),
        ("Қазына ", "leading or trailing whitespace in 'Қазына '"),
    ],
)
def test_render_rejects_value_that_breaks_line(purpose: str, problem: str) -> None:
    # UTF-8, so that every character could be encoded and only the check rejects it.
    fmt = variant("payment-order-export", encoding="utf-8")
    records = [payment_order(), payment_order(doc_number="2", purpose=purpose)]
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, records, "records.json")
    assert str(caught.value).startswith("records.json $[1].purpose: ")
    assert caught.value.json_path == "$[1].purpose"
    assert problem in str(caught.value)
    assert caught.value.field == "purpose"


@pytest.mark.parametrize("value", [None, ""])
def test_render_rejects_missing_required_value(value: str | None) -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    incomplete = payment_order(doc_number="2", payee_name=value)
    if value is None:
        del incomplete["payee_name"]
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, [payment_order(), incomplete], "records.json")
    assert caught.value.json_path == "$[1].payee_name"
    assert caught.value.field == "payee_name"
    assert str(caught.value) == (
        "records.json $[1].payee_name: missing value; the format payment-order-export"
        " requires column ПОЛУЧАТЕЛЬ in every record"
    )


def test_render_accepts_missing_optional_value() -> None:
    # A budget classification code (КБК) is given for budget payments only.
    fmt = load_format(REPO_ROOT, "payment-order-export")
    order = payment_order()
    assert "kbk_code" not in order
    data = render_records(fmt, [order], "records.json")
    assert parse_bytes(fmt, data, "orders.txt") == [order]


def test_required_fields_in_schema() -> None:
    document = demo_document("payment-order-export")
    del document["required_fields"]
    findings = validate_document(document, "treasury", "format.json")
    assert [f.json_path for f in findings] == ["$"]
    assert "missing required field 'required_fields'" in findings[0].message


def test_required_lists_only_where_they_apply(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "1c-ru-statement-import")
    folder = root / "packages/treasury/1c-ru-statement-import"
    rewrite(folder / "format.json", lambda d: d.update(required_fields=["Номер"]))
    rewrite(folder / "format.json", lambda d: d.update(required_tags=[":20:"]))
    findings = errors_only(check_definition(root, Kind.TREASURY, "1c-ru-statement-import"))
    assert rules(findings) == ["treasury.required-tags", "treasury.required-fields"]
    assert findings[0].json_path == "$.required_tags"
    assert "found syntax '1c_exchange'" in findings[0].message
    assert findings[1].json_path == "$.required_fields"
    assert "applies to export definitions, found direction 'import'" in findings[1].message


@pytest.mark.parametrize(
    ("format_id", "accepts", "path", "message"),
    [
        (
            "mt940-statement-import",
            {"deviations": ["message_wrappers", "section_name_case"]},
            "$.accepts.deviations[1]",
            "deviation 'section_name_case' does not apply to syntax 'mt940'; expected one of"
            " ['decimal_point', 'header_lines', 'message_wrappers', 'missing_final_newline',"
            " 'missing_statement_reference']; remove it",
        ),
        (
            "mt940-statement-import",
            {"deviations": ["decimal_comma"]},
            "$.accepts.deviations[0]",
            "deviation 'decimal_comma' does not apply to syntax 'mt940'",
        ),
        (
            "1c-ru-statement-import",
            {
                "versions": ["1.03"],
                "encoding_labels": ["Windows"],
                "deviations": ["header_lines"],
            },
            "$.accepts.deviations[0]",
            "deviation 'header_lines' does not apply to syntax '1c_exchange'; expected one of"
            " ['decimal_comma', 'missing_final_newline', 'section_name_case']; remove it",
        ),
        (
            "mt942-bank-interim-import",
            {"versions": ["1.01"]},
            "$.accepts.versions",
            "versions applies to 1c_exchange definitions, found syntax 'mt942'; remove it",
        ),
    ],
    ids=[
        "1c-case-on-mt940",
        "comma-on-mt940",
        "envelope-on-1c",
        "versions",
    ],
)
def test_deviation_must_fit_syntax(
    tmp_path: Path, format_id: str, accepts: dict[str, Any], path: str, message: str
) -> None:
    root = copy_format(tmp_path, format_id)
    rewrite(
        root / "packages/treasury" / format_id / "format.json", lambda d: d.update(accepts=accepts)
    )
    findings = errors_only(check_definition(root, Kind.TREASURY, format_id))
    assert rules(findings) == ["treasury.deviation-syntax"]
    assert findings[0].file == f"packages/treasury/{format_id}/format.json"
    assert findings[0].json_path == path
    assert findings[0].message.startswith(message)


def test_overlapping_fixed_width_columns(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "financing-plan-export")
    folder = root / "packages/treasury/financing-plan-export"
    rewrite(folder / "format.json", lambda d: d["layout"]["columns"][6].update(start=60))
    findings = errors_only(check_definition(root, Kind.TREASURY, "financing-plan-export"))
    assert rules(findings) == ["treasury.column-overlap"]
    assert findings[0].json_path == "$.layout.columns[6].start"
    assert findings[0].message == (
        "column NOTE (purpose, characters 60-99) overlaps column SUM (amount, characters"
        " 48-65) at $.layout.columns[5]; expected each character in one column, so move"
        " NOTE to start at 66 or later"
    )


@pytest.mark.parametrize(
    ("format_id", "change", "rule", "path", "message"),
    [
        (
            "financing-plan-export",
            lambda d: d["layout"]["columns"][1].update(name="NUM"),
            "treasury.column-duplicate",
            "$.layout.columns[1].name",
            "column name 'NUM' is also the name of $.layout.columns[0]; expected each column"
            " name once, so rename one of them",
        ),
        (
            "certificate-export",
            lambda d: d["layout"]["columns"][3].update(name="iban"),
            "treasury.column-duplicate",
            "$.layout.columns[3].name",
            "column name 'iban' is also the name of $.layout.columns[2]; expected each column"
            " name once, so rename one of them",
        ),
        (
            "payment-order-export",
            lambda d: d["layout"].update(delimiter="."),
            "treasury.delimiter",
            "$.layout.delimiter",
            "delimiter '.' is also the decimal separator, so an amount such as 100.50 would"
            " split into two columns; expected another delimiter, such as ';'",
        ),
        (
            "certificate-export",
            lambda d: d.update(accepts={"deviations": ["missing_final_newline"]}),
            "treasury.deviation-direction",
            "$.accepts.deviations",
            "deviations apply to import definitions, found direction 'export'; a file of an"
            " export format is parsed as rendering writes it, so remove them",
        ),
    ],
    ids=["fixed-width-name", "delimited-name", "delimiter-is-decimal", "deviation-on-export"],
)
def test_layout_check_of_definition(
    tmp_path: Path, format_id: str, change: Any, rule: str, path: str, message: str
) -> None:
    root = copy_format(tmp_path, format_id)
    rewrite(root / "packages/treasury" / format_id / "format.json", change)
    findings = errors_only(check_definition(root, Kind.TREASURY, format_id))
    assert rules(findings) == [rule]
    assert findings[0].file == f"packages/treasury/{format_id}/format.json"
    assert findings[0].json_path == path
    assert findings[0].message == message


def test_deviation_of_other_syntax_on_delimited_import() -> None:
    document = demo_document("certificate-export")
    document.update(direction="import", accepts={"deviations": ["message_wrappers"]})
    findings = check_layout_fits_syntax(document, "format.json")
    assert [(f.rule, f.json_path) for f in findings] == [
        ("treasury.deviation-syntax", "$.accepts.deviations[0]")
    ]
    assert findings[0].message.startswith(
        "deviation 'message_wrappers' does not apply to syntax 'delimited'"
    )


def test_comma_delimiter_with_decimal_comma() -> None:
    document = demo_document("certificate-export")
    document.update(direction="import", accepts={"deviations": ["decimal_comma"]})
    document["layout"]["delimiter"] = ","
    findings = check_layout_fits_syntax(document, "format.json")
    assert [(f.rule, f.json_path) for f in findings] == [
        ("treasury.delimiter", "$.layout.delimiter")
    ]
    assert findings[0].message == (
        "delimiter ',' is also a decimal separator, because the definition accepts"
        " decimal_comma, so an amount such as 100,50 would split into two columns; expected"
        " another delimiter, such as ';'"
    )


def test_required_field_must_be_mapped(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "certificate-export")
    folder = root / "packages/treasury/certificate-export"
    rewrite(folder / "format.json", lambda d: d["required_fields"].append("stamp"))
    findings = errors_only(check_definition(root, Kind.TREASURY, "certificate-export"))
    unmapped = [f for f in findings if f.rule == "treasury.unknown-required-field"]
    assert len(unmapped) == 1
    assert (
        unmapped[0].json_path
        == f"$.required_fields[{len(demo_document('certificate-export')['required_fields'])}]"
    )
    assert "'stamp' is not a source field of mapping" in unmapped[0].message


def fixed_format() -> TreasuryFormat:
    return variant(
        "payment-order-export",
        syntax="fixed_width",
        layout=FIXED_LAYOUT,
        mapping=FIXED_MAPPING,
        required_fields=["NUM"],
    )


def test_fixed_width_binary_byte_names_column() -> None:
    line = "00004220261204     1234.56Қаз\x00на              \n"
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fixed_format(), line.encode("kz1048"), "binary.txt")
    assert caught.value.line == 1
    assert caught.value.field == "TEXT"
    assert "binary.txt:1: column TEXT: control byte U+0000 at column 30" in str(caught.value)


@pytest.mark.parametrize(
    ("holder", "column", "field"),
    [("М\x07М", 47, "holder"), ('"М|\x07"', 49, "holder"), ("ММ", 62, "note")],
)
def test_delimited_binary_byte_names_column(holder: str, column: int, field: str) -> None:
    fmt = load_format(REPO_ROOT, "certificate-export")
    note = "\x1b" if field == "note" else ""
    line = f"C-1|2026-12-04|KZ86125KZT5004100100|KZT|1.00|{holder}|940140000385|{note}\n"
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fmt, (CERTIFICATE_HEADER + line).encode("utf-8"), "binary.txt")
    assert caught.value.line == 2
    assert caught.value.field == field
    assert f"column {field}: control byte" in str(caught.value)
    assert f"at column {column}" in str(caught.value)


def test_fixed_width_round_trip() -> None:
    fmt = fixed_format()
    record = {"doc_number": "42", "doc_date": "2026-12-04", "amount": 123_456, "purpose": "Қазына"}
    data = render_records(fmt, [record], "records.json")
    assert data.decode("kz1048") == "00004220261204     1234.56Қазына              \n"
    assert parse_bytes(fmt, data, "orders.txt") == [record]


def test_fixed_width_value_too_wide() -> None:
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fixed_format(), [{"doc_number": "1234567"}], "records.json")
    assert str(caught.value).startswith("records.json $[0].doc_number: ")
    assert caught.value.json_path == "$[0].doc_number"
    assert "column NUM" in str(caught.value)
    assert "has 7 characters, the column is 6 wide" in str(caught.value)


def test_fixed_width_short_line() -> None:
    with pytest.raises(TreasuryFormatError) as caught:
        parse_bytes(fixed_format(), b"000042202612\n", "short.txt")
    assert caught.value.line == 1
    assert caught.value.field == "DATE"


def test_render_rejects_unmapped_field() -> None:
    fmt = load_format(REPO_ROOT, "payment-order-export")
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, [payment_order(iban="KZ00")], "records.json")
    assert str(caught.value).startswith("records.json $[0].iban: ")
    assert caught.value.json_path == "$[0].iban"
    assert "maps no source field to iban" in str(caught.value)


def test_render_rejects_import_format() -> None:
    fmt = load_format(REPO_ROOT, "mt940-statement-import")
    with pytest.raises(TreasuryFormatError) as caught:
        render_records(fmt, [], "records.json")
    assert caught.value.detail == (
        "format mt940-statement-import is an import format in mt940 syntax; expected an"
        " export format in 1c_exchange, fixed_width or delimited syntax"
    )


# -- conformance of samples --------------------------------------------------------------------


def rewrite(path: Path, change: Any) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")


def test_changed_definition_without_changed_samples(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "mt940-statement-import")
    folder = root / "packages/treasury/mt940-statement-import"
    # Parsing the value date as the entry date changes what the format does.
    rewrite(folder / "format.json", lambda d: d["mapping"].pop(":61:/entry_date"))
    for expected in (folder / "samples").glob("*.json"):
        rewrite(expected, lambda records: [r.pop("entry_date") for r in records])
    findings = check_definition(root, Kind.TREASURY, "mt940-statement-import")
    assert rules(findings) == ["treasury.conformance-stale"]
    record_conformance(root, "mt940-statement-import")
    assert check_definition(root, Kind.TREASURY, "mt940-statement-import") == []

    rewrite(folder / "format.json", lambda d: d["accepts"]["deviations"].append("decimal_point"))
    findings = check_definition(root, Kind.TREASURY, "mt940-statement-import")
    assert rules(findings) == ["treasury.samples-not-updated"]
    assert findings[0].file == "packages/treasury/mt940-statement-import/format.json"
    assert "no sample changed" in findings[0].message
    with pytest.raises(ValidationError, match=r"no sample changed"):
        record_conformance(root, "mt940-statement-import")


def committed_format(tmp_path: Path, format_id: str) -> tuple[Path, str]:
    """Return a git repository with one demo format committed, and that commit."""
    root = copy_format(tmp_path, format_id)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "Add the format")
    return root, git(root, "rev-parse", "HEAD").strip()


def test_record_after_deleting_conformance(tmp_path: Path) -> None:
    root, _ = committed_format(tmp_path, "mt940-statement-import")
    folder = root / "packages/treasury/mt940-statement-import"
    rewrite(folder / "format.json", lambda d: d["accepts"]["deviations"].append("decimal_point"))
    (folder / "conformance.json").unlink()
    with pytest.raises(ValidationError, match=r"no sample changed") as caught:
        record_conformance(root, "mt940-statement-import")
    assert "--accept-definition-change REASON" in str(caught.value)
    assert not (folder / "conformance.json").exists()

    record_conformance(root, "mt940-statement-import", accept_reason="banks send 1.5 too")
    recorded = json.loads((folder / "conformance.json").read_text(encoding="utf-8"))
    assert recorded["accepted_definition_change"]["reason"] == "banks send 1.5 too"
    assert check_definition(root, Kind.TREASURY, "mt940-statement-import") == []
    # Recording again keeps the accepted reason.
    record_conformance(root, "mt940-statement-import")
    recorded = json.loads((folder / "conformance.json").read_text(encoding="utf-8"))
    assert recorded["accepted_definition_change"]["reason"] == "banks send 1.5 too"


def test_base_release_conformance_removed(tmp_path: Path) -> None:
    root, base = committed_format(tmp_path, "mt940-statement-import")
    (root / "packages/treasury/mt940-statement-import/conformance.json").unlink()
    case = check_base_conformance(root, root, base)
    assert rules(case.findings) == ["treasury.conformance-removed"]
    assert "conformance.json removed since the base release" in case.findings[0].message
    assert case.findings[0].file.endswith("mt940-statement-import/conformance.json")


def test_base_release_catches_rerecorded_change(tmp_path: Path) -> None:
    root, base = committed_format(tmp_path, "mt940-statement-import")
    folder = root / "packages/treasury/mt940-statement-import"
    assert check_base_conformance(root, root, base).findings == []
    # The record is deleted and committed, so HEAD has no record to compare with.
    rewrite(folder / "format.json", lambda d: d["accepts"]["deviations"].append("decimal_point"))
    (folder / "conformance.json").unlink()
    git(root, "commit", "-q", "-a", "-m", "Drop the record")
    record_conformance(root, "mt940-statement-import")
    assert check_definition(root, Kind.TREASURY, "mt940-statement-import") == []
    case = check_base_conformance(root, root, base)
    assert rules(case.findings) == ["treasury.samples-not-updated"]
    assert f"since the base release {base[:12]}" in case.findings[0].message


def test_title_change_needs_no_new_samples(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "mt940-statement-import")
    folder = root / "packages/treasury/mt940-statement-import"
    rewrite(folder / "format.json", lambda d: d["title"].update(ru="Импорт выписки MT940"))
    assert check_definition(root, Kind.TREASURY, "mt940-statement-import") == []


def test_sample_difference_names_record_and_field(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "mt940-statement-import")
    expected = root / "packages/treasury/mt940-statement-import/samples"
    rewrite(expected / "statement-2026-12-01.expected.json", lambda r: r[1].update(kbe="17"))
    findings = errors_only(check_definition(root, Kind.TREASURY, "mt940-statement-import"))
    mismatch = [f for f in findings if f.rule == "treasury.sample-mismatch"]
    assert len(mismatch) == 1
    assert mismatch[0].json_path == "$[1].kbe"
    assert mismatch[0].message.startswith("expected '17', the sample parses to '11'")
    assert "record" not in mismatch[0].message
    assert mismatch[0].file.endswith("samples/statement-2026-12-01.expected.json")


def test_sample_that_fails_to_parse(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "mt940-statement-import")
    sample = root / "packages/treasury/mt940-statement-import/samples/statement-2026-12-01.sta"
    sample.write_bytes(sample.read_bytes().replace(b"45000,00", b"45000.00"))
    findings = errors_only(check_definition(root, Kind.TREASURY, "mt940-statement-import"))
    assert rules(findings)[0] == "treasury.sample-parse"
    assert findings[0].line == 5
    assert ":61:/amount" in findings[0].message


def test_export_sample_difference_names_line(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "payment-order-export")
    sample = root / "packages/treasury/payment-order-export/samples/payment-orders-2026-12-04.txt"
    sample.write_bytes(sample.read_bytes().replace(b"18450.00", b"18450.10"))
    findings = errors_only(check_definition(root, Kind.TREASURY, "payment-order-export"))
    render = [f for f in findings if f.rule == "treasury.sample-render"]
    assert len(render) == 1
    assert render[0].line == 2
    assert "18450.10" in render[0].message
    mismatch = [f for f in findings if f.rule == "treasury.sample-mismatch"]
    assert mismatch[0].json_path == "$[0].amount"


def test_export_sample_render_error_names_record(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "payment-order-export")
    samples = root / "packages/treasury/payment-order-export/samples"
    expected = samples / "payment-orders-2026-12-04.expected.json"
    rewrite(expected, lambda records: records[1].update(amount="18450.00"))
    findings = errors_only(check_definition(root, Kind.TREASURY, "payment-order-export"))
    render = [f for f in findings if f.rule == "treasury.sample-render"]
    assert len(render) == 1
    assert render[0].file.endswith("samples/payment-orders-2026-12-04.expected.json")
    assert render[0].json_path == "$[1].amount"
    assert "record" not in render[0].message
    mismatch = [f for f in findings if f.rule == "treasury.sample-mismatch"]
    assert mismatch[0].json_path == "$[1].amount"


def test_missing_conformance_record(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "1c-ru-statement-import")
    (root / "packages/treasury/1c-ru-statement-import/conformance.json").unlink()
    findings = check_definition(root, Kind.TREASURY, "1c-ru-statement-import")
    assert rules(findings) == ["treasury.conformance-missing"]
    assert "inv treasury.record --format 1c-ru-statement-import" in findings[0].message


def test_title_typo_does_not_block_parsing(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "1c-kk-statement-import")
    folder = root / "packages/treasury/1c-kk-statement-import"
    # A Latin i in place of the Kazakh і is a text-lint error only.
    rewrite(folder / "format.json", lambda d: d["title"].update(kk="Бiлiм үзінді-көшірмесі"))
    findings = errors_only(check_definition(root, Kind.TREASURY, "1c-kk-statement-import"))
    assert rules(findings) == ["text.mixed-script"]
    fmt = load_format(root, "1c-kk-statement-import")
    records = parse_file(fmt, folder / "samples" / "statement-2026-12-01.txt")
    assert len(records) == 2


def test_mapping_error_blocks_parsing(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "1c-ru-statement-import")
    folder = root / "packages/treasury/1c-ru-statement-import"
    rewrite(folder / "format.json", lambda d: d["mapping"].update({"Код": "payment_code"}))
    with pytest.raises(ValidationError) as caught:
        load_format(root, "1c-ru-statement-import")
    message = str(caught.value)
    assert "error(s) in the treasury format 1c-ru-statement-import that affect parsing" in message
    assert "payment_code" in message


def test_sample_parse_finding_names_location_once(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "mt940-statement-import")
    sample = root / "packages/treasury/mt940-statement-import/samples/statement-2026-12-01.sta"
    sample.write_bytes(sample.read_bytes().replace(b"45000,00", b"45000.00"))
    with pytest.raises(ValidationError) as caught:
        load_format(root, "mt940-statement-import")
    message = str(caught.value)
    assert "statement-2026-12-01.sta:5: field :61:/amount" in message
    assert message.count("statement-2026-12-01.sta:5") == 1


def test_unknown_canonical_field(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "1c-ru-statement-import")
    folder = root / "packages/treasury/1c-ru-statement-import"
    rewrite(folder / "format.json", lambda d: d["mapping"].update({"Код": "payment_code"}))
    findings = check_definition(root, Kind.TREASURY, "1c-ru-statement-import")
    unknown = [f for f in findings if f.rule == "treasury.unknown-field"]
    assert unknown[0].json_path == "$.mapping['Код']"
    assert "'payment_code' is not a field of the canonical records" in unknown[0].message


def test_mt940_export_rejected_by_schema() -> None:
    document = {**demo_document("mt940-statement-import"), "direction": "export"}
    findings = validate_document(document, "treasury", "format.json")
    assert findings
    assert any(f.json_path == "$.syntax" for f in findings)


# -- tasks -------------------------------------------------------------------------------------


def run_inv(*arguments: str) -> subprocess.CompletedProcess[str]:
    inv = Path(sys.executable).with_name("inv")
    return subprocess.run(
        [str(inv), "--search-root", str(REPO_ROOT), *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )


def test_parse_task_writes_records(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    sample = FORMATS / "1c-kk-statement-import" / "samples" / "statement-2026-12-01.txt"
    result = run_inv(
        "treasury.parse", "--format", "1c-kk-statement-import", str(sample), "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "2 record(s)" in result.stdout
    records = json.loads(out.read_text(encoding="utf-8"))
    assert records[0]["payee_name"] == "Сәрсенбаев Қайрат Өмірұлы"


def test_parse_task_prints_mojibake_warning(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "certificate-export")
    definition = root / "packages" / "treasury" / "certificate-export" / "format.json"
    document = json.loads(definition.read_text(encoding="utf-8"))
    definition.write_text(json.dumps({**document, "mojibake": "warning"}), encoding="utf-8")
    line = f"C-1|2026-12-04|KZ86125KZT5004100100|KZT|1.00|{MOJIBAKE_HOLDER}|940140000385|\n"
    statement = tmp_path / "certificates.txt"
    statement.write_text(CERTIFICATE_HEADER + line, encoding="utf-8")
    result = run_inv(
        "treasury.parse", "--repo", str(root), "--format", "certificate-export", str(statement)
    )
    assert result.returncode == 0, result.stderr
    assert f"warning: {statement}:2: field holder: mojibake: 'Ќазаќстан'" in result.stdout
    assert "1 record(s) with certificate-export" in result.stdout


def test_render_task_prints_mojibake_warning_once(tmp_path: Path) -> None:
    root = copy_format(tmp_path, "certificate-export")
    definition = root / "packages" / "treasury" / "certificate-export" / "format.json"
    document = json.loads(definition.read_text(encoding="utf-8"))
    definition.write_text(json.dumps({**document, "mojibake": "warning"}), encoding="utf-8")
    records = tmp_path / "records.json"
    records.write_text(json.dumps([certificate(MOJIBAKE_HOLDER)]), encoding="utf-8")
    out = tmp_path / "certificates.txt"
    result = run_inv(
        "treasury.render",
        "--repo",
        str(root),
        "--format",
        "certificate-export",
        str(records),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("mojibake: 'Ќазаќстан'") == 1
    assert f"warning: {records} $[0].payer_name: column holder: mojibake:" in result.stdout


def test_render_task_rejects_import_format(tmp_path: Path) -> None:
    records = tmp_path / "records.json"
    records.write_text('[{"doc_number": "1", "purpose": "Қазына"}]', encoding="utf-8")
    out = tmp_path / "out.txt"
    result = run_inv(
        "treasury.render", "--format", "1c-ru-statement-import", str(records), "--out", str(out)
    )
    assert result.returncode == 1
    assert "expected an export format" in result.stderr
    assert not out.exists()


def cp1251_export(tmp_path: Path) -> Path:
    """Return a content root with a CP1251 variant of the payment-order export."""
    root = copy_format(tmp_path, "payment-order-export")
    folder = root / "packages/treasury/payment-order-export"
    rewrite(folder / "format.json", lambda d: d.update(encoding="cp1251"))
    document = json.loads((folder / "format.json").read_text(encoding="utf-8"))
    expected = [payment_order()]
    sample = document["samples"][0]
    (folder / sample["expected"]).write_text(json.dumps(expected, ensure_ascii=False), "utf-8")
    data = render_records(format_from_document(document), expected, "expected.json")
    (folder / sample["file"]).write_bytes(data)
    return root


def test_render_task_reports_cp1251_error(tmp_path: Path) -> None:
    root = cp1251_export(tmp_path)
    records = tmp_path / "records.json"
    orders = [payment_order(), payment_order(doc_number="2", purpose="Жылу үшін")]
    records.write_text(json.dumps(orders, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out.txt"
    arguments = ["--format", "payment-order-export", "--repo", str(root), "--out", str(out)]
    result = run_inv("treasury.render", *arguments, str(records))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert f"{records} $[1].purpose: " in result.stderr
    assert "column НАЗНАЧЕНИЕ" in result.stderr
    assert "character 'ү' (U+04AF)" in result.stderr
    assert "cannot be written in CP1251" in result.stderr
    assert not out.exists()

    records.write_text(json.dumps([payment_order(doc_number="3")]), encoding="utf-8")
    result = run_inv("treasury.render", *arguments, str(records))
    assert result.returncode == 0, result.stderr
    assert "Оплата".encode("cp1251") in out.read_bytes()


@pytest.mark.parametrize(
    ("path", "problem"), [("missing.sta", "file not found"), (".", "found a folder")]
)
def test_parse_task_unreadable_path(tmp_path: Path, path: str, problem: str) -> None:
    target = tmp_path / path
    result = run_inv("treasury.parse", "--format", "mt940-bank-statement-import", str(target))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{target}: " in result.stderr
    assert problem in result.stderr


def test_1c_export_round_trip() -> None:
    fmt = variant(
        "1c-kk-statement-import",
        direction="export",
        document="payment_order",
        required_fields=["СекцияДокумент", "Номер", "Дата"],
    )
    record = {
        "document_kind": "Төлем тапсырмасы",
        "doc_number": "12",
        "doc_date": "2026-12-04",
        "debit_amount": 1_845_000,
        "payer_bin": "940140000385",
        "payee_name": "«Көкшетау Жылу» ЖШС",
        "knp_code": "342",
    }
    data = render_records(fmt, [record], "records.json")
    text = data.decode("kz1048")
    assert text.startswith("1CClientBankExchange\r\nВерсияФормата=2.00\r\nКодировка=KZ-1048\r\n")
    assert "СекцияДокумент=Төлем тапсырмасы\r\nНомер=12\r\nДата=04.12.2026\r\n" in text
    assert "СуммаРасход=18450.00\r\n" in text
    assert text.endswith("КонецДокумента\r\nКонецФайла\r\n")
    assert parse_bytes(fmt, data, "export.txt") == [record]


def test_accept_definition_change_with_record_present(tmp_path: Path) -> None:
    root, _ = committed_format(tmp_path, "mt940-statement-import")
    folder = root / "packages/treasury/mt940-statement-import"
    rewrite(folder / "format.json", lambda d: d["accepts"]["deviations"].append("decimal_point"))
    assert (folder / "conformance.json").exists()
    with pytest.raises(ValidationError, match=r"no sample changed"):
        record_conformance(root, "mt940-statement-import")
    record_conformance(root, "mt940-statement-import", accept_reason="banks send 1.5 too")
    recorded = json.loads((folder / "conformance.json").read_text(encoding="utf-8"))
    assert recorded["accepted_definition_change"]["reason"] == "banks send 1.5 too"
    assert check_definition(root, Kind.TREASURY, "mt940-statement-import") == []
