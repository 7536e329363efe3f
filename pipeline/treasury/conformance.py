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
3. `record_conformance` compares with the previous record (the file, or the
   one committed at HEAD when the file is gone) and rejects a definition
   change without a sample change unless a reason is given; the reason is
   stored under `accepted_definition_change`. On the release path,
   `check_base_conformance` compares every format with the record committed
   at the base release, so deleting and re-recording `conformance.json`
   does not hide a change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from pipeline.content import KIND_FOLDERS, Kind, definition_path, item_folder, list_items
from pipeline.errors import ValidationError
from pipeline.findings import CheckCase, Finding, child_path, errors_only
from pipeline.fsutil import atomic_write_text
from pipeline.schema import load_json
from pipeline.treasury.engine import parse_bytes, render_records
from pipeline.treasury.model import TreasuryFormat, TreasuryFormatError, format_from_document

logger = logging.getLogger(__name__)

RECORD_FILE = "conformance.json"
ACCEPTED_KEY = "accepted_definition_change"


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
        return [Finding("treasury.sample-parse", sample_file, exc.detail, line=exc.line)]
    findings += compare_records(parsed, wanted, _relative(file, expected), file, where)
    if fmt.direction == "export" and isinstance(wanted, list):
        try:
            rendered = render_records(fmt, wanted, _relative(file, expected))
        except TreasuryFormatError as exc:
            return [
                *findings,
                Finding(
                    "treasury.sample-render",
                    exc.file,
                    exc.detail,
                    json_path=exc.json_path,
                    line=exc.line,
                ),
            ]
        findings += _compare_bytes(rendered, sample_path.read_bytes(), sample_file, fmt.encoding)
    return findings


def compare_records(
    parsed: list[dict[str, Any]], wanted: object, expected_file: str, file: str, where: str
) -> list[Finding]:
    """Compare parsed records with expected ones.

    Each difference names the record and field by JSON path, such as `$[0].amount`.
    """
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
                        f"expected {want.get(name)!r}, the sample parses to {got.get(name)!r}"
                        f" with {file} {where}",
                        json_path=child_path(child_path("$", index), name),
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
    if not isinstance(recorded, dict):
        found = type(recorded).__name__
        message = f"expected a JSON object, found {found}; {hint}"
        return [Finding("treasury.conformance-invalid", record_file, message)]
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


def _changed_without_samples(previous: dict[str, Any], current: dict[str, str]) -> bool:
    return (
        previous.get("definition_sha256") != current["definition_sha256"]
        and previous.get("samples_sha256") == current["samples_sha256"]
    )


def _accepted(record: dict[str, Any] | None, definition_sha256: str) -> bool:
    """Return whether `record` accepts the definition with this hash without new samples."""
    accepted = record.get(ACCEPTED_KEY) if record else None
    return isinstance(accepted, dict) and accepted.get("definition_sha256") == definition_sha256


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return recorded if isinstance(recorded, dict) else None


