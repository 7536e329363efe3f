"""HTML previews of report and form definitions, in Kazakh and in Russian, for reviewers.

`render_preview` runs a definition's query on a sample database with the
definition's preview parameters and writes one self-contained HTML page per
language: the title, the legal basis, the parameter values and the result
table with the language's column captions. A layout column's `by_language`
names the query output shown on each language's page, such as `name_kk` on
the kk page beside `name_ru` on the ru page.
Amounts of a `money` column are stored in tiyn and shown in tenge with two
decimals.

`preview_changed` renders the definitions of a commit (exported from git, so
uncommitted edits stay out) or of the work tree, into a new folder that
replaces the output folder only when every page was written.
"""

from __future__ import annotations

import html
import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from pipeline.collect import collect
from pipeline.config import load_config
from pipeline.content import Kind, definition_path, list_items
from pipeline.database import Database, display_name, open_database
from pipeline.dates import format_date
from pipeline.definitions import PREVIEW_DEFAULTS, load_definition
from pipeline.errors import ConfigError, ValidationError
from pipeline.fsutil import atomic_folder, atomic_write_text
from pipeline.migrations import replace_parameters
from pipeline.samples import generate_sample
from pipeline.snapshot import export_commit
from pipeline.text import LANGUAGES

logger = logging.getLogger(__name__)

# Rows shown per preview; a reviewer checks layout and captions, not totals.
MAX_ROWS = 200

_WORDS = {
    "kk": {
        "basis": "Негіздеме",
        "order": "№{order} бұйрық, {date}",
        "effective": "Күшіне енетін күні",
        "parameters": "Параметрлер",
        "rows": "Жолдар: {shown} (барлығы {total})",
        "empty": "Деректер жоқ.",
        "source": "Алдын ала қарау: {database} үлгі дерекқоры",
        "commit": "Коммит: {commit}",
    },
    "ru": {
        "basis": "Основание",
        "order": "приказ № {order} от {date}",
        "effective": "Дата вступления в силу",
        "parameters": "Параметры",
        "rows": "Строк: {shown} (всего {total})",
        "empty": "Нет данных.",
        "source": "Предварительный просмотр: образец базы данных {database}",
        "commit": "Коммит: {commit}",
    },
}
# The names of the pages `render_preview` writes, such as `report-knp.kk.html`.
_PAGE_NAME = re.compile(r"(?:report|form)-[^/]+\.(?:kk|ru)\.html")


@dataclass(frozen=True)
class Previews:
    """The pages of one preview run by `kind/code` and language, and the commit rendered.

    `commit` is the full id of the commit whose definitions were rendered, or
    None when they were read from the work tree.
    """

    commit: str | None
    pages: dict[str, dict[str, Path]]


def render_preview(
    root: Path,
    kind: Kind,
    code: str,
    database_url: str,
    out_dir: Path,
    *,
    database_root: Path | None = None,
    commit: str | None = None,
) -> dict[str, Path]:
    """Write `<out_dir>/<kind>-<code>.<language>.html` per language; return them by language.

    The definition is read from `root`. A relative SQLite path in
    `database_url` is taken from `database_root` (default: `root`). A page
    names `commit` when one is given.

    Raises:
        ConfigError: `kind` is not a report or a form.
        ValidationError: the definition fails its checks, or its query fails on the
            sample database.
        MigrationError: the sample database cannot be opened.
    """
    if kind not in (Kind.REPORT, Kind.FORM):
        raise ConfigError(f"expected a report or a form, found {kind}")
    # A plain string such as "report" compares equal to its Kind, so normalise it.
    kind = Kind(kind)
    definition = load_definition(root, kind, code)
    parameters = preview_parameters(definition)
    with open_database(database_url, database_root or root) as db:
        names, rows = _run_query(db, definition, parameters, f"{kind}/{code}")
        database = display_name(database_url)
    pages: dict[str, Path] = {}
    for language in LANGUAGES:
        page = render_page(definition, language, parameters, names, rows, database, commit=commit)
        path = out_dir / f"{kind.value}-{code}.{language}.html"
        atomic_write_text(path, page)
        pages[language] = path
    logger.info("previewed %s %s on %s: %d row(s)", kind, code, database, len(rows))
    return pages


