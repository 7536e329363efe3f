"""Definitions of fixes, reports, forms and treasury formats, and their checks.

`check_definition` runs these checks on one item, in this order:

1. the definition file exists and is UTF-8 JSON (a syntax error names its line);
2. it is valid against the kind's JSON Schema (`pipeline/schemas/<kind>.schema.json`);
3. its `id` (fix, treasury format) or `code` (report, form) equals its folder name;
4. every Kazakh and Russian text passes the checks of `pipeline.text`;
5. a fix lists every payload file exactly once, each listed file exists, and
   every install path is relative, uses forward slashes and stays inside the
   install folder;
6. a report or form query is one read-only SELECT whose `:name` placeholders
   are exactly the declared parameters, each preview value is of its
   parameter's declared type (a date as YYYY-MM-DD), the preview dates of a
   period `X_from` and `X_to` are in order, a parameter left out of the
   preview values is a warning, and every layout column is an output of the
   query with a caption in both languages;
7. a treasury format has `required_tags` only in MT940 and MT942 syntax and
   `required_fields` only as an export, where each is a source field of its
   mapping; it accepts only deviations of its syntax (none as an export),
   has no overlapping fixed-width columns, no repeated column names and no
   delimiter that is a decimal separator (`pipeline.treasury.checks`). Its
   sample files exist and decode in the format's encoding, and each expected
   file is a JSON array of records that use canonical field names of the
   mapping. Then every sample parses to its expected records (an export also renders them
   back to the sample), and a changed definition comes with changed samples
   (`pipeline.treasury.conformance`);
8. a report or form has a kk and a ru caption for the same columns.

Findings name the repository-relative file, the JSON path, what was expected
and what was found.
"""

from __future__ import annotations

import datetime
import logging
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import sqlglot
from sqlglot import exp

from pipeline.content import DEFINITION_FILES, KIND_FOLDERS, Kind, definition_path, item_folder
from pipeline.errors import ConfigError, ValidationError
from pipeline.findings import Finding, child_path, errors_only
from pipeline.mojibake import find_kz1048_evidence
from pipeline.schema import load_json, validate_document
from pipeline.text import check_pair
from pipeline.treasury.checks import check_layout_fits_syntax
from pipeline.treasury.conformance import check_conformance
from pipeline.treasury.records import CANONICAL_FIELDS

logger = logging.getLogger(__name__)

DEFINITION_KINDS = (Kind.FIX, Kind.REPORT, Kind.FORM, Kind.TREASURY)
# The field that must equal the item's folder name.
ID_FIELDS = {Kind.FIX: "id", Kind.REPORT: "code", Kind.FORM: "code", Kind.TREASURY: "id"}

# Windows rejects these characters and device names in file names, and the
# bundles are installed on Windows workstations.
_WINDOWS_RESERVED_CHARS = re.compile(r'[<>:"|?*\x00-\x1f]')
_WINDOWS_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)]
)
# Statements that change data or schema; none may appear anywhere in a query,
# including inside a common table expression.
_WRITE_NODES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
)


def load_definition(root: Path, kind: Kind, item: str) -> dict[str, Any]:
    """Load and check one definition; return the parsed document.

    Raises:
        ValidationError: a check found an error; `findings` contains every finding,
            warnings included.
        ConfigError: `kind` has no definitions of this module or `item` is not a folder name.
    """
    document, findings = _check(root, kind, item)
    errors = errors_only(findings)
    if errors:
        raise ValidationError(
            f"{_definition_file(kind, item)}: {len(errors)} error(s) in the {kind} definition,"
            f" first: {errors[0]}",
            list(findings),
        )
    if document is None:
        # Unreachable while the schemas require an object; kept for the type checker.
        raise ValidationError(
            f"{_definition_file(kind, item)}: expected a JSON object", list(findings)
        )
    return document


