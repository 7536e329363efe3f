"""Release notes in Kazakh and Russian, as Markdown and as HTML."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from browser import dump_dom

from pipeline.notes import SECTIONS, NoteEntry, NotesInput, render_notes, render_notes_html
from pipeline.preview import format_cell

FIX = {
    "title": {"kk": "Төлем тапсырмасының сомасын дөңгелектеу", "ru": "Округление суммы поручения"},
    "description": {"kk": "Тиын бойынша дөңгелектеу", "ru": "Округление до тиына"},
    "severity": "major",
    "component": "payments",
    "tickets": ["PK-101"],
}
REPORT = {
    "title": {"kk": "ТМК бойынша есеп", "ru": "Отчёт по КНП"},
    "legal_basis": {
        "order": 540,
        "date": "2014-12-04",
        "issuer": {
            "kk": "Қазақстан Республикасының Қаржы министрі",
            "ru": "Министр финансов Республики Казахстан",
        },
    },
    "effective_date": "2026-12-01",
}
TREASURY = {
    "title": {"kk": "MT940 импорты", "ru": "Импорт MT940"},
    "version": "1.01",
    "effective_date": "2026-12-01",
}


def notes_input() -> NotesInput:
    notes = NotesInput(
        version="2026.12.0",
        commit="0123456789abcdef",
        base_tag="release/2026.11.0",
        schema_before="0001",
        schema_after="0002",
    )
    notes.entries = {
        "fix": [NoteEntry("payment-order-total-rounding", "added", FIX)],
        "catalog": [
            NoteEntry(
                "knp", "modified", None, rows=42, delta={"added": 2, "changed": 1, "removed": 0}
            )
        ],
        "report": [NoteEntry("knp-payments-monthly", "modified", REPORT)],
        "treasury": [NoteEntry("mt940-statement-import", "added", TREASURY)],
        "migration": [NoteEntry("0002_budget_classification.sql", "added")],
    }
    return notes


class _Outline(HTMLParser):
    """Collects the section ids and headings of a notes page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.headings: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        if tag == "section":
            self.sections.append(dict(attrs).get("id") or "")

    def handle_endtag(self, tag: str) -> None:
        self._tag = ""

    def handle_data(self, data: str) -> None:
        if self._tag == "h2":
            self.headings.append(data)


def outline(page: str) -> _Outline:
    parser = _Outline()
    parser.feed(page)
    return parser


def test_html_has_every_section_in_order() -> None:
    for language in ("kk", "ru"):
        page = outline(render_notes_html(notes_input(), language))
        assert page.sections == list(SECTIONS)


def test_html_headings_match_markdown() -> None:
    for language in ("kk", "ru"):
        markdown = render_notes(notes_input(), language)
        headings = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
        assert outline(render_notes_html(notes_input(), language)).headings == headings


def test_html_entries_carry_details() -> None:
    page = render_notes_html(notes_input(), "ru")
    assert '<html lang="ru">' in page
    assert "<title>Обновление Парус-КАЗ.Бюджет 2026.12.0</title>" in page
    assert "<strong>payment-order-total-rounding</strong> — Округление суммы поручения" in page
    assert "<li>Важность: существенная</li>" in page
    assert "<li>строк: 42</li>" in page
    assert "<li>добавлено: 2, изменено: 1, удалено: 0</li>" in page
    assert (
        "<li>Основание: приказ № 540 от 04.12.2014, Министр финансов Республики Казахстан</li>"
        in page
    )
    assert "<li>версия 1.01</li>" in page
    assert "Версия структуры базы данных: 0001 → 0002." in page


def test_html_empty_section_says_so() -> None:
    page = render_notes_html(notes_input(), "kk")
    form_section = page.split('<section id="form">')[1].split("</section>")[0]
    assert "<p>Өзгерістер жоқ.</p>" in form_section


def test_html_escapes_definition_text() -> None:
    notes = notes_input()
    title = {"kk": "<script>alert(1)</script> «Ақша»", "ru": "A & B"}
    notes.entries["fix"] = [NoteEntry("x", "added", {**FIX, "title": title})]
    page = render_notes_html(notes, "kk")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; «Ақша»" in page
    assert "A &amp; B" in render_notes_html(notes, "ru")


