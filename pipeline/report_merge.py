"""Join the JSON reports of a sharded dry-run into one report.

Each job of a CI matrix runs `inv dry-run --shard I/N --json FILE`. Before it
joins their results, the merge checks that the reports are one complete set:
the same N, and every I from 1 to N exactly once. So a job that never uploaded
its report fails the merge instead of passing unnoticed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.dryrun import DatabaseResult, DryRunResult, Shard
from pipeline.errors import ValidationError

logger = logging.getLogger(__name__)


def read_report(path: Path) -> DryRunResult:
    """Read one dry-run JSON report.

    Raises:
        ValidationError: the file is missing, not JSON, or not a dry-run report.
    """
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValidationError(f"{path}: dry-run report not found") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path}: expected a UTF-8 JSON dry-run report: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValidationError(
            f"{path} $.results: expected the list of a dry-run report,"
            f" found {type(data.get('results') if isinstance(data, dict) else data).__name__}"
        )
    shard = data.get("shard")
    try:
        results = [DatabaseResult.from_json(item) for item in data["results"]]
        parsed = None if shard is None else Shard(int(shard["index"]), int(shard["count"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"{path}: malformed dry-run report: {exc!r}") from exc
    return DryRunResult(results, parsed)


def merge_reports(paths: Sequence[Path]) -> DryRunResult:
    """Read shard reports and join their results in shard order.

    Reports without a shard are joined in the order given.

    Raises:
        ValidationError: a report is unreadable, reports mix sharded and whole
            runs, shard counts differ, or a shard is missing or given twice.
    """
    if not paths:
        raise ValidationError("no dry-run reports to merge: pass at least one JSON report")
    reports = [(path, read_report(path)) for path in paths]
    sharded = [(path, report) for path, report in reports if report.shard is not None]
    if sharded and len(sharded) != len(reports):
        whole = next(path for path, report in reports if report.shard is None)
        raise ValidationError(
            f"{whole}: expected a shard report like the others, found a report of a whole run"
        )
    if sharded:
        reports = _check_shards(sharded)
    results = [result for _, report in reports for result in report.results]
    logger.info("merged %d report(s) with %d result(s)", len(reports), len(results))
    return DryRunResult(results)


def _check_shards(reports: list[tuple[Path, DryRunResult]]) -> list[tuple[Path, DryRunResult]]:
    counts = {report.shard.count for _, report in reports if report.shard}
    if len(counts) != 1:
        listed = ", ".join(f"{path} ({report.shard})" for path, report in reports)
        raise ValidationError(f"expected shards of one run with the same N, found {listed}")
    (count,) = counts
    seen: dict[int, Path] = {}
    for path, report in reports:
        index = report.shard.index if report.shard else 0
        if index in seen:
            raise ValidationError(
                f"shard {index}/{count} is given twice: {seen[index]} and {path}"
            )
        seen[index] = path
    missing = [f"{index}/{count}" for index in range(1, count + 1) if index not in seen]
    if missing:
        raise ValidationError(
            f"shard(s) {', '.join(missing)} missing from the merge; pass the report of every"
            " job of the matrix, or rerun the jobs whose report is missing"
        )
    return sorted(reports, key=lambda item: item[1].shard.index if item[1].shard else 0)
