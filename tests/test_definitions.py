"""Schemas and checks of fix, report, form and treasury format definitions.

Every folder under tests/data/definitions/ is one item named for its defect.
A test copies it into a content repository made in tmp_path, under the folder
of the kind its definition file belongs to.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from pipeline.content import DEFINITION_FILES, KIND_FOLDERS, Kind, list_items
from pipeline.definitions import (
    check_definition,
    child_path,
    install_path_problem,
    load_definition,
)
from pipeline.errors import ConfigError, ValidationError
from pipeline.findings import Finding
from pipeline.schema import check_schema, load_schema, validate_document

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "definitions"
SCHEMA_NAMES = ("fix", "report", "form", "treasury")


def install_item(root: Path, defect: str) -> Kind:
    """Copy the broken item `defect` into the content repository `root`; return its kind."""
    source = DATA / defect
    kind = next(k for k, name in DEFINITION_FILES.items() if (source / name).is_file())
    shutil.copytree(source, root / KIND_FOLDERS[kind] / defect)
    return kind


def check_defect(tmp_path: Path, defect: str) -> list[Finding]:
    kind = install_item(tmp_path, defect)
    return check_definition(tmp_path, kind, defect)


def only(findings: list[Finding], rule: str) -> Finding:
    matching = [f for f in findings if f.rule == rule]
    assert len(matching) == 1, [str(f) for f in findings]
    return matching[0]


# Each broken item: its defect, the rule and JSON path of the expected
# finding, and words its message must contain.
DEFECTS: list[tuple[str, str, str | None, list[str]]] = [
    ("missing-kk-title", "schema", "$.title", ["missing required field 'kk'"]),
    ("empty-ru-description", "text.missing", "$.description.ru", ["ru text is empty"]),
    (
        "code-mismatch",
        "definition.id-mismatch",
        "$.code",
        ["expected 'code-mismatch'", "found 'knp-payments-monthly'"],
    ),
    (
        "unsafe-install-path",
        "fix.unsafe-install-path",
        "$.files[0].install",
        ["'../../Windows/System32/платёжное_поручение.xml'", "'..' part"],
    ),
    (
        "absolute-install-path",
        "fix.unsafe-install-path",
        "$.files[0].install",
        ["'C:/Parus/Reports/платёжное_поручение.xml'", "absolute"],
    ),
    (
        "unlisted-payload",
        "fix.unlisted-payload",
        "$.files",
        ["'payload/templates/старый_шаблон.xml' is not listed"],
    ),
    (
        "missing-payload",
        "fix.payload-missing",
        "$.files[0].source",
        ["'payload/templates/payment_order.xml' not found"],
    ),
    (
        "duplicate-install-path",
        "fix.duplicate-install-path",
        "$.files[1].install",
        ["'CONFIG/КАЗНАЧЕЙСТВО/STATEMENT_IMPORT.INI'", "already used by $.files[0]"],
    ),
    ("bad-severity", "schema", "$.severity", ["found 'blocker'", "'critical'"]),
    ("unknown-property", "schema", "$", ["'titel' was unexpected"]),
    (
        "latin-i-in-kazakh",
        "text.mixed-script",
        "$.title.kk",
        ["Latin i in the Kazakh word 'түзетiлдi'", "expected 'түзетілді'"],
    ),
    (
        "query-undeclared-parameter",
        "query.undeclared-parameter",
        "$.query",
        [":org_id is not a declared parameter", "'organization_id'"],
    ),
    (
        "query-unused-parameter",
        "query.unused-parameter",
        "$.parameters[1].name",
        ["'copies' is declared", "no :copies"],
    ),
    ("query-not-select", "query.not-select", "$.query", ["expected a SELECT, found DELETE"]),
    (
        "query-write-in-cte",
        "query.not-select",
        "$.query",
        ["expected a read-only SELECT, found DELETE inside the query"],
    ),
    (
        "query-two-statements",
        "query.statements",
        "$.query",
        ["expected one SQL statement, found 2"],
    ),
    (
        "query-syntax-error",
        "query.syntax",
        "$.query",
        ["query is not valid SQL", "query line 1, column 8", "'SELEC p.'"],
    ),
    (
        "layout-column-not-in-query",
        "query.layout-column",
        "$.layout.columns[2].name",
        ["'documents' is not an output of the query", "'document_count'"],
    ),
    (
        "missing-caption",
        "layout.missing-caption",
        "$.layout.columns[7].name",
        ["column 'kbe' has no caption"],
    ),
    (
        "bad-effective-date",
        "schema",
        "$.effective_date",
        ["expected a valid date, found '2026-02-30'"],
    ),
    (
        "mojibake-title",
        "text.mojibake",
        "$.title.kk",
        [
            "'Ќазынашылыќтыѕ', 'форматындаєы', 'їзінді-кґшірмесін' is KZ-1048 text read",
            "expected 'Қазынашылықтың MT940 форматындағы үзінді-көшірмесін импорттау'",
            "s.encode('cp1251').decode('kz1048')",
        ],
    ),
    (
        "missing-sample",
        "treasury.sample-missing",
        "$.samples[0].file",
        ["'samples/statement-2026-11-30.sta' not found"],
    ),
    (
        "sample-wrong-encoding",
        "treasury.sample-encoding",
        "$.samples[0].file",
        ["not valid utf-8", "byte 0x8d at offset 150"],
    ),
    ("bad-version", "schema", "$.version", ["found '1.1'"]),
]


@pytest.mark.parametrize(
    ("defect", "rule", "json_path", "words"), DEFECTS, ids=[d[0] for d in DEFECTS]
)
def test_broken_definition(
    tmp_path: Path, defect: str, rule: str, json_path: str | None, words: list[str]
) -> None:
    kind = install_item(tmp_path, defect)
    findings = check_definition(tmp_path, kind, defect)
    finding = only(findings, rule)
    assert finding.severity == "error"
    assert finding.file == f"{KIND_FOLDERS[kind]}/{defect}/{DEFINITION_FILES[kind]}"
    assert finding.json_path == json_path
    for word in words:
        assert word in finding.message


def test_every_defect_folder_is_tested() -> None:
    folders = {p.name for p in DATA.iterdir() if p.is_dir()}
    tested = {d[0] for d in DEFECTS} | {
        "trailing-comma",
        "expected-invalid-json",
        "expected-unknown-field",
    }
    assert folders == tested


def test_trailing_comma_names_line(tmp_path: Path) -> None:
    findings = check_defect(tmp_path, "trailing-comma")
    assert len(findings) == 1
    assert findings[0].rule == "json"
    assert findings[0].file == "packages/reports/trailing-comma/report.json"
    # The comma ends line 5; the parser stops at the closing brace on line 6.
    assert findings[0].line == 6
    assert "invalid JSON" in findings[0].message


def test_expected_records_invalid_json(tmp_path: Path) -> None:
    findings = check_defect(tmp_path, "expected-invalid-json")
    finding = only(findings, "json")
    assert finding.file == (
        "packages/treasury/expected-invalid-json/samples/statement-2026-12-01.expected.json"
    )
    assert finding.line == 6


def test_expected_records_unknown_field(tmp_path: Path) -> None:
    findings = check_defect(tmp_path, "expected-unknown-field")
    finding = only(findings, "treasury.expected-field")
    assert finding.file.endswith("samples/statement-2026-12-01.expected.json")
    assert finding.json_path == "$[0].beneficiary_code"
    assert "'beneficiary_code' is not a canonical field" in finding.message
    assert "'kbe'" in finding.message


def test_missing_kk_title_reported_once(tmp_path: Path) -> None:
    findings = check_defect(tmp_path, "missing-kk-title")
    assert [f.rule for f in findings] == ["schema"]


def test_missing_payload_also_unlisted(tmp_path: Path) -> None:
    findings = check_defect(tmp_path, "missing-payload")
    unlisted = only(findings, "fix.unlisted-payload")
    assert "'payload/templates/платёжное_поручение.xml'" in unlisted.message


def test_unlisted_sample_warns(tmp_path: Path) -> None:
    findings = check_defect(tmp_path, "missing-sample")
    warning = only(findings, "treasury.unlisted-sample")
    assert warning.severity == "warning"
    assert "'samples/statement-2026-12-01.sta'" in warning.message


def test_payload_symlink_rejected(tmp_path: Path) -> None:
    kind = install_item(tmp_path, "unlisted-payload")
    payload = tmp_path / KIND_FOLDERS[kind] / "unlisted-payload" / "payload" / "templates"
    target = payload / "платёжное_поручение.xml"
    outside = tmp_path / "outside.xml"
    target.replace(outside)
    target.symlink_to(outside)
    findings = check_definition(tmp_path, kind, "unlisted-payload")
    finding = only(findings, "fix.payload-symlink")
    assert finding.json_path == "$.files[0].source"
    assert "symbolic link" in finding.message


def test_missing_definition_file(tmp_path: Path) -> None:
    (tmp_path / "packages/reports/empty").mkdir(parents=True)
    findings = check_definition(tmp_path, Kind.REPORT, "empty")
    assert [f.rule for f in findings] == ["definition.missing"]
    assert findings[0].file == "packages/reports/empty/report.json"


def test_definition_not_utf8(tmp_path: Path) -> None:
    folder = tmp_path / "packages/forms/cp1251-form"
    folder.mkdir(parents=True)
    (folder / "form.json").write_bytes('{"code": "Платёж"}'.encode("cp1251"))
    findings = check_definition(tmp_path, Kind.FORM, "cp1251-form")
    assert [f.rule for f in findings] == ["encoding"]
    assert "expected UTF-8, found byte 0xcf" in findings[0].message


def test_definition_null(tmp_path: Path) -> None:
    folder = tmp_path / "packages/treasury/null-format"
    folder.mkdir(parents=True)
    (folder / "format.json").write_text("null\n", encoding="utf-8")
    with pytest.raises(ValidationError) as raised:
        load_definition(tmp_path, Kind.TREASURY, "null-format")
    assert "expected object, found NoneType" in str(raised.value)


def test_catalog_kind_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a definition kind"):
        check_definition(tmp_path, Kind.CATALOG, "kato")


@pytest.mark.parametrize("item", ["", "..", "a/b", "a\\b"])
def test_item_must_be_folder_name(tmp_path: Path, item: str) -> None:
    with pytest.raises(ConfigError, match="expected a folder name under packages/fixes/"):
        check_definition(tmp_path, Kind.FIX, item)


def test_load_definition_raises_with_findings(tmp_path: Path) -> None:
    kind = install_item(tmp_path, "query-undeclared-parameter")
    with pytest.raises(ValidationError) as raised:
        load_definition(tmp_path, kind, "query-undeclared-parameter")
    message = str(raised.value)
    assert message.startswith("packages/reports/query-undeclared-parameter/report.json:")
    assert "2 error(s)" in message
    rules = {f.rule for f in raised.value.findings if isinstance(f, Finding)}
    assert rules == {"query.undeclared-parameter", "query.unused-parameter"}


def test_load_definition_returns_document(tmp_path: Path) -> None:
    kind = install_item(tmp_path, "bad-effective-date")
    folder = tmp_path / KIND_FOLDERS[kind] / "bad-effective-date"
    document = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    document["effective_date"] = "2026-02-28"
    (folder / "report.json").write_text(json.dumps(document, ensure_ascii=False), "utf-8")
    loaded = load_definition(tmp_path, kind, "bad-effective-date")
    assert loaded["effective_date"] == "2026-02-28"


# Demo content of this repository


def demo_items() -> list[tuple[Kind, str]]:
    kinds = (Kind.FIX, Kind.REPORT, Kind.FORM, Kind.TREASURY)
    return [(kind, item) for kind in kinds for item in list_items(REPO_ROOT, kind)]


def test_demo_content_has_every_kind() -> None:
    assert len(list_items(REPO_ROOT, Kind.FIX)) == 3
    assert len(list_items(REPO_ROOT, Kind.REPORT)) == 1
    assert len(list_items(REPO_ROOT, Kind.FORM)) == 1
    assert len(list_items(REPO_ROOT, Kind.TREASURY)) == 8


@pytest.mark.parametrize(("kind", "item"), demo_items(), ids=lambda v: str(v))
def test_demo_definition_passes(kind: Kind, item: str) -> None:
    findings = check_definition(REPO_ROOT, kind, item)
    assert findings == []


def test_demo_fix_has_cyrillic_file_name() -> None:
    names = [p.name for p in (REPO_ROOT / "packages/fixes").rglob("payload/**/*") if p.is_file()]
    assert any(re.search("[а-яё]", name) for name in names)


def migrated_sample(tmp_path: Path) -> sqlite3.Connection:
    """Apply the repository's SQLite migrations in order to a new database file."""
    folder = REPO_ROOT / "migrations"
    scripts = sorted(p for p in folder.glob("*.sql") if not p.name.endswith(".postgresql.sql"))
    if not scripts:
        pytest.skip("migrations/ holds no SQLite migrations")
    connection = sqlite3.connect(tmp_path / "sample.sqlite")
    for script in scripts:
        connection.executescript(script.read_text(encoding="utf-8"))
    connection.executescript(
        """
        INSERT INTO knp (code, name_ru, name_kk) VALUES ('311', 'Заработная плата', 'Жалақы');
        INSERT INTO organizations (id, bin, name_ru, name_kk)
            VALUES (1, '990140000123', 'ГУ «Отдел финансов»', '«Қаржы бөлімі» ММ');
        INSERT INTO accounts (id, organization_id, iban, currency)
            VALUES (1, 1, 'KZ86125KZT5004100100', 'KZT');
        INSERT INTO payment_documents
            (id, account_id, doc_number, doc_date, amount, knp_code, kbe, purpose)
        VALUES
            (1, 1, 'PP-1482', '2026-11-28', 4500000, '311', '19', 'Жалақы'),
            (2, 1, 'PP-1483', '2026-11-29', 1250, '311', '19', 'Жалақы'),
            (3, 1, 'PP-1490', '2026-12-01', 99, '311', '19', 'Келесі ай');
        """
    )
    return connection