def check_definition(root: Path, kind: Kind, item: str) -> list[Finding]:
    """Run every check of the module docstring on one item and return the findings.

    Raises:
        ConfigError: `kind` has no definitions of this module or `item` is not a folder name.
    """
    return _check(root, kind, item)[1]


def _check(root: Path, kind: Kind, item: str) -> tuple[dict[str, Any] | None, list[Finding]]:
    if kind not in DEFINITION_KINDS:
        expected = ", ".join(DEFINITION_KINDS)
        raise ConfigError(f"expected a definition kind ({expected}), found {kind}")
    if item in ("", ".", "..") or "/" in item or "\\" in item:
        raise ConfigError(f"expected a folder name under {KIND_FOLDERS[kind]}/, found {item!r}")
    file = _definition_file(kind, item)
    path = definition_path(root, kind, item)
    if not path.is_file():
        message = f"definition file not found; expected {DEFINITION_FILES[kind]} in {item}/"
        return None, [Finding(rule="definition.missing", file=file, message=message)]

    document, findings = load_json(path, file)
    if findings:
        return None, findings
    schema_findings = validate_document(document, kind.value, file)
    findings.extend(schema_findings)
    if not isinstance(document, dict):
        return None, findings

    findings.extend(_check_identity(document, kind, item, file))
    schema_paths = {f.json_path for f in schema_findings if f.json_path}
    findings.extend(_check_texts(document, file, schema_paths))
    folder = item_folder(root, kind, item)
    if kind is Kind.FIX:
        findings.extend(_check_payload(document, folder, file))
    elif kind is Kind.TREASURY:
        findings.extend(_check_required(document, file))
        findings.extend(check_layout_fits_syntax(document, file))
        findings.extend(_check_samples(document, folder, file))
        if not errors_only(findings):
            findings.extend(check_conformance(document, folder, file))
    else:
        findings.extend(_check_query(document, file))
        findings.extend(_check_captions(document, file))
    logger.debug("checked %s: %d finding(s)", file, len(findings))
    return document, findings


def _definition_file(kind: Kind, item: str) -> str:
    return f"{KIND_FOLDERS[kind]}/{item}/{DEFINITION_FILES[kind]}"


def _finding(rule: str, file: str, json_path: str, message: str, **extra: Any) -> Finding:
    return Finding(rule=rule, file=file, json_path=json_path, message=message, **extra)


def _objects(value: object) -> list[tuple[int, dict[str, Any]]]:
    """Return the objects of a list with their indexes; anything else gives none."""
    if not isinstance(value, list):
        return []
    return [(i, entry) for i, entry in enumerate(value) if isinstance(entry, dict)]


# 3. id or code


def _check_identity(document: dict[str, Any], kind: Kind, item: str, file: str) -> list[Finding]:
    field = ID_FIELDS[kind]
    value = document.get(field)
    if value is None or value == item:
        return []
    return [
        _finding(
            "definition.id-mismatch",
            file,
            f"$.{field}",
            f"{field} must equal the folder name: expected {item!r}, found {value!r};"
            " rename the folder or change the field",
        )
    ]


# 4. Kazakh and Russian texts


def _check_texts(document: dict[str, Any], file: str, schema_paths: set[str]) -> list[Finding]:
    findings = []
    pairs = list(_text_pairs(document, "$"))
    # A KZ-1048 word misread beyond doubt in one text makes the doubtful
    # words of every text of the definition mojibake too.
    evidence = find_kz1048_evidence(
        (text, f"at {path}")
        for _, kk, ru, kk_path, ru_path in pairs
        for text, path in ((kk, kk_path), (ru, ru_path))
        if isinstance(text, str)
    )
    for pair_path, kk, ru, kk_path, ru_path in pairs:
        pair_findings = check_pair(kk, ru, file, kk_path, ru_path, kz1048_elsewhere=evidence)
        if any(
            p == pair_path or p.startswith((pair_path + ".", pair_path + "["))
            for p in schema_paths
        ):
            # The schema finding already reports the missing or mistyped text.
            pair_findings = [f for f in pair_findings if f.rule != "text.missing"]
        findings.extend(pair_findings)
    return findings


