"""QA of a bundle: apply it to a copy of each test database and report what changed.

For every test database `qa_bundle`:

1. copies the database (`pipeline.db_backup.database_copy`), so the test
   database itself never changes;
2. records the schema before, applies the bundle to the copy with
   `apply_bundle` (the same code path as a customer's apply), and records the
   schema after;
3. runs `check_database` on the copy: integrity, orphans, duplicate keys;
4. previews every report and form the bundle ships: kk and ru titles and
   captions, and the first rows of its query, run on the copy with the
   preview parameters of `pipeline.preview`. The kk and ru pages of
   `pipeline.preview` go under `previews/`, linked from the report;
5. drops the copy.

It writes `qa.html`, `qa.json` and `qa.junit.xml` into the output folder.
"""

from __future__ import annotations

import html
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from pipeline.apply import apply_bundle
from pipeline.apply_store import load_definitions
from pipeline.config import DEFAULT_MAX_RATIO
from pipeline.database import Database, display_name, open_database
from pipeline.db_backup import database_copy
from pipeline.db_schema import describe_schema
from pipeline.dbtools import check_database
from pipeline.errors import ApplyError, PipelineError, SignatureError, VerificationError
from pipeline.findings import CheckCase, Finding, write_json_report, write_junit_report
from pipeline.fsutil import atomic_write_text
from pipeline.keys import PublicKey
from pipeline.migrations import replace_parameters
from pipeline.preview import format_cell, preview_parameters, render_page
from pipeline.trust import TrustedKey

logger = logging.getLogger(__name__)

PREVIEW_ROWS = 5
HTML_NAME = "qa.html"
JSON_NAME = "qa.json"
JUNIT_NAME = "qa.junit.xml"


@dataclass
class ReportPreview:
    """A shipped report or form: its titles, captions and the first rows of its query."""

    kind: str
    code: str
    title: dict[str, str]
    captions: dict[str, dict[str, str]]
    columns: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    error: str | None = None
    pages: dict[str, str] = field(default_factory=dict)


@dataclass
class DatabaseQA:
    """The QA of one test database."""

    database: str
    engine: str
    status: str
    error: str | None = None
    failed_step: str | None = None
    copy_seconds: float = 0.0
    apply_seconds: float = 0.0
    migrations: list[str] = field(default_factory=list)
    schema_before: dict[str, list[str]] = field(default_factory=dict)
    schema_after: dict[str, list[str]] = field(default_factory=dict)
    catalogs: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    previews: list[ReportPreview] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and not self.findings


@dataclass
class QAResult:
    """The QA of one bundle on every test database."""

    bundle: str
    databases: list[DatabaseQA]
    html: Path
    json: Path
    junit: Path

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.databases)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "passed": self.passed,
            "databases": [asdict(d) for d in self.databases],
        }

    def cases(self) -> list[CheckCase]:
        cases = []
        for db in self.databases:
            findings = list(db.findings)
            if db.error:
                findings.append(Finding(rule="qa.apply", file=db.database, message=db.error))
            cases.append(
                CheckCase(
                    name=db.database,
                    classname=f"qa.{db.engine}",
                    findings=findings,
                    seconds=db.apply_seconds,
                )
            )
        return cases


def _preview(
    db: Database, kind: str, code: str, document: dict[str, Any], pages: Path
) -> ReportPreview:
    preview = ReportPreview(
        kind=kind,
        code=code,
        title=dict(document.get("title", {})),
        captions={lang: dict(c) for lang, c in document.get("captions", {}).items()},
    )
    sql = document.get("query")
    if not isinstance(sql, str) or not sql.strip():
        return preview
    sql_text = sql
    values = preview_parameters(document)
    if db.engine == "postgresql":
        sql = replace_parameters(sql.replace("%", "%%"), db.engine, r"%(\1)s")
    try:
        rows = db.execute(sql, values)
    except db.errors as exc:
        preview.error = db.describe_error(exc)
        return preview
    layout = document.get("layout", {}).get("columns", [])
    # The query's own output names: layout columns are matched to them by name,
    # never by position, and a column may read another output per language.
    statement = sqlglot.parse_one(sql_text)
    names = list(statement.named_selects) if isinstance(statement, exp.Query) else []
    positions = {name: index for index, name in enumerate(names)}
    preview.columns = [str(c.get("name")) for c in layout] or list(names)
    formats = {str(c.get("name")): str(c.get("format", "text")) for c in layout}
    preview.formats = [formats.get(name, "text") for name in preview.columns]
    sources = {
        str(c.get("name")): str(c.get("by_language", {}).get("ru", c.get("name"))) for c in layout
    }
    preview.rows = [
        [
            _cell(row[positions[sources.get(name, name)]])
            if sources.get(name, name) in positions
            else None
            for name in preview.columns
        ]
        for row in rows[:PREVIEW_ROWS]
    ]
    preview.pages = _write_pages(code, document, values, names, rows, db, pages)
    return preview