def sample_arguments(document: dict[str, Any]) -> dict[str, object]:
    values = {"integer": 1, "date": "2026-11-01", "decimal": 0, "string": "", "boolean": 0}
    arguments: dict[str, object] = {p["name"]: values[p["type"]] for p in document["parameters"]}
    if "date_to" in arguments:
        arguments["date_to"] = "2026-11-30"
    return arguments


def test_demo_report_runs_on_sqlite(tmp_path: Path) -> None:
    connection = migrated_sample(tmp_path)
    document = load_definition(REPO_ROOT, Kind.REPORT, "knp-payments-monthly")
    cursor = connection.execute(document["query"], sample_arguments(document))
    columns = [d[0] for d in cursor.description]
    assert columns == [*(c["name"] for c in document["layout"]["columns"]), "knp_name_kk"]
    assert cursor.fetchall() == [("311", "Заработная плата", 2, 4501250, "Жалақы")]


def test_demo_form_runs_on_sqlite(tmp_path: Path) -> None:
    connection = migrated_sample(tmp_path)
    document = load_definition(REPO_ROOT, Kind.FORM, "payment-order")
    cursor = connection.execute(document["query"], sample_arguments(document))
    columns = [d[0] for d in cursor.description]
    assert columns == [*(c["name"] for c in document["layout"]["columns"]), "payer_name_kk"]
    row = cursor.fetchone()
    assert row[0] == "PP-1482"
    assert row[2] == "ГУ «Отдел финансов»"
    assert row[-1] == "«Қаржы бөлімі» ММ"