def preview_changed(
    root: Path,
    out_dir: Path,
    *,
    rev: str | None = None,
    database_url: str | None = None,
    every: bool = False,
) -> Previews:
    """Preview each report and form changed since the last release (or every one).

    With `rev`, the definitions of that commit are rendered and the changes
    are counted up to it. Without it, the work tree's definitions are
    rendered, uncommitted edits included, and the changes are counted up to
    HEAD. The pages replace the content of `out_dir` only when all of them
    were written, so pages of an earlier run never stay beside new ones.
    Without `database_url` the first configured sample database of `root` is
    used, and a missing SQLite sample with a `generate` size is generated
    first. A deleted item has no preview.

    Raises:
        ConfigError: no sample database is configured or given, or `out_dir`
            contains files that are not preview pages.
        CollectError: the change set cannot be collected or `rev` cannot be exported.
        ValidationError: a definition fails its checks or its query fails.
    """
    _check_output_folder(out_dir)
    commit: str | None = None
    changed = None
    if rev is not None or not every:
        changed = collect(root, rev or "HEAD")
    with tempfile.TemporaryDirectory(prefix="preview-") as work:
        content = root
        if rev is not None and changed is not None:
            commit = changed.commit
            content = export_commit(root, commit, Path(work) / "content")
        items: list[tuple[Kind, str]] = []
        for kind in (Kind.REPORT, Kind.FORM):
            if every or changed is None:
                codes = list_items(content, kind)
            else:
                codes = [
                    code
                    for code in changed.items(kind)
                    if definition_path(content, kind, code).is_file()
                ]
            items += [(kind, code) for code in codes]
        url = (database_url or _configured_sample(root)) if items else ""
        with atomic_folder(out_dir) as staging:
            pages = {
                f"{kind.value}/{code}": render_preview(
                    content, kind, code, url, staging, database_root=root, commit=commit
                )
                for kind, code in items
            }
    if not items:
        logger.info("no changed report or form to preview")
    where = f"commit {commit[:12]}" if commit else "the work tree"
    logger.info("previewed %d item(s) of %s into %s", len(pages), where, out_dir)
    final = {
        item: {language: out_dir / path.name for language, path in by_language.items()}
        for item, by_language in pages.items()
    }
    return Previews(commit=commit, pages=final)


