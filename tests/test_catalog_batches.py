"""Batched row checks and chunked reading give the findings of the row-by-row check.

Each case runs the same rows through `check_records` with the column-wise batch
check turned off (every row checked on its own), and then with several batch
and chunk sizes, and compares the findings. The defects sit on both sides of
batch and chunk boundaries.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from pipeline import catalog_rows
from pipeline.catalog_model import CatalogDescription, parse_description
from pipeline.catalog_rows import FindingLog, RecordReader, check_records
from pipeline.findings import Finding

HEADER = "code,parent,amount,opened,active,rate,note"


def description(reference: bool = True) -> CatalogDescription:
    def column(name: str, kind: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": kind, "title": {"kk": name, "ru": name}, **extra}

    document = {
        "id": "units",
        "title": {"kk": "Бөлімдер", "ru": "Подразделения"},
        "description": {"kk": "Сынақ", "ru": "Тест"},
        "key": ["code"],
        "columns": [
            column("code", "text", required=True, pattern="^U[0-9]{5}$"),
            column("parent", "text", null_value="-")
            | ({"references": "units.code"} if reference else {}),
            column("amount", "integer", required=True),
            column("opened", "date"),
            column("active", "boolean", required=True),
            column("rate", "decimal", null_value="n/a"),
            column("note", "text"),
        ],
        "source": {"name": "Тест", "document": "Тест", "date": "2026-01-01"},
        "effective_date": "2026-01-01",
    }
    parsed, findings = parse_description(document, "units", "catalogs/units/catalog.json")
    assert findings == []
    assert parsed is not None
    return parsed


def clean_row(index: int) -> str:
    parent = f"U{index - 1:05d}" if index % 3 else "-"
    rate = f"{index % 10}.5" if index % 4 else "n/a"
    return f"U{index:05d},{parent},{index},2026-01-{1 + index % 28:02d},true,{rate},n{index}"


def rows_with_defects(count: int) -> list[str]:
    rows = [clean_row(index) for index in range(count)]
    rows[5] = rows[5].replace(",true,", ",yes,")
    rows[300] = "U00299,-,1,2026-01-01,true,1.0,duplicate of the row before"
    rows[520] = rows[520].replace("2026-01-", "2026-02-3")
    rows[777] = f"U{777:05d},U99999,7,,false,,"
    # A reference to a row that comes later in the file resolves at the end.
    rows[900] = f"U{900:05d},U{1500:05d},9,,false,,"
    rows[1024] = "U01024,-,010,2026-01-01,true,1,leading zero"
    rows[1100] = '"U01100",-,"11",,true,,"a note over\ntwo lines"'
    rows[1300] = "U01300,-,13,,true"
    rows[1700], rows[1701] = rows[1701], rows[1700]
    rows[1900] = ",-,19,,true,,"
    return rows


def run(
    data: bytes,
    monkeypatch: pytest.MonkeyPatch,
    *,
    batch: int,
    chunk: int,
    reference: bool = True,
) -> list[Finding]:
    monkeypatch.setattr(catalog_rows, "BATCH_ROWS", batch)
    monkeypatch.setattr(catalog_rows, "CHUNK_BYTES", chunk)
    log = FindingLog("catalogs/units/rows.csv")
    reader = RecordReader(io.BytesIO(data))
    check_records(description(reference), reader, log, external_targets={})
    return log.result()


def row_by_row(
    data: bytes, monkeypatch: pytest.MonkeyPatch, reference: bool = True
) -> list[Finding]:
    """Check with every batch sent to the row-by-row path, as before batching existed."""
    with monkeypatch.context() as patch:
        patch.setattr(catalog_rows._Checker, "_clean_batch", lambda self, records: None)
        return run(data, patch, batch=7, chunk=1 << 20, reference=reference)


def file_bytes(rows: list[str], newline: str = "\n") -> bytes:
    return newline.join([HEADER, *rows, ""]).encode("utf-8")


SIZES = [(1, 1 << 20), (2, 33), (64, 100), (256, 4096), (4096, 1 << 20)]


@pytest.mark.parametrize("reference", [True, False], ids=["self-reference", "no-reference"])
@pytest.mark.parametrize(("batch", "chunk"), SIZES)
def test_batches_match_row_by_row(
    monkeypatch: pytest.MonkeyPatch, batch: int, chunk: int, reference: bool
) -> None:
    data = file_bytes(rows_with_defects(2000))
    expected = row_by_row(data, monkeypatch, reference)

    found = run(data, monkeypatch, batch=batch, chunk=chunk, reference=reference)

    assert found == expected
    rules = {f.rule for f in expected}
    assert rules == {
        "catalog.type",
        "catalog.duplicate-key",
        "catalog.field-count",
        "catalog.order",
        "catalog.required",
    } | ({"catalog.reference"} if reference else set())


def test_duplicate_names_both_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    found = run(file_bytes(rows_with_defects(2000)), monkeypatch, batch=256, chunk=4096)

    duplicates = [f for f in found if f.rule == "catalog.duplicate-key"]
    assert len(duplicates) == 1
    assert duplicates[0].line == 302
    assert "on line 301 and on line 302" in duplicates[0].message


def test_multiline_record_keeps_line_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    found = run(file_bytes(rows_with_defects(2000)), monkeypatch, batch=256, chunk=33)

    field_count = [f for f in found if f.rule == "catalog.field-count"]
    # Row 1300 is on line 1302, plus one for the record that spans two lines.
    assert [f.line for f in field_count] == [1303]


def test_clean_file_has_no_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [clean_row(index) for index in range(3000)]

    assert run(file_bytes(rows), monkeypatch, batch=256, chunk=1000) == []


def test_forward_reference_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [clean_row(index) for index in range(600)]
    rows[10] = "U00010,U00590,10,,true,,"

    assert run(file_bytes(rows), monkeypatch, batch=64, chunk=512) == []


@pytest.mark.parametrize(("batch", "chunk"), SIZES)
def test_crlf_line_reported_once(monkeypatch: pytest.MonkeyPatch, batch: int, chunk: int) -> None:
    rows = [clean_row(index) for index in range(500)]
    data = file_bytes(rows[:400]) + "\r\n".join([*rows[400:], ""]).encode("utf-8")

    found = run(data, monkeypatch, batch=batch, chunk=chunk)

    assert found == row_by_row(data, monkeypatch)
    assert [(f.rule, f.line) for f in found] == [("catalog.line-ending", 402)]


@pytest.mark.parametrize(("batch", "chunk"), SIZES)
def test_bad_byte_in_late_chunk(monkeypatch: pytest.MonkeyPatch, batch: int, chunk: int) -> None:
    rows = [clean_row(index) for index in range(800)]
    rows[3] = rows[3].replace(",true,", ",maybe,")
    data = file_bytes(rows)
    bad_line = 700
    start = sum(len(line) + 1 for line in data.split(b"\n")[: bad_line - 1])
    data = data[: start + 4] + b"\xff" + data[start + 5 :]

    found = run(data, monkeypatch, batch=batch, chunk=chunk)

    assert found == row_by_row(data, monkeypatch)
    assert [f.rule for f in found] == ["catalog.type", "catalog.encoding"]
    encoding = found[1]
    assert encoding.line == bad_line
    assert f"found byte 0xff at byte offset {start + 4}" in encoding.message


@pytest.mark.parametrize(("batch", "chunk"), SIZES)
def test_broken_quote_after_batches(
    monkeypatch: pytest.MonkeyPatch, batch: int, chunk: int
) -> None:
    rows = [clean_row(index) for index in range(600)]
    rows[2] = rows[2].replace(",true,", ",yes,")
    rows[550] = 'U00550,-,5,,true,,"unterminated'
    data = file_bytes(rows)

    found = run(data, monkeypatch, batch=batch, chunk=chunk)

    assert found == row_by_row(data, monkeypatch)
    assert [f.rule for f in found] == ["catalog.type", "catalog.csv"]
    assert found[1].line == 552


def test_bom_is_stripped_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [clean_row(index) for index in range(300)]
    data = b"\xef\xbb\xbf" + file_bytes(rows)

    assert run(data, monkeypatch, batch=16, chunk=50) == []


@pytest.mark.parametrize("reference", [True, False], ids=["self-reference", "no-reference"])
@pytest.mark.parametrize(("batch", "chunk"), SIZES)
def test_duplicate_after_order_broke(
    monkeypatch: pytest.MonkeyPatch, batch: int, chunk: int, reference: bool
) -> None:
    # The first row sorts after the rows that follow it, so a later batch can be
    # in order in itself and still repeat that first key.
    rows = [clean_row(900), *(clean_row(index) for index in range(100, 1000))]
    data = file_bytes(rows)

    found = run(data, monkeypatch, batch=batch, chunk=chunk, reference=reference)

    assert found == row_by_row(data, monkeypatch, reference)
    duplicates = [f for f in found if f.rule == "catalog.duplicate-key"]
    assert [f.line for f in duplicates] == [803]
    assert "on line 2 and on line 803" in duplicates[0].message