def _write_pages(
    code: str,
    document: dict[str, Any],
    values: dict[str, Any],
    columns: list[str],
    rows: list[Any],
    db: Database,
    folder: Path,
) -> dict[str, str]:
    """Write the kk and ru preview pages of `pipeline.preview`; return their paths by language."""
    pages: dict[str, str] = {}
    for language in ("kk", "ru"):
        try:
            page = render_page(document, language, values, columns, rows, display_name(db.url))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("no %s preview page of %s: %s", language, code, exc)
            continue
        path = folder / f"{code}.{language}.html"
        atomic_write_text(path, page)
        pages[language] = path.as_posix()
    return pages


def _cell(value: object) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    return str(value)


def _qa_database(
    bundle: Path,
    url: str,
    keys: Sequence[PublicKey | TrustedKey],
    root: Path,
    out: Path,
    max_ratio: float,
) -> DatabaseQA:
    started = time.perf_counter()
    with database_copy(url, root) as copy, tempfile.TemporaryDirectory() as work:
        copied = time.perf_counter()
        with open_database(copy, root) as db:
            result = DatabaseQA(database=display_name(url), engine=db.engine, status="failed")
            result.schema_before = describe_schema(db)
        result.copy_seconds = copied - started
        try:
            applied = apply_bundle(
                bundle,
                copy,
                keys,
                root=root,
                install_dir=Path(work) / "install",
                backup_dir=Path(work) / "backups",
                max_ratio=max_ratio,
            )
        except Exception as exc:  # a failed apply is a QA result, not a QA failure
            result.error = str(exc)
            result.failed_step = _failed_step(exc)
            result.apply_seconds = time.perf_counter() - copied
            return result
        result.apply_seconds = applied.seconds
        result.status = applied.status
        result.migrations = [run.path for run in applied.migrations]
        result.catalogs = applied.catalogs
        result.findings = check_database(copy, root).findings()
        with open_database(copy, root) as db:
            result.schema_after = describe_schema(db)
            for kind in ("report", "form"):
                stored = load_definitions(db, kind)
                for code in applied.definitions.get(kind, []):
                    folder = out / "previews" / display_name(url) / kind
                    preview = _preview(db, kind, code, stored[code], folder)
                    preview.pages = {
                        lang: Path(page).relative_to(out).as_posix()
                        for lang, page in preview.pages.items()
                    }
                    result.previews.append(preview)
    return result


def _failed_step(error: Exception) -> str:
    """Name the apply step that raised `error`, for the report of a failed database."""
    if isinstance(error, VerificationError | SignatureError):
        return "bundle verification"
    if isinstance(error, ApplyError) and isinstance(error.__cause__, PipelineError):
        # apply_bundle wraps every error of the transaction after undoing it.
        return "apply transaction"
    if isinstance(error, ApplyError):
        return "checks before the apply"
    return "apply"