def test_markdown_output_unchanged() -> None:
    markdown = render_notes(notes_input(), "kk")
    assert markdown.startswith("# Парус-КАЗ.Бюджет 2026.12.0 жаңартуы\n")
    assert (
        "- **payment-order-total-rounding** — Төлем тапсырмасының сомасын дөңгелектеу (қосылды)\n"
        in markdown
    )
    assert "  - Маңыздылығы: маңызды\n" in markdown
    assert "Бастапқы коммит: `0123456789ab`." in markdown


def test_html_shown_in_browser(tmp_path: Path) -> None:
    page = tmp_path / "kk.html"
    page.write_text(render_notes_html(notes_input(), "kk"), encoding="utf-8")
    dom = dump_dom(page)
    assert "Қазынашылық форматтары" in dom
    assert "mt940-statement-import" in dom


def test_markdown_escapes_definition_text() -> None:
    notes = notes_input()
    title = {
        "kk": "Есеп\n# Жалған тақырып <img src=x onerror=alert(1)>",
        "ru": "Отчёт [ссылка](javascript:alert(1)) *жирный* a_b",
    }
    description = {"kk": "Бірінші жол\n\n- екінші жол", "ru": "Описание"}
    notes.entries["fix"] = [
        NoteEntry("x", "added", {**FIX, "title": title, "description": description})
    ]
    kk = render_notes(notes, "kk")
    ru = render_notes(notes, "ru")
    headings = re.findall(r"^#.*$", kk, flags=re.MULTILINE)
    assert all(h.startswith(("# Парус", "## ")) for h in headings)
    assert "- **x** — Есеп \\# Жалған тақырып \\<img src=x onerror=alert(1)\\> (қосылды)\n" in kk
    assert "  - Бірінші жол - екінші жол\n" in kk
    assert "<img" not in kk.replace("\\<img", "")
    assert "\\[ссылка\\](javascript:alert(1)) \\*жирный\\* a\\_b" in ru
    assert "[ссылка](" not in ru.replace("\\[ссылка\\](", "")


def test_markdown_legal_basis_in_both_languages() -> None:
    kk = render_notes(notes_input(), "kk")
    ru = render_notes(notes_input(), "ru")
    assert (
        "  - Негіздеме: №540 бұйрық, 04.12.2014, Қазақстан Республикасының Қаржы министрі\n" in kk
    )
    assert (
        "  - Основание: приказ № 540 от 04.12.2014, Министр финансов Республики Казахстан\n" in ru
    )


def test_effective_date_as_in_previews() -> None:
    for language, label in (("kk", "Күшіне енетін күні"), ("ru", "Дата вступления в силу")):
        shown = format_cell("2026-12-01", "date", language)
        assert shown == "01.12.2026"
        markdown = render_notes(notes_input(), language)
        assert f"  - {label}: {shown}\n" in markdown
        assert f"<li>{label}: {shown}</li>" in render_notes_html(notes_input(), language)


def test_russian_change_words_fit_every_gender() -> None:
    notes = notes_input()
    form = {**REPORT, "title": {"kk": "Төлем тапсырмасының баспа нысаны", "ru": "Печатная форма"}}
    notes.entries["form"] = [NoteEntry("payment-order", "added", form)]
    notes.entries["catalog"].append(NoteEntry("kbk", "renamed", None))
    notes.entries["treasury"].append(NoteEntry("old-export", "deleted", None))
    ru = render_notes(notes, "ru")
    assert "- добавлено: **payment-order** — Печатная форма\n" in ru
    assert "- добавлено: **payment-order-total-rounding** — Округление суммы поручения\n" in ru
    assert "- изменено: **knp**\n" in ru
    assert "- переименовано: **kbk**\n" in ru
    assert "- удалено: **old-export**\n" in ru
    assert "(добавлен)" not in ru
    page = render_notes_html(notes, "ru")
    assert "<li>добавлено: <strong>payment-order</strong> — Печатная форма<ul>" in page


def test_deleted_item_named_by_title_only() -> None:
    # A deleted item carries its definition from the base release: the notes
    # name it by title, without details that no longer apply.
    notes = notes_input()
    notes.entries["treasury"] = [NoteEntry("mt940-import", "deleted", TREASURY)]
    ru = render_notes(notes, "ru")
    kk = render_notes(notes, "kk")
    assert "- удалено: **mt940-import** — Импорт MT940\n\n" in ru
    assert "- **mt940-import** — MT940 импорты (жойылды)\n\n" in kk
    assert "1.01" not in ru
    page = render_notes_html(notes, "ru")
    assert "<li>удалено: <strong>mt940-import</strong> — Импорт MT940</li>" in page
