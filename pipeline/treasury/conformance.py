"""Conformance of a treasury format with its samples.

1. Every sample parses to its expected records; for an export format the
   expected records also render to the sample file byte for byte. A
   difference names the record and the field (or the line of the file).
2. A changed definition comes with changed samples. `conformance.json` beside
   `format.json` records the SHA-256 of the definition's parsing part (all but
   its title) and of its sample files, as they were when the samples last
   passed. When the definition's hash differs from the record while the
   samples' hash does not, the definition changed without a sample to show
   the change, and validation fails. `record_conformance` rewrites the record
   after the samples pass. The check needs no git history, so it works on a
   snapshot and in CI alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.content import Kind, definition_path, item_folder
from pipeline.errors import ValidationError
from pipeline.findings import Finding, errors_only
from pipeline.fsutil import atomic_write_text
from pipeline.schema import load_json
from pipeline.treasury.engine import parse_bytes, render_records
from pipeline.treasury.model import TreasuryFormat, TreasuryFormatError, format_from_document

logger = logging.getLogger(__name__)

RECORD_FILE = "conformance.json"


def check_conformance(document: dict[str, Any], folder: Path, file: str) -> list[Finding]:
    """Run both checks of the module docstring on a schema-valid definition."""
    fmt = format_from_document(document, folder)
    findings: list[Finding] = []
    for index, (sample, expected) in enumerate(fmt.samples):
        findings += _check_sample(fmt, folder, file, index, sample, expected)
    findings += _check_record(document, fmt, folder, file)
    return findings


def _relative(file: str, name: str) -> str:
    return f"{file.rsplit('/', 1)[0]}/{name}"


def _check_sample(
    fmt: TreasuryFormat, folder: Path, file: str, index: int, sample: str, expected: str
) -> list[Finding]:
    sample_path, expected_path = folder / sample, folder / expected
    if not sample_path.is_file() or not expected_path.is_file():
        return []  # The definition checks report a missing sample.
    where = f"$.samples[{index}]"
    sample_file = _relative(file, sample)
    try:
        wanted = json.loads(expected_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []  # The definition checks report a malformed expected file.
    findings: list[Finding] = []
    try:
        parsed = parse_bytes(fmt, sample_path.read_bytes(), sample_file)
    except TreasuryFormatError as exc:
        return [Finding("treasury.sample-parse", sample_file, str(exc), line=exc.line)]
    findings += compare_records(parsed, wanted, _relative(file, expected), file, where)
    if fmt.direction == "export" and isinstance(wanted, list):
        try:
            rendered = render_records(fmt, wanted, _relative(file, expected))
        except TreasuryFormatError as exc:
            return [*findings, Finding("treasury.sample-render", file, str(exc), json_path=where)]
        findings += _compare_bytes(rendered, sample_path.read_bytes(), sample_file, fmt.encoding)
    return findings


def compare_records(
    parsed: list[dict[str, Any]], wanted: object, expected_file: str, file: str, where: str
) -> list[Finding]:
    """Compare parsed records with expected ones; each difference names the record and field."""
    if not isinstance(wanted, list):
        return []
    findings = []
    if len(parsed) != len(wanted):
        findings.append(
            Finding(
                "treasury.sample-mismatch",
                expected_file,
                f"expected {len(wanted)} record(s), the sample parses to {len(parsed)}",
                json_path="$",
            )
        )
    for index, (got, want) in enumerate(zip(parsed, wanted, strict=False)):
        if not isinstance(want, dict):
            continue
        for name in sorted(set(got) | set(want)):
            if got.get(name) != want.get(name):
                findings.append(
                    Finding(
                        "treasury.sample-mismatch",
                        expected_file,
                        f"record {index}, field {name}: expected {want.get(name)!r},"
                        f" the sample parses to {got.get(name)!r} with {file} {where}",
                        json_path=f"$[{index}].{name}",
                    )
                )
    return findings


def _compare_bytes(
    rendered: bytes, sample: bytes, sample_file: str, encoding: str
) -> list[Finding]:
    if rendered == sample:
        return []
    got = rendered.decode(encoding, errors="replace").split("\n")
    want = sample.decode(encoding, errors="replace").split("\n")
    differing = [i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b]
    if differing:
        index = differing[0]
        number = index + 1
        message = (
            f"the expected records render to {got[index]!r}, the sample file has {want[index]!r}"
        )
    else:
        number = min(len(got), len(want))
        message = f"the expected records render to {len(got)} line(s), the sample has {len(want)}"
    return [Finding("treasury.sample-render", sample_file, message, line=number)]


def _digests(document: dict[str, Any], folder: Path) -> dict[str, str]:
    parsing = {key: value for key, value in document.items() if key != "title"}
    definition = hashlib.sha256(
        json.dumps(parsing, sort_keys=True, ensure_ascii=False).encode("utf-8")
    ).hexdigest()
    samples = hashlib.sha256()
    for sample in document.get("samples", []):
        for name in (sample["file"], sample["expected"]):
            path = folder / name
            samples.update(name.encode("utf-8") + b"\0")
            samples.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"")
    return {"definition_sha256": definition, "samples_sha256": samples.hexdigest()}


def _check_record(
    document: dict[str, Any], fmt: TreasuryFormat, folder: Path, file: str
) -> list[Finding]:
    record_file = _relative(file, RECORD_FILE)
    hint = f"run `inv treasury.record --format {fmt.id}` once the samples pass"
    path = folder / RECORD_FILE
    if not path.is_file():
        return [Finding("treasury.conformance-missing", record_file, f"file not found; {hint}")]
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [
            Finding("treasury.conformance-invalid", record_file, f"invalid JSON ({exc}); {hint}")
        ]
    current = _digests(document, folder)
    definition_changed = recorded.get("definition_sha256") != current["definition_sha256"]
    samples_changed = recorded.get("samples_sha256") != current["samples_sha256"]
    if definition_changed and not samples_changed:
        return [
            Finding(
                "treasury.samples-not-updated",
                file,
                "the definition changed since its samples were recorded, but no sample changed;"
                " add or update a sample that shows the change, then " + hint.removeprefix("run "),
            )
        ]
    if definition_changed or samples_changed:
        return [
            Finding(
                "treasury.conformance-stale",
                record_file,
                f"the recorded hashes do not match the definition and samples; {hint}",
            )
        ]
    return []


def record_conformance(root: Path, format_id: str) -> Path:
    """Check a format's samples and write its `conformance.json`; return the file.

    Raises:
        ValidationError: the definition or a sample fails, or the definition
            changed while its samples did not.
    """
    # Imported here because the definition checks import this module.
    from pipeline.definitions import check_definition

    folder = item_folder(root, Kind.TREASURY, format_id)
    findings = [
        f
        for f in errors_only(check_definition(root, Kind.TREASURY, format_id))
        if not f.rule.startswith("treasury.conformance-")
    ]
    if findings:
        raise ValidationError(
            f"{folder.name}: {len(findings)} error(s), first: {findings[0]}; the record is"
            " written only when the definition and every sample pass",
            findings,
        )
    document, _ = load_json(definition_path(root, Kind.TREASURY, format_id), "format.json")
    path = folder / RECORD_FILE
    atomic_write_text(path, json.dumps(_digests(document, folder), indent=2) + "\n")
    logger.info("recorded the conformance of %s", format_id)
    return path