def test_demo_treasury_sample_matches_expected() -> None:
    folder = REPO_ROOT / "packages/treasury/mt940-statement-import"
    document = load_definition(REPO_ROOT, Kind.TREASURY, "mt940-statement-import")
    sample = document["samples"][0]
    text = (folder / sample["file"]).read_bytes().decode(document["encoding"])
    records = json.loads((folder / sample["expected"]).read_text(encoding="utf-8"))
    for record in records:
        assert f"/NAZN/{record['purpose']}" in text
        assert f"{record['doc_number']}//" in text
    assert "Қараша" in text


# Schemas


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_loads(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert "text" in schema["$defs"]


def test_misspelled_keyword_rejected() -> None:
    schema = json.loads((REPO_ROOT / "pipeline/schemas/fix.schema.json").read_text("utf-8"))
    schema["properties"]["component"]["maxLenght"] = 40
    with pytest.raises(ConfigError, match=r"\$\.properties\.component\.maxLenght"):
        check_schema(schema, "fix.schema.json")


def test_form_period_optional() -> None:
    document = load_definition(REPO_ROOT, Kind.FORM, "payment-order")
    assert "period" not in document
    report = load_definition(REPO_ROOT, Kind.REPORT, "knp-payments-monthly")
    del report["period"]
    findings = validate_document(report, "report", "report.json")
    assert [f.message for f in findings] == ["missing required field 'period'"]


@pytest.mark.parametrize(
    ("order", "valid"), [(540, True), ("41-НҚ", True), (0, False), ("", False), (5.5, False)]
)
def test_legal_basis_order(order: object, valid: bool) -> None:
    report = load_definition(REPO_ROOT, Kind.REPORT, "knp-payments-monthly")
    report["legal_basis"]["order"] = order
    findings = validate_document(report, "report", "report.json")
    assert (findings == []) is valid
    if not valid:
        assert findings[0].json_path == "$.legal_basis.order"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["title", "en"], "Title"),
        (["layout", "columns", 0, "colour"], "red"),
        (["parameters", 0, "default"], 1),
        (["legal_basis", "place"], "Астана"),
    ],
)
def test_report_rejects_unknown_properties(path: list[Any], value: object) -> None:
    report = load_definition(REPO_ROOT, Kind.REPORT, "knp-payments-monthly")
    node: Any = report
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    findings = validate_document(report, "report", "report.json")
    assert len(findings) == 1
    assert f"'{path[-1]}' was unexpected" in findings[0].message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("direction", "both"),
        ("document", "invoice"),
        ("syntax", "xml"),
        ("encoding", "cp866"),
        ("effective_date", "2026-13-01"),
    ],
)
def test_treasury_rejects_bad_values(field: str, value: str) -> None:
    document = load_definition(REPO_ROOT, Kind.TREASURY, "mt940-statement-import")
    document[field] = value
    findings = validate_document(document, "treasury", "format.json")
    assert [f.json_path for f in findings] == [f"$.{field}"]
    assert repr(value) in findings[0].message