def qa_bundle(
    bundle: Path,
    databases: Sequence[str],
    keys: Sequence[PublicKey | TrustedKey],
    out: Path,
    *,
    root: Path = Path("."),
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> QAResult:
    """Apply `bundle` to a copy of each database and write the HTML, JSON and JUnit reports.

    A database where the apply fails gets its error in the report; the other
    databases are still checked. `max_ratio` goes to the verification of
    each apply.

    Raises:
        DatabaseToolError: a database cannot be copied.
    """
    results = []
    for url in databases:
        logger.info("QA of %s on %s", bundle.name, display_name(url))
        results.append(_qa_database(bundle, url, keys, root, out, max_ratio))
    result = QAResult(
        bundle=bundle.name,
        databases=results,
        html=out / HTML_NAME,
        json=out / JSON_NAME,
        junit=out / JUNIT_NAME,
    )
    atomic_write_text(result.html, render_html(result))
    write_json_report(result.json, result.to_json())
    write_junit_report(result.junit, "qa", result.cases())
    return result


# -- HTML --------------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
.passed { color: #17661f; } .failed { color: #a01010; }
.added { background: #e6f6e6; } .removed { background: #fbe4e4; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e('' if v is None else v)}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _schema_changes(db: DatabaseQA) -> str:
    rows = []
    for table in sorted(set(db.schema_before) | set(db.schema_after)):
        before, after = db.schema_before.get(table), db.schema_after.get(table)
        if before == after:
            continue
        if before is None:
            rows.append(("added", table, ", ".join(after or [])))
        elif after is None:
            rows.append(("removed", table, ", ".join(before)))
        else:
            added = [c for c in after if c not in before]
            removed = [c for c in before if c not in after]
            parts = []
            if added:
                parts.append(f"+ {', '.join(added)}")
            if removed:
                parts.append(f"- {', '.join(removed)}")
            change = "; ".join(parts)
            rows.append(("changed", table, change))
    if not rows:
        return "<p>No schema changes.</p>"
    return _table(["change", "table", "columns"], rows, "schema-changes")


def _bilingual_cell(value: object, kind: str) -> str:
    """Return a cell as the kk and ru pages show it, once when both show it alike."""
    kk, ru = (format_cell(value, kind, language) for language in ("kk", "ru"))
    return kk if kk == ru else f"{kk} / {ru}"


def _preview_html(preview: ReportPreview) -> str:
    parts = [f"<h4>{_e(preview.kind)} {_e(preview.code)}</h4>"]
    for lang in ("kk", "ru"):
        if lang in preview.title:
            parts.append(f'<p lang="{lang}">{lang}: {_e(preview.title[lang])}</p>')
    links = [
        f'<a class="preview-page" href="{_e(page)}">{lang}</a>'
        for lang, page in sorted(preview.pages.items())
    ]
    if links:
        parts.append(f"<p>Preview pages: {' '.join(links)}</p>")
    if preview.error:
        parts.append(f'<p class="failed">query failed: {_e(preview.error)}</p>')
        return "".join(parts)
    headers = [
        " / ".join(preview.captions.get(lang, {}).get(c, c) for lang in ("kk", "ru"))
        for c in preview.columns
    ]
    if preview.columns:
        # The same cell formats as the linked pages: money in tenge, dates as each
        # language writes them.
        kinds = preview.formats or ["text"] * len(preview.columns)
        shown = [
            [_bilingual_cell(value, kind) for value, kind in zip(row, kinds, strict=False)]
            for row in preview.rows
        ]
        parts.append(_table(headers, shown, "preview"))
        if not preview.rows:
            parts.append("<p>The query returned no rows on this database.</p>")
    return "".join(parts)


def _result(db: DatabaseQA) -> str:
    """Return the result column: the apply status, or `failed` once."""
    if db.error:
        return "failed"
    return db.status if db.passed else f"{db.status}, integrity problems"


def _database_html(db: DatabaseQA) -> str:
    state = "passed" if db.passed else "failed"
    parts = [
        f'<section class="database" id="db-{_e(db.database)}">',
        f'<h2>{_e(db.database)} ({_e(db.engine)}): <span class="{state}">{_e(_result(db))}'
        "</span></h2>",
        f"<p>Copy {db.copy_seconds:.2f} s, apply {db.apply_seconds:.2f} s.</p>",
    ]
    if db.error:
        step = db.failed_step or "apply"
        parts.append(f'<p class="failed error">Failed step: {_e(step)}. {_e(db.error)}</p>')
        parts.append(
            "<p>The apply was rolled back, so the database copy is as before: no migration,"
            " catalog or definition was applied and no integrity check ran.</p>"
        )
        parts.append(
            f'<details class="schema-before"><summary>Schema before:'
            f" {len(db.schema_before)} tables</summary>"
            + _table(
                ["table", "columns"],
                [(t, ", ".join(c)) for t, c in sorted(db.schema_before.items())],
            )
            + "</details>"
        )
        parts.append('<p class="schema-after">Schema after: unchanged (rolled back)</p>')
        parts.append("</section>")
        return "\n".join(parts)

    parts.append("<h3>Migrations</h3>")
    parts.append(
        "<ul>" + "".join(f"<li>{_e(m)}</li>" for m in db.migrations) + "</ul>"
        if db.migrations
        else "<p>No pending migrations.</p>"
    )
    parts.append("<h3>Schema changes</h3>" + _schema_changes(db))
    for label, schema in (("before", db.schema_before), ("after", db.schema_after)):
        tables = [(table, ", ".join(columns)) for table, columns in sorted(schema.items())]
        parts.append(
            f'<details class="schema-{label}"><summary>Schema {label}: {len(tables)} tables'
            f"</summary>{_table(['table', 'columns'], tables)}</details>"
        )

    parts.append("<h3>Catalogs</h3>")
    rows = [
        (cid, c["added"], c["changed"], c["removed"], c["rows"])
        for cid, c in sorted(db.catalogs.items())
    ]
    parts.append(_table(["catalog", "added", "changed", "removed", "rows"], rows, "catalogs"))

    parts.append("<h3>Integrity</h3>")
    parts.append(
        "<ul>" + "".join(f'<li class="failed">{_e(f)}</li>' for f in db.findings) + "</ul>"
        if db.findings
        else '<p class="passed">No integrity problems.</p>'
    )

    parts.append("<h3>Reports and forms</h3>")
    parts.extend(_preview_html(p) for p in db.previews)
    if not db.previews:
        parts.append("<p>The bundle ships no report or form.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(result: QAResult) -> str:
    """Return the QA report as one self-contained HTML page."""
    state = "passed" if result.passed else "failed"
    summary = _table(
        ["database", "engine", "result", "apply, s"],
        [
            (
                d.database,
                d.engine,
                _result(d),
                f"{d.apply_seconds:.2f}",
            )
            for d in result.databases
        ],
        "summary",
    )
    sections = "\n".join(_database_html(d) for d in result.databases)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>QA of {_e(result.bundle)}</title><style>{_STYLE}</style></head><body>\n"
        f'<h1>QA of {_e(result.bundle)}: <span class="{state}">{state}</span></h1>\n'
        f"{summary}\n{sections}\n</body></html>\n"
    )
