"""Release notes in Kazakh and Russian, written from the content metadata.

The notes are Markdown (`render_notes`) and HTML (`render_notes_html`),
generated from the fix, catalog, report, form, treasury format and migration
entries of a release, so they never disagree with the bundle. Each language
gets its own file; both have the same sections in the same order.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.dates import format_date

LANGUAGES = ("kk", "ru")
PRODUCT_TITLE = "Парус-КАЗ.Бюджет"

_WORDS: dict[str, dict[str, str]] = {
    "kk": {
        "title": "{product} {version} жаңартуы",
        "base": "Алдыңғы шығарылым: {base}.",
        "first": "Алғашқы шығарылым.",
        "commit": "Бастапқы коммит: `{commit}`.",
        "fix": "Түзетулер",
        "catalog": "Анықтамалықтар",
        "report": "Есептер",
        "form": "Құжат нысандары",
        "treasury": "Қазынашылық форматтары",
        "migration": "Дерекқор құрылымының өзгерістері",
        "none": "Өзгерістер жоқ.",
        "added": "қосылды",
        "modified": "өзгертілді",
        "renamed": "атауы өзгертілді",
        "deleted": "жойылды",
        "rows": "жол саны: {rows}",
        "delta": "қосылған: {added}, өзгерген: {changed}, жойылған: {removed}",
        "severity": "Маңыздылығы",
        "critical": "өте маңызды",
        "major": "маңызды",
        "minor": "шамалы",
        "component": "Құрамдас бөлік",
        "tickets": "Өтінімдер",
        "basis": "Негіздеме: №{order} бұйрық, {date}, {issuer}",
        "effective": "Күшіне енетін күні: {date}",
        "version": "нұсқасы {version}",
        "schema": "Дерекқор құрылымының нұсқасы: {before} → {after}.",
    },
    "ru": {
        "title": "Обновление {product} {version}",
        "base": "Предыдущий выпуск: {base}.",
        "first": "Первый выпуск.",
        "commit": "Исходный коммит: `{commit}`.",
        "fix": "Исправления",
        "catalog": "Справочники",
        "report": "Отчёты",
        "form": "Формы документов",
        "treasury": "Форматы Казначейства",
        "migration": "Изменения структуры базы данных",
        "none": "Изменений нет.",
        # Neuter, as in "добавлено: ...", so the word fits an item of any gender.
        "added": "добавлено",
        "modified": "изменено",
        "renamed": "переименовано",
        "deleted": "удалено",
        "rows": "строк: {rows}",
        "delta": "добавлено: {added}, изменено: {changed}, удалено: {removed}",
        "severity": "Важность",
        "critical": "критическая",
        "major": "существенная",
        "minor": "незначительная",
        "component": "Компонент",
        "tickets": "Заявки",
        "basis": "Основание: приказ № {order} от {date}, {issuer}",
        "effective": "Дата вступления в силу: {date}",
        "version": "версия {version}",
        "schema": "Версия структуры базы данных: {before} → {after}.",
    },
}

SECTIONS = ("fix", "catalog", "report", "form", "treasury", "migration")

# Characters that start inline Markdown (emphasis, code, links, raw HTML,
# entities, tables, strikethrough), escaped with a backslash as CommonMark allows.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~!#])")
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


@dataclass(frozen=True)
class NoteEntry:
    """One changed item: its id, change type and definition.

    A deleted item carries its definition from the base release, or None
    when there is no base release to read it from.
    """

    item: str
    change: str
    definition: dict[str, Any] | None = None
    rows: int | None = None
    delta: dict[str, int] | None = None


@dataclass
class NotesInput:
    """Everything the release notes are written from."""

    version: str
    commit: str
    base_tag: str | None
    schema_before: str | None
    schema_after: str | None
    entries: dict[str, list[NoteEntry]] = field(default_factory=dict)


def render_notes(notes: NotesInput, language: str) -> str:
    """Return the Markdown release notes in `language` (`kk` or `ru`)."""
    words = _WORDS[language]
    lines = [
        "# " + words["title"].format(product=PRODUCT_TITLE, version=notes.version),
        "",
        words["base"].format(base=notes.base_tag) if notes.base_tag else words["first"],
        words["commit"].format(commit=notes.commit[:12]),
    ]
    if notes.schema_after and notes.schema_before != notes.schema_after:
        before = notes.schema_before or "—"
        lines.append(words["schema"].format(before=before, after=notes.schema_after))
    for section in SECTIONS:
        entries = notes.entries.get(section, [])
        lines += ["", f"## {words[section]}", ""]
        if not entries:
            lines.append(words["none"])
            continue
        for entry in entries:
            lines += _entry_lines(section, entry, language)
    return "\n".join(lines) + "\n"


def _text(definition: dict[str, Any] | None, field_name: str, language: str) -> str:
    value = (definition or {}).get(field_name)
    if isinstance(value, dict):
        return str(value.get(language, "")).strip()
    return ""


def escape_markdown(text: str) -> str:
    """Return `text` as literal inline Markdown: one line, special characters escaped.

    Texts come from definitions, so a line break (which could start a heading
    or a list) becomes a space, and `<`, `[`, `*` and the like are escaped so
    that no raw HTML, link or emphasis can appear in the notes.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", text.strip()))