# Install paths


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("Reports/Templates/платёжное_поручение.xml", None),
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("C:/Parus/x.ini", "absolute"),
        ("c:x.ini", "absolute"),
        ("Config\\x.ini", "backslash"),
        ("Config/../x.ini", "'..' part"),
        ("./x.ini", "'.' part"),
        ("Config//x.ini", "'empty' part"),
        ("Config/", "'empty' part"),
        ("Config/x?.ini", "'?'"),
        ("Config/NUL.txt", "Windows device name"),
        ("Config/com1", "Windows device name"),
        ("Config/x.ini.", "ends with a dot or space"),
        ("Config /x.ini", "ends with a dot or space"),
    ],
)
def test_install_path_problem(path: str, problem: str | None) -> None:
    found = install_path_problem(path)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_child_path_matches_jsonschema() -> None:
    assert child_path("$", "mapping") == "$.mapping"
    assert child_path("$.mapping", ":61:/amount") == "$.mapping[':61:/amount']"
    assert child_path("$.files", 2) == "$.files[2]"
    assert child_path("$", "it's") == "$['it\\'s']"


def test_payload_names_that_clash_on_windows(tmp_path: Path) -> None:
    fix = tmp_path / "packages/fixes/name-clash"
    shutil.copytree(REPO_ROOT / "packages/fixes/payment-order-total-rounding", fix)
    document = json.loads((fix / "fix.json").read_text(encoding="utf-8"))
    document["id"] = "name-clash"
    nfc = "payload/Отчёт.xml"
    nfd = unicodedata.normalize("NFD", nfc)
    for name in (nfc, nfd, "payload/REPORT.xml", "payload/report.xml"):
        (fix / name).write_text("<x/>\n", encoding="utf-8")
    document["files"] = [
        {"source": nfc, "install": "Reports/Отчёт.xml"},
        {"source": nfd, "install": unicodedata.normalize("NFD", "Reports/Отчёт.xml")},
        {"source": "payload/REPORT.xml", "install": "Reports/REPORT.xml"},
        {"source": "payload/report.xml", "install": "Reports/report.xml"},
    ]
    for path in (fix / "payload").rglob("*"):
        if path.is_file() and path.relative_to(fix).as_posix() not in {
            f["source"] for f in document["files"]
        }:
            path.unlink()
    (fix / "fix.json").write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    findings = check_definition(tmp_path, Kind.FIX, "name-clash")
    clashes = [f for f in findings if f.rule == "fix.payload-name-clash"]
    duplicates = [f for f in findings if f.rule == "fix.duplicate-install-path"]
    assert len(clashes) == 2
    assert "'payload/REPORT.xml' and 'payload/report.xml'" in " ".join(f.message for f in clashes)
    assert len(duplicates) == 2


