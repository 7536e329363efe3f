"""HTML previews of reports and forms on a generated sample database."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from browser import dump_dom, png_colours, screenshot
from conftest import git

from pipeline.content import Kind
from pipeline.database import open_database, run_migrations
from pipeline.errors import ConfigError, ValidationError
from pipeline.migrations import load_migrations
from pipeline.preview import (
    Previews,
    format_cell,
    preview_changed,
    preview_parameters,
    render_preview,
)
from pipeline.samples import generate_sample

REPO_ROOT = Path(__file__).resolve().parent.parent
REPORT = "knp-payments-monthly"
FORM = "payment-order"


@pytest.fixture(scope="module")
def sample_url(tmp_path_factory: pytest.TempPathFactory, migrations_root: Path) -> str:
    path = tmp_path_factory.mktemp("sample") / "small.sqlite"
    generate_sample(migrations_root, path, "small")
    return f"sqlite:///{path}"


def test_report_preview_in_both_languages(sample_url: str, tmp_path: Path) -> None:
    pages = render_preview(REPO_ROOT, Kind.REPORT, REPORT, sample_url, tmp_path)
    assert sorted(pages) == ["kk", "ru"]
    assert pages["kk"] == tmp_path / f"report-{REPORT}.kk.html"
    kk = pages["kk"].read_text(encoding="utf-8")
    ru = pages["ru"].read_text(encoding="utf-8")
    assert '<html lang="kk">' in kk
    assert '<html lang="ru">' in ru
    assert '<th data-column="knp_code">ТМК коды</th>' in kk
    assert '<th data-column="knp_code">Код КНП</th>' in ru
    assert "№540 бұйрық, 04.12.2014, Қазақстан Республикасының Қаржы министрі" in kk
    assert "приказ № 540 от 04.12.2014, Министр финансов Республики Казахстан" in ru
    assert kk.count("<tr><td>") == ru.count("<tr><td>")
    assert kk.count("<tr><td>") > 0


def test_report_preview_in_browser(sample_url: str, tmp_path: Path) -> None:
    pages = render_preview(REPO_ROOT, Kind.REPORT, REPORT, sample_url, tmp_path)
    kk = dump_dom(pages["kk"])
    assert "Төлем мақсатының кодтары (ТМК) бойынша төлемдер туралы ай сайынғы есеп" in kk
    assert "Сомасы, теңге" in kk
    assert "Жолдар:" in kk
    assert "<td>Жалақы</td>" in kk
    assert "Заработная плата" not in kk
    ru = dump_dom(pages["ru"])
    assert "Ежемесячный отчёт о платежах" in ru
    assert "<td>Заработная плата</td>" in ru
    for language in ("kk", "ru"):
        png = screenshot(pages[language], tmp_path / f"{language}.png")
        assert len(png_colours(png)) > 1, f"the {language} screenshot is blank"


def test_preview_data_follows_language(sample_url: str, tmp_path: Path) -> None:
    pages = render_preview(REPO_ROOT, Kind.FORM, FORM, sample_url, tmp_path)
    kk = pages["kk"].read_text(encoding="utf-8")
    ru = pages["ru"].read_text(encoding="utf-8")
    assert "<td>«Шардара ауданы әкімінің аппараты» ММ</td>" in kk
    assert "<td>ГУ «Аппарат акима Шардаринского района»</td>" in ru


def test_form_preview_shows_document(sample_url: str, tmp_path: Path) -> None:
    pages = render_preview(REPO_ROOT, Kind.FORM, FORM, sample_url, tmp_path)
    ru = pages["ru"].read_text(encoding="utf-8")
    assert "<title>Печатная форма платёжного поручения</title>" in ru
    assert ru.count("<tr><td>") == 1
    assert "Строк: 1 (всего 1)" in ru


def test_fix_cannot_be_previewed(sample_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a report or a form"):
        render_preview(REPO_ROOT, Kind.FIX, "payment-order-total-rounding", sample_url, tmp_path)


def test_query_failure_names_item(sample_url: str, tmp_path: Path) -> None:
    root = tmp_path / "content"
    shutil.copytree(REPO_ROOT / "packages/reports" / REPORT, root / "packages/reports" / REPORT)
    path = root / "packages/reports" / REPORT / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["query"] = document["query"].replace("FROM payment_documents", "FROM payment_docs")
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        render_preview(root, Kind.REPORT, REPORT, sample_url, tmp_path / "out")
    assert f"report/{REPORT}: the query failed on the sample database" in str(caught.value)
    assert "payment_docs" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_preview_parameters_defaults() -> None:
    definition = {
        "effective_date": "2026-12-01",
        "parameters": [
            {"name": "organization_id", "type": "integer"},
            {"name": "date_from", "type": "date"},
            {"name": "flag", "type": "boolean"},
        ],
        "preview": {"parameters": {"organization_id": 7}},
    }
    assert preview_parameters(definition) == {
        "organization_id": 7,
        "date_from": "2026-12-01",
        "flag": False,
    }


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (123456789, "money", "1\u00a0234\u00a0567,89"),
        (5, "money", "0,05"),
        (Decimal("123456"), "money", "1\u00a0234,56"),
        (Decimal("123456"), "money", "1\u00a0234,56"),
        ("2026-12-04", "date", "04.12.2026"),
        (None, "text", ""),
        (42, "integer", "42"),
    ],
)
def test_format_cell(value: object, kind: str, text: str) -> None:
    for language in ("kk", "ru"):
        assert format_cell(value, kind, language) == text


def test_only_changed_items_previewed(git_repo: Path, sample_url: str, tmp_path: Path) -> None:
    for kind, code in (("reports", REPORT), ("forms", FORM)):
        shutil.copytree(REPO_ROOT / "packages" / kind / code, git_repo / "packages" / kind / code)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "Add a report and a form")
    git(git_repo, "tag", "release/2026.11.0")
    path = git_repo / "packages/reports" / REPORT / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["title"]["ru"] = "Ежемесячный отчёт по кодам назначения платежа"
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    git(git_repo, "commit", "-q", "-am", "Retitle the report")

    previews = preview_changed(git_repo, tmp_path / "preview", database_url=sample_url)
    assert list(previews.pages) == [f"report/{REPORT}"]
    ru = previews.pages[f"report/{REPORT}"]["ru"].read_text(encoding="utf-8")
    assert "Ежемесячный отчёт по кодам назначения платежа" in ru

    every = preview_changed(git_repo, tmp_path / "all", database_url=sample_url, every=True)
    assert sorted(every.pages) == [f"form/{FORM}", f"report/{REPORT}"]


@pytest.mark.postgres
def test_report_preview_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    with open_database(postgres_database, REPO_ROOT) as db:
        run_migrations(db, load_migrations(REPO_ROOT, "postgresql"))
        db.insert_rows(
            "organizations", ("id", "bin", "name_ru", "name_kk"), [(5, "940140000385", "ГУ", "ММ")]
        )
        db.insert_rows(
            "accounts",
            ("id", "organization_id", "iban", "currency"),
            [(1, 5, "KZ86125KZT5004100100", "KZT")],
        )
        db.insert_rows(
            "knp", ("code", "name_ru", "name_kk"), [("311", "Заработная плата", "Жалақы")]
        )
        db.insert_rows(
            "payment_documents",
            ("id", "account_id", "doc_number", "doc_date", "amount", "knp_code", "kbe", "purpose"),
            [(1, 1, "1", "2026-03-01", 123456, "311", "19", "Жалақы 100%")],
        )
    pages = render_preview(REPO_ROOT, Kind.REPORT, REPORT, postgres_database, tmp_path)
    ru = pages["ru"].read_text(encoding="utf-8")
    assert "<tr><td>311</td><td>Заработная плата</td>" in ru
    assert "1\u00a0234,56" in ru


def set_ru_caption(repo: Path, caption: str) -> None:
    path = repo / "packages/reports" / REPORT / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["captions"]["ru"]["knp_code"] = caption
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")


@pytest.fixture
def report_history(git_repo: Path) -> dict[str, str]:
    """A repository whose report caption differs at HEAD~1, HEAD and in the work tree."""
    for kind, code in (("reports", REPORT), ("forms", FORM)):
        shutil.copytree(REPO_ROOT / "packages" / kind / code, git_repo / "packages" / kind / code)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "Add a report and a form")
    set_ru_caption(git_repo, "Код КНП в коммите")
    git(git_repo, "commit", "-q", "-am", "Recaption the report")
    set_ru_caption(git_repo, "Код КНП без коммита")
    return {
        "HEAD~1": git(git_repo, "rev-parse", "HEAD~1").strip(),
        "HEAD": git(git_repo, "rev-parse", "HEAD").strip(),
    }


def ru_caption(previews: Previews) -> str:
    page = previews.pages[f"report/{REPORT}"]["ru"].read_text(encoding="utf-8")
    start = page.index('<th data-column="knp_code">') + len('<th data-column="knp_code">')
    return page[start : page.index("</th>", start)]


def test_preview_rev_renders_that_commit(
    git_repo: Path, report_history: dict[str, str], sample_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "preview"
    previous = preview_changed(git_repo, out, rev="HEAD~1", database_url=sample_url, every=True)
    assert previous.commit == report_history["HEAD~1"]
    assert ru_caption(previous) == "Код КНП"
    head = preview_changed(git_repo, out, rev="HEAD", database_url=sample_url, every=True)
    assert head.commit == report_history["HEAD"]
    assert ru_caption(head) == "Код КНП в коммите"
    page = head.pages[f"report/{REPORT}"]["ru"].read_text(encoding="utf-8")
    assert f'<p class="commit">Коммит: {report_history["HEAD"][:12]}</p>' in page


def test_preview_without_rev_renders_work_tree(
    git_repo: Path, report_history: dict[str, str], sample_url: str, tmp_path: Path
) -> None:
    previews = preview_changed(git_repo, tmp_path / "out", database_url=sample_url, every=True)
    assert previews.commit is None
    assert ru_caption(previews) == "Код КНП без коммита"
    page = previews.pages[f"report/{REPORT}"]["ru"].read_text(encoding="utf-8")
    assert 'class="commit"' not in page


def test_preview_replaces_earlier_pages(
    git_repo: Path, report_history: dict[str, str], sample_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "preview"
    out.mkdir()
    stale = out / "report-retired.ru.html"
    stale.write_text("<p>old</p>", encoding="utf-8")
    previews = preview_changed(git_repo, out, rev="HEAD", database_url=sample_url, every=True)
    assert sorted(p.name for p in out.iterdir()) == [
        f"form-{FORM}.kk.html",
        f"form-{FORM}.ru.html",
        f"report-{REPORT}.kk.html",
        f"report-{REPORT}.ru.html",
    ]
    assert previews.pages[f"report/{REPORT}"]["kk"] == out / f"report-{REPORT}.kk.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content", "preview"]


def test_failed_preview_keeps_earlier_output(
    git_repo: Path, report_history: dict[str, str], sample_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "preview"
    preview_changed(git_repo, out, database_url=sample_url, every=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    path = git_repo / "packages/forms" / FORM / "form.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["query"] = document["query"].replace("p.purpose", "p.purpos")
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    set_ru_caption(git_repo, "Код КНП после ошибки")
    with pytest.raises(ValidationError, match=f"form/{FORM}: the query failed"):
        preview_changed(git_repo, out, database_url=sample_url, every=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content", "preview"]


def test_preview_rejects_folder_of_other_files(
    git_repo: Path, report_history: dict[str, str], sample_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    (out / "bundle.7z").write_bytes(b"7z")
    with pytest.raises(ConfigError) as caught:
        preview_changed(git_repo, out, database_url=sample_url, every=True)
    assert str(caught.value) == (
        f"{out} contains 'bundle.7z', which is not a preview page; expected an empty"
        " folder or one of earlier previews, because the previews replace the folder"
    )
    assert (out / "bundle.7z").read_bytes() == b"7z"
