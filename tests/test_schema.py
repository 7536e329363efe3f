"""Schema loading and JSON reading shared by every kind of definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.schema import check_schema, load_json, load_schema, validate_document


def test_misspelled_keyword_is_rejected() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "maxLenght": 3}}}
    with pytest.raises(ConfigError, match=r"\$\.properties\.code\.maxLenght"):
        check_schema(schema, "broken.schema.json")


def test_every_shipped_schema_loads() -> None:
    folder = Path(__file__).resolve().parent.parent / "pipeline" / "schemas"
    names = sorted(p.name.removesuffix(".schema.json") for p in folder.glob("*.schema.json"))
    assert "manifest" in names
    for name in names:
        assert load_schema(name)["$schema"].endswith("2020-12/schema")


def test_impossible_date_fails_format_check() -> None:
    findings = validate_document(
        {"format": 1, "source": {"commit_time": "2026-02-30T00:00:00Z"}}, "manifest", "m.json"
    )
    time_findings = [f for f in findings if f.json_path == "$.source.commit_time"]
    assert len(time_findings) == 1
    assert "expected a valid date-time" in time_findings[0].message


def test_missing_field_is_named() -> None:
    findings = validate_document({"format": 1}, "manifest", "m.json")
    assert any(f.message == "missing required field 'product'" for f in findings)


def test_duplicate_json_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "form.json"
    path.write_text('{\n  "code": "a",\n  "title": 1,\n  "code": "b"\n}\n', encoding="utf-8")
    document, findings = load_json(path, "packages/forms/a/form.json")
    assert document is None
    assert len(findings) == 1
    assert findings[0].rule == "json.duplicate-key"
    assert findings[0].line == 4
    assert "'code' appears twice" in findings[0].message


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "fix.json"
    path.write_text('{\n  "id": "a",\n}\n', encoding="utf-8")
    _, findings = load_json(path, "fix.json")
    assert findings[0].line == 3
    assert findings[0].message.startswith("invalid JSON:")


def test_non_utf8_json_names_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "fix.json"
    path.write_bytes('{"title": "Қазақстан"}'.encode("kz1048"))
    _, findings = load_json(path, "fix.json")
    assert findings[0].rule == "encoding"
    assert "at offset 11" in findings[0].message


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "fix.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a"}')
    document, findings = load_json(path, "fix.json")
    assert findings == []
    assert document == {"id": "a"}


@pytest.mark.parametrize(
    ("schema_format", "bad", "good"),
    [
        ("date", "2026-02-30", "2026-02-28"),
        ("date-time", "2026-12-01T25:00:00Z", "2026-12-01T09:00:00Z"),
        ("uri", "not a uri", "https://stat.gov.kz/"),
        ("regex", "([", "^[0-9]{3}$"),
    ],
)
def test_format_checks_used_by_schemas_work(schema_format: str, bad: str, good: str) -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(
        {"type": "string", "format": schema_format},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    assert not validator.is_valid(bad)
    assert validator.is_valid(good)