def test_by_language_output_must_exist(tmp_path: Path) -> None:
    folder = tmp_path / "packages/reports/knp-payments-monthly"
    shutil.copytree(REPO_ROOT / "packages/reports/knp-payments-monthly", folder)
    path = folder / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["layout"]["columns"][1]["by_language"] = {"kk": "knp_title_kk"}
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    findings = check_definition(tmp_path, Kind.REPORT, "knp-payments-monthly")
    assert [f.rule for f in findings] == ["query.layout-column"]
    assert findings[0].json_path == "$.layout.columns[1].by_language.kk"
    assert "kk output 'knp_title_kk' of layout column 'knp_name'" in findings[0].message


def report_with_preview(tmp_path: Path, parameters: dict[str, Any], **types: str) -> list[Finding]:
    """Check the demo report with other preview values and parameter types."""
    folder = tmp_path / "packages/reports/knp-payments-monthly"
    shutil.copytree(REPO_ROOT / "packages/reports/knp-payments-monthly", folder)
    path = folder / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["preview"]["parameters"].update(parameters)
    for parameter in document["parameters"]:
        parameter["type"] = types.get(parameter["name"], parameter["type"])
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return check_definition(tmp_path, Kind.REPORT, "knp-payments-monthly")


@pytest.mark.parametrize(
    ("name", "value", "declared", "message"),
    [
        ("organization_id", "abc", "integer", "expected an integer, found the string 'abc'"),
        ("organization_id", True, "integer", "expected an integer, found the boolean True"),
        ("organization_id", 5.5, "integer", "expected an integer, found the number 5.5"),
        (
            "date_from",
            "01.01.2022",
            "date",
            "expected a date as YYYY-MM-DD, such as 2026-12-01, found '01.01.2022'",
        ),
        (
            "date_from",
            "2022-02-30",
            "date",
            "expected a date as YYYY-MM-DD, such as 2026-12-01, found '2022-02-30'",
        ),
        (
            "date_from",
            20220101,
            "date",
            "expected a date as YYYY-MM-DD, such as 2026-12-01, found the number 20220101",
        ),
        ("organization_id", 5, "string", "expected a string, found the number 5"),
        ("organization_id", "yes", "boolean", "expected true or false, found the string 'yes'"),
        (
            "organization_id",
            "12,50",
            "decimal",
            "expected a number or a decimal string such as '1234.56', found the string '12,50'",
        ),
    ],
)
def test_preview_value_of_wrong_type(
    tmp_path: Path, name: str, value: object, declared: str, message: str
) -> None:
    findings = report_with_preview(tmp_path, {name: value}, **{name: declared})
    finding = only(findings, "preview.parameter-type")
    assert finding.file == "packages/reports/knp-payments-monthly/report.json"
    assert finding.json_path == f"$.preview.parameters.{name}"
    assert finding.message == f"preview value for {name!r}, declared {declared}: {message}"


