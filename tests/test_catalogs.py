"""Tests of catalog descriptions, row checks, digests, deltas and imports.

Broken catalogs live under tests/data/catalogs/<defect>/catalogs/<id>/, each a
content repository root with one defect. Import sources are written by the
tests in the encoding under test.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_shared_data

from pipeline.catalogs import (
    PLACEHOLDER,
    CatalogDescription,
    RowChange,
    catalog_digest,
    check_catalog,
    diff_rows,
    import_catalog,
    load_description,
    read_rows,
)
from pipeline.errors import CatalogError, ConfigError, ValidationError
from pipeline.findings import Finding, errors_only
from pipeline.schema import load_schema

DATA = Path(__file__).parent / "data" / "catalogs"
DEMO_CATALOGS = ("kato", "kbe", "knp")


def only_error(findings: list[Finding]) -> Finding:
    errors = errors_only(findings)
    assert len(errors) == 1, "\n".join(map(str, findings))
    return errors[0]


def finding_texts(findings: list[object]) -> str:
    return "\n".join(map(str, findings))


# --- descriptions -------------------------------------------------------------------------


def test_catalog_schema_loads() -> None:
    schema = load_schema("catalog")

    assert schema["additionalProperties"] is False
    assert "effective_date" in schema["required"]


def test_load_description_types_fields() -> None:
    description = load_description(DATA / "valid", "kato")

    assert isinstance(description, CatalogDescription)
    assert description.key == ("id",)
    assert description.column_names == ("id", "parent_id", "code", "name")
    parent = description.column("parent_id")
    assert parent.reference_target == ("kato", "id")
    assert parent.null_value == "0"
    assert description.effective_date == datetime.date(2026, 12, 1)
    assert description.source.document == "tests"


def test_load_description_misspelled_field() -> None:
    with pytest.raises(ValidationError) as caught:
        load_description(DATA / "misspelled-schema-field", "knp")

    finding = caught.value.findings[0]
    assert isinstance(finding, Finding)
    assert finding.file == "catalogs/knp/catalog.json"
    assert finding.json_path == "$.columns[1]"
    assert "'requried' was unexpected" in finding.message


def test_load_description_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"catalogs/knp/catalog.json: catalog description"):
        load_description(tmp_path, "knp")


def test_load_description_rejects_bad_id(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"invalid catalog id '\.\./knp'"):
        load_description(tmp_path, "../knp")


# --- check_catalog: one defect per folder -------------------------------------------------

# (defect folder, catalog id, rule, line, JSON path, texts the message must contain)
DEFECTS = [
    (
        "cp1251-encoded",
        "knp",
        "catalog.encoding",
        2,
        None,
        ["expected UTF-8 text", "found byte 0xc6", "byte offset 25", "--encoding cp1251"],
    ),
    (
        "missing-column",
        "knp",
        "catalog.missing-column",
        1,
        None,
        ["expected column name_ru", "found only code, name_kk"],
    ),
    (
        "duplicate-column",
        "knp",
        "catalog.duplicate-column",
        1,
        None,
        ["expected column name_ru once", "found it 2 times"],
    ),
    (
        "undeclared-column",
        "knp",
        "catalog.undeclared-column",
        1,
        None,
        ["expected only the declared columns code, name_kk, name_ru", "found column 'comment'"],
    ),
    (
        "empty-file",
        "knp",
        "catalog.header",
        1,
        None,
        ["expected a header line", "found an empty file"],
    ),
    (
        "duplicate-key",
        "knp",
        "catalog.duplicate-key",
        6,
        None,
        ["expected a unique key", "found code=012 on line 3 and on line 6"],
    ),
    (
        "leading-zero-code",
        "knp",
        "catalog.pattern",
        2,
        None,
        ["row code=10", "column code", "expected a value matching ^[0-9]{3}$", "found '10'"],
    ),
    (
        "required-empty",
        "knp",
        "catalog.required",
        4,
        None,
        ["row code=311", "expected a value in column name_ru", "found ''"],
    ),
    (
        "bad-date",
        "rates",
        "catalog.type",
        3,
        None,
        ["row code=02", "column valid_from", "expected a date YYYY-MM-DD", "found '2026-02-30'"],
    ),
    (
        "decimal-comma",
        "rates",
        "catalog.type",
        2,
        None,
        ["column rate", "expected a decimal number with a dot", "found '12,5'"],
    ),
    (
        "boolean-word",
        "rates",
        "catalog.type",
        4,
        None,
        ["column active", "expected true or false", "found 'yes'"],
    ),
    (
        "integer-leading-zero",
        "rates",
        "catalog.type",
        3,
        None,
        ["column position", "expected an integer", "found '007'", "declare the column as text"],
    ),
    (
        "dangling-parent",
        "kato",
        "catalog.reference",
        6,
        None,
        ["row id=5", "column parent_id", "exists in kato.id", "found '9'"],
    ),
    (
        "dangling-reference",
        "knp_kbe",
        "catalog.reference",
        5,
        None,
        ["row knp=999, kbe=11", "column knp", "exists in knp.code", "found '999'"],
    ),
    (
        "missing-referenced-catalog",
        "knp_kbe",
        "catalog.reference",
        None,
        "$.columns[1].references",
        ["column kbe", "expected kbe.code to be a column of a catalog", "found no catalog kbe"],
    ),
    (
        "blank-trailing-row",
        "knp",
        "catalog.blank-line",
        6,
        None,
        ["expected a row, found a blank line"],
    ),
    (
        "blank-line",
        "knp",
        "catalog.blank-line",
        3,
        None,
        ["expected a row, found a blank line"],
    ),
    (
        "wrong-field-count",
        "knp",
        "catalog.field-count",
        3,
        None,
        ["expected 3 fields (code, name_kk, name_ru)", "found 4"],
    ),
    (
        "crlf-line-endings",
        "knp",
        "catalog.line-ending",
        1,
        None,
        ["expected LF line endings, found CR LF"],
    ),
    (
        "unterminated-quote",
        "knp",
        "catalog.csv",
        3,
        None,
        ["invalid CSV", "ends on line 5", "unexpected end of data"],
    ),
    (
        "misspelled-schema-field",
        "knp",
        "schema",
        None,
        "$.columns[1]",
        ["'requried' was unexpected"],
    ),
    (
        "id-mismatch",
        "knp",
        "catalog.description",
        None,
        "$.id",
        ["expected 'knp' (the folder name)", "found 'kpn'"],
    ),
    (
        "undeclared-key-column",
        "knp",
        "catalog.description",
        None,
        "$.key[0]",
        ["expected a declared column", "found 'kod'"],
    ),
    (
        "invalid-json",
        "knp",
        "json",
        50,
        None,
        ["invalid JSON"],
    ),
    (
        "missing-rows-file",
        "knp",
        "catalog.missing-file",
        None,
        None,
        ["expected the rows of catalog knp", "found no file", "inv catalog.import --id knp"],
    ),
]


@pytest.mark.parametrize(
    ("defect", "catalog_id", "rule", "line", "json_path", "texts"),
    DEFECTS,
    ids=[case[0] for case in DEFECTS],
)
def test_check_catalog_defect(
    defect: str,
    catalog_id: str,
    rule: str,
    line: int | None,
    json_path: str | None,
    texts: list[str],
) -> None:
    finding = only_error(check_catalog(DATA / defect, catalog_id))

    assert finding.rule == rule
    expected_file = "catalog.json" if json_path or rule == "json" else "rows.csv"
    assert finding.file == f"catalogs/{catalog_id}/{expected_file}"
    assert finding.line == line
    assert finding.json_path == json_path
    for text in texts:
        assert text in finding.message


def test_check_catalog_unsorted_rows_warns() -> None:
    findings = check_catalog(DATA / "unsorted-rows", "knp")

    assert errors_only(findings) == []
    assert len(findings) == 1
    assert findings[0].severity == "warning"
    assert findings[0].line == 3
    assert "found code=010 after code=311" in findings[0].message


@pytest.mark.parametrize("catalog_id", ["kato", "kbe", "knp", "knp_kbe", "rates"])
def test_check_catalog_valid(catalog_id: str) -> None:
    assert check_catalog(DATA / "valid", catalog_id) == []


def test_check_catalog_accepts_bom() -> None:
    assert (DATA / "utf8-bom-accepted/catalogs/knp/rows.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    assert check_catalog(DATA / "utf8-bom-accepted", "knp") == []


def test_check_catalog_caps_repeated_findings(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp")
    lines = ["code,name_kk,name_ru"] + [f"{n},Атауы,Название" for n in range(1000, 1080)]
    write_rows(root, "knp", lines)

    findings = check_catalog(root, "knp")

    pattern_findings = [f for f in findings if f.rule == "catalog.pattern"]
    assert len(pattern_findings) == 51
    assert pattern_findings[-1].message == "30 more findings of rule catalog.pattern not listed"


def test_check_catalog_forward_self_reference(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "kato")
    # Sorted as text, id 10 comes before its parent 9.
    write_rows(
        root,
        "kato",
        [
            "id,parent_id,code,name",
            "10,9,111010000,г.Кокшетау",
            "9,0,110000000,Акмолинская область",
        ],
    )

    assert check_catalog(root, "kato") == []


# --- demo catalogs --------------------------------------------------------------------------


@pytest.mark.parametrize("catalog_id", DEMO_CATALOGS)
def test_demo_catalog_passes(catalog_id: str) -> None:
    assert check_catalog(REPO_ROOT, catalog_id) == []


@pytest.mark.parametrize("catalog_id", DEMO_CATALOGS)
def test_demo_catalog_titles_bilingual(catalog_id: str) -> None:
    description = load_description(REPO_ROOT, catalog_id)

    texts = [description.title, description.description] + [c.title for c in description.columns]
    for text in texts:
        assert text.kk.strip()
        assert text.ru.strip()
        assert PLACEHOLDER not in text.kk + text.ru
    assert description.title.kk != description.title.ru


def test_demo_knp_keeps_leading_zeros() -> None:
    codes = [row["code"] for row in read_rows(REPO_ROOT, "knp")]

    assert "010" in codes
    assert "019" in codes
    assert codes == sorted(codes)


def test_demo_kato_hierarchy() -> None:
    rows = list(read_rows(REPO_ROOT, "kato"))
    roots = [row for row in rows if row["parent_id"] == "0"]
    ids = {row["id"] for row in rows}

    assert len(roots) == 20
    assert len(rows) > len(roots)
    assert all(len(row["code"]) == 9 for row in rows)
    assert all(row["parent_id"] in ids for row in rows if row not in roots)


# --- read_rows and catalog_digest -----------------------------------------------------------


def test_read_rows_values_stay_text() -> None:
    rows = list(read_rows(DATA / "utf8-bom-accepted", "knp"))

    assert list(rows[0]) == ["code", "name_kk", "name_ru"]
    assert rows[0]["code"] == "010"
    assert rows[1]["name_kk"] == "Әлеуметтік аударымдар"


def test_read_rows_reports_bad_byte() -> None:
    with pytest.raises(CatalogError) as caught:
        list(read_rows(DATA / "cp1251-encoded", "knp"))

    message = str(caught.value)
    assert message.startswith("catalogs/knp/rows.csv:2: ")
    assert "found byte 0xc6 at byte offset 25" in message


def test_read_rows_wrong_field_count() -> None:
    with pytest.raises(CatalogError, match=r"rows.csv:3: expected 3 fields, found 4"):
        list(read_rows(DATA / "wrong-field-count", "knp"))


def test_read_rows_streams(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp")
    path = root / "catalogs/knp/rows.csv"
    path.write_bytes(path.read_bytes() + b"999,\xff,broken\n")

    rows = read_rows(root, "knp")
    first = next(rows)

    assert first["code"] == "010"
    with pytest.raises(CatalogError, match="found byte 0xff"):
        list(rows)


def test_read_rows_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="catalog rows not found"):
        list(read_rows(tmp_path, "knp"))


def test_catalog_digest_counts_rows() -> None:
    path = DATA / "valid/catalogs/knp_kbe/rows.csv"

    count, digest = catalog_digest(DATA / "valid", "knp_kbe")

    assert count == 3
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_catalog_digest_counts_quoted_line_breaks(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp")
    write_rows(root, "knp", ["code,name_kk,name_ru", '010,"екі\nжол",две строки'])

    assert catalog_digest(root, "knp")[0] == 1
    assert check_catalog(root, "knp") == []


# --- diff_rows ------------------------------------------------------------------------------


def test_diff_rows_sorts_changes() -> None:
    old = [
        {"code": "911", "name": "Налоги"},
        {"code": "010", "name": "Взносы"},
        {"code": "012", "name": "Отчисления"},
    ]
    new = [
        {"code": "311", "name": "Зарплата"},
        {"code": "010", "name": "Пенсионные взносы"},
        {"code": "012", "name": "Отчисления"},
        {"code": "019", "name": "Прочее"},
    ]

    delta = diff_rows(old, new, ["code"], catalog_id="knp")

    assert delta.catalog_id == "knp"
    assert delta.key == ("code",)
    assert [c.key for c in delta.added] == [("019",), ("311",)]
    assert delta.changed == [
        RowChange(("010",), {"code": "010", "name": "Взносы"}, new[1]),
    ]
    assert delta.changed[0].changed_columns() == ["name"]
    assert [c.key for c in delta.removed] == [("911",)]
    assert delta.removed[0].new is None
    assert delta.summary() == "2 added, 1 changed, 1 removed"
    assert not delta.is_empty


def test_diff_rows_compound_key() -> None:
    old = [{"knp": "010", "kbe": "19"}, {"knp": "010", "kbe": "11"}]
    new = [{"knp": "010", "kbe": "11"}]

    delta = diff_rows(old, new, ("knp", "kbe"))

    assert [c.key for c in delta.removed] == [("010", "19")]
    assert delta.added == []


def test_diff_rows_identical_is_empty() -> None:
    rows = [{"code": "010"}]

    assert diff_rows(rows, list(rows), ["code"]).is_empty


def test_diff_rows_rejects_duplicate_key() -> None:
    with pytest.raises(CatalogError, match=r"new rows: expected unique keys, found \('010',\)"):
        diff_rows([], [{"code": "010"}, {"code": "010"}], ["code"])


def test_diff_rows_rejects_missing_key_column() -> None:
    with pytest.raises(CatalogError, match="old rows: expected key column 'code'"):
        diff_rows([{"kod": "010"}], [], ["code"])


# --- import_catalog -----------------------------------------------------------------------

KNP_SOURCE = [
    ["code", "name_kk", "name_ru"],
    ["911", "Салықтар", "Налоги"],
    ["010", "Міндетті зейнетақы жарналары", "Обязательные пенсионные взносы"],
    ["012", "Әлеуметтік аударымдар", "Социальные отчисления"],
]


def write_source(path: Path, rows: list[list[str]], encoding: str, delimiter: str = ";") -> Path:
    """Write a source file the way an official export looks: CR LF, any delimiter."""
    lines = [delimiter.join(row) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def write_rows(root: Path, catalog_id: str, lines: list[str]) -> None:
    (root / "catalogs" / catalog_id / "rows.csv").write_text("\n".join(lines) + "\n")


def copy_catalog(tmp_path: Path, defect: str, catalog_id: str, with_rows: bool = True) -> Path:
    root = tmp_path / "repo"
    folder = root / "catalogs" / catalog_id
    folder.mkdir(parents=True, exist_ok=True)
    source = DATA / defect / "catalogs" / catalog_id
    names = ["catalog.json", "rows.csv"] if with_rows else ["catalog.json"]
    for name in names:
        (folder / name).write_bytes((source / name).read_bytes())
    return root


def folder_listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_import_creates_description(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    source = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8-sig")

    delta = import_catalog(root, "knp", source, delimiter=";")

    description = load_description(root, "knp")
    assert description.key == ("code",)
    assert [c.type for c in description.columns] == ["text", "text", "text"]
    assert description.column("code").required
    assert description.title.kk.startswith(PLACEHOLDER)
    assert description.title.ru.startswith(PLACEHOLDER)
    assert description.source.document == "knp.csv"
    assert delta.summary() == "3 added, 0 changed, 0 removed"
    rows_csv = (root / "catalogs/knp/rows.csv").read_bytes()
    assert rows_csv.startswith(b"code,name_kk,name_ru\n010,")
    assert b"\r" not in rows_csv
    assert check_catalog(root, "knp") == []
    assert folder_listing(root / "catalogs") == [
        "knp",
        "knp/catalog.json",
        "knp/rows.csv",
    ]


def test_import_key_option(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    source = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8")

    import_catalog(root, "knp", source, delimiter=";", key="name_ru")

    assert load_description(root, "knp").key == ("name_ru",)
    assert [r["name_ru"] for r in read_rows(root, "knp")] == [
        "Налоги",
        "Обязательные пенсионные взносы",
        "Социальные отчисления",
    ]


def test_import_sorts_numeric_keys_as_text(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    rows = [["id", "name"], ["9", "девять"], ["10", "десять"], ["100", "сто"]]
    source = write_source(tmp_path / "ids.csv", rows, "utf-8", delimiter=",")

    import_catalog(root, "ids", source)

    assert [r["id"] for r in read_rows(root, "ids")] == ["10", "100", "9"]


def test_import_cp1251_source(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp", with_rows=False)
    rows = [["code", "name_kk", "name_ru"], ["311", "Жалпы", "Выплата заработной платы"]]
    source = write_source(tmp_path / "knp-cp1251.csv", rows, "cp1251")

    delta = import_catalog(root, "knp", source, delimiter=";", encoding="cp1251")

    assert [c.new for c in delta.added] == [
        {"code": "311", "name_kk": "Жалпы", "name_ru": "Выплата заработной платы"}
    ]
    text = (root / "catalogs/knp/rows.csv").read_text(encoding="utf-8")
    assert "Выплата заработной платы" in text


def test_import_kz1048_keeps_kazakh_letters(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp", with_rows=False)
    kazakh = "Әлеуметтік аударымдар: Қазақстан, Ғ Ң Ө Ұ Ү Һ І"
    rows = [["code", "name_kk", "name_ru"], ["012", kazakh, "Социальные отчисления"]]
    source = write_source(tmp_path / "knp-kz1048.csv", rows, "kz1048")

    import_catalog(root, "knp", source, delimiter=";", encoding="kz1048")

    assert next(read_rows(root, "knp"))["name_kk"] == kazakh


def test_import_kz1048_read_as_utf8_fails(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp", with_rows=False)
    rows = [["code", "name_kk", "name_ru"], ["012", "Қазақстан", "Казахстан"]]
    source = write_source(tmp_path / "knp-kz1048-read-as-utf8.csv", rows, "kz1048")

    with pytest.raises(ValidationError) as caught:
        import_catalog(root, "knp", source, delimiter=";")

    finding = only_error([f for f in caught.value.findings if isinstance(f, Finding)])
    assert finding.rule == "catalog.encoding"
    assert finding.file == str(source)
    assert finding.line == 2
    # The header line takes 22 bytes with its CR LF, then "012;" 4 more before "Қ" (0x8d).
    assert "expected UTF-8 text, found byte 0x8d at byte offset 26" in finding.message
    assert not (root / "catalogs/knp/rows.csv").exists()


def test_import_summary_counts(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first = write_source(tmp_path / "knp-2026-11.csv", KNP_SOURCE, "utf-8")
    import_catalog(root, "knp", first, delimiter=";")
    second_rows = [
        KNP_SOURCE[0],
        ["010", "Міндетті зейнетақы жарналары", "Обязательные пенсионные взносы (ОПВ)"],
        ["012", "Әлеуметтік аударымдар", "Социальные отчисления"],
        ["311", "Жалақы төлеу", "Выплата заработной платы"],
        ["019", "Басқа аударымдар", "Прочие переводы"],
    ]
    second = write_source(tmp_path / "knp-2026-12.csv", second_rows, "utf-8")

    delta = import_catalog(root, "knp", second, delimiter=";")

    assert [c.key for c in delta.added] == [("019",), ("311",)]
    assert [c.key for c in delta.changed] == [("010",)]
    assert [c.key for c in delta.removed] == [("911",)]
    assert delta.summary() == "2 added, 1 changed, 1 removed"
    assert [r["code"] for r in read_rows(root, "knp")] == ["010", "012", "019", "311"]


def test_import_again_is_empty_delta(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    source = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8")
    import_catalog(root, "knp", source, delimiter=";")
    rows_before = (root / "catalogs/knp/rows.csv").read_bytes()
    description_before = (root / "catalogs/knp/catalog.json").read_bytes()

    delta = import_catalog(root, "knp", source, delimiter=";")

    assert delta.is_empty
    assert (root / "catalogs/knp/rows.csv").read_bytes() == rows_before
    assert (root / "catalogs/knp/catalog.json").read_bytes() == description_before


def test_import_failure_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    good = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8")
    import_catalog(root, "knp", good, delimiter=";")
    before = {p: p.read_bytes() for p in (root / "catalogs/knp").iterdir()}
    rows = [*KNP_SOURCE, ["010", "Қайталау", "Повтор"], ["10", "Нөлсіз", "Без нуля"]]
    broken = write_source(tmp_path / "knp-duplicate-key.csv", rows, "utf-8")

    with pytest.raises(ValidationError, match="nothing was written") as caught:
        import_catalog(root, "knp", broken, delimiter=";")

    findings = [f for f in caught.value.findings if isinstance(f, Finding)]
    assert [f.rule for f in findings] == ["catalog.duplicate-key"]
    assert findings[0].file == str(broken)
    assert "found code=010 on line 3 and on line 5" in findings[0].message
    after = {p: p.read_bytes() for p in (root / "catalogs/knp").iterdir()}
    assert after == before


def test_import_new_catalog_failure_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    rows = [*KNP_SOURCE, ["012"]]
    broken = write_source(tmp_path / "knp-wrong-field-count.csv", rows, "utf-8")

    with pytest.raises(ValidationError) as caught:
        import_catalog(root, "knp", broken, delimiter=";")

    finding = only_error([f for f in caught.value.findings if isinstance(f, Finding)])
    assert finding.rule == "catalog.field-count"
    assert finding.line == 5
    assert not (root / "catalogs").exists()


def test_import_checks_existing_columns(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp", with_rows=False)
    rows = [["code", "title_kk", "name_ru"], ["010", "Жарналар", "Взносы"]]
    source = write_source(tmp_path / "knp-renamed-column.csv", rows, "utf-8")

    with pytest.raises(ValidationError) as caught:
        import_catalog(root, "knp", source, delimiter=";")

    messages = finding_texts(caught.value.findings)
    assert "expected column name_kk, found only code, title_kk, name_ru" in messages
    assert "found column 'title_kk'" in messages
    assert not (root / "catalogs/knp/rows.csv").exists()


def test_import_columns_map(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp", with_rows=False)
    rows = [["КНП", "title_kk", "name_ru"], ["010", "Жарналар", "Взносы"]]
    source = write_source(tmp_path / "knp-official-header.csv", rows, "utf-8")

    import_catalog(
        root, "knp", source, delimiter=";", columns_map={"КНП": "code", "title_kk": "name_kk"}
    )

    assert list(read_rows(root, "knp")) == [
        {"code": "010", "name_kk": "Жарналар", "name_ru": "Взносы"}
    ]


def test_import_columns_map_unknown_name(tmp_path: Path) -> None:
    source = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8")

    with pytest.raises(ConfigError, match="columns_map renames kod, but the header"):
        import_catalog(tmp_path / "repo", "knp", source, delimiter=";", columns_map={"kod": "x"})


def test_import_header_not_column_names(tmp_path: Path) -> None:
    rows = [["Код", "Наименование"], ["010", "Взносы"]]
    source = write_source(tmp_path / "knp-cyrillic-header.csv", rows, "utf-8")

    with pytest.raises(ValidationError, match="rename the columns with a columns map") as caught:
        import_catalog(tmp_path / "repo", "knp", source, delimiter=";")

    paths = [f.json_path for f in caught.value.findings if isinstance(f, Finding)]
    assert "$.columns[0].name" in paths
    assert not (tmp_path / "repo").exists()


def test_import_key_conflicts_with_description(tmp_path: Path) -> None:
    root = copy_catalog(tmp_path, "valid", "knp", with_rows=False)
    source = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8")

    with pytest.raises(ConfigError, match="catalog knp has key code, but the import requests"):
        import_catalog(root, "knp", source, delimiter=";", key="name_ru")


def test_import_key_not_in_header(tmp_path: Path) -> None:
    source = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8")

    with pytest.raises(ConfigError, match="key column kod is not in the header"):
        import_catalog(tmp_path / "repo", "knp", source, delimiter=";", key="kod")


def test_import_checks_references(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for catalog_id in ("knp", "kbe"):
        copy_catalog(tmp_path, "valid", catalog_id)
    copy_catalog(tmp_path, "valid", "knp_kbe", with_rows=False)
    rows = [["knp", "kbe"], ["010", "19"], ["999", "19"]]
    source = write_source(tmp_path / "pairs-dangling-knp.csv", rows, "utf-8")

    with pytest.raises(ValidationError) as caught:
        import_catalog(root, "knp_kbe", source, delimiter=";")

    finding = only_error([f for f in caught.value.findings if isinstance(f, Finding)])
    assert finding.rule == "catalog.reference"
    assert finding.line == 3
    assert "found '999', which no row of catalog knp has" in finding.message


def test_import_compound_key(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for catalog_id in ("knp", "kbe"):
        copy_catalog(tmp_path, "valid", catalog_id)
    copy_catalog(tmp_path, "valid", "knp_kbe", with_rows=False)
    rows = [["knp", "kbe"], ["911", "11"], ["010", "19"], ["010", "11"]]
    source = write_source(tmp_path / "pairs.csv", rows, "utf-8")

    delta = import_catalog(root, "knp_kbe", source, delimiter=";")

    assert [c.key for c in delta.added] == [("010", "11"), ("010", "19"), ("911", "11")]
    assert check_catalog(root, "knp_kbe") == []


@pytest.mark.parametrize(
    ("encoding", "delimiter", "message"),
    [
        ("no-such-codec", ";", "unknown encoding 'no-such-codec'"),
        ("utf-16", ";", "encoding 'utf-16' is not ASCII-compatible"),
        ("utf-8", ";;", "expected a one-character delimiter"),
    ],
)
def test_import_rejects_options(
    tmp_path: Path, encoding: str, delimiter: str, message: str
) -> None:
    source = write_source(tmp_path / "knp.csv", KNP_SOURCE, "utf-8")

    with pytest.raises(ConfigError, match=message):
        import_catalog(tmp_path / "repo", "knp", source, delimiter=delimiter, encoding=encoding)


def test_import_missing_source(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"catalog source .*absent\.csv not found"):
        import_catalog(tmp_path, "knp", tmp_path / "absent.csv")


def test_import_quoted_values_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    rows = [["code", "name"], ["001", 'Застава " Кокжота"'], ["002", "Тараз, г.А."]]
    source = write_source(tmp_path / "quotes.csv", rows, "utf-8")

    import_catalog(root, "posts", source, delimiter=";")

    with (root / "catalogs/posts/rows.csv").open(newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle))[1:] == [row for row in rows[1:]]
    assert [r["name"] for r in read_rows(root, "posts")] == ['Застава " Кокжота"', "Тараз, г.А."]


# --- the real KATO file ---------------------------------------------------------------------


def kato_with_parent_reference(root: Path) -> None:
    """Declare parent_id as a reference to kato.id, with 0 marking a root row."""
    path = root / "catalogs/kato/catalog.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    parent = next(c for c in document["columns"] if c["name"] == "parent_id")
    parent["references"] = "kato.id"
    parent["null_value"] = "0"
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


@pytest.mark.realdata
def test_real_kato_imports_and_checks(tmp_path: Path) -> None:
    source = require_shared_data("catalogs/kato_2022_ru.csv")
    root = tmp_path / "repo"

    delta = import_catalog(root, "kato", source, key="id", delimiter=";")
    kato_with_parent_reference(root)

    assert len(delta.added) == 16264
    assert check_catalog(root, "kato") == []
    count, _ = catalog_digest(root, "kato")
    assert count == 16264
    rows = {row["id"]: row for row in read_rows(root, "kato")}
    assert rows["1"] == {"id": "1", "parent_id": "0", "code": "100000000", "name": "область Абай"}


@pytest.mark.realdata
def test_real_kato_dangling_parent(tmp_path: Path) -> None:
    source = require_shared_data("catalogs/kato_2022_ru.csv")
    root = tmp_path / "repo"
    import_catalog(root, "kato", source, key="id", delimiter=";")
    kato_with_parent_reference(root)
    rows = list(read_rows(root, "kato"))
    parents = {row["parent_id"] for row in rows}
    leaf = next(row for row in reversed(rows) if row["id"] not in parents)
    leaf["parent_id"] = "999999"
    with (root / "catalogs/kato/rows.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(leaf), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    finding = only_error(check_catalog(root, "kato"))

    assert finding.rule == "catalog.reference"
    assert finding.line == rows.index(leaf) + 2
    assert f"row id={leaf['id']}: column parent_id" in finding.message
    assert "found '999999'" in finding.message


@pytest.mark.realdata
def test_real_kato_rename_and_remove(tmp_path: Path) -> None:
    source = require_shared_data("catalogs/kato_2022_ru.csv")
    root = tmp_path / "repo"
    import_catalog(root, "kato", source, key="id", delimiter=";")
    kato_with_parent_reference(root)

    with source.open(encoding="utf-8-sig", newline="") as handle:
        table = list(csv.reader(handle, delimiter=";"))
    parents = {row[1] for row in table[1:]}
    leaves = [row for row in table[1:] if row[0] not in parents and row[3].startswith("с.")]
    renamed, removed = leaves[0], leaves[1]
    modified = []
    for row in table:
        if row is removed:
            continue
        if row is renamed:
            row = [*row[:3], row[3] + " (переименовано)"]
        modified.append(row)
    with (tmp_path / "kato-modified.csv").open("w", encoding="utf-8-sig", newline="") as out:
        csv.writer(out, delimiter=";", lineterminator="\n").writerows(modified)

    delta = import_catalog(root, "kato", tmp_path / "kato-modified.csv", delimiter=";")

    assert delta.added == []
    assert [c.key for c in delta.changed] == [(renamed[0],)]
    assert delta.changed[0].changed_columns() == ["name"]
    assert delta.changed[0].new is not None
    assert delta.changed[0].new["name"].endswith("(переименовано)")
    assert [c.key for c in delta.removed] == [(removed[0],)]
    assert check_catalog(root, "kato") == []


def test_description_read_again_after_an_edit(tmp_path: Path) -> None:
    first = load_description(REPO_ROOT, "knp")
    root = tmp_path / "content"
    shutil.copytree(REPO_ROOT / "catalogs" / "knp", root / "catalogs" / "knp")
    path = root / "catalogs" / "knp" / "catalog.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["title"]["ru"] = "Изменённое название"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")

    again = load_description(root, "knp")

    assert first.title.ru != "Изменённое название"
    assert again.title.ru == "Изменённое название"
