"""Merging the JSON reports of a sharded dry-run: failed runs, broken reports, the task."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from pipeline.dryrun import DatabaseResult
from pipeline.errors import ValidationError
from pipeline.report_merge import merge_reports

REPO_ROOT = Path(__file__).resolve().parent.parent
START_ERROR = "migrations/0003_x.sql: expected UTF-8, found byte 0xff"


def passing_result(name: str) -> dict[str, Any]:
    result = DatabaseResult(
        database=name,
        url=f"sqlite:///{name}",
        engine="sqlite",
        engine_version="3.40.1",
        passed=True,
    )
    return asdict(result)


def write_report(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def not_started(path: Path, shard: dict[str, int] | None = None) -> Path:
    """Write the report of a dry-run that failed before it ran any sample database."""
    report = {"passed": False, "shard": shard, "error": START_ERROR, "results": []}
    return write_report(path, report)


def test_merge_fails_run_not_started(tmp_path: Path) -> None:
    report = not_started(tmp_path / "not-started.json")

    merged = merge_reports([report])

    assert not merged.passed
    assert merged.to_json()["passed"] is False
    assert merged.to_json()["errors"] == [f"{report}: the dry-run failed: {START_ERROR}"]
    assert f"error: {report}: the dry-run failed: {START_ERROR}" in merged.summary()


def test_merge_fails_two_runs_not_started(tmp_path: Path) -> None:
    first = not_started(tmp_path / "first.json")
    second = not_started(tmp_path / "second.json")

    merged = merge_reports([first, second])

    assert not merged.passed
    assert len(merged.to_json()["errors"]) == 2


def test_merge_fails_shard_without_results(tmp_path: Path) -> None:
    good = write_report(
        tmp_path / "shard-1.json",
        {"passed": True, "shard": {"index": 1, "count": 2}, "results": [passing_result("a")]},
    )
    failed = not_started(tmp_path / "shard-2.json", {"index": 2, "count": 2})

    merged = merge_reports([good, failed])

    assert not merged.passed
    assert [result.database for result in merged.results] == ["a"]
    assert merged.to_json()["errors"] == [f"{failed}: the dry-run failed: {START_ERROR}"]


def test_merge_fails_passed_false(tmp_path: Path) -> None:
    report = write_report(
        tmp_path / "passed-false.json",
        {"passed": False, "shard": None, "results": [passing_result("a")]},
    )

    merged = merge_reports([report])

    assert not merged.passed
    assert merged.to_json()["errors"] == [
        f"{report} $.passed: the report records a failed dry-run, but none of its 1"
        " result(s) failed and it names no error; run that dry-run again"
    ]


def test_merge_junit_names_failed_report(tmp_path: Path) -> None:
    report = not_started(tmp_path / "not-started.json")

    (case,) = merge_reports([report]).cases()

    assert case.failed
    assert case.name == str(report)
    assert case.findings[0].message == f"the dry-run failed: {START_ERROR}"


def test_merge_mixed_report_shows_error(tmp_path: Path) -> None:
    good = write_report(
        tmp_path / "shard-1.json",
        {"passed": True, "shard": {"index": 1, "count": 2}, "results": [passing_result("a")]},
    )
    whole = not_started(tmp_path / "whole.json")

    with pytest.raises(ValidationError) as caught:
        merge_reports([good, whole])

    assert str(caught.value) == (
        f"{whole}: expected a shard report like the others, found a report of a whole run"
        f" that failed: {START_ERROR}"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "$: expected a JSON object of a dry-run report, found array"),
        ({"passed": True}, "$.results: expected an array of results, found null"),
        (
            {"passed": "yes", "results": []},
            "$.passed: expected true or false, found 'yes'",
        ),
        (
            {"passed": True, "results": [{"database": "a"}]},
            "$.results[0].url: missing",
        ),
        (
            {"passed": True, "results": ["a"]},
            "$.results[0]: expected a JSON object of a result, found string",
        ),
        (
            {"passed": True, "shard": {"index": 1}, "results": []},
            '$.shard: expected {"index": I, "count": N}, found {\'index\': 1}',
        ),
        (
            {"passed": False, "error": 3, "results": []},
            "$.error: expected a message, found 3",
        ),
    ],
)
def test_merge_rejects_malformed_report(tmp_path: Path, data: object, message: str) -> None:
    report = write_report(tmp_path / "malformed.json", data)

    with pytest.raises(ValidationError) as caught:
        merge_reports([report])

    assert str(caught.value) == f"{report} {message}"


def run_task(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_task_merge_fails_unstarted_shard(tmp_path: Path) -> None:
    root = tmp_path / "content"
    shutil.copytree(REPO_ROOT / "migrations", root / "migrations")
    failed = tmp_path / "shard-2.json"
    good = write_report(
        tmp_path / "shard-1.json",
        {"passed": True, "shard": {"index": 1, "count": 2}, "results": [passing_result("a")]},
    )

    # Shard 2/2 of one sample database selects none, so that dry-run fails before it starts.
    dry_run = run_task(
        "dry-run", "--repo", str(root), "--database", "sqlite:///a.sqlite",
        "--shard", "2/2", "--json", str(failed),
    )  # fmt: skip
    merged = run_task(
        "report.merge", "--report", str(good), "--report", str(failed),
        "--json", str(tmp_path / "merged.json"), "--junit", str(tmp_path / "merged.xml"),
    )  # fmt: skip

    assert dry_run.returncode == 1
    assert json.loads(failed.read_text("utf-8"))["shard"] == {"index": 2, "count": 2}
    assert merged.returncode == 1, merged.stdout
    assert (
        f"{failed}: the dry-run failed: no sample database to dry-run on: shard 2/2"
        in merged.stdout
    )
    assert "error: merged dry-run failed: 1 report(s) record a failed run" in merged.stderr
    assert json.loads((tmp_path / "merged.json").read_text("utf-8"))["passed"] is False
    suite = ET.parse(tmp_path / "merged.xml").getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1"