# Keys of objects keyed by language that hold identifiers, not texts.
_NOT_TEXT_KEYS = frozenset(["by_language"])


def _text_pairs(node: object, path: str) -> Iterator[tuple[str, object, object, str, str]]:
    """Yield each Kazakh and Russian text pair as (object path, kk, ru, kk path, ru path).

    An object whose keys are `kk` and `ru` is one pair when they hold strings.
    When they hold objects, such as column captions by column name, each name
    is a pair across the two objects.
    """
    if isinstance(node, list):
        for index, value in enumerate(node):
            yield from _text_pairs(value, child_path(path, index))
        return
    if not isinstance(node, dict):
        return
    if node and set(node) <= {"kk", "ru"}:
        kk, ru = node.get("kk"), node.get("ru")
        kk_path, ru_path = child_path(path, "kk"), child_path(path, "ru")
        if isinstance(kk, dict) or isinstance(ru, dict):
            kk_map = kk if isinstance(kk, dict) else {}
            ru_map = ru if isinstance(ru, dict) else {}
            for name in dict.fromkeys([*kk_map, *ru_map]):
                yield (
                    path,
                    kk_map.get(name),
                    ru_map.get(name),
                    child_path(kk_path, name),
                    child_path(ru_path, name),
                )
        else:
            yield path, kk, ru, kk_path, ru_path
        return
    for key, value in node.items():
        if key in _NOT_TEXT_KEYS:
            continue
        yield from _text_pairs(value, child_path(path, key))


# 5. fix payload


def install_path_problem(path: str) -> str | None:
    """Return why `path` is not a safe relative install path, or None when it is safe.

    A safe path is relative, uses forward slashes, has no empty, `.` or `..`
    part, and every part is a valid Windows file name.
    """
    if not path:
        return "the path is empty"
    if "\\" in path:
        return "it contains a backslash; use forward slashes"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "it is absolute; expected a path relative to the install folder"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"it has a {part or 'empty'!r} part; expected plain folder and file names"
        reserved = _WINDOWS_RESERVED_CHARS.search(part)
        if reserved:
            return f"the part {part!r} contains {reserved.group()!r}, which Windows rejects"
        if part.split(".")[0].upper() in _WINDOWS_RESERVED_NAMES:
            return f"the part {part!r} is a Windows device name"
        if part.endswith((".", " ")):
            return f"the part {part!r} ends with a dot or space, which Windows drops"
    return None


def _check_payload(document: dict[str, Any], folder: Path, file: str) -> list[Finding]:
    findings: list[Finding] = []
    listed: set[str] = set()
    installs: dict[str, int] = {}
    for index, entry in _objects(document.get("files")):
        where = child_path("$.files", index)
        source = entry.get("source")
        if isinstance(source, str):
            findings.extend(_check_source(source, folder, file, where, listed))
        install = entry.get("install")
        if not isinstance(install, str):
            continue
        problem = install_path_problem(install)
        if problem:
            findings.append(
                _finding(
                    "fix.unsafe-install-path",
                    file,
                    f"{where}.install",
                    f"install path {install!r} is unsafe: {problem}",
                )
            )
        # Windows file names ignore case and macOS ones Unicode normalization, so
        # two such paths install over each other.
        key = _file_name_key(install)
        if key in installs:
            findings.append(
                _finding(
                    "fix.duplicate-install-path",
                    file,
                    f"{where}.install",
                    f"install path {install!r} is already used by $.files[{installs[key]}];"
                    " expected each file to install to its own path (case ignored)",
                )
            )
        installs.setdefault(key, index)
    findings.extend(_check_unlisted_payload(folder, file, listed))
    findings.extend(_check_payload_name_clashes(folder, file))
    return findings