@pytest.mark.parametrize(
    ("value", "declared"),
    [
        (7, "integer"),
        ("2026-12-31", "date"),
        (12.5, "decimal"),
        ("12.50", "decimal"),
        (3, "decimal"),
        ("ТОО", "string"),
        (False, "boolean"),
    ],
)
def test_preview_value_of_declared_type(tmp_path: Path, value: object, declared: str) -> None:
    findings = report_with_preview(tmp_path, {"organization_id": value}, organization_id=declared)
    assert [f for f in findings if f.rule == "preview.parameter-type"] == []


def test_kz1048_mojibake_elsewhere_in_definition(tmp_path: Path) -> None:
    # "Сомасы, теңге" misread as "Сомасы, теѕге" settles that the kk texts
    # were KZ-1048 read as CP1251, so "Їкімет їйі" is no Ukrainian phrase.
    folder = tmp_path / "packages/reports/knp-payments-monthly"
    shutil.copytree(REPO_ROOT / "packages/reports/knp-payments-monthly", folder)
    path = folder / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["captions"]["kk"]["knp_name"] = "Їкімет їйі"
    document["captions"]["kk"]["amount"] = "Сомасы, теѕге"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    findings = check_definition(tmp_path, Kind.REPORT, "knp-payments-monthly")
    mojibake = [f for f in findings if f.rule == "text.mojibake"]
    assert [(f.json_path, f.severity) for f in mojibake] == [
        ("$.captions.kk.knp_name", "error"),
        ("$.captions.kk.amount", "error"),
    ]
    assert mojibake[0].message.startswith(
        "mojibake: 'Їкімет', 'їйі' is KZ-1048 text read as CP1251, as 'теѕге' at"
        " $.captions.kk.amount shows; expected 'Үкімет үйі';"
    )