def committed_record(repo: Path, rev: str, format_id: str) -> dict[str, Any] | None:
    """Return the `conformance.json` of a format as committed at `rev`, or None.

    None means the file is not in that commit, `repo` is not a git repository,
    or the committed file is not a JSON object.
    """
    path = f"{KIND_FOLDERS[Kind.TREASURY]}/{format_id}/{RECORD_FILE}"
    try:
        shown = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, check=False
        )
    except OSError:
        return None
    if shown.returncode != 0:
        logger.debug("%s is not committed at %s", path, rev)
        return None
    try:
        recorded = json.loads(shown.stdout.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return recorded if isinstance(recorded, dict) else None


def record_conformance(root: Path, format_id: str, accept_reason: str | None = None) -> Path:
    """Check a format's samples and write its `conformance.json`; return the file.

    The previous record is the file itself or, when it is missing, the one
    committed at HEAD. A definition that changed since that record while no
    sample changed is rejected unless `accept_reason` explains why the samples
    still show the definition. The reason is written into the record.

    Raises:
        ValidationError: the definition or a sample fails, or the definition
            changed while its samples did not and no reason was given.
    """
    # Imported here because the definition checks import this module.
    from pipeline.definitions import check_definition

    folder = item_folder(root, Kind.TREASURY, format_id)
    # The record's own findings are what recording fixes; a definition change
    # without new samples is fixed by recording it with a reason, checked below.
    recordable = ("treasury.conformance-", "treasury.samples-not-updated")
    findings = [
        f
        for f in errors_only(check_definition(root, Kind.TREASURY, format_id))
        if not f.rule.startswith(recordable)
    ]
    if findings:
        raise ValidationError(
            f"{folder.name}: {len(findings)} error(s), first: {findings[0]}; the record is"
            " written only when the definition and every sample pass",
            findings,
        )
    document, _ = load_json(definition_path(root, Kind.TREASURY, format_id), "format.json")
    path = folder / RECORD_FILE
    previous = _read_record(path) if path.is_file() else committed_record(root, "HEAD", format_id)
    current: dict[str, Any] = dict(_digests(document, folder))
    definition = current["definition_sha256"]
    if _accepted(previous, definition):
        current[ACCEPTED_KEY] = previous[ACCEPTED_KEY] if previous else None
    elif previous is not None and _changed_without_samples(previous, current):
        if not accept_reason or not accept_reason.strip():
            raise ValidationError(
                f"{folder.name}: the definition changed since {RECORD_FILE} was recorded, but"
                " no sample changed; add or update a sample that shows the change, or pass"
                " --accept-definition-change REASON when the samples already show it",
                [],
            )
        current[ACCEPTED_KEY] = {
            "reason": accept_reason.strip(),
            "previous_definition_sha256": previous.get("definition_sha256"),
            "definition_sha256": definition,
        }
        logger.info("accepted a definition change of %s: %s", format_id, accept_reason)
    atomic_write_text(path, json.dumps(current, indent=2, ensure_ascii=False) + "\n")
    logger.info("recorded the conformance of %s", format_id)
    return path


def check_base_conformance(root: Path, repo: Path, base_commit: str) -> CheckCase:
    """Compare every format under `root` with its record committed at `base_commit`.

    `root` is the content of the release commit and `repo` the git repository
    that holds `base_commit`. A record that the base release had and `root`
    lacks is reported as removed. A definition that changed since the base
    record while no sample changed is reported unless the current record
    accepts the change with a reason.
    """
    findings: list[Finding] = []
    for format_id in list_items(root, Kind.TREASURY):
        base = committed_record(repo, base_commit, format_id)
        if base is None:
            continue
        folder = item_folder(root, Kind.TREASURY, format_id)
        file = f"{KIND_FOLDERS[Kind.TREASURY]}/{format_id}/format.json"
        path = folder / RECORD_FILE
        if not path.is_file():
            findings.append(
                Finding(
                    "treasury.conformance-removed",
                    _relative(file, RECORD_FILE),
                    f"{RECORD_FILE} removed since the base release {base_commit[:12]};"
                    " restore it from that release",
                )
            )
            continue
        document, load_findings = load_json(folder / "format.json", file)
        if load_findings or not isinstance(document, dict):
            continue  # The definition checks report an unreadable definition.
        current = _digests(document, folder)
        recorded = _read_record(path)
        if _changed_without_samples(base, current) and not _accepted(
            recorded, current["definition_sha256"]
        ):
            findings.append(
                Finding(
                    "treasury.samples-not-updated",
                    file,
                    f"the definition changed since the base release {base_commit[:12]}, but"
                    " no sample changed; add or update a sample that shows the change, or"
                    f" run `inv treasury.record --format {format_id}"
                    " --accept-definition-change REASON`",
                )
            )
    return CheckCase(name="conformance", classname="validate.treasury", findings=findings)