def _file_name_key(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def _check_payload_name_clashes(folder: Path, file: str) -> list[Finding]:
    """Find payload files whose names differ only in case or Unicode normalization.

    Such files are distinct in git but one file on a Windows or macOS machine.
    """
    payload = folder / "payload"
    if not payload.is_dir():
        return []
    seen: dict[str, str] = {}
    findings = []
    for path in sorted(payload.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        key = _file_name_key(relative)
        if key in seen:
            findings.append(
                _finding(
                    "fix.payload-name-clash",
                    file,
                    "$.files",
                    f"payload files {seen[key]!r} and {relative!r} differ only in letter case"
                    " or Unicode normalization, so Windows and macOS store them as one file;"
                    " rename one of them",
                )
            )
        else:
            seen[key] = relative
    return findings


def _check_source(
    source: str, folder: Path, file: str, where: str, listed: set[str]
) -> list[Finding]:
    if install_path_problem(source) or not source.startswith("payload/"):
        return [
            _finding(
                "fix.unsafe-source",
                file,
                f"{where}.source",
                f"expected a relative path under payload/, found {source!r}",
            )
        ]
    if source in listed:
        return [
            _finding(
                "fix.duplicate-source",
                file,
                f"{where}.source",
                f"payload file {source!r} is listed twice; expected each file once",
            )
        ]
    listed.add(source)
    path = folder / source
    if path.is_symlink():
        return [
            _finding(
                "fix.payload-symlink",
                file,
                f"{where}.source",
                f"payload file {source!r} is a symbolic link; expected a regular file",
            )
        ]
    if not path.is_file():
        return [
            _finding(
                "fix.payload-missing",
                file,
                f"{where}.source",
                f"payload file {source!r} not found in {folder.name}/payload/;"
                " add the file or fix the path",
            )
        ]
    return []


def _check_unlisted_payload(folder: Path, file: str, listed: set[str]) -> list[Finding]:
    payload = folder / "payload"
    if not payload.is_dir():
        return []
    findings = []
    for path in sorted(payload.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        relative = path.relative_to(folder).as_posix()
        if relative not in listed:
            findings.append(
                _finding(
                    "fix.unlisted-payload",
                    file,
                    "$.files",
                    f"payload file {relative!r} is not listed in files;"
                    " add a {source, install} entry for it or delete it",
                )
            )
    return findings


# 6. report and form queries


def _check_query(document: dict[str, Any], file: str) -> list[Finding]:
    query = document.get("query")
    if not isinstance(query, str) or not query.strip():
        return []
    try:
        statements = [s for s in sqlglot.parse(query) if s is not None]
    except sqlglot.errors.ParseError as exc:
        return [_finding("query.syntax", file, "$.query", _describe_parse_error(exc))]
    except sqlglot.errors.TokenError as exc:
        return [_finding("query.syntax", file, "$.query", f"query is not valid SQL: {exc}")]
    if len(statements) != 1:
        return [
            _finding(
                "query.statements",
                file,
                "$.query",
                f"expected one SQL statement, found {len(statements)}",
            )
        ]
    statement = statements[0]
    if not isinstance(statement, exp.Select | exp.SetOperation):
        kind = statement.key.upper()
        return [_finding("query.not-select", file, "$.query", f"expected a SELECT, found {kind}")]
    findings = _check_read_only(statement, file)
    findings.extend(_check_placeholders(statement, document.get("parameters"), file))
    findings.extend(_check_preview(document, file))
    findings.extend(_check_layout_outputs(statement, document, file))
    return findings


def _describe_parse_error(exc: sqlglot.errors.ParseError) -> str:
    if not exc.errors:
        return f"query is not valid SQL: {exc}"
    error = exc.errors[0]
    near = f"{error.get('start_context', '')}{error.get('highlight', '')}".strip()
    return (
        f"query is not valid SQL: {error.get('description')} at query line {error.get('line')},"
        f" column {error.get('col')}, near {near!r}"
    )


def _check_read_only(statement: exp.Expression, file: str) -> list[Finding]:
    findings = []
    for node in statement.find_all(*_WRITE_NODES):
        findings.append(
            _finding(
                "query.not-select",
                file,
                "$.query",
                f"expected a read-only SELECT, found {node.key.upper()} inside the query",
            )
        )
    for select in statement.find_all(exp.Select):
        if select.args.get("into"):
            findings.append(
                _finding(
                    "query.not-select",
                    file,
                    "$.query",
                    "expected a read-only SELECT, found SELECT ... INTO, which creates a table",
                )
            )
    return findings


def _check_placeholders(statement: exp.Expression, parameters: object, file: str) -> list[Finding]:
    findings: list[Finding] = []
    used: set[str] = set()
    for node in statement.find_all(exp.Placeholder, exp.Parameter, exp.Identifier):
        if isinstance(node, exp.Placeholder) and node.this:
            used.add(node.name)
        elif isinstance(node, exp.Identifier) and not node.name.startswith("$"):
            continue
        else:
            findings.append(
                _finding(
                    "query.placeholder",
                    file,
                    "$.query",
                    f"expected :name placeholders, found {node.sql()!r}",
                )
            )
    declared: dict[str, int] = {}
    for index, parameter in _objects(parameters):
        name = parameter.get("name")
        if not isinstance(name, str):
            continue
        where = f"$.parameters[{index}].name"
        if name in declared:
            message = f"parameter {name!r} is already declared at $.parameters[{declared[name]}]"
            findings.append(_finding("query.duplicate-parameter", file, where, message))
            continue
        declared[name] = index
        if name not in used:
            findings.append(
                _finding(
                    "query.unused-parameter",
                    file,
                    where,
                    f"parameter {name!r} is declared but the query has no :{name};"
                    " use it in the query or remove it",
                )
            )
    for name in sorted(used - set(declared)):
        findings.append(
            _finding(
                "query.undeclared-parameter",
                file,
                "$.query",
                f"placeholder :{name} is not a declared parameter; expected one of"
                f" {sorted(declared)}; declare it in parameters or remove it",
            )
        )
    return findings


def _check_preview(document: dict[str, Any], file: str) -> list[Finding]:
    preview = document.get("preview")
    values = preview.get("parameters") if isinstance(preview, dict) else None
    if not isinstance(values, dict):
        # Without preview values every parameter takes its default on purpose,
        # and the schema reports values that are not an object.
        return []
    declared: dict[str, object] = {}
    for _, parameter in _objects(document.get("parameters")):
        if isinstance(parameter.get("name"), str):
            declared[parameter["name"]] = parameter.get("type")
    findings = []
    for name, value in values.items():
        where = child_path("$.preview.parameters", name)
        if name not in declared:
            findings.append(
                _finding(
                    "preview.unknown-parameter",
                    file,
                    where,
                    f"preview value for {name!r}, which is not a declared parameter;"
                    f" expected one of {sorted(declared)}",
                )
            )
            continue
        declared_type = declared[name]
        problem = _preview_type_problem(value, declared_type)
        if problem:
            message = f"preview value for {name!r}, declared {declared_type}: {problem}"
            findings.append(_finding("preview.parameter-type", file, where, message))
    findings.extend(_check_preview_missing(document, declared, values, file))
    findings.extend(_check_preview_periods(document, declared, values, file))
    return findings


def _check_preview_missing(
    document: dict[str, Any], declared: dict[str, object], values: dict[str, Any], file: str
) -> list[Finding]:
    """Warn of each parameter without a preview value, naming the value the preview takes."""
    findings = []
    for name, declared_type in declared.items():
        if name in values:
            continue
        if declared_type == "date":
            taken = f"the effective date {document.get('effective_date')}"
        elif isinstance(declared_type, str) and declared_type in PREVIEW_DEFAULTS:
            taken = f"{PREVIEW_DEFAULTS[declared_type]!r}, the default for {declared_type}"
        else:
            continue  # The schema reports an unknown type.
        findings.append(
            _finding(
                "preview.parameter-missing",
                file,
                "$.preview.parameters",
                f"no preview value for {name!r}, so the preview takes {taken}; expected a"
                " value the reviewers should see, at"
                f" {child_path('$.preview.parameters', name)}",
                severity="warning",
            )
        )
    return findings


def _check_preview_periods(
    document: dict[str, Any], declared: dict[str, object], values: dict[str, Any], file: str
) -> list[Finding]:
    """Reject a period whose `X_from` date parameter comes after its `X_to` one.

    A date without a preview value is the effective date, as the preview takes it.
    """
    findings = []
    for start in declared:
        end = start.removesuffix("_from") + "_to"
        if not start.endswith("_from") or declared[start] != "date" or declared.get(end) != "date":
            continue
        effective = document.get("effective_date")
        start_value = values.get(start, effective)
        end_value = values.get(end, effective)
        if not (isinstance(start_value, str) and isinstance(end_value, str)):
            continue  # The type check reports the value.
        if not (_is_iso_date(start_value) and _is_iso_date(end_value)):
            continue
        if start_value <= end_value:
            continue
        given = start if start in values else end
        findings.append(
            _finding(
                "preview.parameter-range",
                file,
                child_path("$.preview.parameters", given),
                f"preview period reversed: {_describe_date(start, start_value, values)} is"
                f" after {_describe_date(end, end_value, values)}; expected {start} on or"
                f" before {end}",
            )
        )
    return findings


def _describe_date(name: str, value: str, values: dict[str, Any]) -> str:
    if name in values:
        return f"{name} {value}"
    return f"{name} {value} (the effective date, as {name} has no preview value)"


# The preview value of a parameter without one in the definition, by type. A
# date parameter takes the definition's effective date instead.
PREVIEW_DEFAULTS: dict[str, Any] = {"integer": 1, "decimal": 0, "string": "", "boolean": False}

# The values each parameter type accepts in a preview, as messages name them.
_PREVIEW_TYPES = {
    "integer": "an integer",
    "decimal": "a number or a decimal string such as '1234.56'",
    "string": "a string",
    "boolean": "true or false",
    "date": "a date as YYYY-MM-DD, such as 2026-12-01",
}
_DECIMAL_TEXT = re.compile(r"-?\d+(?:\.\d+)?")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _preview_type_problem(value: object, declared_type: object) -> str | None:
    """Return what is wrong with a preview value of a parameter type, or None when it fits."""
    if not isinstance(declared_type, str) or declared_type not in _PREVIEW_TYPES:
        return None  # The schema reports an unknown type.
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if declared_type == "integer":
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif declared_type == "decimal":
        fits = number or (isinstance(value, str) and bool(_DECIMAL_TEXT.fullmatch(value)))
    elif declared_type == "string":
        fits = isinstance(value, str)
    elif declared_type == "boolean":
        fits = isinstance(value, bool)
    else:
        fits = isinstance(value, str) and _is_iso_date(value)
    if fits:
        return None
    if isinstance(value, bool):
        found = f"the boolean {value}"
    elif number:
        found = f"the number {value}"
    elif isinstance(value, str) and declared_type != "date":
        found = f"the string {value!r}"
    else:
        found = repr(value)
    return f"expected {_PREVIEW_TYPES[declared_type]}, found {found}"


def _is_iso_date(text: str) -> bool:
    if not _ISO_DATE.fullmatch(text):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_layout_outputs(
    statement: exp.Select | exp.SetOperation, document: dict[str, Any], file: str
) -> list[Finding]:
    outputs = statement.named_selects
    if "*" in outputs or any(not name for name in outputs):
        logger.debug("%s: query output names are unknown, layout columns not compared", file)
        return []
    findings = []
    layout = document.get("layout")
    columns = layout.get("columns") if isinstance(layout, dict) else None
    for index, column in _objects(columns):
        name = column.get("name")
        if isinstance(name, str) and name not in outputs:
            findings.append(
                _finding(
                    "query.layout-column",
                    file,
                    f"$.layout.columns[{index}].name",
                    f"layout column {name!r} is not an output of the query;"
                    f" expected one of {outputs}",
                )
            )
        by_language = column.get("by_language")
        if not isinstance(by_language, dict):
            continue
        for language, output in by_language.items():
            if isinstance(output, str) and output not in outputs:
                findings.append(
                    _finding(
                        "query.layout-column",
                        file,
                        f"$.layout.columns[{index}].by_language.{language}",
                        f"{language} output {output!r} of layout column {name!r} is not an"
                        f" output of the query; expected one of {outputs}",
                    )
                )
    return findings


def _check_captions(document: dict[str, Any], file: str) -> list[Finding]:
    layout = document.get("layout")
    captions = document.get("captions")
    if not isinstance(layout, dict) or not isinstance(captions, dict):
        return []
    kk, ru = captions.get("kk"), captions.get("ru")
    if not isinstance(kk, dict) or not isinstance(ru, dict):
        return []
    captioned = set(kk) | set(ru)
    findings = []
    for language, present, other in (("kk", kk, ru), ("ru", ru, kk)):
        for name in sorted(set(other) - set(present)):
            other_language = "ru" if language == "kk" else "kk"
            findings.append(
                _finding(
                    "layout.caption-languages",
                    file,
                    f"$.captions.{language}",
                    f"column {name!r} has a {other_language} caption but no {language} caption;"
                    " expected the same columns in both languages",
                )
            )
    names: dict[str, int] = {}
    for index, column in _objects(layout.get("columns")):
        name = column.get("name")
        if not isinstance(name, str):
            continue
        where = f"$.layout.columns[{index}].name"
        if name in names:
            message = (
                f"column {name!r} is already in the layout at $.layout.columns[{names[name]}]"
            )
            findings.append(_finding("layout.duplicate-column", file, where, message))
        names.setdefault(name, index)
        if name not in captioned:
            findings.append(
                _finding(
                    "layout.missing-caption",
                    file,
                    where,
                    f"column {name!r} has no caption; add it to captions.kk and captions.ru",
                )
            )
    for name in sorted(captioned - set(names)):
        findings.append(
            _finding(
                "layout.unused-caption",
                file,
                "$.captions",
                f"caption {name!r} names no layout column; expected one of {sorted(names)}",
                severity="warning",
            )
        )
    return findings


# 7. treasury samples


def _check_required(document: dict[str, Any], file: str) -> list[Finding]:
    """Check that `required_tags` and `required_fields` fit the format's syntax and direction.

    The schema requires each list where it applies. It cannot reject one
    where it does not apply with a useful message, so this check does.
    """
    findings: list[Finding] = []
    syntax = document.get("syntax")
    if "required_tags" in document and syntax not in ("mt940", "mt942"):
        message = (
            f"required_tags applies to mt940 and mt942 definitions, found syntax {syntax!r};"
            " remove it"
        )
        findings.append(_finding("treasury.required-tags", file, "$.required_tags", message))
    required = document.get("required_fields")
    if required is not None and document.get("direction") != "export":
        message = (
            "required_fields applies to export definitions, found direction"
            f" {document.get('direction')!r}; remove it"
        )
        findings.append(_finding("treasury.required-fields", file, "$.required_fields", message))
        return findings
    mapping = document.get("mapping")
    if not isinstance(required, list) or not isinstance(mapping, dict):
        return findings
    for index, name in enumerate(required):
        if name not in mapping:
            findings.append(
                _finding(
                    "treasury.unknown-required-field",
                    file,
                    child_path("$.required_fields", index),
                    f"{name!r} is not a source field of mapping; expected one of"
                    f" {sorted(mapping)}",
                )
            )
    return findings


def _check_samples(document: dict[str, Any], folder: Path, file: str) -> list[Finding]:
    encoding = document.get("encoding")
    mapping = document.get("mapping")
    canonical = set(mapping.values()) if isinstance(mapping, dict) else None
    findings: list[Finding] = []
    for source_name, name in mapping.items() if isinstance(mapping, dict) else []:
        if isinstance(name, str) and name not in CANONICAL_FIELDS:
            findings.append(
                _finding(
                    "treasury.unknown-field",
                    file,
                    child_path("$.mapping", source_name),
                    f"{name!r} is not a field of the canonical records; expected one of"
                    f" {sorted(CANONICAL_FIELDS)}",
                )
            )
    listed: set[str] = set()
    for index, sample in _objects(document.get("samples")):
        where = f"$.samples[{index}]"
        sample_file = sample.get("file")
        if isinstance(sample_file, str):
            listed.add(sample_file)
            findings.extend(
                _check_sample_file(sample_file, encoding, folder, file, f"{where}.file")
            )
        expected = sample.get("expected")
        if isinstance(expected, str):
            listed.add(expected)
            findings.extend(
                _check_expected_file(expected, canonical, folder, file, f"{where}.expected")
            )
    samples = folder / "samples"
    if samples.is_dir():
        for path in sorted(p for p in samples.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            if relative not in listed:
                findings.append(
                    _finding(
                        "treasury.unlisted-sample",
                        file,
                        "$.samples",
                        f"sample file {relative!r} is not listed in samples; list it or delete it",
                        severity="warning",
                    )
                )
    return findings


def _sample_path(
    relative: str, folder: Path, file: str, where: str
) -> tuple[Path | None, list[Finding]]:
    if install_path_problem(relative) or not relative.startswith("samples/"):
        message = f"expected a relative path under samples/, found {relative!r}"
        return None, [_finding("treasury.unsafe-sample-path", file, where, message)]
    path = folder / relative
    if path.is_symlink() or not path.is_file():
        message = f"sample file {relative!r} not found in {folder.name}/; add it or fix the path"
        return None, [_finding("treasury.sample-missing", file, where, message)]
    return path, []


def _check_sample_file(
    relative: str, encoding: object, folder: Path, file: str, where: str
) -> list[Finding]:
    path, findings = _sample_path(relative, folder, file, where)
    if path is None or not isinstance(encoding, str):
        return findings
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        return [
            _finding(
                "treasury.sample-encoding",
                file,
                where,
                f"sample file {relative!r} is not valid {encoding}:"
                f" byte 0x{data[exc.start]:02x} at offset {exc.start}",
            )
        ]
    except LookupError:
        return []
    return []


def _check_expected_file(
    relative: str, canonical: set[str] | None, folder: Path, file: str, where: str
) -> list[Finding]:
    path, findings = _sample_path(relative, folder, file, where)
    if path is None:
        return findings
    expected_file = f"{PurePosixPath(file).parent}/{relative}"
    records, findings = load_json(path, expected_file)
    if findings:
        return findings
    if not isinstance(records, list):
        message = f"expected a JSON array of records, found {type(records).__name__}"
        return [_finding("treasury.expected-records", expected_file, "$", message)]
    for index, record in enumerate(records):
        record_path = f"$[{index}]"
        if not isinstance(record, dict):
            message = f"expected a record object, found {type(record).__name__}"
            findings.append(
                _finding("treasury.expected-records", expected_file, record_path, message)
            )
            continue
        if canonical is None:
            continue
        for name in sorted(set(record) - canonical):
            findings.append(
                _finding(
                    "treasury.expected-field",
                    expected_file,
                    child_path(record_path, name),
                    f"field {name!r} is not a canonical field of the mapping in {file};"
                    f" expected one of {sorted(canonical)}",
                )
            )
    return findings