def report_with_preview_values(tmp_path: Path, values: dict[str, Any]) -> list[Finding]:
    """Check the demo report with exactly these preview values."""
    folder = tmp_path / "packages/reports/knp-payments-monthly"
    shutil.copytree(REPO_ROOT / "packages/reports/knp-payments-monthly", folder)
    path = folder / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["preview"]["parameters"] = values
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return check_definition(tmp_path, Kind.REPORT, "knp-payments-monthly")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"organization_id": 5, "date_from": "2026-12-31", "date_to": "2022-01-01"},
            "preview period reversed: date_from 2026-12-31 is after date_to 2022-01-01;"
            " expected date_from on or before date_to",
        ),
        (
            {"organization_id": 5, "date_from": "2027-01-01"},
            "preview period reversed: date_from 2027-01-01 is after date_to 2026-12-01 (the"
            " effective date, as date_to has no preview value); expected date_from on or"
            " before date_to",
        ),
    ],
    ids=["both-given", "date-to-missing"],
)
def test_preview_period_reversed(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    finding = only(report_with_preview_values(tmp_path, values), "preview.parameter-range")
    assert finding.severity == "error"
    assert finding.json_path == "$.preview.parameters.date_from"
    assert finding.message == message


def test_preview_period_of_one_day_passes(tmp_path: Path) -> None:
    values = {"organization_id": 5, "date_from": "2026-12-01", "date_to": "2026-12-01"}
    assert report_with_preview_values(tmp_path, values) == []


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("date_to", "the effective date 2026-12-01"),
        ("organization_id", "1, the default for integer"),
    ],
)
def test_preview_value_missing_warns(tmp_path: Path, name: str, taken: str) -> None:
    values = {"organization_id": 5, "date_from": "2022-01-01", "date_to": "2026-12-31"}
    del values[name]
    finding = only(report_with_preview_values(tmp_path, values), "preview.parameter-missing")
    assert finding.severity == "warning"
    assert finding.json_path == "$.preview.parameters"
    assert finding.message == (
        f"no preview value for {name!r}, so the preview takes {taken}; expected a value the"
        f" reviewers should see, at $.preview.parameters.{name}"
    )


def test_list_items_needs_definition_file(tmp_path: Path) -> None:
    reports = tmp_path / KIND_FOLDERS[Kind.REPORT]
    for code in ("b-report", "a-report", "no-definition", "folder-definition"):
        (reports / code).mkdir(parents=True)
    (reports / "b-report" / "report.json").write_text("{}", "utf-8")
    (reports / "a-report" / "report.json").write_text("{}", "utf-8")
    (reports / "folder-definition" / "report.json").mkdir()
    (reports / "README.md").write_text("reports\n", "utf-8")
    (reports / "linked").symlink_to(reports / "a-report")
    (reports / "dangling").mkdir()
    (reports / "dangling" / "report.json").symlink_to(tmp_path / "missing.json")

    assert list_items(tmp_path, Kind.REPORT) == ["a-report", "b-report", "linked"]
    assert list_items(tmp_path, Kind.FORM) == []