def _entry_lines(section: str, entry: NoteEntry, language: str) -> list[str]:
    title, change, details = _entry_content(section, entry, language)
    head = _entry_head(
        f"**{escape_markdown(entry.item)}**",
        escape_markdown(title) if title else "",
        escape_markdown(change),
        language,
    )
    return [f"- {head}"] + [f"  - {escape_markdown(detail)}" for detail in details]


def _entry_head(item: str, title: str, change: str, language: str) -> str:
    """Join an entry's marked-up item, title and change word in the order of `language`.

    Russian leads with the change word ("добавлено: X — title"), because a
    participle after the title would have to agree with its gender. Kazakh
    verbs have no gender, so the change word follows in brackets.
    """
    named = f"{item} — {title}" if title else item
    if language == "ru":
        return f"{change}: {named}"
    return f"{named} ({change})"


def _entry_content(section: str, entry: NoteEntry, language: str) -> tuple[str, str, list[str]]:
    """Return the title, the change word and the detail lines of one entry."""
    words = _WORDS[language]
    title = _text(entry.definition, "title", language)
    change = words.get(entry.change, entry.change)
    definition = entry.definition or {}
    details: list[str] = []
    if entry.change == "deleted":
        # The title names what was removed; its details no longer apply.
        return title, change, details
    if section == "fix" and definition:
        description = _text(definition, "description", language)
        if description:
            details.append(description)
        severity = definition.get("severity")
        if severity:
            details.append(f"{words['severity']}: {words.get(severity, severity)}")
        if definition.get("component"):
            details.append(f"{words['component']}: {definition['component']}")
        if definition.get("tickets"):
            details.append(f"{words['tickets']}: {', '.join(map(str, definition['tickets']))}")
    elif section == "catalog":
        if entry.rows is not None:
            details.append(words["rows"].format(rows=entry.rows))
        if entry.delta is not None:
            details.append(words["delta"].format(**entry.delta))
    elif section in ("report", "form") and definition:
        basis = definition.get("legal_basis") or {}
        if basis.get("order") or basis.get("date"):
            issuer = _text(basis, "issuer", language)
            date = format_date(basis["date"], language) if basis.get("date") else ""
            text = words["basis"].format(order=basis.get("order", ""), date=date, issuer=issuer)
            details.append(text.removesuffix(", "))
        if definition.get("effective_date"):
            effective = format_date(definition["effective_date"], language)
            details.append(words["effective"].format(date=effective))
    elif section == "treasury" and definition:
        if definition.get("version"):
            details.append(words["version"].format(version=definition["version"]))
        if definition.get("effective_date"):
            effective = format_date(definition["effective_date"], language)
            details.append(words["effective"].format(date=effective))
    return title, change, details


def render_notes_html(notes: NotesInput, language: str) -> str:
    """Return the release notes in `language` as a self-contained UTF-8 HTML page.

    The page has the same sections and entries as the Markdown notes, so a
    portal can show it as it is.
    """
    words = _WORDS[language]
    title = words["title"].format(product=PRODUCT_TITLE, version=notes.version)
    base = words["base"].format(base=notes.base_tag) if notes.base_tag else words["first"]
    commit = words["commit"].format(commit=notes.commit[:12]).replace("`", "")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{language}">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(base)}</p>",
        f"<p>{html.escape(commit)}</p>",
    ]
    if notes.schema_after and notes.schema_before != notes.schema_after:
        before = notes.schema_before or "—"
        schema = words["schema"].format(before=before, after=notes.schema_after)
        parts.append(f"<p>{html.escape(schema)}</p>")
    for section in SECTIONS:
        entries = notes.entries.get(section, [])
        parts.append(f'<section id="{section}">')
        parts.append(f"<h2>{html.escape(words[section])}</h2>")
        if not entries:
            parts.append(f"<p>{html.escape(words['none'])}</p>")
        else:
            parts.append("<ul>")
            parts += [_entry_html(section, entry, language) for entry in entries]
            parts.append("</ul>")
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _entry_html(section: str, entry: NoteEntry, language: str) -> str:
    title, change, details = _entry_content(section, entry, language)
    text = _entry_head(
        f"<strong>{html.escape(entry.item)}</strong>",
        html.escape(title) if title else "",
        html.escape(change),
        language,
    )
    if details:
        items = "".join(f"<li>{html.escape(detail)}</li>" for detail in details)
        text += f"<ul>{items}</ul>"
    return f"<li>{text}</li>"