def _check_output_folder(out_dir: Path) -> None:
    """Reject an output folder that contains anything but preview pages, which the run replaces."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; expected a folder for the preview pages")
    for path in sorted(out_dir.iterdir()):
        if not (path.is_file() and _PAGE_NAME.fullmatch(path.name)):
            raise ConfigError(
                f"{out_dir} contains {path.name!r}, which is not a preview page; expected an"
                " empty folder or one of earlier previews, because the previews replace the"
                " folder"
            )


def _configured_sample(root: Path) -> str:
    samples = load_config(root).sample_databases
    if not samples:
        raise ConfigError(
            "no sample database configured; give --database URL or add one to"
            " [tool.pipeline] sample_databases"
        )
    sample = samples[0]
    if sample.engine == "sqlite" and sample.generate:
        path = sample.sqlite_path(root)
        if not path.is_file():
            generate_sample(root, path, sample.generate)
    return sample.url


def preview_parameters(definition: dict[str, Any]) -> dict[str, Any]:
    """Return the parameter values of a preview: the definition's own, else one per type.

    A date parameter without a value takes the definition's effective date.
    """
    given = definition.get("preview", {}).get("parameters", {})
    values: dict[str, Any] = {}
    for parameter in definition.get("parameters", []):
        name = parameter["name"]
        if name in given:
            values[name] = given[name]
        elif parameter["type"] == "date":
            values[name] = definition["effective_date"]
        else:
            values[name] = PREVIEW_DEFAULTS[parameter["type"]]
    return values


def _run_query(
    db: Database, definition: dict[str, Any], parameters: dict[str, Any], name: str
) -> tuple[list[str], list[Any]]:
    query = definition["query"]
    statement = sqlglot.parse_one(query)
    names = list(statement.named_selects) if isinstance(statement, exp.Query) else []
    if db.engine == "postgresql":
        # `replace_parameters` substitutes with re.sub, so `\1` is the parameter's name.
        sql = replace_parameters(query.replace("%", "%%"), db.engine, r"%(\1)s")
    else:
        sql = query
    try:
        rows = db.execute(sql, parameters)
    except db.errors as exc:
        raise ValidationError(
            f"{name}: the query failed on the sample database {display_name(db.url)}:"
            f" {db.describe_error(exc)}; run `inv dry-run` for the schema checks"
        ) from exc
    return names, rows


def render_page(
    definition: dict[str, Any],
    language: str,
    parameters: dict[str, Any],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    database: str,
    *,
    commit: str | None = None,
) -> str:
    """Return the HTML page of one language; it names `commit` when one is given."""
    words = _WORDS[language]
    title = definition["title"][language]
    basis = definition["legal_basis"]
    issuer = basis["issuer"][language]
    order = words["order"].format(order=basis["order"], date=format_date(basis["date"], language))
    captions = definition["captions"][language]
    effective = format_date(definition["effective_date"], language)
    formats = {c["name"]: c.get("format", "text") for c in definition["layout"]["columns"]}
    columns = [c["name"] for c in definition["layout"]["columns"]]
    # The query output that contains each column's value on this language's page.
    sources = {
        c["name"]: c.get("by_language", {}).get(language, c["name"])
        for c in definition["layout"]["columns"]
    }
    positions = {name: index for index, name in enumerate(names)}
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{language}">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #999;padding:.25em .5em}td.number{text-align:right}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="basis">{_e(words["basis"])}: {_e(order)}, {_e(issuer)}</p>',
        f'<p class="effective">{_e(words["effective"])}: {_e(effective)}</p>',
        f"<h2>{_e(words['parameters'])}</h2>",
        '<table class="parameters">',
    ]
    for parameter in definition.get("parameters", []):
        value = parameters.get(parameter["name"])
        shown = format_date(value, language) if parameter["type"] == "date" else str(value)
        parts.append(f"<tr><th>{_e(parameter['title'][language])}</th><td>{_e(shown)}</td></tr>")
    parts += ["</table>", '<table class="data">', "<thead><tr>"]
    parts += [f'<th data-column="{_e(c)}">{_e(captions.get(c, c))}</th>' for c in columns]
    parts += ["</tr></thead>", "<tbody>"]
    for row in rows[:MAX_ROWS]:
        cells = []
        for column in columns:
            source = sources[column]
            value = row[positions[source]] if source in positions else None
            kind = formats[column]
            css = ' class="number"' if kind in ("integer", "decimal", "money") else ""
            cells.append(f"<td{css}>{_e(format_cell(value, kind, language))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    if not rows:
        parts.append(f'<p class="empty">{_e(words["empty"])}</p>')
    count = words["rows"].format(shown=min(len(rows), MAX_ROWS), total=len(rows))
    parts.append(f'<p class="rows">{_e(count)}</p>')
    parts.append(f'<p class="source">{_e(words["source"].format(database=database))}</p>')
    if commit:
        parts.append(f'<p class="commit">{_e(words["commit"].format(commit=commit[:12]))}</p>')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def format_cell(value: object, kind: str, language: str) -> str:
    """Return a cell's text: money in tenge with two decimals, dates in `language`'s format."""
    if value is None:
        return ""
    # PostgreSQL returns SUM() of a BIGINT column as a Decimal, SQLite as an int.
    if kind == "money" and isinstance(value, int | Decimal) and not isinstance(value, bool):
        tenge = f"{Decimal(value) / 100:,.2f}"
        return tenge.replace(",", "\u00a0").replace(".", ",")
    if kind == "date":
        return format_date(value, language)
    return str(value)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
