"""QA reports: a real bundle applied to copies of test databases, checked in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from browser import dump_dom
from test_apply import Bundles, build_bundles, postgres_sample

from pipeline.preview import format_cell
from pipeline.qa import qa_bundle
from pipeline.samples import generate_sample

CLI = str(Path(sys.executable).parent / "parus-release")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    return build_bundles(tmp_path_factory.mktemp("qa-bundles"))


@pytest.fixture
def samples(bundles: Bundles, tmp_path: Path) -> list[Path]:
    """Two SQLite test databases: a clean sample, and one that makes the update fail."""
    clean = generate_sample(bundles.repo, tmp_path / "clean.sqlite", "small")
    broken = generate_sample(bundles.repo, tmp_path / "reserved-knp.sqlite", "small")
    connection = sqlite3.connect(broken)
    with connection:
        connection.execute("INSERT INTO knp (code, name_ru, name_kk) VALUES ('999', 'x', 'x')")
    connection.close()
    return [clean, broken]


def test_qa_report_contents(bundles: Bundles, samples: list[Path], tmp_path: Path) -> None:
    before = [sha256(path) for path in samples]

    result = qa_bundle(
        bundles.no_transaction,
        [f"sqlite:///{path}" for path in samples],
        [bundles.public],
        tmp_path / "qa",
    )

    assert [sha256(path) for path in samples] == before
    clean, broken = result.databases
    assert clean.status == "applied"
    assert clean.passed
    assert clean.catalogs["knp"]["added"] == 7
    assert "audit_log" in clean.schema_after
    assert "audit_log" not in clean.schema_before
    assert "kbk" in clean.schema_after
    assert [p.code for p in clean.previews] == ["knp-payments-monthly", "payment-order"]
    assert clean.previews[0].error is None
    assert clean.previews[0].rows
    assert broken.status == "failed"
    assert broken.error is not None and "0005_reserved_knp.sql" in broken.error
    assert not result.passed


def test_qa_html_in_browser(bundles: Bundles, samples: list[Path], tmp_path: Path) -> None:
    result = qa_bundle(
        bundles.no_transaction,
        [f"sqlite:///{path}" for path in samples],
        [bundles.public],
        tmp_path / "qa",
    )

    dom = dump_dom(result.html)

    assert "QA of parus-kaz-budget-2026.12.0.7z" in dom
    assert 'id="db-clean.sqlite"' in dom
    assert 'id="db-reserved-knp.sqlite"' in dom
    assert "0005_reserved_knp.sql" in dom
    assert "audit_log" in dom
    assert "<td>knp</td><td>7</td><td>0</td><td>0</td><td>7</td>" in dom
    assert "Код КНП" in dom
    assert "ТМК коды" in dom
    assert "No integrity problems." in dom
    assert 'class="schema-before"' in dom
    assert 'class="schema-after"' in dom
    assert 'href="previews/clean.sqlite/report/knp-payments-monthly.kk.html"' in dom
    page = result.html.parent / "previews/clean.sqlite/report/knp-payments-monthly.ru.html"
    assert "Код КНП" in dump_dom(page)
    monthly = result.databases[0].previews[0]
    amount = monthly.rows[0][monthly.columns.index("amount")]
    tenge = format_cell(amount, "money", "ru")
    assert "," in tenge
    # Chromium serializes the no-break space that groups thousands as &nbsp;.
    serialized = tenge.replace("\u00a0", "&nbsp;")
    inline = dom[dom.index("knp-payments-monthly</h4>") :]
    inline = inline[: inline.index("</table>")]
    assert f">{serialized}</td>" in inline
    assert f"<td>{amount}</td>" not in inline
    assert f">{serialized}</td>" in dump_dom(page)
    # Columns are matched by name: every inline cell of the first row has a value.
    assert all(cell not in (None, "") for cell in monthly.rows[0])
    kk_page = result.html.parent / "previews/clean.sqlite/report/knp-payments-monthly.kk.html"
    kk_table = dump_dom(kk_page).split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert re.search(r"<td[^>]*></td>", kk_table) is None
    assert any(letter in kk_table for letter in "әғқңөұүһі")
    failed = dom[dom.index('id="db-reserved-knp.sqlite"') :]
    failed = failed[: failed.index("</section>")]
    assert "Failed step: apply transaction" in failed
    assert "0005_reserved_knp.sql" in failed
    assert "Schema after: unchanged (rolled back)" in failed
    assert "removed" not in failed
    assert "No pending migrations." not in failed
    assert "No integrity problems." not in failed
    assert 'class="passed"' not in failed
    assert "FAILED" not in failed


def test_qa_json_and_junit(bundles: Bundles, samples: list[Path], tmp_path: Path) -> None:
    result = qa_bundle(
        bundles.no_transaction,
        [f"sqlite:///{path}" for path in samples],
        [bundles.public],
        tmp_path / "qa",
    )
    report = json.loads(result.json.read_text(encoding="utf-8"))
    assert report["passed"] is False
    assert [d["status"] for d in report["databases"]] == ["applied", "failed"]
    suite = ET.parse(result.junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "2"
    assert suite.get("failures") == "1"


def test_cli_qa_exit_code(bundles: Bundles, samples: list[Path], tmp_path: Path) -> None:
    done = subprocess.run(
        [
            CLI,
            "qa",
            str(bundles.first),
            "--database",
            f"sqlite:///{samples[0]}",
            "--trusted-keys",
            str(bundles.public_file),
            "--out",
            str(tmp_path / "qa"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )
    assert done.returncode == 0, done.stderr
    assert "clean.sqlite (sqlite): applied" in done.stdout
    assert (tmp_path / "qa" / "qa.html").is_file()


def test_cli_qa_max_ratio(bundles: Bundles, samples: list[Path], tmp_path: Path) -> None:
    done = subprocess.run(
        [
            CLI,
            "qa",
            str(bundles.first),
            "--database",
            f"sqlite:///{samples[0]}",
            "--trusted-keys",
            str(bundles.public_file),
            "--out",
            str(tmp_path / "qa"),
            "--max-ratio",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "true"},
    )
    assert done.returncode == 1
    assert "clean.sqlite (sqlite): failed" in done.stdout
    report = json.loads((tmp_path / "qa" / "qa.json").read_text(encoding="utf-8"))
    assert "is above the limit 1;" in report["databases"][0]["error"]


@pytest.mark.postgres
def test_qa_on_postgres(bundles: Bundles, postgres_database: str, tmp_path: Path) -> None:
    postgres_sample(postgres_database, bundles.repo)
    result = qa_bundle(bundles.first, [postgres_database], [bundles.public], tmp_path / "qa")
    (database,) = result.databases
    assert database.engine == "postgresql"
    assert database.status == "applied", database.error
    assert database.previews[0].error is None
    assert "treasury_statements" in database.schema_after
