"""The portal's index pages in Kazakh and Russian, written from the feed.

`index.html` at the root links to `kk/index.html` and `ru/index.html`, and
each language page links to the other. Every link is relative, so the pages
work from any static web server and from `file://`. The pages use no script
and no file from another host.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from pipeline.notes import PRODUCT_TITLE
from pipeline.portal_feed import Feed, Release

LANGUAGES = ("kk", "ru")
LANGUAGE_NAMES = {"kk": "Қазақша", "ru": "Русский"}

_WORDS: dict[str, dict[str, str]] = {
    "kk": {
        "title": "{product}: жаңартулар порталы",
        "intro": (
            "Мұнда {product} жүйесінің ай сайынғы жаңартулары жарияланады. Жаңарту"
            " клиенті осы беттің жанындағы қол қойылған feed.json файлын оқиды; қолмен"
            " жүктеп алғандар әр файлды төмендегі нұсқаулық бойынша тексере алады."
        ),
        "feed": "Жаңартулар тізімі (feed): нұсқасы {version}, жарияланған {published},"
        " жарамдылық мерзімі {expires} дейін.",
        "releases": "Шығарылымдар (ең жаңасы бірінші)",
        "none": "Әзірге жарияланған шығарылым жоқ.",
        "channel": "Арна",
        "stable": "тұрақты",
        "testing": "сынақ",
        "published": "Жарияланған күні",
        "size": "Көлемі",
        "bytes": "байт",
        "sha256": "SHA-256 бақылау сомасы",
        "min_from": "Алдымен орнатылуы тиіс нұсқа",
        "any": "кез келген",
        "schema": "Дерекқор құрылымының нұсқасы",
        "files": "Файлдар",
        "bundle": "жаңарту бумасы",
        "signature": "буманың қолтаңбасы",
        "manifest": "манифест",
        "manifest_signature": "манифесттің қолтаңбасы",
        "public_key": "ашық кілт",
        "notes_file": "шығарылым жазбалары",
        "provenance": "шығу тегі туралы мәлімдеме",
        "provenance_signature": "мәлімдеменің қолтаңбасы",
        "notes": "Шығарылым жазбалары",
        "verify": "Жүктелген файлды қолмен тексеру",
        "verify_intro": (
            "Бума мен оның қолтаңбасын (.minisig) бір қалтаға жүктеп алыңыз. Қолтаңбаны"
            " minisign бағдарламасымен тексеріңіз; ашық кілтті жеткізушіден алған өз"
            " көшірмеңізбен салыстырыңыз:"
        ),
        "verify_ok": (
            "Тексеру сәтті болса, minisign «Signature and comment signature verified» деп"
            " жазады, ал сенімді түсініктемеде шығарылым нұсқасы көрсетіледі. Содан кейін"
            " бақылау сомасын осы беттегі SHA-256 мәнімен салыстырыңыз:"
        ),
        "verify_windows": "Windows жүйесінде:",
        "verify_fail": ("Мәндер сәйкес келмесе, файлды орнатпаңыз және жеткізушіге хабарлаңыз."),
    },
    "ru": {
        "title": "{product}: портал обновлений",
        "intro": (
            "Здесь публикуются ежемесячные обновления {product}. Клиент обновления читает"
            " подписанный файл feed.json рядом с этой страницей; тот, кто скачивает"
            " обновления вручную, может проверить каждый файл по инструкции ниже."
        ),
        "feed": "Список обновлений (feed): версия {version}, опубликован {published},"
        " действителен до {expires}.",
        "releases": "Выпуски (сначала новые)",
        "none": "Опубликованных выпусков пока нет.",
        "channel": "Канал",
        "stable": "стабильный",
        "testing": "тестовый",
        "published": "Дата публикации",
        "size": "Размер",
        "bytes": "байт",
        "sha256": "Контрольная сумма SHA-256",
        "min_from": "Сначала должна быть установлена версия",
        "any": "любая",
        "schema": "Версия структуры базы данных",
        "files": "Файлы",
        "bundle": "пакет обновления",
        "signature": "подпись пакета",
        "manifest": "манифест",
        "manifest_signature": "подпись манифеста",
        "public_key": "открытый ключ",
        "notes_file": "примечания к выпуску",
        "provenance": "сведения о происхождении сборки",
        "provenance_signature": "подпись сведений о происхождении",
        "notes": "Примечания к выпуску",
        "verify": "Как проверить скачанный файл вручную",
        "verify_intro": (
            "Скачайте пакет и его подпись (.minisig) в одну папку. Проверьте подпись"
            " программой minisign; открытый ключ сверьте со своей копией, полученной от"
            " поставщика:"
        ),
        "verify_ok": (
            "При успешной проверке minisign выводит «Signature and comment signature"
            " verified», а доверенный комментарий содержит версию выпуска. Затем сравните"
            " контрольную сумму со значением SHA-256 на этой странице:"
        ),
        "verify_windows": "В Windows:",
        "verify_fail": "Если значения не совпадают, не устанавливайте файл и сообщите поставщику.",
    },
}

_STYLE = """
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; margin: 2em auto;
       max-width: 60em; padding: 0 1em; line-height: 1.45; color: #1d1d1f; }
