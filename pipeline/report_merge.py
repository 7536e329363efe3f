"""Join the JSON reports of a sharded dry-run into one report.

Each job of a CI matrix runs `inv dry-run --shard I/N --json FILE`. Before it
joins their results, the merge checks that the reports are one complete set:
the same N, and every I from 1 to N exactly once. So a job that never uploaded
its report fails the merge instead of passing unnoticed.

A report that records a failed run as a whole (`"passed": false` with an
`error`, as a dry-run that could not start writes it) fails the merge too,
even though it has no failed result, and its error is shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.dryrun import DatabaseResult, DryRunResult, Shard
from pipeline.errors import ValidationError
from pipeline.findings import CheckCase, Finding

logger = logging.getLogger(__name__)

_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


@dataclass
class Report:
    """One dry-run report as read: its results and the failures it records as a whole."""

    path: Path
    result: DryRunResult
    # Messages of a run that failed as a whole, such as one that never started.
    failures: list[str] = field(default_factory=list)


@dataclass
class MergedReport:
    """The joined results of dry-run reports and the failures of whole runs among them."""

    results: list[DatabaseResult]
    # One finding per report that records a failed run, named by the report file.
    failures: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures and DryRunResult(self.results).passed

    def to_json(self) -> dict[str, Any]:
        """Return the merged report as plain JSON data, in the form of a dry-run report."""
        data = DryRunResult(self.results).to_json()
        data["passed"] = self.passed
        data["errors"] = [str(failure) for failure in self.failures]
        return data

    def summary(self) -> list[str]:
        """Return the human summary: the failed runs first, then one line per database."""
        lines = [f"error: {failure}" for failure in self.failures]
        return lines + DryRunResult(self.results).summary()

    def cases(self) -> list[CheckCase]:
        """Return JUnit check cases: one per failed run, then those of every database."""
        cases = [
            CheckCase(name=failure.file, classname="dry-run.report", findings=[failure])
            for failure in self.failures
        ]
        return cases + DryRunResult(self.results).cases()


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def read_report(path: Path) -> Report:
    """Read one dry-run JSON report.

    Raises:
        ValidationError: the file is missing, not JSON, or not a dry-run report;
            the message names the JSON path of the first wrong value.
    """
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValidationError(f"{path}: dry-run report not found") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path}: expected a UTF-8 JSON dry-run report: {exc}") from exc
    if not isinstance(data, dict):
        raise ValidationError(
            f"{path} $: expected a JSON object of a dry-run report, found {_json_type(data)}"
        )
    passed = data.get("passed")
    if not isinstance(passed, bool):
        raise ValidationError(f"{path} $.passed: expected true or false, found {passed!r}")
    items = data.get("results")
    if not isinstance(items, list):
        raise ValidationError(
            f"{path} $.results: expected an array of results, found {_json_type(items)}"
        )
    result = DryRunResult(
        [_read_result(path, index, item) for index, item in enumerate(items)],
        _read_shard(path, data.get("shard")),
    )
    return Report(path, result, _run_failures(path, data, result))


def _read_result(path: Path, index: int, item: object) -> DatabaseResult:
    where = f"{path} $.results[{index}]"
    if not isinstance(item, dict):
        raise ValidationError(
            f"{where}: expected a JSON object of a result, found {_json_type(item)}"
        )
    try:
        return DatabaseResult.from_json(item)
    except KeyError as exc:
        raise ValidationError(f"{where}.{exc.args[0]}: missing") from exc
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{where}: malformed result: {exc}") from exc


def _read_shard(path: Path, shard: object) -> Shard | None:
    if shard is None:
        return None
    index = shard.get("index") if isinstance(shard, dict) else None
    count = shard.get("count") if isinstance(shard, dict) else None
    if not isinstance(index, int) or not isinstance(count, int) or not 1 <= index <= count:
        raise ValidationError(
            f'{path} $.shard: expected {{"index": I, "count": N}}, found {shard!r}'
        )
    return Shard(index, count)


def _run_failures(path: Path, data: dict[str, Any], result: DryRunResult) -> list[str]:
    """Return the failures that `data` records for the run as a whole."""
    failures = []
    error = data.get("error")
    if error is not None:
        if not isinstance(error, str):
            raise ValidationError(f"{path} $.error: expected a message, found {error!r}")
        failures.append(f"the dry-run failed: {error}")
    errors = data.get("errors", [])
    if not isinstance(errors, list) or not all(isinstance(item, str) for item in errors):
        raise ValidationError(f"{path} $.errors: expected an array of messages, found {errors!r}")
    failures.extend(errors)
    if data["passed"] is False and not failures and result.passed:
        failures.append(
            f"$.passed: the report records a failed dry-run, but none of its"
            f" {len(result.results)} result(s) failed and it names no error;"
            " run that dry-run again"
        )
    return failures


def merge_reports(paths: Sequence[Path]) -> MergedReport:
    """Read shard reports and join their results in shard order.

    Reports without a shard are joined in the order given. A report that
    records a failed run as a whole makes the merged report fail.

    Raises:
        ValidationError: a report is unreadable, reports mix sharded and whole
            runs, shard counts differ, or a shard is missing or given twice.
    """
    if not paths:
        raise ValidationError("no dry-run reports to merge: pass at least one JSON report")
    reports = [read_report(path) for path in paths]
    sharded = [report for report in reports if report.result.shard is not None]
    if sharded and len(sharded) != len(reports):
        whole = next(report for report in reports if report.result.shard is None)
        failed = ""
        if whole.failures:
            failed = f" that failed: {whole.failures[0].removeprefix('the dry-run failed: ')}"
        raise ValidationError(
            f"{whole.path}: expected a shard report like the others, found a report of a"
            f" whole run{failed}"
        )
    if sharded:
        reports = _check_shards(sharded)
    results = [result for report in reports for result in report.result.results]
    failures = [
        _failure(report.path, message) for report in reports for message in report.failures
    ]
    logger.info(
        "merged %d report(s) with %d result(s) and %d failed run(s)",
        len(reports),
        len(results),
        len(failures),
    )
    return MergedReport(results, failures)


def _failure(path: Path, message: str) -> Finding:
    # A message that starts with a JSON path belongs to the report file, like other findings.
    json_path, _, rest = message.partition(": ")
    if json_path.startswith("$"):
        return Finding(rule="dry-run.report", file=str(path), json_path=json_path, message=rest)
    return Finding(rule="dry-run.report", file=str(path), message=message)


def _check_shards(reports: list[Report]) -> list[Report]:
    counts = {report.result.shard.count for report in reports if report.result.shard}
    if len(counts) != 1:
        listed = ", ".join(f"{report.path} ({report.result.shard})" for report in reports)
        raise ValidationError(f"expected shards of one run with the same N, found {listed}")
    (count,) = counts
    seen: dict[int, Path] = {}
    for report in reports:
        index = report.result.shard.index if report.result.shard else 0
        if index in seen:
            raise ValidationError(
                f"shard {index}/{count} is given twice: {seen[index]} and {report.path}"
            )
        seen[index] = report.path
    missing = [f"{index}/{count}" for index in range(1, count + 1) if index not in seen]
    if missing:
        raise ValidationError(
            f"shard(s) {', '.join(missing)} missing from the merge; pass the report of every"
            " job of the matrix, or rerun the jobs whose report is missing"
        )
    return sorted(
        reports, key=lambda report: report.result.shard.index if report.result.shard else 0
    )
