"""JSON Schemas of the content kinds and validation of documents against them.

Schemas are Draft 2020-12 files in `pipeline/schemas/`. Loading a schema
checks it against the meta-schema and also rejects keywords that no
vocabulary defines, because `check_schema` accepts a misspelled keyword
(`maxLenght`) that then validates nothing. Documents are validated with
format checks switched on, so an impossible date fails.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from pipeline.errors import ConfigError
from pipeline.findings import Finding

SCHEMA_FOLDER = Path(__file__).parent / "schemas"

# Keywords of the Draft 2020-12 vocabularies (core, applicator, unevaluated,
# validation, format, meta-data, content).
KNOWN_KEYWORDS = frozenset(
    """$schema $id $ref $anchor $dynamicRef $dynamicAnchor $vocabulary $comment $defs
    allOf anyOf oneOf not if then else dependentSchemas prefixItems items contains
    properties patternProperties additionalProperties propertyNames
    unevaluatedItems unevaluatedProperties
    type enum const multipleOf maximum exclusiveMaximum minimum exclusiveMinimum
    maxLength minLength pattern maxItems minItems uniqueItems maxContains minContains
    maxProperties minProperties required dependentRequired
    format title description default deprecated readOnly writeOnly examples
    contentEncoding contentMediaType contentSchema""".split()
)
# Keywords whose value is a map of names to subschemas, and those holding one
# subschema or a list of them.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_VALUES = (
    "additionalProperties unevaluatedProperties unevaluatedItems items contains not if then"
    " else propertyNames contentSchema"
).split()
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


def unknown_keywords(schema: Any, path: str = "$") -> Iterator[str]:
    """Yield the JSON path of each keyword in `schema` that no Draft 2020-12 vocabulary has."""
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key not in KNOWN_KEYWORDS:
            yield f"{path}.{key}"
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from unknown_keywords(sub, f"{path}.{key}.{name}")
        elif key in _SCHEMA_VALUES:
            yield from unknown_keywords(value, f"{path}.{key}")
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield from unknown_keywords(sub, f"{path}.{key}[{index}]")


def check_schema(schema: dict[str, Any], name: str) -> None:
    """Raise ConfigError unless `schema` is valid Draft 2020-12 with only known keywords."""
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"schema {name} is invalid at {exc.json_path}: {exc.message}") from exc
    unknown = list(unknown_keywords(schema))
    if unknown:
        raise ConfigError(
            f"schema {name} uses keywords that no vocabulary defines (misspelled?): "
            + ", ".join(unknown)
        )


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load and check `pipeline/schemas/<name>.schema.json`."""
    path = SCHEMA_FOLDER / f"{name}.schema.json"
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no schema named {name!r}: {path} does not exist") from exc
    check_schema(schema, path.name)
    return schema


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """Return a reusable validator of schema `name` with format checks switched on."""
    return Draft202012Validator(
        load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def validate_document(document: Any, schema_name: str, file: str) -> list[Finding]:
    """Validate `document` against schema `schema_name`; return one finding per error.

    Findings carry the document's JSON path, such as `$.title.kk`.
    """
    errors = sorted(
        validator(schema_name).iter_errors(document), key=lambda e: list(map(str, e.path))
    )
    return [
        Finding(rule="schema", file=file, json_path=error.json_path, message=_describe(error))
        for error in errors
    ]


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "format":
        return f"expected a valid {error.validator_value}, found {error.instance!r}"
    if error.validator == "type":
        return f"expected {error.validator_value}, found {type(error.instance).__name__}"
    if error.validator in ("pattern", "enum", "const"):
        return f"expected {error.validator} {error.validator_value!r}, found {error.instance!r}"
    if error.validator == "required":
        # jsonschema reports each missing name as its own error: "'kk' is a required property".
        name = error.message.removesuffix(" is a required property")
        return f"missing required field {name}"
    return str(error.message)


def load_json(path: Path, file: str) -> tuple[Any, list[Finding]]:
    """Read a UTF-8 JSON file; return the document, or None and a finding with the line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            Finding(
                rule="encoding",
                file=file,
                message=f"expected UTF-8, found byte 0x{exc.object[exc.start]:02x}"
                f" at offset {exc.start}",
            )
        ]
    text = text.removeprefix("\ufeff")
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys), []
    except json.JSONDecodeError as exc:
        return None, [
            Finding(rule="json", file=file, line=exc.lineno, message=f"invalid JSON: {exc.msg}")
        ]
    except _DuplicateKeyError as exc:
        return None, [
            Finding(
                rule="json.duplicate-key",
                file=file,
                line=_line_of_second_key(text, exc.key),
                message=f"key {exc.key!r} appears twice in one object; JSON readers keep only"
                " one of the values, so remove the other",
            )
        ]


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKeyError(key)
        document[key] = value
    return document


def _line_of_second_key(text: str, key: str) -> int | None:
    """Return the line of the second `"key":` in `text`: a good guess at the duplicate."""
    marker = json.dumps(key, ensure_ascii=False)
    first = text.find(marker)
    second = text.find(marker, first + 1) if first >= 0 else -1
    return text.count("\n", 0, second) + 1 if second >= 0 else None