nav { float: right; }
code, pre { font-family: "DejaVu Sans Mono", "Noto Sans Mono", monospace; }
pre { background: #f3f3f3; padding: 0.6em; overflow-x: auto; }
section.release { border-top: 1px solid #bbb; margin-top: 1.5em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
dd { margin: 0; overflow-wrap: anywhere; }
.notes { background: #fafafa; border-left: 3px solid #789; padding: 0 1em; }
"""


def render_language_page(feed: Feed, language: str) -> str:
    """Return the HTML index page in `language`; the page lives one folder below the root."""
    words = _WORDS[language]
    other = next(code for code in LANGUAGES if code != language)
    product = html.escape(PRODUCT_TITLE)
    title = words["title"].format(product=product)
    releases = list(reversed(feed.sorted_releases()))
    body = [
        f'<nav><a href="../{other}/index.html" hreflang="{other}" lang="{other}">'
        f"{LANGUAGE_NAMES[other]}</a></nav>",
        f"<h1>{title}</h1>",
        f"<p>{words['intro'].format(product=product)}</p>",
        "<p>"
        + words["feed"].format(
            version=feed.feed_version,
            published=html.escape(feed.published),
            expires=html.escape(feed.expires),
        )
        + ' <a href="../feed.json">feed.json</a>, <a href="../feed.json.minisig">'
        "feed.json.minisig</a></p>",
        f"<h2>{words['releases']}</h2>",
    ]
    if not releases:
        body.append(f"<p>{words['none']}</p>")
    body += [_release_section(release, language) for release in releases]
    body += _verify_section(releases[0] if releases else None, language)
    return _page(language, title, body)


def render_root_page(feed: Feed) -> str:
    """Return the root `index.html`: a short bilingual page linking to both languages."""
    product = html.escape(PRODUCT_TITLE)
    newest = feed.sorted_releases()[-1].version if feed.releases else "—"
    links = [
        f'<li lang="{code}"><a href="{code}/index.html" hreflang="{code}">'
        f"{LANGUAGE_NAMES[code]}: {_WORDS[code]['title'].format(product=product)}</a></li>"
        for code in LANGUAGES
    ]
    body = [
        f"<h1>{product}</h1>",
        f"<p>{html.escape(newest)}</p>",
        "<ul>",
        *links,
        "</ul>",
    ]
    return _page("kk", product, body)


def _page(language: str, title: str, body: Sequence[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="{language}">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _release_section(release: Release, language: str) -> str:
    words = _WORDS[language]
    version = html.escape(release.version)
    schema_from = release.schema.get("from") or "—"
    schema_to = release.schema.get("to") or "—"
    rows = [
        (words["channel"], words.get(release.channel, release.channel)),
        (words["published"], release.published),
        (words["size"], format_size(release.size, words["bytes"])),
        (words["sha256"], f"<code>{release.sha256}</code>"),
        (words["min_from"], release.min_from_version or words["any"]),
        (words["schema"], f"{schema_from} → {schema_to}"),
    ]
    details = "\n".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    links = "\n".join(
        f'<li><a href="../{html.escape(path, quote=True)}">{html.escape(path.rsplit("/", 1)[-1])}'
        f"</a> — {_file_label(key, words)}</li>"
        for key, path in release.files.items()
    )
    notes = markdown_to_html(release.notes.get(language, ""), shift=2)
    return (
        f'<section class="release" id="v{version}">\n<h3>{version}</h3>\n'
        f"<dl>\n{details}\n</dl>\n<h4>{words['files']}</h4>\n<ul>\n{links}\n</ul>\n"
        f'<h4>{words["notes"]}</h4>\n<div class="notes">\n{notes}\n</div>\n</section>'
    )


def _file_label(key: str, words: dict[str, str]) -> str:
    if key.startswith("notes/"):
        return f"{words['notes_file']} ({html.escape(key.removeprefix('notes/'))})"
    return words.get(key, html.escape(key))


def _verify_section(newest: Release | None, language: str) -> list[str]:
    words = _WORDS[language]
    name = "parus-kaz-budget-2026.12.0.7z"
    if newest is not None:
        name = newest.files["bundle"].rsplit("/", 1)[-1]
    name = html.escape(name)
    return [
        f"<h2>{words['verify']}</h2>",
        f"<p>{words['verify_intro']}</p>",
        f"<pre>minisign -V -p minisign.pub -m {name}</pre>",
        f"<p>{words['verify_ok']}</p>",
        f"<pre>sha256sum {name}</pre>",
        f"<p>{words['verify_windows']}</p>",
        f"<pre>certutil -hashfile {name} SHA256</pre>",
        f"<p>{words['verify_fail']}</p>",
    ]


def format_size(size: int, unit: str) -> str:
    """Format a byte count for people: `1.2 MiB (1 258 291 байт)`."""
    grouped = f"{size:,}".replace(",", "\u00a0")
    for factor, name in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if size >= factor:
            return f"{size / factor:.1f} {name} ({grouped} {unit})"
    return f"{grouped} {unit}"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
# Private-use characters stand in for backslash-escaped characters while the
# bold and code patterns run, so an escaped `*` never starts bold text.
_HOLDER_BASE = 0xF0000


def _inline(text: str) -> str:
    literals: list[str] = []

    def hold(match: re.Match[str]) -> str:
        literals.append(match[1])
        return chr(_HOLDER_BASE + len(literals) - 1)

    held = _BACKSLASH_ESCAPE.sub(hold, text)
    escaped = html.escape(held, quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    for index, literal in enumerate(literals):
        escaped = escaped.replace(chr(_HOLDER_BASE + index), html.escape(literal, quote=False))
    return escaped


def markdown_to_html(text: str, shift: int = 0) -> str:
    """Convert the Markdown of the release notes to HTML.

    NOTE: only the subset that pipeline.notes writes is understood: `#`
    headings, paragraphs, `- ` list items nested by two spaces, `**bold**`
    and `` `code` ``. Anything else shows as escaped text. `shift` lowers every
    heading by that many levels so the notes fit under the page's headings.
    """
    out: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip(" ")
        if stripped.startswith("- "):
            level = 1 + (len(line) - len(stripped)) // 2
            if level > depth:
                # A nested list opens inside the list item before it, which stays open.
                out += ["<ul>"] * (level - depth)
                depth = level
            else:
                depth = _close_lists(out, depth, level)
            out.append(f"<li>{_inline(stripped[2:])}")
            continue
        if depth:
            depth = _close_lists(out, depth, 0)
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        if heading:
            level = min(len(heading[1]) + shift, 6)
            out.append(f"<h{level}>{_inline(heading[2])}</h{level}>")
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
    if depth:
        _close_lists(out, depth, 0)
    return "\n".join(out)


def _close_lists(out: list[str], depth: int, level: int) -> int:
    """Close the open list item and every list deeper than `level`; return the new depth."""
    out.append("</li>")
    while depth > level:
        out.append("</ul>")
        depth -= 1
        if depth:
            out.append("</li>")
    return depth
